//! Expectations (Kubernetes' `ControllerExpectations`, keyed by pod name): the creates and
//! deletes a controller has issued but its watch has not shown yet. A reconcile that runs
//! before the watch catches up counts them, so it never creates or deletes twice for one
//! replica slot. An expectation the watch never confirms lapses after [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upstream's `ExpectationsTimeout`.
pub const TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    /// Names created (seen: no longer pending).
    adds: HashMap<String, Instant>,
    /// Names deleted (still visible, not yet terminating).
    dels: HashMap<String, Instant>,
}

/// Per controller object (`namespace/name`).
#[derive(Clone, Default)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Expectations {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        let p = m.entry(key.to_string()).or_default();
        let out = f(p);
        if p.adds.is_empty() && p.dels.is_empty() {
            m.remove(key);
        }
        out
    }

    pub fn created(&self, key: &str, pod: &str) {
        self.with(key, |p| p.adds.insert(pod.to_string(), Instant::now()));
    }

    pub fn deleted(&self, key: &str, pod: &str) {
        self.with(key, |p| p.dels.insert(pod.to_string(), Instant::now()));
    }

    /// The watch showed `pod` (created, changed or deleted): a create expectation for it is
    /// met even if the pod is gone again before the next reconcile looks at the cache.
    pub fn observed(&self, key: &str, pod: &str) {
        let mut m = match self.inner.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        if let Some(p) = m.get_mut(key) {
            p.adds.remove(pod);
            if p.adds.is_empty() && p.dels.is_empty() {
                m.remove(key);
            }
        }
    }

    /// Forget everything about `key` (its object is gone).
    pub fn forget(&self, key: &str) {
        self.with(key, |p| {
            p.adds.clear();
            p.dels.clear();
        });
    }

    /// Reconcile against what the watch shows: `visible(name)` is Some(terminating) for a
    /// pod the cache has. Confirmed expectations are dropped; returns the pods created but
    /// not yet visible and those deleted but still shown as not terminating.
    pub fn pending(&self, key: &str, visible: impl Fn(&str) -> Option<bool>) -> (Vec<String>, Vec<String>) {
        let now = Instant::now();
        self.with(key, |p| {
            p.adds.retain(|name, at| visible(name).is_none() && now.duration_since(*at) < TTL);
            p.dels.retain(|name, at| visible(name) == Some(false) && now.duration_since(*at) < TTL);
            (p.adds.keys().cloned().collect(), p.dels.keys().cloned().collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_until_the_cache_shows_them() {
        let e = Expectations::default();
        e.created("ns/rs", "a");
        e.created("ns/rs", "b");
        e.deleted("ns/rs", "c");
        let (adds, dels) = e.pending("ns/rs", |n| match n {
            "a" => Some(false),
            "c" => Some(false),
            _ => None,
        });
        assert_eq!(adds, vec!["b".to_string()]);
        assert_eq!(dels, vec!["c".to_string()]);
        // c now terminating, b visible: nothing pending, and the entry is gone.
        let (adds, dels) = e.pending("ns/rs", |n| match n {
            "b" => Some(false),
            "c" => Some(true),
            _ => None,
        });
        assert!(adds.is_empty() && dels.is_empty());
        assert!(e.inner.lock().unwrap().is_empty());
    }

    #[test]
    fn a_pod_seen_by_the_watch_meets_its_expectation_even_if_deleted_since() {
        let e = Expectations::default();
        e.created("ns/rs", "a");
        e.observed("ns/rs", "a");
        let (adds, _) = e.pending("ns/rs", |_| None);
        assert!(adds.is_empty(), "a pod created and deleted between two reconciles is not counted forever");
    }
}
