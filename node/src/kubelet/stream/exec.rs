//! Streaming exec: `runc exec` in the running container with the session's streams.
//! Without a terminal, stdin, stdout and stderr are pipes the runtime copies through.
//! With one (`tty`), the runtime's stdio is the slave of a pseudo-terminal opened here, in
//! a session of its own whose controlling terminal that is: the runtime puts it in raw mode
//! and relays it to the container's own terminal, and a resize set on the master reaches
//! it as SIGWINCH. The exit code is the runtime's (the command's); an exec the runtime
//! could not start is a failure with the runtime's error.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Outbound, Outcome, Session, TerminalSize, CHUNK};
use crate::kubelet::runtime::{shim, Runtime};

/// Once the client is gone, the exec gets SIGTERM (the runtime passes it on), then after
/// this SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// With a terminal, how long to wait for the client's first size before starting.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);

/// Run `cmd` in container `id` with the session's streams; `log` is a file for the
/// runtime's own errors (removed afterwards).
pub async fn run(runtime: &Runtime, id: &str, cmd: &[String], tty: bool, log: &Path, session: Session) -> Outcome {
    let command = runtime.exec_command(id, cmd, tty, log);
    let result = if tty { with_terminal(command, session).await } else { with_pipes(command, session).await };
    let outcome = match result {
        Ok(0) => Outcome::Exited(0),
        // The runtime's error, if it has one, is why (the command never ran).
        Ok(code) => shim::last_runtime_error(log).map_or(Outcome::Exited(code), Outcome::Failed),
        Err(e) => Outcome::Failed(e),
    };
    let _ = std::fs::remove_file(log);
    outcome
}

/// Why `command` did not start, naming what it runs (`setsid` or the runtime).
fn spawn_error(command: &Command, e: &io::Error) -> String {
    format!("running {}: {e}", command.as_std().get_program().to_string_lossy())
}

