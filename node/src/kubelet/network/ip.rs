//! Running iproute2's `ip`, the one tool namespaces and links are managed with.
//!
//! Synchronous on purpose: each command takes milliseconds, and callers include `Drop`
//! guards and startup code outside any runtime.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `ip` command may take before it is killed.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// An `ip` command that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum IpCommandError {
    /// `ip` could not be started (not installed?) or waited for.
    #[error("`ip {args}` could not run: {source}")]
    Spawn {
        /// The arguments, space-joined.
        args: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `ip` ran past its timeout and was killed.
    #[error("`ip {args}` timed out after {after:?} and was killed")]
    Timeout {
        /// The arguments, space-joined.
        args: String,
        /// The timeout.
        after: Duration,
    },
    /// `ip` exited non-zero.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Failed {
        /// The arguments, space-joined.
        args: String,
        /// Its exit status, described.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs `ip ARGS…`, killing and reaping it after [`IP_TIMEOUT`]. Its stdout is discarded
/// (nothing here needs it) so that it can never fill a pipe nobody reads.
pub(crate) fn run_ip(args: &[&str]) -> Result<(), IpCommandError> {
    let joined = args.join(" ");
    let spawn_err = |source| IpCommandError::Spawn { args: joined.clone(), source };
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let deadline = Instant::now() + IP_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(IpCommandError::Timeout { args: joined, after: IP_TIMEOUT });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_err(e));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    // It has exited: its stderr is complete and reads to EOF at once.
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    Err(IpCommandError::Failed { args: joined, status: status.to_string(), stderr: stderr.trim().to_string() })
}
