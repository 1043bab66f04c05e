//! Watches. Applied revisions go into an in-memory ring; each watcher is a task that
//! pulls from its own next revision — from the ring when it still holds it, else from
//! the `revs` column family — so a slow watcher only slows itself and never loses an
//! event. Below the compact revision a watcher ends with `Compacted`. Progress
//! notifications are sent only when the watcher has delivered everything up to the
//! revision it reports.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::keys::KeyRange;
use crate::sm::{RevEvents, SmShared};
use crate::types::{Event, EventKind};

const RING_MAX_REVS: usize = 16 * 1024;
const RING_MAX_BYTES: usize = 64 << 20;
const READ_BATCH_REVS: usize = 256;
const CHANNEL_DEPTH: usize = 64;

struct Ring {
    start: i64,
    entries: VecDeque<Arc<RevEvents>>,
    bytes: usize,
}

fn approx_size(re: &RevEvents) -> usize {
    re.events
        .iter()
        .map(|e| 64 + e.kv.key.len() + e.kv.value.len() + e.prev_kv.as_ref().map_or(0, |p| p.key.len() + p.value.len()))
        .sum()
}

/// Recently applied revisions, and the signal that a new one was applied.
pub struct WatchHub {
    ring: RwLock<Ring>,
    rev_tx: watch::Sender<i64>,
}

impl WatchHub {
    pub(crate) fn new(revision: i64) -> Self {
        WatchHub {
            ring: RwLock::new(Ring { start: revision + 1, entries: VecDeque::new(), bytes: 0 }),
            rev_tx: watch::channel(revision).0,
        }
    }

    fn ring(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn publish(&self, events: Vec<RevEvents>, revision: i64) {
        if !events.is_empty() {
            let mut r = self.ring();
            for re in events {
                if re.revision != r.start + r.entries.len() as i64 {
                    r.entries.clear();
                    r.bytes = 0;
                    r.start = re.revision;
                }
                r.bytes += approx_size(&re);
                r.entries.push_back(Arc::new(re));
            }
            while r.entries.len() > RING_MAX_REVS || (r.bytes > RING_MAX_BYTES && r.entries.len() > 1) {
                if let Some(old) = r.entries.pop_front() {
                    r.bytes -= approx_size(&old);
                    r.start += 1;
                }
            }
        }
        self.rev_tx.send_replace(revision);
    }

    /// The state was replaced (snapshot install): forget the ring.
    pub(crate) fn reset(&self, revision: i64) {
        {
            let mut r = self.ring();
            r.entries.clear();
            r.bytes = 0;
            r.start = revision + 1;
        }
        self.rev_tx.send_replace(revision);
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.rev_tx.subscribe()
    }

    /// Revisions `from..=to` (at most `max`) if the ring still holds `from`.
    fn get(&self, from: i64, to: i64, max: usize) -> Option<Vec<Arc<RevEvents>>> {
        let r = self.ring.read().unwrap_or_else(|e| e.into_inner());
        if from < r.start || from >= r.start + r.entries.len() as i64 {
            return None;
        }
        let skip = (from - r.start) as usize;
        let n = ((to - from + 1).max(0) as usize).min(max);
        Some(r.entries.iter().skip(skip).take(n).cloned().collect())
    }
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub range: KeyRange,
    /// First revision to deliver; 0 = from the next revision.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub filter_put: bool,
    pub filter_delete: bool,
}

/// What a watcher delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchUpdate {
    /// Events of one or more whole revisions; `revision` is the last of them.
    Events { events: Vec<Event>, revision: i64 },
    /// Everything up to `revision` has been delivered.
    Progress { revision: i64 },
    /// The watcher needed revisions below `compact_revision`; it has ended.
    Compacted { compact_revision: i64 },
    /// The watcher ended because of a storage failure.
    Failed { reason: String },
}

/// A running watch; dropping it stops the watcher task.
pub struct Watcher {
    rx: mpsc::Receiver<WatchUpdate>,
    progress: Arc<Notify>,
    start_revision: i64,
    _stop: DropGuard,
}

impl Watcher {
    pub async fn next(&mut self) -> Option<WatchUpdate> {
        self.rx.recv().await
    }

