//! Stand for election at once when a candidate is refused for having a shorter log.
//!
//! openraft 0.9 makes a follower wait its leader lease (the election timeout's maximum)
//! plus its own election timeout after the last heartbeat before it campaigns, and a
//! candidate that learns of a longer log waits twice the maximum more. When the leader
//! dies and the follower with the *shorter* log times out first, the follower with the
//! longer log refuses it — and then sits out its own full wait, often while the
//! candidate times out and is refused again: seen in `keelson chaos run` as leader kills
//! taking 3 s instead of 1. Here the refuser campaigns right away instead, when it too has
//! heard nothing from a leader for at least the minimum election timeout (so a healthy
//! leader is not disrupted by one partitioned candidate). Campaigning is always safe in
//! Raft; the refuser holds a log at least as long as the candidate's, so the candidate's
//! own vote goes to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{Raft, ServerState};
use tokio::time::Instant;

use crate::types::{NodeId, TypeConfig};

/// When this master last heard from a leader, and the last term it stood in this way.
pub(crate) struct Standby {
    heard: Mutex<Instant>,
    stood_for: AtomicU64,
    quiet: Duration,
}

impl Standby {
    /// `quiet`: how long without a leader's append-entries before standing.
    pub fn new(quiet: Duration) -> Standby {
        Standby { heard: Mutex::new(Instant::now()), stood_for: AtomicU64::new(0), quiet }
    }

    /// An append-entries (or heartbeat) arrived from a leader.
    pub fn heard_leader(&self) {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// After answering `req` with `resp`: stand if the refusal was for the candidate's
    /// shorter log and no leader has been heard from lately. Returns whether it stood.
    pub async fn after_vote(
        &self,
        raft: &Raft<TypeConfig>,
        req: &VoteRequest<NodeId>,
        resp: &VoteResponse<NodeId>,
    ) -> bool {
        if !should_stand(req, resp, self.silent_for(), self.quiet) {
            return false;
        }
        if raft.metrics().borrow().state == ServerState::Leader {
            return false;
        }
        // Once per candidate term: a candidate retrying the same term is not news.
        let term = req.vote.leader_id.term;
        if self.stood_for.fetch_max(term, Ordering::Relaxed) >= term {
            return false;
        }
        tracing::info!(
            candidate = req.vote.leader_id.node_id,
            term,
            silent_ms = self.silent_for().as_millis() as u64,
            "refused a candidate with a shorter log and no leader heard lately: standing for election now"
        );
        tokio::spawn(stand(raft.clone(), term, self.quiet));
        true
    }
}

/// Campaign in a term above the refused candidate's `term`. openraft campaigns in its own
/// term + 1, and the refusal (by log) did not move our term, so the first try may land
/// in the candidate's own term, which it has voted itself; its answer moves our term up,
/// and the next try is above it. A few tries, `quiet / 4` apart, until a leader is known
/// or an election above `term` is under way (ours, or another's we voted for).
async fn stand(raft: Raft<TypeConfig>, term: u64, quiet: Duration) {
    for _ in 0..3 {
        let (settled, above) = {
            let m = raft.metrics();
            let m = m.borrow();
            let settled = m.state == ServerState::Leader || (m.current_leader.is_some() && m.vote.is_committed());
            (settled, m.vote.leader_id.term > term)
        };
        if settled {
            return;
        }
        if !above {
            if let Err(e) = raft.trigger().elect().await {
                tracing::debug!(error = %e, "could not stand for election");
                return;
            }
        }
        tokio::time::sleep(quiet / 4).await;
    }
}

/// The pure rule: refused, our log longer than the candidate's, no leader for `quiet`.
pub(crate) fn should_stand(
    req: &VoteRequest<NodeId>,
    resp: &VoteResponse<NodeId>,
    silent: Duration,
    quiet: Duration,
) -> bool {
    !resp.vote_granted && resp.last_log_id > req.last_log_id && silent >= quiet
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn req(last: Option<LogId<NodeId>>) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(16, 3), last)
    }

    fn resp(granted: bool, last: Option<LogId<NodeId>>) -> VoteResponse<NodeId> {
        VoteResponse::new(Vote::new_committed(15, 1), last, granted)
    }

    #[test]
    fn stands_only_for_a_shorter_log_after_silence() {
        let quiet = Duration::from_millis(300);
        let long = Duration::from_millis(900);
        // Refused for a shorter log, leader silent: stand.
        assert!(should_stand(&req(log(15, 3496)), &resp(false, log(15, 3499)), long, quiet));
        // Leader heard lately: a partitioned candidate must not disrupt it.
        assert!(!should_stand(&req(log(15, 3496)), &resp(false, log(15, 3499)), Duration::from_millis(50), quiet));
        // Granted, or refused for another reason (the lease) with an equal log: no.
        assert!(!should_stand(&req(log(15, 3499)), &resp(true, log(15, 3499)), long, quiet));
        assert!(!should_stand(&req(log(15, 3499)), &resp(false, log(15, 3499)), long, quiet));
        // A longer log of a later term counts too.
        assert!(should_stand(&req(log(14, 4000)), &resp(false, log(15, 10)), long, quiet));
    }

    #[tokio::test]
    async fn silence_is_measured_from_the_last_append() {
        let s = Standby::new(Duration::from_millis(20));
        assert!(s.silent_for() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(s.silent_for() >= Duration::from_millis(20));
        s.heard_leader();
        assert!(s.silent_for() < Duration::from_millis(500));
    }
}
