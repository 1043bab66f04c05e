//! The master and agent processes: spawned detached (their own process group, output
//! appended to a log file), signalled by PID — but only after `/proc/PID/cmdline` shows
//! the PID is still the process we started (PIDs get reused) — and reaped when they are
//! our children.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::ClusterError;

/// A process of the cluster: the `Child` when this process spawned it (so it can be
/// reaped), else only its PID (loaded from `cluster.json`).
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    child: Option<Child>,
    /// An argument its command line must contain to still be ours (a master's data
    /// directory, the agent's kubeconfig).
    pub marker: PathBuf,
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// SIGSTOPped (or traced).
    Stopped,
    /// Exited (a zombie not yet reaped, or gone).
    Gone,
}

impl Proc {
    /// Spawn `cmd` in its own process group, stdin closed, stdout and stderr appended to
    /// `log` after a line saying what starts.
    pub fn spawn(mut cmd: Command, log: &Path, what: &str, marker: PathBuf) -> Result<Proc, ClusterError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ClusterError::io(format!("cannot open {}", log.display()), e))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let _ = writeln!(f, "--- keelson cluster: starting {what} (unix time {now}): {cmd:?}");
        let err = f.try_clone().map_err(|e| ClusterError::io(format!("cannot open {}", log.display()), e))?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(|e| ClusterError::Spawn(format!("cannot start {what} ({cmd:?}): {e}")))?;
        Ok(Proc { pid: child.id(), child: Some(child), marker })
    }

    /// A process we did not spawn (from `cluster.json`).
    pub fn adopt(pid: u32, marker: PathBuf) -> Proc {
        Proc { pid, child: None, marker }
    }

    pub fn is_child(&self) -> bool {
        self.child.is_some()
    }

    /// Is the PID still the process we started (running or stopped)?
    pub fn state(&self) -> ProcState {
        // Our own child's PID can't be reused before we reap it.
        if self.child.is_none() && !cmdline_matches(self.pid, &self.marker) {
            return ProcState::Gone;
        }
        stat_state(self.pid)
    }

    pub fn is_running(&self) -> bool {
        self.state() != ProcState::Gone
    }

    /// Send `sig` if the process is still ours and alive.
    pub fn signal(&self, sig: Signal) -> Result<(), ClusterError> {
        if self.state() == ProcState::Gone {
            return Err(ClusterError::NotRunning(format!("process {} has exited", self.pid)));
        }
        send(self.pid, sig)
    }

    /// Reap the child if it exited (no-op for adopted processes); returns whether it did.
    pub fn try_reap(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGCONT (a stopped process can't act on SIGTERM), then `sig`.
    fn cont_then(&self, sig: Signal) {
        if self.state() != ProcState::Gone {
            let _ = send(self.pid, Signal::CONT);
            let _ = send(self.pid, sig);
        }
    }

    /// SIGCONT then SIGTERM, not waiting.
    pub fn term(&self) {
        self.cont_then(Signal::TERM);
    }

    /// SIGKILL, not waiting.
    pub fn kill_nowait(&self) {
        self.cont_then(Signal::KILL);
    }

    /// Has it exited (reaping it when ours)?
    pub fn gone_now(&mut self) -> bool {
        if self.child.is_some() {
            self.try_reap().is_some()
        } else {
            self.state() == ProcState::Gone
        }
    }

    /// SIGKILL and wait until it is gone (reaped when ours; at most `wait` otherwise).
    pub fn kill(&mut self, wait: Duration) -> Result<(), ClusterError> {
        if let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                // SIGKILL ends a stopped process too; SIGCONT first all the same, so nothing
                // (a tracer, a handler) sees it stopped.
                let _ = send(self.pid, Signal::CONT);
                let _ = c.kill();
            }
            let _ = c.wait();
            return Ok(());
        }
        self.cont_then(Signal::KILL);
        self.wait_gone(wait)
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) -> Result<(), ClusterError> {
        self.cont_then(Signal::TERM);
        if self.wait_gone(grace).is_ok() {
            return Ok(());
        }
        self.kill(Duration::from_secs(5))
    }

    /// Wait until the process has exited (reaping it when ours).
    pub fn wait_gone(&mut self, wait: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + wait;
        loop {
            if self.child.is_some() {
                if self.try_reap().is_some() {
                    return Ok(());
                }
            } else if self.state() == ProcState::Gone {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotRunning(format!("process {} did not exit within {wait:?}", self.pid)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn send(pid: u32, sig: Signal) -> Result<(), ClusterError> {
    let p = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| ClusterError::NotRunning(format!("bad pid {pid}")))?;
    rustix::process::kill_process(p, sig)
        .map_err(|e| ClusterError::io(format!("cannot signal process {pid}"), std::io::Error::from(e)))
}

/// The state letter of `/proc/PID/stat` (after the parenthesised command name).
pub fn stat_state(pid: u32) -> ProcState {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return ProcState::Gone };
    match text.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) {
        Some("Z" | "X" | "x") | None => ProcState::Gone,
        Some("T" | "t") => ProcState::Stopped,
        Some(_) => ProcState::Running,
    }
}

/// The arguments of process `pid` (empty when it is gone or unreadable).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default()
}

/// Is `pid` a keelson process (or the `nsenter` about to become one) with `marker` among
/// its arguments?
pub fn cmdline_matches(pid: u32, marker: &Path) -> bool {
    args_match(&cmdline(pid), marker)
}

/// [`cmdline_matches`] on given arguments.
pub fn args_match(args: &[String], marker: &Path) -> bool {
    let Some(argv0) = args.first() else { return false };
    let prog = Path::new(argv0).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let ours = prog.contains("keelson") || prog == "nsenter";
    let marker = marker.to_string_lossy();
    ours && args.iter().skip(1).any(|a| *a == marker || a.strip_suffix('/') == Some(&marker))
}

/// The last `lines` lines of `path` (at most its last 256 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_its_own_processes() {
        let d = Path::new("/tmp/c/m1");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(args_match(&args(&["/usr/bin/keelson", "server", "--data-dir", "/tmp/c/m1"]), d));
        assert!(args_match(
            &args(&["nsenter", "--net=/run/netns/x", "--", "/b/keelson", "--data-dir", "/tmp/c/m1"]),
            d
        ));
        assert!(!args_match(&args(&["/usr/bin/keelson", "server", "--data-dir", "/tmp/c/m10"]), d));
        assert!(!args_match(&args(&["/usr/bin/bash", "/tmp/c/m1"]), d));
        assert!(!args_match(&[], d));
    }

    #[test]
    fn stat_of_self_and_of_nothing() {
        assert_eq!(stat_state(std::process::id()), ProcState::Running);
        assert_eq!(stat_state(u32::MAX - 1), ProcState::Gone);
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&p, 10), "a\nb\nc");
        assert_eq!(tail(&d.path().join("none"), 3), "");
    }
}
