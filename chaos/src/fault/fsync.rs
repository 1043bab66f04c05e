//! Failed fsync for one master under libfiu (Debian's fiu-utils): restart it with
//! libfiu's preload libraries (what `fiu-run -x` sets up: `LD_PRELOAD` of
//! `fiu_run_preload.so` and `fiu_posix_preload.so`, remote control over named pipes at
//! `D/mI.fiu-PID.{in,out}`), then, once it has caught up under traffic, make
//! `fsync`/`fdatasync` (`posix/io/sync/*`) and `sync_file_range`
//! (`linux/io/sync_file_range`) fail with EIO at a random probability (`fiu-ctrl`). Hold
//! a few election timeouts, disable the failure points and watch whether the master
//! recovers by itself, then heal by restarting it without libfiu.
//!
//! The environment is set directly rather than through `fiu-run`, which is a bash script
//! that exports the same variables and `exec`s: either way the PID stays the keelson
//! process (through `nsenter`'s exec in netns mode), whose command line names its data
//! dir as the PID-ownership check wants.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::disk::{
    exit_note, log_len, log_since, pick_target, scan_log, state_of, stop, timeouts, watch_exit, GAVE_UP,
};
use super::FaultError;
use crate::cluster::Cluster;

/// Where Debian's libfiu preload libraries live (`fiu-run -l` default).
pub const FIU_LIB_DIR: &str = "/usr/lib/fiu";
pub const FIU_RUN: &str = "/usr/bin/fiu-run";
pub const FIU_CTRL: &str = "/usr/bin/fiu-ctrl";
/// EIO, as `failinfo` (libfiu's POSIX wrappers set errno to it).
const EIO: i32 = 5;
/// What a failed sync reads like in the log (strerror(EIO)).
pub const IO_ERROR: [&str; 1] = ["Input/output error"];

pub fn available() -> Result<(), FaultError> {
    let missing: Vec<String> = [
        PathBuf::from(FIU_RUN),
        PathBuf::from(FIU_CTRL),
        Path::new(FIU_LIB_DIR).join("fiu_run_preload.so"),
        Path::new(FIU_LIB_DIR).join("fiu_posix_preload.so"),
    ]
    .into_iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FaultError::Unavailable(format!(
            "the fsync fault needs libfiu (apt install fiu-utils): {} missing",
            missing.join(", ")
        )))
    }
}

/// The environment `fiu-run -x -f FIFO_PREFIX` gives a program, nothing enabled yet.
pub fn preload_env(fifo_prefix: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), format!("{FIU_LIB_DIR}/fiu_run_preload.so {FIU_LIB_DIR}/fiu_posix_preload.so")),
        ("FIU_CTRL_FIFO".into(), fifo_prefix.display().to_string()),
        ("FIU_ENABLE".into(), String::new()),
    ]
}

/// The failure points of fsync, fdatasync and sync_file_range.
const SYNC_POINTS: [&str; 2] = ["posix/io/sync/*", "linux/io/sync_file_range"];

/// `fiu-ctrl` commands making every sync fail with EIO with probability `percent`/100.
pub fn enable_commands(percent: u32) -> Vec<String> {
    let p = percent.min(100);
    let prob = if p == 100 { "1".to_string() } else { format!("0.{p:02}") };
    SYNC_POINTS.iter().map(|n| format!("enable_random name={n},probability={prob},failinfo={EIO}")).collect()
}

pub fn disable_commands() -> Vec<String> {
    SYNC_POINTS.iter().map(|n| format!("disable name={n}")).collect()
}

/// `fiu-ctrl -f PREFIX -c CMD… PID`.
pub fn fiu_ctrl_args(fifo_prefix: &Path, commands: &[String], pid: u32) -> Vec<String> {
    let mut args = vec!["-f".to_string(), fifo_prefix.display().to_string()];
    for c in commands {
        args.push("-c".into());
        args.push(c.clone());
    }
    args.push(pid.to_string());
    args
}

/// `fiu-ctrl` exits 0 whatever happens; its output says when a command failed.
pub fn check_fiu_ctrl(status_ok: bool, output: &str) -> Result<(), String> {
    let bad = output.lines().find(|l| l.contains("returned error") || l.starts_with("Error"));
    match (status_ok, bad) {
        (true, None) => Ok(()),
        (_, Some(l)) => Err(l.trim().to_string()),
        (false, None) => Err(format!("fiu-ctrl failed (or timed out): {}", output.trim())),
    }
}

