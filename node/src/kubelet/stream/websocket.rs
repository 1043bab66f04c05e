//! WebSocket channels (`channel.k8s.io`, upstream's `wsstream`): every message starts with
//! its channel's number. Exec and attach use 0 stdin, 1 stdout, 2 stderr, 3 the error
//! channel (the final Status), 4 resize; `v5.channel.k8s.io` adds the CLOSE signal
//! `[255, channel]` (the client closing stdin). Port-forward uses two per port (2i data,
//! 2i+1 error), each opened by the port in little-endian. A subprotocol
//! `SPDY/3.1+portforward.k8s.io` carries SPDY in binary messages instead ([`tunnel`]).
//! Only the binary protocols are spoken (not `base64.channel.k8s.io`).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::{decode_resizes, Options, Out, Outbound, Outcome, Session, StatusFormat, CHUNK};

/// Subprotocols of exec and attach, most preferred first; "" is a client that names none.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io", ""];
/// Subprotocols of port-forward: SPDY tunnelled (kubectl), or channels (Python, kube-rs).
pub const PORTFORWARD_PROTOCOLS: &[&str] = &[TUNNEL_PROTOCOL, "v4.channel.k8s.io", "channel.k8s.io", ""];
/// kubectl's port-forward since 1.30: SPDY/3.1 inside binary messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5's CLOSE signal.
const CLOSE: u8 = 255;
/// After the session, how long the client has to answer our close before it is cut off.
const LINGER: Duration = Duration::from_secs(5);

/// Whether a request asks for a WebSocket.
pub fn requested(headers: &HeaderMap) -> bool {
    let value = |n: http::header::HeaderName| {
        headers.get_all(n).iter().filter_map(|v| v.to_str().ok()).map(str::to_ascii_lowercase).collect::<Vec<_>>()
    };
    value(http::header::UPGRADE).iter().any(|v| v.trim() == "websocket")
        && value(http::header::CONNECTION).iter().any(|v| v.split(',').any(|t| t.trim() == "upgrade"))
}

/// Accept a WebSocket: the subprotocol (the first the client offers that is `supported`;
/// "" if it offers none) and the 101's headers. The error is a 400's message.
pub fn accept(headers: &HeaderMap, supported: &[&'static str]) -> Result<(&'static str, HeaderMap), String> {
    if headers.get(http::header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err("unsupported WebSocket version (13 is)".into());
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| "a WebSocket upgrade without Sec-WebSocket-Key".to_string())?;
    let offered: Vec<String> = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = if offered.is_empty() {
        supported.iter().find(|p| p.is_empty()).copied()
    } else {
        offered.iter().find_map(|o| supported.iter().find(|s| !s.is_empty() && **s == o.as_str()).copied())
    }
    .ok_or_else(|| {
        let ours: Vec<&str> = supported.iter().filter(|s| !s.is_empty()).copied().collect();
        format!("requested protocol(s) are not supported: {offered:?}; supports {ours:?}")
    })?;
    let mut h = HeaderMap::new();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    h.insert(http::header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).map_err(|e| e.to_string())?);
    if !protocol.is_empty() {
        h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Ok((protocol, h))
}

/// The server's end of an upgraded connection as a WebSocket.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> WebSocketStream<S> {
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}

/// A message from the client, by channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Data(u8, Bytes),
    /// v5: the client will send nothing more on this channel.
    Closed(u8),
    /// The client closed the WebSocket.
    End,
    /// Nothing for a channel (an empty message, ping, pong, an unknown signal).
    Nothing,
}

/// Which channel a message is for. Text messages count as their bytes (the Python client
/// sends str data as text).
pub fn inbound(msg: Message, v5: bool) -> Inbound {
    let b: Bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
        Message::Close(_) => return Inbound::End,
        _ => return Inbound::Nothing,
    };
    match b.first() {
        None => Inbound::Nothing,
        Some(&CLOSE) if v5 => match b.get(1) {
            Some(ch) if b.len() == 2 => Inbound::Closed(*ch),
            _ => Inbound::Nothing,
        },
        Some(&ch) => Inbound::Data(ch, b.slice(1..)),
    }
}

