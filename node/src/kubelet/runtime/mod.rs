//! Containers, through an OCI runtime's command line (`runc` or `crun`): each container
//! runs under its own [`shim`] (started detached, so it outlives a kubelet restart), on an
//! overlay [`rootfs`] over the image, with a [`bundle`] configuration.

pub mod bundle;
pub mod rootfs;
pub mod shim;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;
use tokio::sync::Notify;

pub use shim::{ExitRecord, ShimArgs};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad container configuration: {0}")]
    Bundle(String),
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    #[error("the container {id} did not start within {secs}s")]
    Timeout { id: String, secs: u64 },
}

impl RuntimeError {
    pub fn io(path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io { path: path.to_path_buf(), source }
    }
}

/// How long a container may take from its shim's start to its process running.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const START_POLL: Duration = Duration::from_millis(5);

/// Where one container instance's files live (one per start: a restart gets new ones).
#[derive(Debug, Clone)]
pub struct InstanceFiles {
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl InstanceFiles {
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit")
    }
    pub fn runtime_log(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn rootfs(&self) -> rootfs::Overlay {
        rootfs::Overlay::under(&self.dir)
    }
}

/// How a start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    Running {
        pid: i32,
    },
    /// It ended before (or while) starting: its exit and the runtime's last error.
    Exited {
        exit: ExitRecord,
        error: Option<String>,
    },
}

/// A container as `runc list` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub pid: i32,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
}

/// The OCI runtime's command line.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `runc` or `crun` (a path).
    pub binary: PathBuf,
    /// Its state directory (`--root`), ours alone.
    pub root: PathBuf,
    /// The executable that runs [`shim::run`] as `<exe> shim …`.
    pub shim_exe: PathBuf,
}

