//! A restarted master stays out of elections until it has caught up: openraft 0.9 has no
//! pre-vote, so a master restarted a moment before the leader dies runs first (its timer
//! started at boot) with a log that is still behind; the others refuse it, adopt its
//! higher term and restart their own timers, and the failover takes two or three terms
//! instead of one (measured with `keelson bench controller-failover`). Here a master that
//! restarts with history (a committed vote, more than one voter) disables its election
//! timer until one linearizable read succeeds — the leader's commit index applied here —
//! or until `fallback` passes (a whole cluster restarting needs someone to stand). It
//! still grants votes meanwhile; only its own candidacy waits.

use std::time::Duration;

use tokio::time::Instant;

use crate::node::Store;

/// How often the catch-up check is retried.
const RETRY: Duration = Duration::from_millis(50);

/// Hold this master's candidacy until it has caught up with a leader (or `fallback`).
pub(crate) async fn run(store: Store, fallback: Duration) {
    let raft = store.raft_handle();
    let (history, voters) = {
        let m = raft.metrics().borrow().clone();
        (m.vote.is_committed(), m.membership_config.membership().voter_ids().count())
    };
    if !history || voters < 2 {
        return;
    }
    raft.runtime_config().elect(false);
    let started = Instant::now();
    let deadline = started + fallback;
    let stop = store.stopped();
    let caught_up = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(left, store.linearize()) => {
                if let Ok(Ok(())) = r {
                    break true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    };
    raft.runtime_config().elect(true);
    tracing::info!(
        caught_up,
        waited_ms = started.elapsed().as_millis() as u64,
        "standing for election again after the restart"
    );
}
