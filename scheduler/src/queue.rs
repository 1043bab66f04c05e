//! The scheduling queue: pending pods waiting for a decision.
//!
//! - **active**: ready to be tried, highest `spec.priority` first, then first come first served;
//! - **unschedulable**: tried and failed; each waits out a per-pod exponential backoff
//!   (`initial · 2^(attempts-1)`, capped at `max`) and is then tried again. A cluster change
//!   that might help (a node added or changed, a pod deleted or finished) or an update of the
//!   pod by its owner makes it eligible sooner: as soon as `initial` has passed since its
//!   last attempt, which bounds how often one pod is retried whatever the churn;
//! - **in flight**: being scheduled or bound; **gated**: has scheduling gates.
//!
//! Time is passed in, so all of this is tested without a clock.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::pod_info::PodInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Unschedulable,
    InFlight,
    Gated,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    state: State,
    /// Orders the active heap and keys the timer maps; renewed on every state change.
    seq: u64,
    attempts: u32,
    last_attempt: Option<Instant>,
    retry_at: Option<Instant>,
}

/// A pod taken from the queue to be scheduled.
#[derive(Debug, Clone)]
pub struct Popped {
    pub info: Arc<PodInfo>,
    /// Attempts including this one.
    pub attempts: u32,
}

#[derive(Debug)]
pub struct SchedulingQueue {
    initial: Duration,
    max: Duration,
    pods: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    active_len: usize,
    /// Unschedulable pods by when their backoff ends.
    backoff: BTreeMap<(Instant, u64), String>,
    /// Unschedulable pods by their last attempt.
    by_attempt: BTreeMap<(Instant, u64), String>,
    last_cluster_event: Option<Instant>,
    next_seq: u64,
}

impl SchedulingQueue {
    pub fn new(initial: Duration, max: Duration) -> SchedulingQueue {
        SchedulingQueue {
            initial,
            max: max.max(initial),
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            active_len: 0,
            backoff: BTreeMap::new(),
            by_attempt: BTreeMap::new(),
            last_cluster_event: None,
            next_seq: 0,
        }
    }

    /// The backoff after `attempts` failed attempts.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.initial.saturating_mul(1u32 << doublings.min(31)).min(self.max)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Take a pod out of whatever set it is in, leaving it in the map.
    fn detach(&mut self, key: &str) {
        let Some(e) = self.pods.get(key) else { return };
        match e.state {
            State::Active => self.active_len = self.active_len.saturating_sub(1),
            State::Unschedulable => {
                if let Some(t) = e.retry_at {
                    self.backoff.remove(&(t, e.seq));
                }
                if let Some(t) = e.last_attempt {
                    self.by_attempt.remove(&(t, e.seq));
                }
            }
            State::InFlight | State::Gated => {}
        }
    }

    fn activate(&mut self, key: &str) {
        self.detach(key);
        let seq = self.seq();
        let Some(e) = self.pods.get_mut(key) else { return };
        e.state = State::Active;
        e.seq = seq;
        e.retry_at = None;
        self.active.push((e.info.priority, Reverse(seq), key.to_string()));
        self.active_len += 1;
    }

    /// Add a pending pod, or update one already queued.
    pub fn add_or_update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        if self.pods.get(&key).is_some_and(|e| e.info.uid != info.uid) {
            self.remove(&key);
        }
        let Some(e) = self.pods.get_mut(&key) else {
            let gated = info.gated;
            self.pods.insert(
                key.clone(),
                Entry { info, state: State::Gated, seq: 0, attempts: 0, last_attempt: None, retry_at: None },
            );
            if !gated {
                self.activate(&key);
            }
            return;
        };
        let ungated = e.state == State::Gated && !info.gated;
        let changed = e.state == State::Unschedulable && e.info.differs_beyond_status(&info);
        e.info = info;
        if ungated {
            self.activate(&key);
        } else if changed {
            self.make_eligible(&key, now);
        }
    }

    /// Stop tracking a pod (deleted, bound, or no longer ours).
    pub fn remove(&mut self, key: &str) -> bool {
        self.detach(key);
        self.pods.remove(key).is_some()
    }

    /// The queued version of a pod.
    pub fn get(&self, key: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(key).map(|e| &e.info)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// The next pod to schedule, if any is active (after moving due pods to active).
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush(now);
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&key) else { continue };
            if e.state != State::Active || e.seq != seq {
                continue;
            }
            self.active_len = self.active_len.saturating_sub(1);
            e.state = State::InFlight;
            e.attempts = e.attempts.saturating_add(1);
            e.last_attempt = Some(now);
            return Some(Popped { info: e.info.clone(), attempts: e.attempts });
        }
        None
    }

    /// An in-flight pod could not be placed (or bound): back off before the next attempt.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let seq = self.seq();
        let backoff = match self.pods.get(key) {
            Some(e) if e.state == State::InFlight => self.backoff_for(e.attempts),
            _ => return,
        };
        let Some(e) = self.pods.get_mut(key) else { return };
        let last = *e.last_attempt.get_or_insert(now);
        let retry_at = now + backoff;
        e.state = State::Unschedulable;
        e.seq = seq;
        e.retry_at = Some(retry_at);
        self.backoff.insert((retry_at, seq), key.to_string());
        self.by_attempt.insert((last, seq), key.to_string());
    }

    /// Something changed in the cluster that may let unschedulable pods fit.
    pub fn cluster_event(&mut self, now: Instant) {
        self.last_cluster_event = Some(now);
        self.flush(now);
    }

    /// Bring an unschedulable pod's retry forward to `initial` after its last attempt.
    fn make_eligible(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get(key) else { return };
        let earliest = e.last_attempt.map(|t| t + self.initial).unwrap_or(now);
        if earliest <= now {
            self.activate(key);
            return;
        }
        if let Some(t) = e.retry_at.filter(|t| *t > earliest) {
            let seq = e.seq;
            self.backoff.remove(&(t, seq));
            self.backoff.insert((earliest, seq), key.to_string());
            if let Some(e) = self.pods.get_mut(key) {
                e.retry_at = Some(earliest);
            }
        }
    }

    /// Move pods whose backoff ended, or that a cluster event made eligible, to active.
    pub fn flush(&mut self, now: Instant) {
        while let Some((&(t, _), key)) = self.backoff.first_key_value() {
            if t > now {
                break;
            }
            let key = key.clone();
            self.activate(&key);
        }
        let Some(event) = self.last_cluster_event else { return };
        while let Some((&(last, _), key)) = self.by_attempt.first_key_value() {
            if last >= event || last + self.initial > now {
                break;
            }
            let key = key.clone();
            self.activate(&key);
        }
    }

    /// When [`flush`](Self::flush) next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.first_key_value().map(|(&(t, _), _)| t);
        let event = self.last_cluster_event.and_then(|ev| {
            self.by_attempt.first_key_value().map(|(&(t, _), _)| t).filter(|t| *t < ev).map(|t| t + self.initial)
        });
        match (backoff, event) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pods ready to be tried.
    pub fn active_len(&self) -> usize {
        self.active_len
    }

    /// Pods waiting out a backoff.
    pub fn unschedulable_len(&self) -> usize {
        self.backoff.len()
    }

    /// Whether the pod is currently being scheduled or bound.
    pub fn is_in_flight(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.state == State::InFlight)
    }
}

#[cfg(test)]
mod tests;
