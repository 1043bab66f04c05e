//! Port-forward: each forwarded connection is a TCP connection to `localhost:<port>` made
//! inside the pod's network namespace ([`connect`]), copied to and from the client
//! ([`pump`]) until the pod's side ends. Over SPDY ([`serve_spdy`]) the client opens a
//! pair of streams per connection (`streamType` error and data, the same `requestID` and
//! `port`); over WebSocket channels ([`forward`]) a pair per port of the request.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::spdy::{Connection, Headers, Stream};
use super::{Outbound, CHUNK};

/// How long connecting inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `localhost:port` in the network namespace at `netns` (a file under
/// `/run/netns`): made on a short-lived thread that enters the namespace, so no thread
/// of the runtime ever leaves the node's own; the socket stays in the pod's namespace.
pub async fn connect(netns: &Path, port: u16) -> Result<TcpStream, String> {
    let path = netns.to_path_buf();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(&path, port));
        })
        .map_err(|e| format!("starting a thread: {e}"))?;
    let std = rx.await.map_err(|_| "the connecting thread died".to_string())??;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(std).map_err(|e| e.to_string())
}

fn connect_in(netns: &PathBuf, port: u16) -> Result<std::net::TcpStream, String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(|e| format!("entering the network namespace {}: {e}", netns.display()))?;
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
        std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|e6: io::Error| {
            format!("failed to connect to localhost:{port} inside the pod's network namespace: IPv4: {e4}; IPv6: {e6}")
        })
    })
}

/// Copy between a connection in the pod and the client: the client's bytes in (its end
/// half-closes the connection), the pod's out (its end closes `out`). Done when the pod's
/// side has ended, as upstream's runtimes do.
pub async fn pump<T>(conn: T, mut from_client: mpsc::Receiver<Bytes>, out: &Outbound)
where
    T: AsyncRead + AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let to_pod = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
        // The client is done sending; the pod may still answer.
        std::future::pending::<()>().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.send(Bytes::copy_from_slice(&buf[..n])).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = from_pod => {}
        () = to_pod => {}
    }
    out.close().await;
}

/// One forwarded connection to `port`: once `connecting` has connected, pump; if it could
/// not, say why on the error channel. Both channels are closed at the end.
pub async fn forward(
    connecting: impl Future<Output = Result<TcpStream, String>>,
    port: u16,
    from_client: mpsc::Receiver<Bytes>,
    data: Outbound,
    error: Outbound,
) {
    match connecting.await {
        Ok(conn) => pump(conn, from_client, &data).await,
        Err(e) => {
            tracing::debug!(port, error = %e, "port-forward: no connection");
            error.send(Bytes::from(format!("error forwarding port {port}: {e}"))).await;
            data.close().await;
        }
    }
    error.close().await;
}

