//! A work queue of keys (client-go's `workqueue`): a key queued twice is processed once, a
//! key re-added while being processed is processed again afterwards (never twice at once),
//! keys can wait for a deadline, and failing keys back off exponentially.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::retry::{key_backoff, lock};

pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
}

struct Inner<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    /// Re-added while processing: queued again by `done`.
    dirty: HashSet<K>,
    /// Waiting for a deadline: `(deadline, seq)` → key, and key → its entry.
    delayed: BTreeMap<(Instant, u64), K>,
    delayed_at: HashMap<K, (Instant, u64)>,
    seq: u64,
    failures: HashMap<K, u32>,
    closed: bool,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            inner: Mutex::new(Inner {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                delayed_at: HashMap::new(),
                seq: 0,
                failures: HashMap::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Inner<K> {
    fn add(&mut self, k: K) {
        if let Some(at) = self.delayed_at.remove(&k) {
            self.delayed.remove(&at);
        }
        if self.processing.contains(&k) {
            self.dirty.insert(k);
        } else if self.queued.insert(k.clone()) {
            self.ready.push_back(k);
        }
    }

    fn add_at(&mut self, k: K, at: Instant, now: Instant) {
        if at <= now {
            return self.add(k);
        }
        if self.queued.contains(&k) {
            return;
        }
        if let Some(&(old, seq)) = self.delayed_at.get(&k) {
            if old <= at {
                return;
            }
            self.delayed.remove(&(old, seq));
        }
        self.seq += 1;
        self.delayed.insert((at, self.seq), k.clone());
        self.delayed_at.insert(k, (at, self.seq));
    }

    /// Move every key whose deadline has passed to the ready queue.
    fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let k = entry.remove();
            self.delayed_at.remove(&k);
            self.add(k);
        }
    }

    fn pop(&mut self, now: Instant) -> Option<K> {
        self.promote(now);
        let k = self.ready.pop_front()?;
        self.queued.remove(&k);
        self.processing.insert(k.clone());
        Some(k)
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// Queue `k` now.
    pub fn add(&self, k: K) {
        lock(&self.inner).add(k);
        self.notify.notify_one();
    }

    /// Queue `k` after `d` (or sooner if it is already due sooner).
    pub fn add_after(&self, k: K, d: Duration) {
        let now = Instant::now();
        lock(&self.inner).add_at(k, now + d, now);
        self.notify.notify_one();
    }

    /// Queue `k` again after its backoff (which grows with each call until
    /// [`forget`](Self::forget)); returns how many times in a row it has failed.
    pub fn retry(&self, k: K) -> u32 {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let n = inner.failures.entry(k.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let (n, d) = (*n, key_backoff(*n));
        inner.add_at(k, now + d, now);
        drop(inner);
        self.notify.notify_one();
        n
    }

    /// `k` succeeded (or is gone): reset its backoff.
    pub fn forget(&self, k: &K) {
        lock(&self.inner).failures.remove(k);
    }

    /// `k` is gone for good: forget it and drop a pending deadline.
    pub fn remove(&self, k: &K) {
        let mut inner = lock(&self.inner);
        inner.failures.remove(k);
        if let Some(at) = inner.delayed_at.remove(k) {
            inner.delayed.remove(&at);
        }
    }

    /// Processing of `k` finished; if it was re-added meanwhile, queue it again.
    pub fn done(&self, k: &K) {
        let mut inner = lock(&self.inner);
        inner.processing.remove(k);
        if inner.dirty.remove(k) {
            inner.add(k.clone());
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// Stop handing out keys: [`pop`](Self::pop) returns `None` from now on.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
        self.notify.notify_one();
    }

    /// The next key to process (call [`done`](Self::done) after); `None` once closed.
    /// Meant for one consumer at a time.
    pub async fn pop(&self) -> Option<K> {
        loop {
            let deadline = {
                let mut inner = lock(&self.inner);
                if inner.closed {
                    return None;
                }
                if let Some(k) = inner.pop(Instant::now()) {
                    return Some(k);
                }
                inner.delayed.first_key_value().map(|((at, _), _)| *at)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Keys waiting (ready or delayed), for logs.
    pub fn len(&self) -> usize {
        let inner = lock(&self.inner);
        inner.ready.len() + inner.delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> WorkQueue<&'static str> {
        WorkQueue::default()
    }

    #[test]
    fn a_key_queued_twice_is_handed_out_once() {
        let q = q();
        let now = Instant::now();
        q.add("a");
        q.add("b");
        q.add("a");
        let mut inner = lock(&q.inner);
        assert_eq!(inner.pop(now), Some("a"));
        assert_eq!(inner.pop(now), Some("b"));
        assert_eq!(inner.pop(now), None);
    }

    #[test]
    fn a_key_re_added_while_processing_comes_back_after_done() {
        let q = q();
        let now = Instant::now();
        q.add("a");
        assert_eq!(lock(&q.inner).pop(now), Some("a"));
        q.add("a");
        assert_eq!(lock(&q.inner).pop(now), None, "never twice at once");
        q.done(&"a");
        assert_eq!(lock(&q.inner).pop(now), Some("a"));
        q.done(&"a");
        assert_eq!(lock(&q.inner).pop(now), None);
    }

    #[test]
    fn delayed_keys_wait_for_their_deadline_and_keep_the_earliest() {
        let q = q();
        let now = Instant::now();
        {
            let mut inner = lock(&q.inner);
            inner.add_at("late", now + Duration::from_secs(10), now);
            inner.add_at("soon", now + Duration::from_secs(5), now);
            inner.add_at("soon", now + Duration::from_secs(20), now);
            inner.add_at("late", now + Duration::from_secs(1), now);
            assert_eq!(inner.pop(now), None);
            assert_eq!(inner.pop(now + Duration::from_secs(1)), Some("late"));
            assert_eq!(inner.pop(now + Duration::from_secs(4)), None);
            assert_eq!(inner.pop(now + Duration::from_secs(5)), Some("soon"));
            assert!(inner.delayed.is_empty() && inner.delayed_at.is_empty());
        }
        q.add_after("x", Duration::from_secs(60));
        q.add("x");
        assert_eq!(lock(&q.inner).pop(now), Some("x"), "add overrides a deadline");
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn retries_back_off_until_forgotten() {
        let q = q();
        assert_eq!(q.retry("a"), 1);
        assert_eq!(q.retry("a"), 2);
        q.forget(&"a");
        assert!(lock(&q.inner).failures.is_empty());
        q.remove(&"a");
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn pop_wakes_for_adds_and_deadlines_and_ends_when_closed() {
        let q = std::sync::Arc::new(q());
        q.add_after("d", Duration::from_millis(20));
        assert_eq!(q.pop().await, Some("d"));
        let q2 = q.clone();
        let t = tokio::spawn(async move { q2.pop().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.add("n");
        assert_eq!(t.await.unwrap(), Some("n"));
        q.close();
        assert_eq!(q.pop().await, None);
    }
}
