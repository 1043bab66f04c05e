//! A membership change under traffic: remove a master from the cluster, wipe it, add it
//! back as a new member with the same peer address and start it empty — it joins as a
//! learner, catches up (log or snapshot) and becomes a voter again.

use std::time::{Duration, Instant};

use keelson_store::pb::etcdserverpb::cluster_client::ClusterClient;
use keelson_store::pb::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberRemoveRequest};

use super::FaultError;
use crate::cluster::Cluster;

/// How long each membership call may keep being retried (leaders change meanwhile).
const RETRY_FOR: Duration = Duration::from_secs(20);
/// How long a re-added master may take to catch up and become a voter.
const PROMOTE_WITHIN: Duration = Duration::from_secs(30);

fn failed(what: &str, last: String) -> FaultError {
    FaultError::Membership(format!("{what} did not succeed within {RETRY_FOR:?}: {last}"))
}

/// The member id of `target` (by peer address), asked of another master.
async fn member_id(cluster: &Cluster, target: usize, peer: &str) -> Result<u64, FaultError> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut last = String::new();
    while Instant::now() < deadline {
        for i in (0..cluster.len()).filter(|&i| i != target) {
            let mut c = ClusterClient::new(cluster.etcd_channel(i).await?);
            match tokio::time::timeout(Duration::from_secs(2), c.member_list(MemberListRequest::default())).await {
                Ok(Ok(r)) => {
                    let members = r.into_inner().members;
                    if let Some(m) = members.iter().find(|m| m.peer_ur_ls.iter().any(|u| u.ends_with(peer))) {
                        return Ok(m.id);
                    }
                    last = format!("no member with peer address {peer} in {members:?}");
                }
                Ok(Err(s)) => last = s.message().to_string(),
                Err(_) => last = "no answer within 2 s".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(failed("finding the member", last))
}

pub async fn remove_and_readd(cluster: &mut Cluster, target: usize) -> Result<String, FaultError> {
    let peer = cluster.peer_addr(target);
    let old = member_id(cluster, target, &peer).await?;
    let deadline = Instant::now() + RETRY_FOR;
    let mut last = String::new();
    let mut removed = false;
    'remove: while Instant::now() < deadline {
        for i in (0..cluster.len()).filter(|&i| i != target) {
            let mut c = ClusterClient::new(cluster.etcd_channel(i).await?);
            let req = MemberRemoveRequest { id: old };
            match tokio::time::timeout(Duration::from_secs(3), c.member_remove(req)).await {
                Ok(Ok(_)) => {
                    removed = true;
                    break 'remove;
                }
                Ok(Err(s)) => last = s.message().to_string(),
                Err(_) => last = "no answer within 3 s".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !removed {
        return Err(failed("MemberRemove", last));
    }
    tracing::info!(master = cluster.name(target), member = format_args!("{old:x}"), "fault: member removed");
    if cluster.is_running(target) {
        cluster.kill(target)?;
    }
    let deadline = Instant::now() + RETRY_FOR;
    let mut added = None;
    'add: while Instant::now() < deadline {
        for i in (0..cluster.len()).filter(|&i| i != target) {
            let mut c = ClusterClient::new(cluster.etcd_channel(i).await?);
            let req = MemberAddRequest { peer_ur_ls: vec![format!("http://{peer}")], is_learner: false };
            match tokio::time::timeout(Duration::from_secs(3), c.member_add(req)).await {
                Ok(Ok(r)) => {
                    added = r.into_inner().member.map(|m| m.id);
                    break 'add;
                }
                Ok(Err(s)) => last = s.message().to_string(),
                Err(_) => last = "no answer within 3 s".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(new) = added else { return Err(failed("MemberAdd", last)) };
    cluster.rejoin(target)?;
    // Healed only once the new member is a voter again (it joins as a learner and is
    // promoted when caught up): otherwise the next removal could leave too few voters.
    let deadline = Instant::now() + PROMOTE_WITHIN;
    let mut voter = false;
    while !voter && Instant::now() < deadline {
        for i in 0..cluster.len() {
            let mut c = ClusterClient::new(cluster.etcd_channel(i).await?);
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), c.member_list(MemberListRequest::default())).await
            {
                let members = r.into_inner().members;
                voter = members.iter().any(|m| m.id == new && !m.is_learner);
                last = format!(
                    "members {:?}",
                    members.iter().map(|m| (format!("{:x}", m.id), m.is_learner)).collect::<Vec<_>>()
                );
                break;
            }
        }
        if !voter {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !voter {
        return Err(FaultError::Membership(format!(
            "{} re-added as {new:x} was not promoted to voter within {PROMOTE_WITHIN:?}: {last}",
            cluster.name(target)
        )));
    }
    tracing::info!(
        master = cluster.name(target),
        member = format_args!("{new:x}"),
        "fault healed: member re-added, started empty"
    );
    Ok(format!("removed {} (member {old:x}), wiped, re-added as member {new:x}", cluster.name(target)))
}
