//! SIGSTOP a master for longer than the election timeout, then SIGCONT: it wakes up
//! believing it is still the leader, which is what fencing must handle.

use std::time::Duration;

use super::FaultError;
use crate::cluster::Cluster;

pub async fn pause_and_resume(cluster: &Cluster, target: usize, paused_for: Duration) -> Result<String, FaultError> {
    cluster.pause(target)?;
    tracing::info!(master = cluster.name(target), paused_ms = paused_for.as_millis() as u64, "fault: SIGSTOP");
    tokio::time::sleep(paused_for).await;
    cluster.resume(target)?;
    tracing::info!(master = cluster.name(target), "fault healed: SIGCONT");
    Ok(format!("SIGSTOP {} for {} ms, then SIGCONT", cluster.name(target), paused_for.as_millis()))
}
