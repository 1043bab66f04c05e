//! Group commit. Client commands queue here; one task drains the queue into batches
//! (up to a command and byte budget) and proposes each batch as a single Raft entry,
//! with a few batches in flight. On a follower the batch is forwarded to the leader.
//! A batch is retried only when it is known not to have been appended (the receiver
//! was not leader, or the connection was never made); otherwise the outcome is
//! reported as unknown, never silently applied twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, StoreError};
use crate::metrics::StoreMetrics;
use crate::router::{Route, Router};
use crate::types::{Command, CommandResult, Op, Request, RequestId};
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
    router: Router,
    /// Batches in flight (shared with the batching task).
    inflight: Arc<Semaphore>,
    /// Commands waiting in the queue.
    queued: Arc<AtomicUsize>,
    metrics: StoreMetrics,
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
    pub fn start(router: Router, limits: BatchLimits, stop: CancellationToken, metrics: StoreMetrics) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(router.clone(), limits, rx, inflight.clone(), queued.clone(), stop, metrics.clone()));
        Proposer { tx, router, inflight, queued, metrics }
    }

    /// Propose one command and wait for its result.
    pub async fn propose(&self, req: Request) -> Result<CommandResult> {
        // Nothing queued and a slot free: propose right here, skipping two task hops.
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(permit) = self.inflight.clone().try_acquire_owned() {
                self.metrics.batch_commands.observe(1.0);
                let res = write(&self.router, vec![req]).await;
                drop(permit);
                if res.is_err() {
                    self.metrics.proposal_failures.inc();
                }
                return res.and_then(|mut r| match r.pop() {
                    Some(CommandResult::Failed(e)) => Err(e),
                    Some(ok) if r.is_empty() => Ok(ok),
                    _ => Err(StoreError::Raft("expected exactly one result".into())),
                });
            }
        }
        let (tx, rx) = oneshot::channel();
        let size = approx_size(&req);
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Pending { req, size, tx }).await.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Shutdown);
        }
        rx.await.map_err(|_| StoreError::Shutdown)?
    }
}

async fn run(
    router: Router,
    limits: BatchLimits,
    mut rx: mpsc::Receiver<Pending>,
    inflight: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    stop: CancellationToken,
    metrics: StoreMetrics,
) {
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
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        metrics.batch_commands.observe(batch.len() as f64);
        let router = router.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if !submit(&router, batch).await {
                metrics.proposal_failures.inc();
            }
            drop(permit);
        });
    }
}

/// Propose one batch and answer its commands; `false` when the proposal itself failed.
async fn submit(router: &Router, batch: Vec<Pending>) -> bool {
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
            return false;
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
            return false;
        }
    }
    true
}

/// Forward a batch to the leader and answer it, like etcd, from this master's own apply
/// of the commands (so a read here right after sees them); the leader's reply only
/// matters when it is a refusal. `Ok(None)`: not appended, try again.
async fn write_forwarded(
    router: &Router,
    addr: &str,
    reqs: &[Request],
    deadline: Instant,
) -> Result<Option<Vec<CommandResult>>> {
    let (tagged, ids, local) = tag_and_wait(router, reqs);
    let waiters = &router.sm.waiters;
    tokio::pin!(local);
    let reply = tokio::select! {
        applied = &mut local => return collect_applied(applied).map(Some),
        reply = router.write_remote(addr, &tagged, deadline) => reply,
    };
    match reply {
        Ok(ProposeReply::Applied { results, .. }) => {
            // Committed; answer once it is applied here too (bounded by the deadline).
            match tokio::time::timeout_at(deadline, &mut local).await {
                Ok(applied) => collect_applied(applied).map(Some),
                Err(_) => {
                    waiters.forget(ids);
                    Ok(Some(results))
                }
            }
        }
        Ok(ProposeReply::NotLeader { .. }) => {
            waiters.forget(ids);
            Ok(None)
        }
        Ok(ProposeReply::Failed(e)) | Err(e) => {
            waiters.forget(ids);
            Err(e)
        }
    }
}

/// Propose a batch on this (leading) master and answer it straight from the state
/// machine's apply: openraft would route the reply through its core task, one more
/// wake-up on the write path. openraft's own reply still reports refusals (not leader
/// any more, shutdown). `Ok(None)`: not appended, try again.
async fn write_leading(router: &Router, reqs: &[Request]) -> Result<Option<Vec<CommandResult>>> {
    let (tagged, ids, local) = tag_and_wait(router, reqs);
    tokio::pin!(local);
    let reply = tokio::select! {
        biased;
        applied = &mut local => return collect_applied(applied).map(Some),
        reply = router.write_local(tagged) => reply,
    };
    router.sm.waiters.forget(ids);
    reply.map(|r| r.map(|(results, _)| results))
}

/// Copies of `reqs` tagged with fresh request ids, the ids, and a future of their results
/// as this master's state machine applies them (registered before anything is sent).
fn tag_and_wait(
    router: &Router,
    reqs: &[Request],
) -> (Vec<Request>, Vec<RequestId>, impl std::future::Future<Output = Vec<AppliedResult>>) {
    let tagged: Vec<Request> = reqs
        .iter()
        .cloned()
        .map(|mut r| {
            r.origin = Some(router.next_request_id());
            r
        })
        .collect();
    let ids: Vec<RequestId> = tagged.iter().filter_map(|r| r.origin).collect();
    let local = futures::future::join_all(ids.iter().map(|id| router.sm.waiters.register(*id)));
    (tagged, ids, local)
}

type AppliedResult = std::result::Result<CommandResult, oneshot::error::RecvError>;

fn collect_applied(rs: Vec<AppliedResult>) -> Result<Vec<CommandResult>> {
    rs.into_iter().map(|r| r.map_err(|_| StoreError::Unknown("the local apply was abandoned".into()))).collect()
}

/// Get the batch committed: locally when leading, else through the leader.
async fn write(router: &Router, reqs: Vec<crate::types::Request>) -> Result<Vec<CommandResult>> {
    let deadline = Instant::now() + router.timeout;
    loop {
        match router.route() {
            Route::Local => {
                if let Some(results) = write_leading(router, &reqs).await? {
                    return Ok(results);
                }
            }
            Route::Remote { addr } => {
                if let Some(results) = write_forwarded(router, &addr, &reqs, deadline).await? {
                    return Ok(results);
                }
            }
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
