//! Running one CNI plugin binary: the seam between [`Cni`](super::Cni), which decides
//! what to run, and the processes that run it.
//!
//! [`ProcessExec`] is the real thing (tokio processes, a timeout, the plugin's whole
//! process group killed and reaped when it expires); tests put a recording
//! [`PluginExec`] in its place to check the environment and configs a chain receives.

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::cni::CniError;

/// How long a plugin may run before it is killed, unless told otherwise.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a plugin's stdout or stderr that is kept (results are a few KiB).
const MAX_OUTPUT: u64 = 4 << 20;

/// The `CNI_COMMAND` verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    /// Attach the container to the network.
    Add,
    /// Detach it and release what ADD took; idempotent.
    Del,
    /// Check that the attachment is still as ADD left it.
    Check,
    /// Report the spec versions the plugin speaks.
    Version,
}

impl CniCommand {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One execution of a plugin, fully decided.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInvocation {
    /// The plugin's `type`: the file name of its binary (`bridge`, `loopback`).
    pub plugin: String,
    /// The verb, also present in `env` as `CNI_COMMAND`.
    pub command: CniCommand,
    /// The `CNI_*` variables, in the order they are set.
    pub env: Vec<(String, String)>,
    /// The network configuration, written to the plugin's stdin.
    pub stdin: Vec<u8>,
    /// Where to look for the binary, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

impl PluginInvocation {
    /// The value of one of the `CNI_*` variables.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What a plugin did: how it exited and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginOutput {
    /// The exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Its stdout: the result on success, the error object on failure.
    pub stdout: Vec<u8>,
    /// Its stderr: free-form logging.
    pub stderr: Vec<u8>,
}

impl PluginOutput {
    /// A plugin succeeded when it exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Runs a plugin. Errors are for failing to run it at all (missing binary, spawn
/// failure, timeout); a plugin that ran and exited non-zero is an `Ok` [`PluginOutput`].
pub trait PluginExec: Send + Sync {
    /// Runs `invocation` to completion.
    fn exec(&self, invocation: PluginInvocation) -> BoxFuture<'_, Result<PluginOutput, CniError>>;
}

/// Runs plugins as child processes, each in its own process group so that a timeout
/// kills what it started too (the IPAM plugin `bridge` runs, for one).
#[derive(Debug, Clone)]
pub struct ProcessExec {
    timeout: Duration,
}

impl ProcessExec {
    /// A runner that kills plugins running longer than `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl Default for ProcessExec {
    fn default() -> Self {
        Self::new(DEFAULT_PLUGIN_TIMEOUT)
    }
}

impl PluginExec for ProcessExec {
    fn exec(&self, invocation: PluginInvocation) -> BoxFuture<'_, Result<PluginOutput, CniError>> {
        Box::pin(self.run(invocation))
    }
}

impl ProcessExec {
    async fn run(&self, inv: PluginInvocation) -> Result<PluginOutput, CniError> {
        let path = find_plugin(&inv.plugin, &inv.plugin_dirs)?;
        let mut child = Command::new(&path)
            .envs(inv.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CniError::Spawn { plugin: inv.plugin.clone(), path: path.clone(), source })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let config = inv.stdin;
        let io = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A plugin may exit without reading its config (VERSION, early
                    // errors): a broken pipe here is not our failure, its exit status says.
                    let _ = stdin.write_all(&config).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let ((), out, err) = tokio::join!(write, read_capped(stdout), read_capped(stderr));
            let status = child.wait().await?;
            Ok::<_, io::Error>((status, out?, err?))
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok((status, stdout, stderr))) => Ok(PluginOutput { exit_code: status.code(), stdout, stderr }),
            Ok(Err(source)) => {
                kill_and_reap(pid, &mut child).await;
                Err(CniError::Io { plugin: inv.plugin, command: inv.command, source })
            }
            Err(_) => {
                tracing::warn!(plugin = %inv.plugin, command = %inv.command, ?pid, timeout = ?self.timeout, "CNI plugin timed out; killing its process group");
                kill_and_reap(pid, &mut child).await;
                Err(CniError::Timeout { plugin: inv.plugin, command: inv.command, after: self.timeout })
            }
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        pipe.take(MAX_OUTPUT).read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// Kills the plugin's process group (it is the group leader: `process_group(0)`), then
/// the plugin itself, and waits for it so no zombie is left.
async fn kill_and_reap(pid: Option<u32>, child: &mut tokio::process::Child) {
    if let Some(pid) = pid {
        let group = format!("-{pid}");
        let killed = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(5), killed).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "could not run kill for the plugin's process group"),
            Err(_) => tracing::warn!(pid, "kill of the plugin's process group hung"),
        }
    }
    if let Err(e) = child.kill().await {
        tracing::warn!(?pid, error = %e, "could not kill or reap a CNI plugin");
    }
}

/// Finds the binary for plugin type `plugin` in `dirs`, first match wins — as the
/// runtime and `CNI_PATH` lookups by plugins themselves do.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    let not_found = || CniError::PluginNotFound { plugin: plugin.to_string(), dirs: dirs.to_vec() };
    if plugin.is_empty() || plugin == "." || plugin == ".." || plugin.contains(['/', '\0']) {
        return Err(not_found());
    }
    dirs.iter().map(|d| d.join(plugin)).find(|p| is_executable_file(p)).ok_or_else(not_found)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn invocation(plugin: &str, dir: &Path) -> PluginInvocation {
        PluginInvocation {
            plugin: plugin.into(),
            command: CniCommand::Add,
            env: vec![("CNI_COMMAND".into(), "ADD".into()), ("CNI_IFNAME".into(), "eth0".into())],
            stdin: br#"{"hello":"plugin"}"#.to_vec(),
            plugin_dirs: vec![dir.join("missing"), dir.to_path_buf()],
        }
    }

    #[tokio::test]
    async fn runs_a_plugin_with_env_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "echoer", r#"echo "$CNI_COMMAND $CNI_IFNAME"; cat; echo oops >&2; exit 3"#);
        let out = ProcessExec::default().exec(invocation("echoer", dir.path())).await.unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ADD eth0\n{\"hello\":\"plugin\"}");
        assert_eq!(out.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn missing_and_non_executable_plugins_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), "not a program").unwrap();
        for name in ["nope", "plain", "../plain", ""] {
            let err = ProcessExec::default().exec(invocation(name, dir.path())).await.unwrap_err();
            assert!(matches!(err, CniError::PluginNotFound { .. }), "{name}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(dir.path().to_str().unwrap()), "{msg}");
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        // The plugin starts a grandchild that would outlive it, then hangs.
        script(dir.path(), "hang", &format!("sleep 60 & echo $! > {}; wait", marker.display()));
        let exec = ProcessExec::new(Duration::from_millis(500));
        let err = exec.exec(invocation("hang", dir.path())).await.unwrap_err();
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        let pid = std::fs::read_to_string(&marker).unwrap().trim().to_string();
        // The grandchild was killed with the group: its /proc entry goes away (or is a
        // zombie waiting for init, never still sleeping).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "grandchild {pid} still alive: {stat}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
