//! SIGKILL a master, keep it down for a while, start it again on the same data dir.

use std::time::Duration;

use super::FaultError;
use crate::cluster::Cluster;

pub async fn kill_and_restart(cluster: &mut Cluster, target: usize, down_for: Duration) -> Result<String, FaultError> {
    let pid = cluster.pid(target);
    cluster.kill(target)?;
    tracing::info!(master = cluster.name(target), ?pid, down_ms = down_for.as_millis() as u64, "fault: SIGKILL");
    tokio::time::sleep(down_for).await;
    cluster.start(target)?;
    tracing::info!(master = cluster.name(target), pid = ?cluster.pid(target), "fault healed: restarted");
    Ok(format!(
        "SIGKILL {} (pid {}), restarted after {} ms",
        cluster.name(target),
        pid.unwrap_or(0),
        down_for.as_millis()
    ))
}
