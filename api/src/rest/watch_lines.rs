//! Watch event lines encoded once per master: with no selector and JSON output, a store
//! event becomes the same bytes for every watcher of one resource version, so the first
//! watcher to see it decodes and encodes it and the others reuse the bytes. The leader's
//! controllers and scheduler watch pods about a dozen times over; without this each pod
//! write was decoded and encoded again for each of them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Lines kept (the latest; a watcher far behind encodes its own).
const CAPACITY: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LineKey {
    /// `group/version/plural`: the version an object is served as.
    resource: Arc<str>,
    key: Vec<u8>,
    revision: i64,
    kind: &'static str,
}

#[derive(Default)]
pub(crate) struct WatchLines {
    inner: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    map: HashMap<LineKey, Bytes>,
    order: VecDeque<LineKey>,
}

impl WatchLines {
    /// The line for `kind` of the object at `key` written at `revision`, served as
    /// `resource`: from the cache, else `encode`d (outside the lock) and kept.
    pub fn get_or_encode(
        &self,
        resource: &Arc<str>,
        key: &[u8],
        revision: i64,
        kind: &'static str,
        encode: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let k = LineKey { resource: resource.clone(), key: key.to_vec(), revision, kind };
        if let Some(line) = self.inner.lock().unwrap_or_else(PoisonError::into_inner).map.get(&k) {
            return Some(line.clone());
        }
        let line = encode()?;
        let mut lines = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !lines.map.contains_key(&k) {
            if lines.order.len() >= CAPACITY {
                if let Some(old) = lines.order.pop_front() {
                    lines.map.remove(&old);
                }
            }
            lines.order.push_back(k.clone());
            lines.map.insert(k, line.clone());
        }
        Some(line)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_encoded_once_and_the_oldest_go_first() {
        let lines = WatchLines::default();
        let pods: Arc<str> = Arc::from("/v1/pods");
        let calls = std::cell::Cell::new(0);
        let encode = || {
            calls.set(calls.get() + 1);
            Some(Bytes::from_static(b"{}\n"))
        };
        for _ in 0..3 {
            assert_eq!(
                lines.get_or_encode(&pods, b"/registry/pods/a", 7, "ADDED", encode).as_deref(),
                Some(&b"{}\n"[..])
            );
        }
        assert_eq!(calls.get(), 1);
        // Another kind, revision or served version is another line.
        lines.get_or_encode(&pods, b"/registry/pods/a", 7, "MODIFIED", encode);
        lines.get_or_encode(&pods, b"/registry/pods/a", 8, "ADDED", encode);
        lines.get_or_encode(&Arc::from("apps/v1/pods"), b"/registry/pods/a", 7, "ADDED", encode);
        assert_eq!(calls.get(), 4);
        // Nothing to encode (an undecodable object): nothing kept.
        assert_eq!(lines.get_or_encode(&pods, b"/registry/pods/b", 9, "ADDED", || None), None);
        assert_eq!(lines.len(), 4);
        for rev in 0..CAPACITY as i64 {
            lines.get_or_encode(&pods, b"/registry/pods/c", 100 + rev, "ADDED", encode);
        }
        assert_eq!(lines.len(), CAPACITY);
        let before = calls.get();
        lines.get_or_encode(&pods, b"/registry/pods/a", 7, "ADDED", encode);
        assert_eq!(calls.get(), before + 1, "the oldest line was dropped");
    }
}
