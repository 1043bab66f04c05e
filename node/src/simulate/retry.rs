//! Backoff between retries, stop-aware sleeping, and what an API error means for a retry.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter: `first`, doubling up to `max`, each ±25%.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    /// The next delay (with jitter), doubling the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        d.mul_f64(jitter)
    }
}

/// The `n`th retry's delay of a key (n ≥ 1): 200ms doubling, capped at 30s, no jitter.
pub fn key_backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(16);
    (Duration::from_millis(200) * (1u32 << shift)).min(Duration::from_secs(30))
}

/// Sleep `d` unless `stop` fires first; `false` if it did.
pub async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The HTTP status of an API error (`None` for transport errors).
pub fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    code(e) == Some(404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    code(e) == Some(409)
}

/// The request itself is wrong (retrying the same write cannot help).
pub fn is_invalid(e: &kube::Error) -> bool {
    matches!(code(e), Some(400 | 422))
}

/// Lock a mutex, ignoring poisoning (every critical section here leaves its data valid).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(75) && d[0] <= Duration::from_millis(125));
        assert!(d[1] >= Duration::from_millis(150) && d[1] <= Duration::from_millis(250));
        assert!(d[3] <= Duration::from_millis(438));
        assert_eq!(key_backoff(1), Duration::from_millis(200));
        assert_eq!(key_backoff(2), Duration::from_millis(400));
        assert_eq!(key_backoff(100), Duration::from_secs(30));
        assert_eq!(key_backoff(0), Duration::from_millis(200));
    }
}
