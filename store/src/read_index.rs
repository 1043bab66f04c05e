//! Linearizable reads, batched like etcd's read loop: every read that arrives before a
//! round starts is served by that round's single leadership confirmation. On a
//! follower the round asks the leader for its read index.

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{decode, encode};
use crate::error::{Result, StoreError};
use crate::mux::Kind;
use crate::router::{Route, Router};

type Waiter = oneshot::Sender<Result<u64>>;

#[derive(Clone)]
pub(crate) struct ReadIndexer {
    tx: mpsc::Sender<Waiter>,
}

impl ReadIndexer {
    pub fn start(router: Router, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tokio::spawn(run(router, rx, stop));
        ReadIndexer { tx }
    }

    /// The log index this master must apply before a linearizable read.
    pub async fn read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| StoreError::Shutdown)?;
        rx.await.map_err(|_| StoreError::Shutdown)?
    }
}

async fn run(router: Router, mut rx: mpsc::Receiver<Waiter>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => return },
            _ = stop.cancelled() => return,
        };
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let res = round(&router).await;
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

/// One confirmation of leadership, here or at the leader.
pub(crate) async fn round(router: &Router) -> Result<u64> {
    let deadline = Instant::now() + router.timeout;
    loop {
        match router.route() {
            Route::Local => match router.raft.get_read_log_id().await {
                Ok((read, _applied)) => return Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {}
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    tracing::debug!(error = %e, "read index: quorum not reached, retrying");
                }
                Err(RaftError::Fatal(_)) => return Err(StoreError::Shutdown),
            },
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
    let left = deadline.saturating_duration_since(Instant::now()).max(std::time::Duration::from_millis(10));
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
