//! Linearizable reads, batched like etcd's read loop: every read that arrives before a
//! round starts is served by that round's single leadership confirmation. On a
//! follower the round asks the leader for its read index.
//!
//! A leader answers a follower's ask from its own leadership only ([`ReadIndexer::for_peer`]),
//! never by asking on: a leader that had just been deposed used to queue the ask behind
//! its own round, which asked the new leader, whose round was waiting on this very ask —
//! two masters waiting on each other until the 7 s request timeout (`keelson chaos run`
//! saw every list and watch on a new leader stall 6 s after a leader kill). And an ask
//! waits at most [`ASK_TIMEOUT`] before the round looks again at who leads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{decode, encode};
use crate::error::{Result, StoreError};
use crate::mux::Kind;
use crate::router::{Route, Router};

type Waiter = oneshot::Sender<Result<u64>>;

/// How long a follower waits for the leader's read index before looking again at who
/// leads (a heartbeat round trip is normal; a leader deposed meanwhile never answers).
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct ReadIndexer {
    tx: mpsc::Sender<Waiter>,
    router: Router,
    floor: Arc<Mutex<Floor>>,
}

impl ReadIndexer {
    pub fn start(router: Router, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let floor = Arc::new(Mutex::new(Floor::default()));
        tokio::spawn(run(router.clone(), rx, stop, floor.clone()));
        ReadIndexer { tx, router, floor }
    }

    /// The log index this master must apply before a linearizable read.
    pub async fn read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| StoreError::Shutdown)?;
        rx.await.map_err(|_| StoreError::Shutdown)?
    }

    /// A follower's ask: this master's read index if it leads and can confirm it now;
    /// `NotLeader`/`NoLeader` otherwise (the follower asks again, wherever the leader is).
    pub async fn for_peer(&self) -> Result<u64> {
        if !matches!(self.router.route(), Route::Local) {
            return Err(StoreError::NotLeader { leader: self.router.leader_id() });
        }
        match local(&self.router, &self.floor).await {
            Ok(Some(index)) => Ok(index),
            Ok(None) => Err(StoreError::NotLeader { leader: self.router.leader_id() }),
            Err(e) => Err(e),
        }
    }
}

/// Confirm leadership here: `Ok(None)` when this master does not lead (any more) or a
/// quorum did not answer this time.
async fn local(router: &Router, floor: &Mutex<Floor>) -> Result<Option<u64>> {
    match router.raft.get_read_log_id().await {
        Ok((read, _applied)) => {
            let (term, last_log) = {
                let m = router.raft.metrics();
                let m = m.borrow();
                (m.current_term, m.last_log_index.unwrap_or(0))
            };
            let mut floor = floor.lock().unwrap_or_else(|e| e.into_inner());
            Ok(Some(floor.apply(term, last_log, read.map_or(0, |l| l.index))))
        }
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Ok(None),
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            tracing::debug!(error = %e, "read index: quorum not reached, retrying");
            Ok(None)
        }
        Err(RaftError::Fatal(_)) => Err(StoreError::Shutdown),
    }
}

/// The lowest read index this master serves in its current term.
///
/// openraft 0.9 restores a master that was leader when it stopped as leader at once — the
/// same term, no election — and its commit index is then whatever was last saved, which
/// can be behind entries the cluster committed and acknowledged before the crash. Its
/// `get_read_log_id` (the larger of that and a no-op it never appended in this process)
/// can then be stale: `keelson chaos run` caught a linearizable read, on a leader
/// restarted after SIGKILL, missing a write acknowledged before the kill. Raft's rule is
/// that a leader knows the commit index only after committing an entry of its own term;
/// the equivalent here: the first read of each term in this process pins a floor at the
/// leader's last log index, which every entry committed before is at or below (Leader
/// Completeness), and no read of that term is served below it. For a leader that won an
/// election this costs nothing: its no-op is already at or above the floor.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    term: u64,
    index: u64,
}

impl Floor {
    /// The read index to use for `read` (what openraft says) at `term` with `last_log`.
    pub(crate) fn apply(&mut self, term: u64, last_log: u64, read: u64) -> u64 {
        if self.term != term {
            *self = Floor { term, index: last_log };
        }
        read.max(self.index)
    }
}

async fn run(router: Router, mut rx: mpsc::Receiver<Waiter>, stop: CancellationToken, floor: Arc<Mutex<Floor>>) {
    loop {
        let first = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => return },
            _ = stop.cancelled() => return,
        };
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let res = round(&router, &floor).await;
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

/// One confirmation of leadership, here or at the leader.
pub(crate) async fn round(router: &Router, floor: &Mutex<Floor>) -> Result<u64> {
    let deadline = Instant::now() + router.timeout;
    loop {
        match router.route() {
            Route::Local => {
                if let Some(index) = local(router, floor).await? {
                    return Ok(index);
                }
            }
            Route::Remote { addr, .. } => {
                if let Some(index) = ask_leader(router, &addr, deadline).await? {
                    return Ok(index);
                }
            }
            Route::Unknown => {}
        }
        if !router.wait_for_change(deadline).await {
            return Err(if router.leader_id().is_none() {
                StoreError::NoLeader
            } else {
                StoreError::Timeout("confirming leadership for a linearizable read".into())
            });
        }
    }
}

/// `Ok(None)` when the leader moved or could not be reached (reads can be retried).
async fn ask_leader(router: &Router, addr: &str, deadline: Instant) -> Result<Option<u64>> {
    let left = deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(10), ASK_TIMEOUT);
    match router.mux.call(addr, Kind::ReadIndex, encode(&())?, left).await {
        Ok(reply) => match decode::<Result<u64>>(&reply)? {
            Ok(i) => Ok(Some(i)),
            Err(StoreError::NotLeader { .. }) | Err(StoreError::NoLeader) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => {
            tracing::debug!(error = %e, "read index from leader failed, retrying");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Floor;

    #[test]
    fn a_term_first_read_pins_the_last_log_index() {
        let mut f = Floor::default();
        // Restored leader: openraft says 100, the log holds up to 120.
        assert_eq!(f.apply(4, 120, 100), 120);
        // Later reads of the same term keep the floor but follow openraft above it.
        assert_eq!(f.apply(4, 150, 110), 120);
        assert_eq!(f.apply(4, 150, 140), 140);
        // A new term pins anew.
        assert_eq!(f.apply(5, 160, 161), 161);
        assert_eq!(f.apply(5, 170, 150), 160);
    }
}