impl Runtime {
    /// `runc --version`'s first line's version ("1.1.5"), for the Node's
    /// containerRuntimeVersion.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let out = self.command(&["--version"]).await?;
        let first = out.lines().next().unwrap_or_default();
        Ok(first.split_whitespace().nth(2).unwrap_or(first).to_string())
    }

    /// The runtime's name ("runc", "crun").
    pub fn name(&self) -> String {
        self.binary.file_name().map_or_else(|| "runc".into(), |n| n.to_string_lossy().into_owned())
    }

    async fn command(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let op = args.iter().find(|a| !a.starts_with('-')).copied().unwrap_or("version");
        let started = std::time::Instant::now();
        let r = self.command_untimed(args).await;
        crate::kubelet::metrics::metrics().runtime_op(op, started.elapsed(), r.is_ok());
        r
    }

    async fn command_untimed(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let shown = format!("{} {}", self.binary.display(), args.join(" "));
        let out = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| RuntimeError::Command { command: shown.clone(), message: e.to_string() })?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(RuntimeError::Command { command: shown, message });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start container `id` from the bundle in `files` (already written) under a new shim,
    /// and wait until its process runs or it has ended. `on_exit` is notified when the shim
    /// ends (its exit record is written by then).
    ///
    /// The shim runs `<runtime> run` (create and start in one): traced as `runtime.run`
    /// and timed as the `run` operation.
    #[tracing::instrument(
        target = "keelson::trace",
        name = "runtime.run",
        skip(self, files, on_exit),
        fields(otel.name = "runc run", container.id = id, container.runtime.name = %self.name())
    )]
    pub async fn start(&self, id: &str, files: &InstanceFiles, on_exit: Arc<Notify>) -> Result<Started, RuntimeError> {
        let started = std::time::Instant::now();
        let r = self.start_untimed(id, files, on_exit).await;
        let ok = matches!(r, Ok(Started::Running { .. }));
        crate::kubelet::metrics::metrics().runtime_op("run", started.elapsed(), ok);
        r
    }

    async fn start_untimed(
        &self,
        id: &str,
        files: &InstanceFiles,
        on_exit: Arc<Notify>,
    ) -> Result<Started, RuntimeError> {
        let args = ShimArgs {
            runtime: self.binary.clone(),
            root: self.root.clone(),
            bundle: files.bundle(),
            id: id.to_string(),
            log: files.log.clone(),
            exit_file: files.exit_file(),
            runtime_log: files.runtime_log(),
            pid_file: files.pid_file(),
        };
        if let Some(parent) = files.log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        let mut child = Command::new(&self.shim_exe)
            .arg("shim")
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| RuntimeError::Command {
                command: format!("{} shim", self.shim_exe.display()),
                message: e.to_string(),
            })?;
        // Reap the shim whenever it ends (after a kubelet restart, init does).
        tokio::spawn(async move {
            let _ = child.wait().await;
            on_exit.notify_one();
        });
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(exit) = shim::read_exit(&files.exit_file()) {
                return Ok(Started::Exited { exit, error: shim::last_runtime_error(&files.runtime_log()) });
            }
            if let Some(pid) = read_pid(&files.pid_file()) {
                return Ok(Started::Running { pid });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Timeout { id: id.into(), secs: START_TIMEOUT.as_secs() });
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// Run `cmd` in the running container `id` (an exec probe); its exit code.
    pub async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32, RuntimeError> {
        let started = std::time::Instant::now();
        let r = self.exec_untimed(id, cmd, timeout).await;
        crate::kubelet::metrics::metrics().runtime_op("exec", started.elapsed(), r.is_ok());
        r
    }

    async fn exec_untimed(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32, RuntimeError> {
        let shown = format!("{} exec {id} {}", self.binary.display(), cmd.join(" "));
        if cmd.is_empty() {
            return Err(RuntimeError::Command { command: shown, message: "no command".into() });
        }
        let run = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(["exec", id])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(status)) => Ok(status.code().unwrap_or(128)),
            Ok(Err(e)) => Err(RuntimeError::Command { command: shown, message: e.to_string() }),
            Err(_) => Err(RuntimeError::Command {
                command: shown,
                message: format!("timed out after {}s", timeout.as_secs()),
            }),
        }
    }

    /// The command line of an exec streaming into the running container `id` (`kubectl
    /// exec`): `<runtime> --root R --log LOG --log-format json exec [--tty] ID CMD…`, not
    /// yet spawned (the caller gives it its stdio); the runtime's own errors go to `log`
    /// (JSON lines, see [`shim::last_runtime_error`]). With `tty` it runs under `setsid
    /// --ctty`: a new session whose controlling terminal is its stdin (a pseudo-terminal the
    /// caller opened), so the runtime sees a terminal, copies its size to the container's
    /// and hears SIGWINCH when it changes.
    pub fn exec_command(&self, id: &str, cmd: &[String], tty: bool, log: &Path) -> Command {
        let mut c = if tty {
            let mut c = Command::new("setsid");
            c.args(["--wait", "--ctty"]).arg(&self.binary);
            c
        } else {
            Command::new(&self.binary)
        };
        c.arg("--root").arg(&self.root).arg("--log").arg(log).args(["--log-format", "json", "exec"]);
        if tty {
            c.arg("--tty");
        }
        c.arg(id).args(cmd).kill_on_drop(true);
        c
    }

    /// Send `signal` ("TERM", "KILL") to the container's process; a container that is gone
    /// or stopped already is fine.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        match self.command(&["kill", id, signal]).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Command { message, .. }) if gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remove a container's runtime state, killing it if it still runs.
    pub async fn delete_force(&self, id: &str) -> Result<(), RuntimeError> {
        match self.command(&["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Command { message, .. }) if gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ids of every container in our state directory, read from the directory itself
    /// (runc and crun keep one directory per container under `--root`) — no runtime
    /// process, and no state read: a pod's clean-up asks this once per pod, and `runc
    /// list` reads every container's state (quadratic when many pods end at once).
    pub fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(&self.root, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RuntimeError::io(&self.root, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(ids)
    }

    /// Every container in our state directory.
    pub async fn list(&self) -> Result<Vec<Listed>, RuntimeError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        // `runc list` fails outright ("stat <root>/<id>: no such file or directory") when a
        // container is deleted while it lists; another try sees the directory without it.
        let mut tries = 0;
        let out = loop {
            match self.command(&["list", "--format", "json"]).await {
                Err(RuntimeError::Command { message, .. }) if tries < 3 && gone(&message) => tries += 1,
                r => break r?,
            }
        };
        if out.trim().is_empty() || out.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|e| RuntimeError::Command { command: "list".into(), message: e.to_string() })
    }
}

fn gone(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("does not exist")
        || m.contains("not running")
        || m.contains("container not found")
        || m.contains("no such")
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` still exists.
pub fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_state_directories() {
        let root = tempfile::tempdir().unwrap();
        let rt = Runtime { binary: "runc".into(), root: root.path().join("state"), shim_exe: "/nonexistent".into() };
        assert!(rt.ids().unwrap().is_empty(), "no state directory yet: no containers");
        for id in ["k-u1-app-0", "k-u2-side-3"] {
            std::fs::create_dir_all(rt.root.join(id)).unwrap();
            std::fs::write(rt.root.join(id).join("state.json"), "{}").unwrap();
        }
        std::fs::write(rt.root.join("stray-file"), "").unwrap();
        let mut ids = rt.ids().unwrap();
        ids.sort();
        assert_eq!(ids, ["k-u1-app-0", "k-u2-side-3"]);
    }
}