fn piped_if(on: bool) -> Stdio {
    if on {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

async fn with_pipes(mut command: Command, s: Session) -> Result<i32, String> {
    let Session { stdin, stdout, stderr, gone, .. } = s;
    let mut child = command
        .stdin(piped_if(stdin.is_some()))
        .stdout(piped_if(stdout.is_some()))
        .stderr(piped_if(stderr.is_some()))
        .spawn()
        .map_err(|e| spawn_error(&command, &e))?;
    let pid = child.id();
    let input = feed(stdin, child.stdin.take());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let outputs = async move {
        tokio::join!(drain(out, stdout), drain(err, stderr));
    };
    supervise(child.wait(), outputs, input, gone, pid).await
}

/// The client's bytes into `to` until the client closes its stdin; then `to` is closed.
async fn feed<W: AsyncWrite + Unpin>(from: Option<mpsc::Receiver<Bytes>>, to: Option<W>) {
    let (Some(mut from), Some(mut to)) = (from, to) else { return };
    while let Some(b) = from.recv().await {
        if to.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Everything `from` gives to the client, until it ends (what the client cannot take any
/// more is read and dropped, so the process never blocks on it).
async fn drain<R: AsyncRead + Unpin>(from: Option<R>, to: Option<Outbound>) {
    let Some(mut from) = from else { return };
    let mut to = to;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(o) = &to {
                    if !o.send(Bytes::copy_from_slice(&buf[..n])).await {
                        to = None;
                    }
                }
            }
        }
    }
}

/// Wait for the process and the end of its output while feeding its input; if the client
/// goes away, stop it (SIGTERM, then SIGKILL). Its exit code (128 + the signal if killed).
async fn supervise(
    wait: impl Future<Output = io::Result<ExitStatus>>,
    outputs: impl Future<Output = ()>,
    input: impl Future<Output = ()>,
    gone: CancellationToken,
    pid: Option<u32>,
) -> Result<i32, String> {
    let signal = |sig: rustix::process::Signal| {
        if let Some(p) = pid.and_then(|p| rustix::process::Pid::from_raw(i32::try_from(p).ok()?)) {
            let _ = rustix::process::kill_process(p, sig);
        }
    };
    let mut wait = std::pin::pin!(wait);
    let mut outputs = std::pin::pin!(outputs);
    let mut input = std::pin::pin!(input);
    let (mut status, mut outputs_done, mut input_done) = (None, false, false);
    let mut stopping = false;
    let mut kill_at: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    while status.is_none() || !outputs_done {
        tokio::select! {
            r = &mut wait, if status.is_none() => status = Some(r),
            () = &mut outputs, if !outputs_done => outputs_done = true,
            () = &mut input, if !input_done => input_done = true,
            () = gone.cancelled(), if !stopping => {
                tracing::debug!(pid, "the client is gone: stopping its exec");
                stopping = true;
                signal(rustix::process::Signal::TERM);
                kill_at = Some(Instant::now() + KILL_AFTER);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && status.is_none() => {
                kill_at = None;
                signal(rustix::process::Signal::KILL);
            }
        }
    }
    let status = status.unwrap_or_else(|| Err(io::Error::other("no exit status")));
    let status = status.map_err(|e| format!("waiting for the container runtime: {e}"))?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}

/// A pseudo-terminal's master, as a file read from, one written to (tokio's files do one
/// operation at a time, on the blocking pool) and one to set its size with.
struct Master {
    reader: tokio::fs::File,
    writer: tokio::fs::File,
    control: OwnedFd,
}

impl Master {
    /// A new pseudo-terminal: its master and its slave.
    fn open() -> io::Result<(Master, OwnedFd)> {
        use rustix::pty::{grantpt, ioctl_tiocgptpeer, openpt, unlockpt, OpenptFlags};
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = openpt(flags)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave = ioctl_tiocgptpeer(&master, flags)?;
        let file = |fd: OwnedFd| tokio::fs::File::from_std(std::fs::File::from(fd));
        let (writer, control) = (file(master.try_clone()?), master.try_clone()?);
        Ok((Master { reader: file(master), writer, control }, slave))
    }
}

/// Set a terminal's size (its foreground process group gets SIGWINCH).
fn set_size(master: &OwnedFd, size: TerminalSize) {
    let ws = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
    if let Err(e) = rustix::termios::tcsetwinsize(master, ws) {
        tracing::debug!(error = %e, "resizing the terminal failed");
    }
}

/// Reading a master: 0 (not EIO) once every slave is closed.
async fn read_master(master: &mut tokio::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    match master.read(buf).await {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => Ok(0),
        r => r,
    }
}

async fn with_terminal(mut command: Command, s: Session) -> Result<i32, String> {
    let Session { stdin, stdout, stderr: _, resize, gone } = s;
    let (master, slave) = Master::open().map_err(|e| format!("opening a pseudo-terminal: {e}"))?;
    let mut resize = resize;
    // The client's size first, if it comes soon: the runtime copies it as it starts.
    if let Some(r) = resize.as_mut() {
        match tokio::time::timeout(FIRST_SIZE_WAIT, r.recv()).await {
            Ok(Some(size)) => set_size(&master.control, size),
            _ => tracing::debug!("no terminal size from the client yet: it comes later (SIGWINCH)"),
        }
    }
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| format!("the pseudo-terminal: {e}"));
    let mut child = command
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?)
        .spawn()
        .map_err(|e| spawn_error(&command, &e))?;
    // Only the runtime holds the slave now (the command kept copies too): when it ends,
    // reading the master ends.
    drop((slave, command));
    let pid = child.id();
    let Master { mut reader, mut writer, control } = master;
    let outputs = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut to = stdout;
        loop {
            match read_master(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(o) = &to {
                        if !o.send(Bytes::copy_from_slice(&buf[..n])).await {
                            to = None;
                        }
                    }
                }
            }
        }
    };
    let input = async move {
        let typing = async {
            let Some(mut stdin) = stdin else { return };
            while let Some(b) = stdin.recv().await {
                if writer.write_all(&b).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        };
        let resizing = async {
            let Some(mut resize) = resize else { return };
            while let Some(size) = resize.recv().await {
                tracing::debug!(?size, "terminal resized");
                set_size(&control, size);
            }
        };
        tokio::join!(typing, resizing);
    };
    supervise(child.wait(), outputs, input, gone, pid).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::stream::Out;

    /// Outbound channels and what was sent on them.
    fn outbound(id: u32) -> (Outbound, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(64);
        (Outbound::new(id, tx), rx)
    }

    async fn collect(mut rx: mpsc::Receiver<Out>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(o) = rx.recv().await {
            if let Out::Data(_, b) = o {
                all.extend_from_slice(&b);
            }
        }
        all
    }

    /// A shell instead of the runtime: the stream plumbing is the same.
    #[tokio::test]
    async fn pipes_carry_stdin_stdout_stderr_and_the_exit_code() {
        let (out, out_rx) = outbound(1);
        let (err, err_rx) = outbound(2);
        let (stdin_tx, stdin) = mpsc::channel(4);
        let mut sh = Command::new("sh");
        sh.args(["-c", "cat; echo oops >&2; exit 3"]);
        let s = Session {
            stdin: Some(stdin),
            stdout: Some(out),
            stderr: Some(err),
            resize: None,
            gone: CancellationToken::new(),
        };
        let run = tokio::spawn(with_pipes(sh, s));
        stdin_tx.send(Bytes::from_static(b"hello\n")).await.unwrap();
        drop(stdin_tx);
        assert_eq!(run.await.unwrap(), Ok(3));
        assert_eq!(collect(out_rx).await, b"hello\n");
        assert_eq!(collect(err_rx).await, b"oops\n");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_the_exec() {
        let gone = CancellationToken::new();
        let mut sh = Command::new("sh");
        sh.args(["-c", "exec sleep 60"]);
        let s = Session { stdin: None, stdout: None, stderr: None, resize: None, gone: gone.clone() };
        let run = tokio::spawn(with_pipes(sh, s));
        tokio::time::sleep(Duration::from_millis(100)).await;
        gone.cancel();
        let code = tokio::time::timeout(Duration::from_secs(10), run).await.expect("stopped").unwrap();
        assert_eq!(code, Ok(128 + 15));
    }

    #[tokio::test]
    async fn a_terminal_has_the_client_s_size_and_echoes() {
        let (out, out_rx) = outbound(1);
        let (resize_tx, resize) = mpsc::channel(4);
        let (stdin_tx, stdin) = mpsc::channel(4);
        // What the runtime does with its terminal, done by a shell: read the size, then a
        // line (which the terminal echoes).
        let mut sh = Command::new("setsid");
        sh.args(["--wait", "--ctty", "sh", "-c", "stty size; read l; echo got:$l"]);
        let s = Session {
            stdin: Some(stdin),
            stdout: Some(out),
            stderr: None,
            resize: Some(resize),
            gone: CancellationToken::new(),
        };
        resize_tx.send(TerminalSize { width: 100, height: 40 }).await.unwrap();
        let run = tokio::spawn(with_terminal(sh, s));
        stdin_tx.send(Bytes::from_static(b"typed\n")).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), run).await.expect("ended").unwrap(), Ok(0));
        let text = String::from_utf8_lossy(&collect(out_rx).await).replace('\r', "");
        assert!(text.contains("40 100\n"), "{text:?}");
        // The terminal echoed the line (whenever it came) and the shell read it.
        assert!(text.contains("got:typed\n") && text.matches("typed\n").count() == 2, "{text:?}");
    }
}