/// Whether a stream's headers are a port-forward stream's (upstream refuses others).
pub fn valid_stream(h: &Headers) -> Result<(), String> {
    let port = h.get("port").ok_or("\"port\" header is required")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("invalid port {port:?}")),
    }
    match h.get("streamtype") {
        Some("error" | "data") => Ok(()),
        Some(t) => Err(format!("invalid stream type {t:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// The request a stream belongs to: its `requestID`, or for old clients without one, its
/// id paired as upstream guesses (the error stream first, the data stream next).
fn request_id(s: &Stream) -> String {
    match s.headers.get("requestid") {
        Some(r) => r.to_string(),
        None if s.headers.get("streamtype") == Some("data") => s.id.saturating_sub(2).to_string(),
        None => s.id.to_string(),
    }
}

/// Port-forward over a SPDY connection (its streams accepted by [`valid_stream`]): every
/// pair of streams is a connection to forward, until the client goes away.
pub async fn serve_spdy<C, Fut>(mut conn: Connection, connect: C)
where
    C: Fn(u16) -> Fut,
    Fut: Future<Output = Result<TcpStream, String>> + Send + 'static,
{
    let mut half: HashMap<String, Stream> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    loop {
        let s = tokio::select! {
            s = conn.streams.recv() => match s { Some(s) => s, None => break },
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let id = request_id(&s);
        let Some(other) = half.remove(&id) else {
            half.insert(id, s);
            continue;
        };
        let (data, error) = if s.headers.get("streamtype") == Some("data") { (s, other) } else { (other, s) };
        if data.headers.get("streamtype") != Some("data") || error.headers.get("streamtype") != Some("error") {
            error.out.send(Bytes::from(format!("request {id}: two streams of the same type"))).await;
            error.out.close().await;
            continue;
        }
        let port = data.headers.get("port").and_then(|p| p.parse().ok()).unwrap_or(0);
        // The client sends nothing on the error stream (it closes it at once).
        drop(error.incoming);
        forwards.spawn(forward(connect(port), port, data.incoming, data.out, error.out));
    }
    forwards.shutdown().await;
    conn.finish().await;
}

/// The ports of a port-forward over WebSocket channels (`ports=8080,9090`, or repeated;
/// upstream's kubelet calls it `port`).
pub fn ports_of(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in crate::kubelet::logs::query_pairs(query) {
        if k != "ports" && k != "port" {
            continue;
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {p:?}: ports are 1 to 65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    // Two channels a port, numbered in a byte.
    if ports.len() > 127 {
        return Err("at most 127 ports at once".into());
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::stream::spdy::{Decoder, Encoder, Frame};
    use bytes::BytesMut;

    #[test]
    fn port_forward_streams_need_a_port_and_a_type() {
        let h = |p: &str, t: &str| Headers::new().with("port", p).with("streamType", t);
        assert!(valid_stream(&h("8080", "data")).is_ok());
        assert!(valid_stream(&h("8080", "error")).is_ok());
        assert!(valid_stream(&h("0", "data")).unwrap_err().contains("invalid port"));
        assert!(valid_stream(&h("x", "data")).is_err());
        assert!(valid_stream(&h("80", "stdin")).unwrap_err().contains("stream type"));
        assert!(valid_stream(&Headers::new().with("streamtype", "data")).unwrap_err().contains("port"));
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports_of("ports=8080,9090&ports=80"), Ok(vec![8080, 9090, 80]));
        assert_eq!(ports_of("port=443"), Ok(vec![443]));
        assert!(ports_of("").unwrap_err().contains("required"));
        assert!(ports_of("ports=0").is_err());
        assert!(ports_of("ports=http").is_err());
    }

    #[tokio::test]
    async fn connections_are_pumped_until_the_pod_side_ends() {
        // A "pod" that answers one line and closes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = [0u8; 4];
            s.read_exact(&mut line).await.unwrap();
            s.write_all(b"pong").await.unwrap();
        });
        let (server, client) = tokio::io::duplex(64 * 1024);
        let conn = Connection::serve(server, valid_stream);
        let session = tokio::spawn(serve_spdy(conn, move |port| async move {
            if port == addr.port() {
                TcpStream::connect(addr).await.map_err(|e| e.to_string())
            } else {
                Err(format!("nothing listens on {port}"))
            }
        }));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut enc = Encoder::new().unwrap();
        let mut send = |f: Frame| {
            let mut b = BytesMut::new();
            enc.encode(&f, &mut b).unwrap();
            b
        };
        let open = |id: u32, kind: &str, port: u16, req: &str| Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new().with("streamType", kind).with("port", &port.to_string()).with("requestID", req),
        };
        // kubectl: the error stream (closed at once), then the data stream; a second
        // request to a port nobody listens on.
        for f in [
            open(1, "error", addr.port(), "0"),
            Frame::Data { id: 1, fin: true, data: Bytes::new() },
            open(3, "data", addr.port(), "0"),
            Frame::Data { id: 3, fin: false, data: Bytes::from_static(b"ping") },
            open(5, "error", 1, "1"),
            open(7, "data", 1, "1"),
        ] {
            wr.write_all(&send(f)).await.unwrap();
        }
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut fins = Vec::new();
        while fins.len() < 4 {
            let f = loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    break f;
                }
                let n = tokio::time::timeout(Duration::from_secs(5), rd.read_buf(&mut buf)).await.unwrap().unwrap();
                assert!(n > 0, "the connection ended early");
            };
            match f {
                Frame::Data { id, fin, data: d } => {
                    data.entry(id).or_default().extend_from_slice(&d);
                    if fin {
                        fins.push(id);
                    }
                }
                Frame::SynReply { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(data[&3], b"pong");
        assert!(data.get(&1).is_none_or(Vec::is_empty));
        assert!(String::from_utf8_lossy(&data[&5]).contains("nothing listens on 1"), "{data:?}");
        fins.sort();
        assert_eq!(fins, [1, 3, 5, 7]);
        drop((rd, wr));
        tokio::time::timeout(Duration::from_secs(10), session).await.expect("the session ends").unwrap();
    }
}
