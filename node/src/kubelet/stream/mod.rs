//! exec, attach and port-forward on the kubelet endpoint, in every protocol a client may
//! speak to it. Upstream's kubelet speaks only SPDY and the API server translates; keelson's
//! API server passes the upgrade through unchanged, so this endpoint speaks them all:
//!
//! - [`websocket`]: the `channel.k8s.io` protocols (`v5`/`v4`/unversioned, binary) for
//!   exec and attach (kubectl ≥ 1.30, the Python client, kube-rs) and for port-forward
//!   (Python, kube-rs), and SPDY tunnelled in WebSocket messages for port-forward
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.30);
//! - [`spdy`]: SPDY/3.1 with `X-Stream-Protocol-Version` (`v5`…`v1` of `channel.k8s.io`
//!   for exec/attach, `portforward.k8s.io`), what older kubectls speak.
//!
//! Whatever the transport, a session is the same: the client's stdin and terminal sizes
//! come in, stdout and stderr go out ([`Session`]), and the end is a `Status` on the
//! error channel ([`Outcome`]). [`exec`] runs a command in the container (`runc exec`,
//! with a pseudo-terminal for `tty`), [`attach`] follows the container's output, and
//! [`portforward`] connects to a port inside the pod's network namespace.

pub mod attach;
pub mod exec;
pub mod portforward;
pub mod spdy;
pub mod websocket;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The most bytes read from a process or a connection at a time (one message or frame).
pub const CHUNK: usize = 32 * 1024;

/// What an exec or attach asks for (its query: `stdin`, `stdout`, `stderr`, `tty`, as
/// `true`/`1`, or upstream's kubelet names `input`, `output`, `error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// The options and the command (`command`, repeated) of a query.
    pub fn parse(query: &str) -> Result<(Options, Vec<String>), String> {
        let mut o = Options::default();
        let mut command = Vec::new();
        for (k, v) in super::logs::query_pairs(query) {
            let on = || matches!(v.as_str(), "1" | "true" | "True" | "");
            match k.as_str() {
                "stdin" | "input" => o.stdin = on(),
                "stdout" | "output" => o.stdout = on(),
                "stderr" | "error" => o.stderr = on(),
                "tty" => o.tty = on(),
                "command" => command.push(v),
                _ => {}
            }
        }
        // A terminal has one output stream (as upstream's kubelet, which drops stderr).
        if o.tty {
            o.stderr = false;
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok((o, command))
    }
}

/// A terminal size, as clients send it on the resize channel (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// What goes to the client, in order, through a transport's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Bytes on a channel (WebSocket) or stream (SPDY).
    Data(u32, Bytes),
    /// This side is done with it (SPDY: FIN; WebSocket v5: the CLOSE signal).
    Close(u32),
    /// The session is over: close the connection once what came before is written.
    Finish,
}

/// One outgoing channel or stream of a session.
#[derive(Debug, Clone)]
pub struct Outbound {
    id: u32,
    tx: mpsc::Sender<Out>,
}

impl Outbound {
    pub(crate) fn new(id: u32, tx: mpsc::Sender<Out>) -> Outbound {
        Outbound { id, tx }
    }

    /// Send `data`; false once the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.tx.send(Out::Data(self.id, data)).await.is_ok()
    }

    /// Say nothing more comes on it.
    pub async fn close(&self) {
        let _ = self.tx.send(Out::Close(self.id)).await;
    }
}

/// The streams of one exec or attach, whatever the transport: each is there if asked for.
#[derive(Debug)]
pub struct Session {
    /// The client's stdin; ends when the client closes it.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Outbound>,
    pub stderr: Option<Outbound>,
    /// Terminal sizes (tty only), the first as soon as the client knows it.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Cancelled when the client has gone away.
    pub gone: CancellationToken,
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code (attach: 0 when the container ends).
    Exited(i32),
    /// It could not run, or failed on the node's side.
    Failed(String),
}

