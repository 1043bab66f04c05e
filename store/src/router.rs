//! Where leader-only work goes: this master when it leads, else the leader it knows of,
//! else wait (bounded) for an election to finish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use tokio::time::Instant;

use crate::codec::{decode, encode};
use crate::error::{Result, StoreError};
use crate::mux::{CallError, Kind, Mux};
use crate::pool::PeerPool;
use crate::sm::SmShared;
use crate::types::{NodeId, Proposal, Request, RequestId, TypeConfig};
use crate::wire::ProposeReply;

/// Who leads right now, from this master's point of view.
pub(crate) enum Route {
    Local,
    Remote { addr: String },
    Unknown,
}

#[derive(Clone)]
pub(crate) struct Router {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    /// Unary calls to peers (lease, membership).
    pub pool: Arc<PeerPool>,
    /// Forwarded writes and read-index requests.
    pub mux: Arc<Mux>,
    pub timeout: Duration,
    /// This master's state machine (forwarded writes wait on its apply).
    pub sm: Arc<SmShared>,
    pub seq: Arc<AtomicU64>,
}

impl Router {
    pub fn route(&self) -> Route {
        let m = self.raft.metrics();
        let m = m.borrow();
        match m.current_leader {
            Some(id) if id == self.id && m.state == ServerState::Leader => Route::Local,
            Some(id) if id != self.id => match m.membership_config.membership().get_node(&id) {
                Some(node) => Route::Remote { addr: node.peer_addr.clone() },
                None => Route::Unknown,
            },
            _ => Route::Unknown,
        }
    }

    /// A cluster-unique id for a command this master forwards.
    pub fn next_request_id(&self) -> RequestId {
        RequestId { node: self.id, seq: self.seq.fetch_add(1, Ordering::Relaxed) }
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Wait until the metrics change (a new leader, say) or a short while passes, but
    /// never past `deadline`. Returns false once the deadline has passed.
    pub async fn wait_for_change(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let mut rx = self.raft.metrics();
        rx.borrow_and_update();
        let step = (deadline - now).min(Duration::from_millis(100));
        let _ = tokio::time::timeout(step, rx.changed()).await;
        true
    }

    /// Append a batch on this master (it must lead). `Ok(None)`: not leader any more.
    pub async fn write_local(&self, requests: Vec<Request>) -> Result<Option<(Vec<crate::types::CommandResult>, u64)>> {
        match self.raft.client_write(Proposal { requests }).await {
            Ok(resp) => Ok(Some((resp.data.results, resp.log_id.index))),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(None),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(StoreError::Raft(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => {
                tracing::error!(error = %e, "raft stopped");
                Err(StoreError::Shutdown)
            }
        }
    }

    /// Send a batch to the leader at `addr`.
    pub async fn write_remote(&self, addr: &str, requests: &[Request], deadline: Instant) -> Result<ProposeReply> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        match self.mux.call(addr, Kind::Propose, encode(&requests)?, left).await {
            Ok(reply) => decode(&reply),
            // Known not to have reached the leader: safe to retry.
            Err(CallError::NotDelivered { .. }) => Ok(ProposeReply::NotLeader { leader: None }),
            Err(e @ CallError::Timeout { .. }) => {
                Err(StoreError::Timeout(format!("waiting for the leader to commit: {e}")))
            }
            Err(e @ CallError::Lost { .. }) => Err(StoreError::Unknown(format!("forwarding to the leader: {e}"))),
        }
    }

    /// Wait (bounded) until this master has applied `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant, what: &str) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left.max(Duration::from_millis(1))))
            .applied_index_at_least(Some(index), what)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => {
                    StoreError::Timeout(format!("{what}: applying index {index} on this master"))
                }
                openraft::metrics::WaitError::ShuttingDown => StoreError::Shutdown,
            })
    }
}
