//! The masters' hot-path transport: length-prefixed frames on a plain TCP connection
//! that shares the peer port with the gRPC `Peer` service.
//!
//! A frame connection opens with [`MAGIC`] and the caller's cluster id (8 bytes, big
//! endian); the acceptor answers one status byte (0 = accepted, else refused, followed
//! by a length-prefixed reason). Then both sides exchange frames:
//! `len: u32 | id: u64 | kind: u32 | data`, `len` counting id, kind and data. Replies
//! carry the id of their call. gRPC over HTTP/2 cost about three task wake-ups and a
//! tenth of a master's CPU per call on top of this (docs/benchmarks.md).
//!
//! The listener tells the two apart by the first bytes: an HTTP/2 client always opens
//! with its connection preface, never with [`MAGIC`].

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The first bytes of a frame connection.
pub(crate) const MAGIC: &[u8; 8] = b"KLSNFRM1";
/// Frames larger than this are refused (snapshots travel over gRPC, not here).
pub(crate) const MAX_FRAME: usize = 256 << 20;
const HEADER: usize = 12;
const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// One call or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub id: u64,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// Read one frame; `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let len = match r.read_u32().await {
        Ok(n) => n as usize,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(HEADER..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame length {len} out of bounds")));
    }
    let id = r.read_u64().await?;
    let kind = r.read_u32().await?;
    let mut data = vec![0; len - HEADER];
    r.read_exact(&mut data).await?;
    Ok(Some(Frame { id, kind, data }))
}

async fn put_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> io::Result<()> {
    if f.data.len() + HEADER > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes too large", f.data.len())));
    }
    w.write_u32((f.data.len() + HEADER) as u32).await?;
    w.write_u64(f.id).await?;
    w.write_u32(f.kind).await?;
    w.write_all(&f.data).await
}

/// Write every frame sent on `rx`, flushing whenever the queue runs dry (so a burst
/// goes out in few syscalls), until `rx` closes, a write fails or `stop` fires.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Frame>,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    loop {
        let first = tokio::select! {
            f = rx.recv() => match f { Some(f) => f, None => return Ok(()) },
            _ = stop.cancelled() => return Ok(()),
        };
        put_frame(&mut w, &first).await?;
        while let Ok(more) = rx.try_recv() {
            put_frame(&mut w, &more).await?;
        }
        w.flush().await?;
    }
}

/// Client side of the handshake: announce a frame connection for `cluster_id`.
pub(crate) async fn hello(stream: &mut TcpStream, cluster_id: u64) -> io::Result<()> {
    let mut msg = MAGIC.to_vec();
    msg.extend_from_slice(&cluster_id.to_be_bytes());
    stream.write_all(&msg).await?;
    match stream.read_u8().await? {
        0 => Ok(()),
        _ => {
            let len = (stream.read_u32().await? as usize).min(4096);
            let mut reason = vec![0; len];
            stream.read_exact(&mut reason).await?;
            Err(io::Error::new(io::ErrorKind::PermissionDenied, String::from_utf8_lossy(&reason).into_owned()))
        }
    }
}

/// Acceptor side: read the cluster id that follows [`MAGIC`] and accept or refuse it.
pub(crate) async fn welcome(stream: &mut TcpStream, cluster_id: u64) -> io::Result<()> {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).await?;
    let theirs = stream.read_u64().await?;
    if theirs == cluster_id {
        return stream.write_u8(0).await;
    }
    let reason =
        format!("cluster id mismatch: this master belongs to cluster {cluster_id:016x}, the caller to {theirs:016x}");
    stream.write_u8(1).await?;
    stream.write_u32(reason.len() as u32).await?;
    stream.write_all(reason.as_bytes()).await?;
    Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
}

/// Does this connection open with [`MAGIC`]? Waits (bounded) for the first 8 bytes
/// without consuming them.
async fn is_frame_conn(stream: &TcpStream) -> bool {
    let sniff = async {
        let mut buf = [0u8; 8];
        loop {
            match stream.peek(&mut buf).await {
                Ok(n) if n >= MAGIC.len() => return &buf == MAGIC,
                // A shorter prefix of something else is already decided.
                Ok(n) if n > 0 && buf[..n] != MAGIC[..n] => return false,
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(SNIFF_TIMEOUT, sniff).await.unwrap_or(false)
}

/// Accept on the peer port: frame connections go to `on_frames`, everything else
/// (gRPC) to the returned stream, which feeds tonic's server.
pub(crate) fn split_listener<F>(
    listener: TcpListener,
    stop: CancellationToken,
    on_frames: F,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TcpStream>>
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let on_frames = std::sync::Arc::new(on_frames);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "peer accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let (tx, on_frames) = (tx.clone(), on_frames.clone());
            tokio::spawn(async move {
                if is_frame_conn(&stream).await {
                    on_frames(stream);
                } else {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(write_loop(a, rx, CancellationToken::new()));
        let sent = vec![Frame { id: 1, kind: 1, data: vec![] }, Frame { id: u64::MAX, kind: 4, data: vec![7; 70_000] }];
        for f in &sent {
            tx.send(f.clone()).await.unwrap();
        }
        drop(tx);
        writer.await.unwrap().unwrap();
        for f in &sent {
            assert_eq!(read_frame(&mut b).await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut b).await.unwrap(), None, "clean end of stream");

        for len in [0u32, 11, (MAX_FRAME + 1) as u32] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_u32(len).await.unwrap();
            let err = read_frame(&mut b).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "length {len}");
        }
    }

    #[tokio::test]
    async fn handshake_refuses_another_cluster() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                assert!(is_frame_conn(&s).await);
                results.push(welcome(&mut s, 42).await.is_ok());
            }
            results
        });
        let mut ok = TcpStream::connect(addr).await.unwrap();
        hello(&mut ok, 42).await.unwrap();
        let mut other = TcpStream::connect(addr).await.unwrap();
        let err = hello(&mut other, 7).await.unwrap_err();
        assert!(err.to_string().contains("cluster id mismatch"), "{err}");
        assert_eq!(server.await.unwrap(), vec![true, false]);
    }
}
