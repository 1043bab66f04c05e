//! Group commit. Client commands queue here; one task drains the queue into batches
//! (up to a command and byte budget) and proposes each batch as a single Raft entry,
//! with a few batches in flight. On a follower the batch is forwarded to the leader.
//! A batch is retried only when it is known not to have been appended (the receiver
//! was not leader, or the connection was never made); otherwise the outcome is
//! reported as unknown, never silently applied twice.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, StoreError};
use crate::router::{Route, Router};
use crate::types::{Command, CommandResult, Op, Request};
use crate::wire::ProposeReply;

struct Pending {
    req: Request,
    size: usize,
    tx: oneshot::Sender<Result<CommandResult>>,
}

/// Handle to the group-commit queue.
#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::Sender<Pending>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_commands: usize,
    pub max_bytes: usize,
    pub max_inflight: usize,
}

fn approx_size(req: &Request) -> usize {
    match &req.command {
        Command::Txn(t) => {
            t.success
                .iter()
                .chain(t.failure.iter())
                .map(|op| match op {
                    Op::Put(p) => p.key.len() + p.value.len() + 16,
                    Op::Delete(d) => d.range.key.len() + d.range.range_end.len() + 16,
                    Op::Range(r) => r.range.key.len() + r.range.range_end.len() + 16,
                })
                .sum::<usize>()
                + t.compares.len() * 32
        }
        _ => 32,
    }
}

impl Proposer {
    pub fn start(router: Router, limits: BatchLimits, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tokio::spawn(run(router, limits, rx, stop));
        Proposer { tx }
    }

    /// Propose one command and wait for its result.
    pub async fn propose(&self, req: Request) -> Result<CommandResult> {
        let (tx, rx) = oneshot::channel();
        let size = approx_size(&req);
        self.tx.send(Pending { req, size, tx }).await.map_err(|_| StoreError::Shutdown)?;
        rx.await.map_err(|_| StoreError::Shutdown)?
    }
}

async fn run(router: Router, limits: BatchLimits, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = stop.cancelled() => return,
        };
        let permit = tokio::select! {
            p = inflight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        // Drain what queued up while we waited for a slot: that is the group commit.
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < limits.max_commands && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let router = router.clone();
        tokio::spawn(async move {
            submit(&router, batch).await;
            drop(permit);
        });
    }
}

async fn submit(router: &Router, batch: Vec<Pending>) {
    let (reqs, txs): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.req, p.tx)).unzip();
    let n = reqs.len();
    let outcome = write(router, reqs).await;
    match outcome {
        Ok(results) if results.len() == n => {
            for (tx, r) in txs.into_iter().zip(results) {
                let _ = tx.send(match r {
                    CommandResult::Failed(e) => Err(e),
                    ok => Ok(ok),
                });
            }
        }
        Ok(results) => {
            let e = StoreError::Raft(format!("{} results for {n} commands", results.len()));
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Get the batch committed: locally when leading, else through the leader.
async fn write(router: &Router, reqs: Vec<crate::types::Request>) -> Result<Vec<CommandResult>> {
    let deadline = Instant::now() + router.timeout;
    loop {
        match router.route() {
            Route::Local => {
                if let Some((results, _)) = router.write_local(reqs.clone()).await? {
                    return Ok(results);
                }
            }
            Route::Remote { addr, .. } => match router.write_remote(&addr, &reqs, deadline).await? {
                ProposeReply::Applied { results, log_index } => {
                    // Like etcd, answer once this master has applied the write too, so
                    // a serializable read here sees it.
                    let _ = router.wait_applied(log_index, deadline, "forwarded write").await;
                    return Ok(results);
                }
                ProposeReply::NotLeader { .. } => {}
                ProposeReply::Failed(e) => return Err(e),
            },
            Route::Unknown => {}
        }
        if !router.wait_for_change(deadline).await {
            return Err(if router.leader_id().is_none() {
                StoreError::NoLeader
            } else {
                StoreError::Timeout("waiting for a leader to accept the write".into())
            });
        }
    }
}