/// Run `fiu-ctrl` on `pid` (at most 5 s).
async fn fiu_ctrl(fifo_prefix: &Path, commands: Vec<String>, pid: u32) -> Result<(), FaultError> {
    let args = fiu_ctrl_args(fifo_prefix, &commands, pid);
    let out = tokio::task::spawn_blocking(move || Command::new("timeout").arg("5").arg(FIU_CTRL).args(&args).output())
        .await
        .map_err(|e| FaultError::Unavailable(format!("fiu-ctrl task: {e}")))?
        .map_err(|e| FaultError::Unavailable(format!("cannot run {FIU_CTRL}: {e}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    check_fiu_ctrl(out.status.success(), &text)
        .map_err(|e| FaultError::Unavailable(format!("fiu-ctrl {commands:?} on pid {pid}: {e}")))
}

struct Plan {
    percent: u32,
    warm: Duration,
    hold: Duration,
    observe: Duration,
    fifo: PathBuf,
}

pub async fn fail(
    cluster: &mut Cluster,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    available()?;
    let t = pick_target(cluster.len(), leader, rng).ok_or_else(|| FaultError::Unavailable("no masters".into()))?;
    let plan = Plan {
        percent: rng.gen_range(5..=50),
        warm: timeouts(rng, election_ms, 2, 4, 500),
        hold: timeouts(rng, election_ms, 3, 8, 1000),
        observe: timeouts(rng, election_ms, 3, 3, 1500),
        fifo: cluster.dir().join(format!("{}.fiu", cluster.name(t))),
    };
    let name = cluster.name(t).to_string();
    let role = if leader == Some(t) { "leader" } else { "follower" };

    stop(cluster, t)?;
    let log_from = log_len(cluster, t);
    let outcome = match cluster.start_with_env(t, &preload_env(&plan.fifo)) {
        Ok(()) => run_failing(cluster, t, &plan, log_from).await,
        Err(e) => Err(e.into()),
    };
    let pid = cluster.pid(t);
    // Heal on every path: restart without libfiu.
    let healed = stop(cluster, t).and_then(|()| Ok(cluster.start(t)?));
    if let Some(pid) = pid {
        for end in ["in", "out"] {
            let _ = std::fs::remove_file(format!("{}-{pid}.{end}", plan.fifo.display()));
        }
    }
    match &healed {
        Err(e) => tracing::error!(master = %name, error = %e, "fsync heal failed"),
        Ok(()) => tracing::info!(master = %name, pid = ?cluster.pid(t), "fault healed: restarted without libfiu"),
    }
    let detail = outcome?;
    healed?;
    let log = log_since(cluster, t, log_from);
    Ok((
        vec![t],
        format!(
            "{name} ({role}) under libfiu; {detail}; master log: {}; {}; then restarted without libfiu",
            scan_log(&log, &IO_ERROR).describe("I/O-error"),
            scan_log(&log, &GAVE_UP).describe("fatal/raft-stopped/panic"),
        ),
    ))
}

async fn run_failing(cluster: &mut Cluster, t: usize, plan: &Plan, log_from: u64) -> Result<String, FaultError> {
    let name = cluster.name(t).to_string();
    let pid = cluster.pid(t).ok_or_else(|| FaultError::Unavailable(format!("{name} did not start")))?;
    tracing::info!(master = %name, pid, "fault: restarted under libfiu");
    tokio::time::sleep(plan.warm).await;
    let before = state_of(cluster, t).await;
    if !cluster.is_running(t) {
        return Err(FaultError::Unavailable(format!(
            "{name} exited under libfiu before any failure point was enabled; its log:\n{}",
            cluster.log_tail(t, 20)
        )));
    }
    fiu_ctrl(&plan.fifo, enable_commands(plan.percent), pid).await?;
    tracing::info!(master = %name, pid, percent = plan.percent, hold_ms = plan.hold.as_millis() as u64, "fault: fsync failing");
    let exited = watch_exit(cluster, t, plan.hold).await;
    let during = state_of(cluster, t).await;
    let io_errors = scan_log(&log_since(cluster, t, log_from), &IO_ERROR).lines;
    // The process may have exited; then there is nothing to disable.
    let disabled = match fiu_ctrl(&plan.fifo, disable_commands(), pid).await {
        Ok(()) => {
            tracing::info!(master = %name, pid, "fault: fsync failure points disabled");
            tokio::time::sleep(plan.observe).await;
            format!("{} ms after disabling them: {}", plan.observe.as_millis(), state_of(cluster, t).await)
        }
        Err(_) if !cluster.is_running(t) => "it had exited".to_string(),
        Err(e) => return Err(e),
    };
    let fsync_failed = if io_errors > 0 {
        format!("fsync failed: {io_errors} I/O-error log lines")
    } else {
        "no I/O error in the log (no sync hit the failure points?)".to_string()
    };
    Ok(format!(
        "after {} ms: {before}; fsync/fdatasync/sync_file_range failing with EIO at p={}% for {} ms ({}): {during}, {fsync_failed}; {disabled}",
        plan.warm.as_millis(),
        plan.percent,
        plan.hold.as_millis(),
        exit_note(exited, "it kept running"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_fiu_commands() {
        assert_eq!(
            enable_commands(7),
            vec![
                "enable_random name=posix/io/sync/*,probability=0.07,failinfo=5",
                "enable_random name=linux/io/sync_file_range,probability=0.07,failinfo=5",
            ]
        );
        assert_eq!(enable_commands(50)[0], "enable_random name=posix/io/sync/*,probability=0.50,failinfo=5");
        assert_eq!(enable_commands(100)[0], "enable_random name=posix/io/sync/*,probability=1,failinfo=5");
        assert_eq!(enable_commands(250)[0], "enable_random name=posix/io/sync/*,probability=1,failinfo=5");
        assert_eq!(disable_commands(), vec!["disable name=posix/io/sync/*", "disable name=linux/io/sync_file_range"]);
        assert_eq!(
            fiu_ctrl_args(Path::new("/d/m1.fiu"), &disable_commands(), 42),
            vec![
                "-f",
                "/d/m1.fiu",
                "-c",
                "disable name=posix/io/sync/*",
                "-c",
                "disable name=linux/io/sync_file_range",
                "42"
            ]
        );
    }

    #[test]
    fn preload_env_is_what_fiu_run_sets() {
        let env = preload_env(Path::new("/d/m2.fiu"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LD_PRELOAD"), Some("/usr/lib/fiu/fiu_run_preload.so /usr/lib/fiu/fiu_posix_preload.so"));
        assert_eq!(get("FIU_CTRL_FIFO"), Some("/d/m2.fiu"));
        assert_eq!(get("FIU_ENABLE"), Some(""), "nothing enabled until fiu-ctrl says so");
    }

    #[test]
    fn reads_fiu_ctrl_output() {
        assert!(check_fiu_ctrl(true, "").is_ok());
        assert!(check_fiu_ctrl(true, "/d/m1.fiu-42: Command 'enable x' returned error (-1)\n").is_err());
        assert!(check_fiu_ctrl(true, "Error: unknown pid or named pipe 42, skipping\nNote that…").is_err());
        assert!(check_fiu_ctrl(false, "").is_err());
    }

    /// The real thing, when fiu-utils is installed: `sync` under the preload with every
    /// fsync failing fails; without the failure point it succeeds.
    #[test]
    fn libfiu_makes_fsync_fail() {
        if available().is_err() || !Path::new("/usr/bin/python3").exists() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let script = format!("import os\nfd = os.open('{}', os.O_WRONLY)\nos.fsync(fd)\n", f.display());
        let run = |enable: &str| {
            let mut env = preload_env(&d.path().join("fifo"));
            env.retain(|(k, _)| k != "FIU_CTRL_FIFO");
            Command::new("/usr/bin/python3")
                .args(["-c", &script])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("FIU_ENABLE", enable)
                .output()
                .unwrap()
        };
        assert!(run("").status.success());
        let failed = run(&enable_commands(100)[0]);
        assert!(!failed.status.success());
        assert!(String::from_utf8_lossy(&failed.stderr).contains("Input/output error"));
    }
}