    /// Ask for a progress notification as soon as the watcher is caught up.
    pub fn request_progress(&self) {
        self.progress.notify_one();
    }

    /// The first revision this watcher delivers.
    pub fn start_revision(&self) -> i64 {
        self.start_revision
    }
}

impl Stream for Watcher {
    type Item = WatchUpdate;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchUpdate>> {
        self.rx.poll_recv(cx)
    }
}

/// Start a watcher over `shared` (the caller has checked nothing; compaction is
/// reported through the stream).
pub(crate) fn start(
    shared: Arc<SmShared>,
    req: WatchRequest,
    progress_interval: Duration,
    stop: CancellationToken,
) -> Watcher {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let progress = Arc::new(Notify::new());
    let mine = stop.child_token();
    // Subscribe before reading the revision, so no publish is missed in between.
    let rev_rx = shared.hub.subscribe();
    let next = if req.start_revision > 0 { req.start_revision } else { shared.revision() + 1 };
    let task = WatchTask {
        shared,
        req,
        next,
        tx,
        progress: progress.clone(),
        stop: mine.clone(),
        interval: progress_interval,
    };
    tokio::spawn(task.run(rev_rx));
    Watcher { rx, progress, start_revision: next, _stop: mine.drop_guard() }
}

struct WatchTask {
    shared: Arc<SmShared>,
    req: WatchRequest,
    next: i64,
    tx: mpsc::Sender<WatchUpdate>,
    progress: Arc<Notify>,
    stop: CancellationToken,
    interval: Duration,
}

impl WatchTask {
    async fn send(&self, u: WatchUpdate) -> bool {
        tokio::select! {
            r = self.tx.send(u) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    fn matches(&self, e: &Event) -> bool {
        self.req.range.contains(&e.kv.key)
            && !(self.req.filter_put && e.kind == EventKind::Put)
            && !(self.req.filter_delete && e.kind == EventKind::Delete)
    }

    async fn run(mut self, mut rev_rx: watch::Receiver<i64>) {
        let mut last_sent = Instant::now();
        loop {
            let current = *rev_rx.borrow_and_update();
            if self.next <= current {
                let compact = self.shared.compact_revision();
                if self.next < compact {
                    self.send(WatchUpdate::Compacted { compact_revision: compact }).await;
                    return;
                }
                let batch = match self.shared.hub.get(self.next, current, READ_BATCH_REVS) {
                    Some(b) => b,
                    None => match self.shared.read_events(self.next, current, READ_BATCH_REVS) {
                        Ok(b) => b.into_iter().map(Arc::new).collect(),
                        Err(e) => {
                            self.send(WatchUpdate::Failed { reason: e.to_string() }).await;
                            return;
                        }
                    },
                };
                if batch.first().map(|b| b.revision) != Some(self.next) {
                    // Compacted away while we were reading.
                    let compact = self.shared.compact_revision().max(self.next + 1);
                    self.send(WatchUpdate::Compacted { compact_revision: compact }).await;
                    return;
                }
                let mut out = Vec::new();
                for re in &batch {
                    for e in &re.events {
                        if self.matches(e) {
                            let mut e = e.clone();
                            if !self.req.prev_kv {
                                e.prev_kv = None;
                            }
                            out.push(e);
                        }
                    }
                    self.next = re.revision + 1;
                }
                if !out.is_empty() {
                    if !self.send(WatchUpdate::Events { events: out, revision: self.next - 1 }).await {
                        return;
                    }
                    last_sent = Instant::now();
                }
                continue;
            }
            // Caught up: everything up to `next - 1` is delivered.
            let due = last_sent + self.interval;
            tokio::select! {
                changed = rev_rx.changed() => if changed.is_err() { return },
                _ = self.progress.notified() => {
                    if !self.send(WatchUpdate::Progress { revision: self.next - 1 }).await { return }
                    last_sent = Instant::now();
                }
                _ = tokio::time::sleep_until(due), if self.req.progress_notify => {
                    if !self.send(WatchUpdate::Progress { revision: self.next - 1 }).await { return }
                    last_sent = Instant::now();
                }
                _ = self.stop.cancelled() => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}