/// Which error-channel format a protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// v4 and v5: a JSON `metav1.Status`, also on success (it carries the exit code).
    Json,
    /// v1 to v3: the error's text, nothing on success.
    Text,
}

impl StatusFormat {
    /// The format of a negotiated `channel.k8s.io` version.
    pub fn of(protocol: &str) -> StatusFormat {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
            StatusFormat::Json
        } else {
            StatusFormat::Text
        }
    }

    /// What to write on the error channel at the end, if anything.
    pub fn render(self, outcome: &Outcome) -> Option<Vec<u8>> {
        match self {
            StatusFormat::Json => Some(status(outcome).to_string().into_bytes()),
            StatusFormat::Text => match outcome {
                Outcome::Exited(0) => None,
                Outcome::Exited(code) => {
                    Some(format!("command terminated with non-zero exit code: {code}").into_bytes())
                }
                Outcome::Failed(message) => Some(message.clone().into_bytes()),
            },
        }
    }
}

/// The `metav1.Status` upstream's kubelet writes at the end of an exec: Success, a
/// NonZeroExitCode failure whose cause carries the code (what `kubectl exec` exits with),
/// or an internal error.
pub fn status(outcome: &Outcome) -> serde_json::Value {
    use serde_json::json;
    match outcome {
        Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("error executing command in container: {message}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        }),
    }
}

/// Terminal sizes decoded from a resize stream's bytes: JSON objects one after another
/// (SPDY: `json.Encoder` lines; WebSocket: one per message). A malformed one ends it.
pub(crate) fn decode_resizes(mut raw: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(chunk) = raw.recv().await {
            buf.extend_from_slice(&chunk);
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut used = 0;
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        used = sizes.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "a bad terminal size: resizing stops");
                        return;
                    }
                    None => break,
                }
            }
            buf.drain(..used);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_query() {
        let (o, cmd) =
            Options::parse("command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=false").unwrap();
        assert_eq!(o, Options { stdin: true, stdout: true, stderr: false, tty: false });
        assert_eq!(cmd, ["sh", "-c", "echo hi"]);
        // Upstream's kubelet names, and a terminal has no separate stderr.
        let (o, _) = Options::parse("input=1&output=1&error=1&tty=1&command=sh").unwrap();
        assert_eq!(o, Options { stdin: true, stdout: true, stderr: false, tty: true });
        assert!(Options::parse("command=ls&stdout=false").unwrap_err().contains("at least 1 of"));
    }

    #[test]
    fn statuses_say_how_it_ended() {
        assert_eq!(status(&Outcome::Exited(0)), serde_json::json!({"metadata": {}, "status": "Success"}));
        let s = status(&Outcome::Exited(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
        let s = status(&Outcome::Failed("no such file".into()));
        assert_eq!((s["status"].as_str(), s["code"].as_i64()), (Some("Failure"), Some(500)));
        assert_eq!(StatusFormat::of("v5.channel.k8s.io"), StatusFormat::Json);
        assert_eq!(StatusFormat::of("channel.k8s.io"), StatusFormat::Text);
        assert_eq!(StatusFormat::Text.render(&Outcome::Exited(0)), None);
        assert_eq!(
            StatusFormat::Text.render(&Outcome::Exited(2)).unwrap(),
            b"command terminated with non-zero exit code: 2"
        );
    }

    #[tokio::test]
    async fn resizes_are_decoded_across_chunks() {
        let (tx, raw) = mpsc::channel(4);
        let mut sizes = decode_resizes(raw);
        tx.send(Bytes::from_static(b"{\"Width\":80,\"Height\":24}\n{\"Wid")).await.unwrap();
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 80, height: 24 }));
        tx.send(Bytes::from_static(b"th\":100,\"Height\":40}\n")).await.unwrap();
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 100, height: 40 }));
        tx.send(Bytes::from_static(b"nonsense")).await.unwrap();
        assert_eq!(sizes.recv().await, None);
    }
}
