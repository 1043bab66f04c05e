//! A clock offset: restart a master with its wall clock moved by libfaketime (Debian's
//! `faketime` package), keep it running skewed for a while, then restart it with the
//! true clock. The monotonic clock is left alone (`FAKETIME_DONT_FAKE_MONOTONIC`), as
//! NTP would: Raft's timers run on it, while wall-clock users — timestamps, lease and
//! token expiry — see the skew.

use std::path::Path;
use std::time::Duration;

use super::FaultError;
use crate::cluster::Cluster;

/// Where Debian's libfaketime lives.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

pub fn available() -> bool {
    Path::new(LIBFAKETIME).exists()
}

pub async fn skew(cluster: &mut Cluster, target: usize, offset_s: i64, hold: Duration) -> Result<String, FaultError> {
    if !available() {
        return Err(FaultError::Unavailable(format!("clock fault needs {LIBFAKETIME} (apt install faketime)")));
    }
    let env = vec![
        ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
        ("FAKETIME".to_string(), format!("{offset_s:+}s")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
        ("FAKETIME_DONT_RESET".to_string(), "1".to_string()),
    ];
    cluster.kill(target)?;
    cluster.start_with_env(target, &env)?;
    tracing::info!(master = cluster.name(target), offset_s, "fault: clock offset");
    tokio::time::sleep(hold).await;
    cluster.kill(target)?;
    cluster.start(target)?;
    tracing::info!(master = cluster.name(target), "fault healed: true clock");
    Ok(format!(
        "{} restarted with its clock {offset_s:+} s off for {} ms, then restarted",
        cluster.name(target),
        hold.as_millis()
    ))
}