/// The message for something to send (none: v4 has no CLOSE signal).
pub(crate) fn outbound(out: Out, v5: bool) -> Option<Message> {
    match out {
        Out::Data(ch, data) => {
            let mut m = BytesMut::with_capacity(data.len() + 1);
            m.put_u8(u8::try_from(ch).unwrap_or(u8::MAX));
            m.put_slice(&data);
            Some(Message::Binary(m.freeze()))
        }
        Out::Close(ch) if v5 => Some(Message::Binary(Bytes::from(vec![CLOSE, u8::try_from(ch).unwrap_or(u8::MAX)]))),
        Out::Close(_) => None,
        Out::Finish => Some(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))),
    }
}

/// A WebSocket carrying channels: a reader task routing the client's messages to the
/// `inputs` by channel, and a writer task sending what goes through `out`.
struct Channels<S> {
    out: mpsc::Sender<Out>,
    gone: CancellationToken,
    reader: JoinHandle<SplitStream<WebSocketStream<S>>>,
    writer: JoinHandle<SplitSink<WebSocketStream<S>, Message>>,
}

impl<S> Channels<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn open(ws: WebSocketStream<S>, v5: bool, mut inputs: HashMap<u8, mpsc::Sender<Bytes>>) -> Channels<S> {
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::channel::<Out>(64);
        let gone = CancellationToken::new();
        let reader_gone = gone.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                match inbound(msg, v5) {
                    Inbound::Data(ch, data) => {
                        if let Some(tx) = inputs.get(&ch) {
                            if tx.send(data).await.is_err() {
                                inputs.remove(&ch);
                            }
                        }
                    }
                    Inbound::Closed(ch) => {
                        inputs.remove(&ch);
                    }
                    Inbound::End => break,
                    Inbound::Nothing => {}
                }
            }
            reader_gone.cancel();
            stream
        });
        let writer = tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                let finish = o == Out::Finish;
                if let Some(m) = outbound(o, v5) {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                if finish {
                    break;
                }
            }
            sink
        });
        Channels { out, gone, reader, writer }
    }

    fn channel(&self, ch: u8) -> Outbound {
        Outbound::new(u32::from(ch), self.out.clone())
    }

    /// Close the WebSocket once what was sent is written; wait (a while) for the client's
    /// close, then shut the connection down.
    async fn finish(self) {
        let Channels { out, reader, writer, .. } = self;
        let _ = out.send(Out::Finish).await;
        drop(out);
        let sink = linger(writer).await;
        let stream = linger(reader).await;
        if let (Some(sink), Some(stream)) = (sink, stream) {
            if let Ok(mut ws) = stream.reunite(sink) {
                let _ = tokio::time::timeout(LINGER, ws.get_mut().shutdown()).await;
            }
        }
    }
}

