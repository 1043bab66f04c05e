//! What each master says of itself over its plaintext etcd endpoint
//! (`Maintenance.Status`): member ID, leader, term, commit and applied index, revision.

use std::net::IpAddr;
use std::time::Duration;

use keelson_store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_store::pb::etcdserverpb::StatusRequest;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::ClusterError;

/// How long a master has to answer `Status`.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// One master, as `keelson cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterStatus {
    pub name: String,
    pub ip: IpAddr,
    /// The recorded PID.
    pub pid: Option<u32>,
    /// Its process is alive (`false`: exited or killed).
    pub running: bool,
    /// Its process is SIGSTOPped.
    pub paused: bool,
    /// It answered `Status` within [`STATUS_TIMEOUT`]; the fields below are 0 when not.
    pub up: bool,
    pub member_id: u64,
    /// The leader's member ID as this master knows it (`None`: no leader known).
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    /// Why it is not up (the gRPC error), if it isn't.
    pub error: Option<String>,
}

impl MasterStatus {
    /// A master that did not answer.
    pub fn down(name: String, ip: IpAddr, pid: Option<u32>, running: bool, paused: bool, error: String) -> Self {
        MasterStatus {
            name,
            ip,
            pid,
            running,
            paused,
            up: false,
            member_id: 0,
            leader: None,
            is_leader: false,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            revision: 0,
            error: Some(error),
        }
    }
}

/// A channel to an etcd endpoint (`http://IP:PORT`), connected on first use (at most 1 s).
pub fn channel(endpoint: &str) -> Result<Channel, ClusterError> {
    Ok(Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| ClusterError::Spec(format!("{endpoint} is not a URL: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Ask `endpoint` for its status; fills everything but the process fields.
pub async fn query(endpoint: &str, mut base: MasterStatus) -> MasterStatus {
    let res = async {
        let mut client = MaintenanceClient::new(channel(endpoint).map_err(|e| e.to_string())?);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(STATUS_TIMEOUT);
        let r = tokio::time::timeout(STATUS_TIMEOUT + Duration::from_millis(200), client.status(req))
            .await
            .map_err(|_| format!("no answer within {STATUS_TIMEOUT:?}"))?
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok::<_, String>(r.into_inner())
    }
    .await;
    match res {
        Ok(s) => {
            let header = s.header.unwrap_or_default();
            base.up = true;
            base.member_id = header.member_id;
            base.leader = Some(s.leader).filter(|l| *l != 0);
            base.is_leader = s.leader != 0 && s.leader == header.member_id;
            base.term = s.raft_term;
            base.commit_index = s.raft_index;
            base.applied_index = s.raft_applied_index;
            base.revision = header.revision;
            base.error = None;
        }
        Err(e) => {
            base.up = false;
            base.error = Some(e);
        }
    }
    base
}

/// The leader among `statuses`: the master that says it leads with the highest term,
/// whose leadership a majority of the masters that answered agree on (they name it as
/// their leader). Returns its index.
pub fn leader_of(statuses: &[MasterStatus]) -> Option<usize> {
    let answering = statuses.iter().filter(|s| s.up).count();
    let (i, l) = statuses.iter().enumerate().filter(|(_, s)| s.up && s.is_leader).max_by_key(|(_, s)| s.term)?;
    let agree = statuses.iter().filter(|s| s.up && s.leader == Some(l.member_id)).count();
    (agree * 2 > answering).then_some(i)
}

/// A table of `statuses` for people.
pub fn table(statuses: &[MasterStatus]) -> String {
    let mut rows = vec![["NAME", "ADDRESS", "PID", "UP", "ID", "LEADER", "TERM", "COMMIT", "APPLIED", "REVISION"]
        .map(String::from)
        .to_vec()];
    for s in statuses {
        let pid = match (s.pid, s.running) {
            (Some(p), true) => p.to_string(),
            (Some(p), false) => format!("{p} (exited)"),
            (None, _) => "-".into(),
        };
        let up = if s.up {
            "yes"
        } else if s.paused {
            "paused"
        } else if s.running {
            "no answer"
        } else {
            "down"
        };
        let num = |n: u64| if s.up { n.to_string() } else { "-".into() };
        rows.push(vec![
            s.name.clone(),
            s.ip.to_string(),
            pid,
            up.into(),
            if s.up { format!("{:016x}", s.member_id) } else { "-".into() },
            if s.up { (if s.is_leader { "yes" } else { "no" }).into() } else { "-".into() },
            num(s.term),
            num(s.commit_index),
            num(s.applied_index),
            if s.up { s.revision.to_string() } else { "-".into() },
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, leader: u64, term: u64) -> MasterStatus {
        let mut s =
            MasterStatus::down(format!("m{id}"), "10.0.0.1".parse().unwrap(), Some(1), true, false, String::new());
        s.up = true;
        s.error = None;
        s.member_id = id;
        s.leader = Some(leader).filter(|l| *l != 0);
        s.is_leader = leader == id;
        s.term = term;
        s
    }

    #[test]
    fn leader_needs_a_majority_of_the_answering() {
        assert_eq!(leader_of(&[st(1, 2, 3), st(2, 2, 3), st(3, 2, 3)]), Some(1));
        // An old leader cut off still says it leads, at a lower term.
        assert_eq!(leader_of(&[st(1, 1, 2), st(2, 3, 4), st(3, 3, 4)]), Some(2));
        // Nobody agrees yet.
        assert_eq!(leader_of(&[st(1, 1, 5), st(2, 0, 5), st(3, 0, 5)]), None);
        // One master down: the two answering agree.
        let mut down = st(3, 0, 0);
        down.up = false;
        assert_eq!(leader_of(&[st(1, 1, 5), st(2, 1, 5), down]), Some(0));
        assert_eq!(leader_of(&[]), None);
        let t = table(&[st(1, 1, 5), st(2, 1, 5)]);
        assert!(t.starts_with("NAME"), "{t}");
        assert_eq!(t.lines().count(), 3);
    }
}
