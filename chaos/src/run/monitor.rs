//! Watches who leads: every master's etcd `Maintenance.Status`, polled, each change of
//! (leader, term) recorded on the run's clock. The report derives failover times from it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson_store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_store::pb::etcdserverpb::StatusRequest;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::history::{Clock, Stamp};

/// One observed change of leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LeaderObs {
    pub at: Stamp,
    /// Master index of the leader the highest-term answer names.
    pub leader: Option<usize>,
    pub term: u64,
}

/// What one master says about itself and the cluster.
#[derive(Clone, Copy, Debug)]
pub struct Said {
    pub member_id: u64,
    pub leader: u64,
    pub term: u64,
    pub applied: u64,
    pub revision: i64,
}

pub async fn ask(channel: &tonic::transport::Channel, timeout: Duration) -> Option<Said> {
    let mut c = MaintenanceClient::new(channel.clone());
    let r = tokio::time::timeout(timeout, c.status(StatusRequest {})).await.ok()?.ok()?.into_inner();
    let h = r.header?;
    Some(Said {
        member_id: h.member_id,
        leader: r.leader,
        term: r.raft_term,
        applied: r.raft_applied_index,
        revision: h.revision,
    })
}

/// The leader: of the masters that say they lead, the one with the highest term (a
/// deposed leader that has not heard of the new term yet loses to it). A lone candidate
/// with a higher term and no leader (a restarted or cut-off master campaigning) does not
/// hide the leader. With no claimant: no leader, and the highest term seen.
pub fn leader_of(said: &[Option<Said>]) -> (Option<usize>, u64) {
    let claimant = said
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.filter(|s| s.leader != 0 && s.leader == s.member_id).map(|s| (s.term, i)))
        .max();
    match claimant {
        Some((term, i)) => (Some(i), term),
        None => (None, said.iter().flatten().map(|s| s.term).max().unwrap_or(0)),
    }
}

pub async fn ask_all(channels: &[tonic::transport::Channel], timeout: Duration) -> Vec<Option<Said>> {
    futures::future::join_all(channels.iter().map(|c| ask(c, timeout))).await
}

/// Polls until cancelled; returns the changes seen.
pub async fn run(
    channels: Vec<tonic::transport::Channel>,
    clock: Clock,
    every: Duration,
    out: Arc<Mutex<Vec<LeaderObs>>>,
    cancel: CancellationToken,
) {
    let mut last: Option<(Option<usize>, u64)> = None;
    loop {
        let said = tokio::select! {
            _ = cancel.cancelled() => return,
            s = ask_all(&channels, every.max(Duration::from_millis(200))) => s,
        };
        let now = leader_of(&said);
        if last != Some(now) {
            last = Some(now);
            if let Ok(mut o) = out.lock() {
                o.push(LeaderObs { at: clock.now(), leader: now.0, term: now.1 });
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(member_id: u64, leader: u64, term: u64) -> Option<Said> {
        Some(Said { member_id, leader, term, applied: 0, revision: 0 })
    }

    #[test]
    fn the_claimant_with_the_highest_term_leads() {
        // m1 (id 10) was deposed and still claims term 3; m3 leads at term 4.
        let (l, t) = leader_of(&[s(10, 10, 3), s(20, 30, 4), s(30, 30, 4)]);
        assert_eq!((l, t), (Some(2), 4));
        // A restarted master campaigning at term 9 does not hide the leader at term 5.
        assert_eq!(leader_of(&[s(10, 0, 9), s(20, 20, 5), s(30, 20, 5)]), (Some(1), 5));
        // The named leader is down: no leader.
        assert_eq!(leader_of(&[None, s(20, 10, 5), s(30, 10, 5)]), (None, 5));
        assert_eq!(leader_of(&[None, None]), (None, 0));
        assert_eq!(leader_of(&[s(10, 0, 2), s(20, 0, 2)]), (None, 2));
    }
}