/// A task's result within [`LINGER`]; else it is aborted.
async fn linger<T>(mut task: JoinHandle<T>) -> Option<T> {
    match tokio::time::timeout(LINGER, &mut task).await {
        Ok(r) => r.ok(),
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// An exec or attach over a WebSocket (`protocol` negotiated by [`accept`]).
pub async fn serve_remotecommand<S, F, Fut>(ws: WebSocketStream<S>, protocol: &str, opts: Options, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let (stdin_tx, stdin) = mpsc::channel(16);
    let (resize_tx, resize) = mpsc::channel(4);
    let mut inputs = HashMap::new();
    if opts.stdin {
        inputs.insert(STDIN, stdin_tx);
    }
    if opts.tty {
        inputs.insert(RESIZE, resize_tx);
    }
    let channels = Channels::open(ws, protocol == "v5.channel.k8s.io", inputs);
    // An empty message on the first output channel says the streams are ready (upstream).
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    channels.channel(first).send(Bytes::new()).await;
    let session = Session {
        stdin: opts.stdin.then_some(stdin),
        stdout: opts.stdout.then(|| channels.channel(STDOUT)),
        stderr: opts.stderr.then(|| channels.channel(STDERR)),
        resize: opts.tty.then(|| decode_resizes(resize)),
        gone: channels.gone.clone(),
    };
    let outcome = run(session).await;
    if let Some(body) = StatusFormat::of(protocol).render(&outcome) {
        channels.channel(ERROR).send(Bytes::from(body)).await;
    }
    channels.finish().await;
}

/// Port-forward over WebSocket channels: for each of `ports`, `forward(port, data from the
/// client, data channel, error channel)`; the WebSocket closes when all are done or the
/// client goes away.
pub async fn serve_portforward<S, F, Fut>(ws: WebSocketStream<S>, ports: Vec<u16>, forward: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(u16, mpsc::Receiver<Bytes>, Outbound, Outbound) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut inputs = HashMap::new();
    let mut pending = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let Ok(data) = u8::try_from(i * 2) else { break };
        let (tx, rx) = mpsc::channel(16);
        inputs.insert(data, tx);
        pending.push((data, *port, rx));
    }
    let channels = Channels::open(ws, false, inputs);
    let mut forwards = tokio::task::JoinSet::new();
    for (data, port, rx) in pending {
        let (d, e) = (channels.channel(data), channels.channel(data + 1));
        for ch in [&d, &e] {
            ch.send(Bytes::copy_from_slice(&port.to_le_bytes())).await;
        }
        forwards.spawn(forward(port, rx, d, e));
    }
    tokio::select! {
        () = async { while forwards.join_next().await.is_some() {} } => {}
        () = channels.gone.cancelled() => forwards.shutdown().await,
    }
    channels.finish().await;
}

/// SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`): a byte stream whose
/// reads are the client's binary messages and whose writes become ours.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        // The client's messages in, until it closes.
        let up = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let more = match msg {
                    Message::Binary(b) => wr.write_all(&b).await.is_ok(),
                    Message::Close(_) => false,
                    _ => true,
                };
                if !more {
                    break;
                }
            }
            let _ = wr.shutdown().await;
            stream
        });
        // Ours out, until the SPDY side is done; then the close.
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
        if let Some(stream) = linger(up).await {
            if let Ok(mut ws) = stream.reunite(sink) {
                let _ = tokio::time::timeout(LINGER, ws.get_mut().shutdown()).await;
            }
        }
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn upgrade(protocols: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(http::header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(http::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(http::header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        if let Some(p) = protocols {
            h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn the_handshake_picks_the_client_s_first_protocol_we_speak() {
        let h = upgrade(Some("v5.channel.k8s.io, v4.channel.k8s.io"));
        assert!(requested(&h));
        let (p, resp) = accept(&h, REMOTECOMMAND_PROTOCOLS).unwrap();
        assert_eq!(p, "v5.channel.k8s.io");
        // RFC 6455's example key and answer.
        assert_eq!(resp[http::header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(resp[http::header::SEC_WEBSOCKET_PROTOCOL], "v5.channel.k8s.io");
        // Port-forward has no v5: the Python client's offer gets v4.
        assert_eq!(accept(&h, PORTFORWARD_PROTOCOLS).unwrap().0, "v4.channel.k8s.io");
        let (p, resp) = accept(&upgrade(None), REMOTECOMMAND_PROTOCOLS).unwrap();
        assert_eq!(p, "");
        assert!(!resp.contains_key(http::header::SEC_WEBSOCKET_PROTOCOL));
        let e = accept(&upgrade(Some("base64.channel.k8s.io")), REMOTECOMMAND_PROTOCOLS).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        assert_eq!(accept(&upgrade(Some(TUNNEL_PROTOCOL)), PORTFORWARD_PROTOCOLS).unwrap().0, TUNNEL_PROTOCOL);
        let mut old = upgrade(None);
        old.insert(http::header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(accept(&old, REMOTECOMMAND_PROTOCOLS).is_err());
        let mut spdy = upgrade(None);
        spdy.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!requested(&spdy));
    }

    #[test]
    fn messages_are_routed_by_channel() {
        let bin = |b: &'static [u8]| Message::Binary(Bytes::from_static(b));
        assert_eq!(inbound(bin(b"\x00ls\n"), true), Inbound::Data(0, Bytes::from_static(b"ls\n")));
        assert_eq!(inbound(Message::text("\u{0}hi"), false), Inbound::Data(0, Bytes::from_static(b"hi")));
        assert_eq!(inbound(bin(b"\xff\x00"), true), Inbound::Closed(0));
        // Without v5, 255 is just a channel number.
        assert_eq!(inbound(bin(b"\xff\x00"), false), Inbound::Data(255, Bytes::from_static(b"\x00")));
        assert_eq!(inbound(bin(b"\xff\x00\x01"), true), Inbound::Nothing);
        assert_eq!(inbound(bin(b""), true), Inbound::Nothing);
        assert_eq!(inbound(Message::Close(None), true), Inbound::End);
        assert_eq!(outbound(Out::Data(1, Bytes::from_static(b"out")), false), Some(bin(b"\x01out")));
        assert_eq!(outbound(Out::Close(1), true), Some(bin(b"\xff\x01")));
        assert_eq!(outbound(Out::Close(1), false), None);
        assert!(matches!(outbound(Out::Finish, true), Some(Message::Close(Some(f))) if f.code == CloseCode::Normal));
    }

    async fn pair() -> (WebSocketStream<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (server(a).await, WebSocketStream::from_raw_socket(b, Role::Client, None).await)
    }

    async fn next(c: &mut WebSocketStream<tokio::io::DuplexStream>) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), c.next()).await.expect("a message within 5 s").map(|m| m.unwrap())
    }

    #[tokio::test]
    async fn a_remote_command_over_v5() {
        let (s, mut c) = pair().await;
        let opts = Options { stdin: true, stdout: true, stderr: false, tty: true };
        let session = tokio::spawn(serve_remotecommand(s, "v5.channel.k8s.io", opts, |mut s: Session| async move {
            let out = s.stdout.take().unwrap();
            let size = s.resize.as_mut().unwrap().recv().await.unwrap();
            out.send(Bytes::from(format!("{}x{}\n", size.width, size.height))).await;
            let mut stdin = s.stdin.take().unwrap();
            while let Some(b) = stdin.recv().await {
                out.send(b).await;
            }
            Outcome::Exited(0)
        }));
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"\x01"))));
        c.send(Message::Binary(Bytes::from_static(b"\x04{\"Width\":100,\"Height\":40}"))).await.unwrap();
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"\x01100x40\n"))));
        c.send(Message::Binary(Bytes::from_static(b"\x00typed"))).await.unwrap();
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"\x01typed"))));
        c.send(Message::Binary(Bytes::from_static(b"\xff\x00"))).await.unwrap();
        let Some(Message::Binary(status)) = next(&mut c).await else { panic!("no status") };
        assert_eq!(status[0], 3);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&status[1..]).unwrap()["status"], "Success");
        assert!(matches!(next(&mut c).await, Some(Message::Close(_))));
        // The client's close answer ends it.
        assert!(next(&mut c).await.is_none());
        tokio::time::timeout(Duration::from_secs(5), session).await.expect("the session ends").unwrap();
    }

    #[tokio::test]
    async fn port_forward_channels_start_with_the_port() {
        let (s, mut c) = pair().await;
        let session = tokio::spawn(serve_portforward(
            s,
            vec![8080, 443],
            |port, mut rx, data: Outbound, err: Outbound| async move {
                if port == 443 {
                    err.send(Bytes::from_static(b"refused")).await;
                    return;
                }
                if let Some(b) = rx.recv().await {
                    data.send(b).await;
                }
            },
        ));
        let mut first = Vec::new();
        for _ in 0..4 {
            let Some(Message::Binary(b)) = next(&mut c).await else { panic!() };
            first.push(b.to_vec());
        }
        first.sort();
        assert_eq!(first, [vec![0, 0x90, 0x1f], vec![1, 0x90, 0x1f], vec![2, 0xbb, 1], vec![3, 0xbb, 1]]);
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"\x03refused"))));
        c.send(Message::Binary(Bytes::from_static(b"\x00GET /"))).await.unwrap();
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"\x00GET /"))));
        assert!(matches!(next(&mut c).await, Some(Message::Close(_))));
        assert!(next(&mut c).await.is_none());
        tokio::time::timeout(Duration::from_secs(5), session).await.expect("the session ends").unwrap();
    }

    #[tokio::test]
    async fn a_tunnel_carries_bytes_both_ways() {
        let (s, mut c) = pair().await;
        let mut t = tunnel(s);
        c.send(Message::Binary(Bytes::from_static(b"spdy bytes"))).await.unwrap();
        let mut buf = [0u8; 10];
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"spdy bytes");
        t.write_all(b"reply").await.unwrap();
        assert_eq!(next(&mut c).await, Some(Message::Binary(Bytes::from_static(b"reply"))));
        t.shutdown().await.unwrap();
        assert!(matches!(next(&mut c).await, Some(Message::Close(_))));
    }
}
