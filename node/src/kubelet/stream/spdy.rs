//! SPDY/3.1, the server half, as moby/spdystream (what kubectl and client-go use) speaks
//! it: frames ([`Frame`], [`Decoder`], [`Encoder`]) with header blocks compressed by one
//! zlib stream per direction primed with the SPDY/3 dictionary, and a [`Connection`] whose
//! streams the client opens (odd ids) and the server answers at once. Like spdystream
//! there is no flow control: SETTINGS and WINDOW_UPDATE are read and ignored. Streams of a
//! remote command are told apart by their `streamType` header ([`serve_remotecommand`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{decode_resizes, Options, Out, Outbound, Outcome, Session, StatusFormat};

/// The `Upgrade` protocol.
pub const UPGRADE: &str = "SPDY/3.1";
/// `X-Stream-Protocol-Version`s of exec and attach, most preferred first (v5 is v4 on SPDY).
pub const REMOTECOMMAND_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// The `X-Stream-Protocol-Version` of port-forward.
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// RST_STREAM statuses.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
/// The most a frame's length field holds.
const MAX_LENGTH: usize = (1 << 24) - 1;
/// The most a header block may inflate to.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// How long the client has to create a remote command's streams (upstream's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the session, how long the client has to close its side before it is cut off.
const LINGER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame that does not parse.
    #[error("invalid {kind} frame: {reason}")]
    Invalid { kind: &'static str, reason: String },
    /// A header block that does not inflate or parse.
    #[error("bad header block: {0}")]
    Headers(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn invalid(kind: &'static str, reason: impl Into<String>) -> SpdyError {
    SpdyError::Invalid { kind, reason: reason.into() }
}

/// A stream's headers: lower-case names, a name given several values is there several times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// With one more value.
    pub fn with(mut self, name: &str, value: &str) -> Headers {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The block before compression: a count, then each name with its values joined by NUL.
    fn to_block(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in &self.0 {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let mut b = Vec::new();
        b.put_u32(u32::try_from(names.len()).unwrap_or(u32::MAX));
        for name in names {
            let value =
                self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("\0");
            for s in [name, value.as_str()] {
                b.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
                b.put_slice(s.as_bytes());
            }
        }
        b
    }

    fn from_block(mut b: &[u8]) -> Result<Headers, SpdyError> {
        let short = || SpdyError::Headers("truncated".into());
        let take = |b: &mut &[u8]| -> Result<String, SpdyError> {
            if b.remaining() < 4 {
                return Err(short());
            }
            let len = b.get_u32() as usize;
            if b.remaining() < len {
                return Err(short());
            }
            let s = String::from_utf8_lossy(&b[..len]).into_owned();
            b.advance(len);
            Ok(s)
        };
        if b.remaining() < 4 {
            return Err(short());
        }
        let count = b.get_u32();
        let mut h = Headers::new();
        for _ in 0..count {
            let name = take(&mut b)?.to_ascii_lowercase();
            let values = take(&mut b)?;
            for v in values.split('\0') {
                h.0.push((name.clone(), v.to_string()));
            }
        }
        Ok(h)
    }
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    /// (flags, id, value) of each setting.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this server does not know (skipped).
    Unknown {
        kind: u16,
    },
}

/// Frames from bytes; header blocks share one inflate stream for the connection.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { inflate: Decompress::new(true) }
    }
}

impl Decoder {
    /// The next whole frame at the front of `buf` (taken off it), if it is all there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let mut head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            let id = first & 0x7fff_ffff;
            if id == 0 {
                return Err(invalid("DATA", "stream 0"));
            }
            return Ok(Some(Frame::Data { id, fin, data: body }));
        }
        let version = u16::try_from((first >> 16) & 0x7fff).unwrap_or(0);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::try_from(first & 0xffff).unwrap_or(0);
        let need = |kind_name: &'static str, n: usize, body: &Bytes| {
            if body.len() < n {
                Err(invalid(kind_name, format!("{} bytes, at least {n} needed", body.len())))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10, &body)?;
                let id = body.get_u32() & 0x7fff_ffff;
                let associated = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                let _slot = body.get_u8();
                let headers = self.headers(&body)?;
                if id == 0 {
                    return Err(invalid("SYN_STREAM", "stream 0"));
                }
                Frame::SynStream {
                    id,
                    associated,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need("SYN_REPLY", 4, &body)?;
                let id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, fin, headers }
                } else {
                    Frame::Headers { id, fin, headers }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8, &body)?;
                Frame::RstStream { id: body.get_u32() & 0x7fff_ffff, status: body.get_u32() }
            }
            SETTINGS => {
                need("SETTINGS", 4, &body)?;
                let count = body.get_u32() as usize;
                if body.len() != count.saturating_mul(8) {
                    return Err(invalid("SETTINGS", format!("{count} settings in {} bytes", body.len())));
                }
                let entries = (0..count)
                    .map(|_| {
                        let flag_id = body.get_u32();
                        (u8::try_from(flag_id >> 24).unwrap_or(0), flag_id & 0x00ff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            PING => {
                need("PING", 4, &body)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need("GOAWAY", 4, &body)?;
                let last_good = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8, &body)?;
                Frame::WindowUpdate { id: body.get_u32() & 0x7fff_ffff, delta: body.get_u32() & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Inflate and parse one header block (every block, so the shared stream stays in step).
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Headers(format!("larger than {MAX_HEADER_BLOCK} bytes")));
                }
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let r = self.inflate.decompress_vec(&compressed[used..], &mut out, FlushDecompress::Sync);
            used += usize::try_from(self.inflate.total_in() - in_before).unwrap_or(0);
            match r {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| SpdyError::Headers(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            let progress = self.inflate.total_in() != in_before || out.len() != out_before;
            if (used == compressed.len() && out.len() < out.capacity()) || !progress {
                break;
            }
        }
        if used != compressed.len() {
            return Err(SpdyError::Headers(format!("{} of {} compressed bytes used", used, compressed.len())));
        }
        Headers::from_block(&out)
    }
}

/// Frames to bytes; header blocks share one deflate stream for the connection.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Encoder, SpdyError> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(DICTIONARY).map_err(|e| SpdyError::Headers(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    /// Append `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]| -> Result<(), SpdyError> {
            if body.len() > MAX_LENGTH {
                return Err(invalid("control", format!("{} bytes", body.len())));
            }
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32(u32::from(flags) << 24 | u32::try_from(body.len()).unwrap_or(0));
            out.put_slice(body);
            Ok(())
        };
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        let mut body = Vec::new();
        match frame {
            Frame::SynStream { id, associated, priority, fin: f, unidirectional, headers } => {
                body.put_u32(*id);
                body.put_u32(*associated);
                body.put_u8(priority << 5);
                body.put_u8(0);
                body.extend(self.compress(&headers.to_block())?);
                let flags = fin(*f) | if *unidirectional { FLAG_UNIDIRECTIONAL } else { 0 };
                control(out, SYN_STREAM, flags, &body)
            }
            Frame::SynReply { id, fin: f, headers } | Frame::Headers { id, fin: f, headers } => {
                body.put_u32(*id);
                body.extend(self.compress(&headers.to_block())?);
                let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                control(out, kind, fin(*f), &body)
            }
            Frame::RstStream { id, status } => {
                body.put_u32(*id);
                body.put_u32(*status);
                control(out, RST_STREAM, 0, &body)
            }
            Frame::Settings { entries } => {
                body.put_u32(u32::try_from(entries.len()).unwrap_or(0));
                for (flags, id, value) in entries {
                    body.put_u32(u32::from(*flags) << 24 | id & 0x00ff_ffff);
                    body.put_u32(*value);
                }
                control(out, SETTINGS, 0, &body)
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                body.put_u32(*last_good);
                body.put_u32(*status);
                control(out, GOAWAY, 0, &body)
            }
            Frame::WindowUpdate { id, delta } => {
                body.put_u32(*id);
                body.put_u32(*delta);
                control(out, WINDOW_UPDATE, 0, &body)
            }
            Frame::Data { id, fin: f, data } => {
                if data.len() > MAX_LENGTH {
                    return Err(invalid("DATA", format!("{} bytes", data.len())));
                }
                out.put_u32(id & 0x7fff_ffff);
                out.put_u32(u32::from(fin(*f)) << 24 | u32::try_from(data.len()).unwrap_or(0));
                out.put_slice(data);
                Ok(())
            }
            Frame::Unknown { kind } => Err(invalid("unknown", format!("type {kind} cannot be written"))),
        }
    }

    /// Deflate one header block with a sync flush (the peer inflates it whole).
    fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() + 64);
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.deflate.total_in(), out.len());
            self.deflate
                .compress_vec(&block[used..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Headers(e.to_string()))?;
            used += usize::try_from(self.deflate.total_in() - in_before).unwrap_or(0);
            let progress = self.deflate.total_in() != in_before || out.len() != out_before;
            if (used == block.len() && out.len() < out.capacity()) || !progress {
                return Ok(out);
            }
        }
    }
}

/// A stream the client opened (SYN_STREAM), already answered (SYN_REPLY).
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; ends at its FIN or RST_STREAM, or the connection's end.
    pub incoming: mpsc::Receiver<Bytes>,
    pub out: Outbound,
}

/// Aborts its tasks when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The server side of one SPDY connection: a reader that answers the client's streams
/// (and pings), and a writer for everything sent.
pub struct Connection {
    /// The streams the client opens, in order.
    pub streams: mpsc::Receiver<Stream>,
    /// Cancelled when the client has gone (its end of the connection, GOAWAY, or a
    /// protocol error).
    pub gone: CancellationToken,
    out: mpsc::Sender<Out>,
    tasks: Tasks,
}

impl Connection {
    /// Serve SPDY on `io` (after the 101). A new stream whose headers `accept` refuses is
    /// reset (REFUSED_STREAM) instead of answered.
    pub fn serve<IO, A>(io: IO, accept: A) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
        A: Fn(&Headers) -> Result<(), String> + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::channel(32);
        let gone = CancellationToken::new();
        let last_good = Arc::new(AtomicU32::new(0));
        let reader = Reader { ctrl: ctrl_tx, out: out_tx.clone(), streams: streams_tx, last_good: last_good.clone() };
        let reader_gone = gone.clone();
        let read = tokio::spawn(async move {
            if let Err(e) = reader.run(rd, accept).await {
                tracing::debug!(error = %e, "SPDY connection: reading ended");
            }
            reader_gone.cancel();
        });
        let write = tokio::spawn(async move {
            if let Err(e) = write_loop(wr, ctrl_rx, out_rx, last_good).await {
                tracing::debug!(error = %e, "SPDY connection: writing ended");
            }
        });
        Connection { streams, gone, out: out_tx, tasks: Tasks(vec![read, write]) }
    }

    /// End the session: what was sent is written, then GOAWAY, and the connection is
    /// closed once the client has closed its side (or after a while).
    pub async fn finish(self) {
        close(self.out, self.tasks).await;
    }
}

/// Finish, then wait for the writer (GOAWAY, shutdown) and the reader (the client's end),
/// each at most [`LINGER`]; what is left is aborted.
async fn close(out: mpsc::Sender<Out>, mut tasks: Tasks) {
    let _ = out.send(Out::Finish).await;
    drop(out);
    for t in tasks.0.iter_mut().rev() {
        let _ = tokio::time::timeout(LINGER, t).await;
    }
}

struct Reader {
    ctrl: mpsc::UnboundedSender<Frame>,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
    last_good: Arc<AtomicU32>,
}

impl Reader {
    async fn run<R, A>(self, mut rd: R, accept: A) -> Result<(), SpdyError>
    where
        R: AsyncRead + Unpin,
        A: Fn(&Headers) -> Result<(), String>,
    {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        let mut last_id = 0;
        loop {
            while let Some(frame) = decoder.decode(&mut buf)? {
                match frame {
                    Frame::SynStream { id, fin, headers, .. } => {
                        if id % 2 == 0 || id <= last_id {
                            let _ = self.ctrl.send(Frame::RstStream { id, status: PROTOCOL_ERROR });
                            continue;
                        }
                        last_id = id;
                        if let Err(reason) = accept(&headers) {
                            tracing::debug!(stream = id, %reason, "SPDY stream refused");
                            let _ = self.ctrl.send(Frame::RstStream { id, status: REFUSED_STREAM });
                            continue;
                        }
                        self.last_good.store(id, Ordering::Relaxed);
                        let (tx, incoming) = mpsc::channel(16);
                        if !fin {
                            open.insert(id, tx);
                        }
                        // Answered before the handler sees it: the reply precedes its data.
                        let _ = self.ctrl.send(Frame::SynReply { id, fin: false, headers: Headers::new() });
                        let out = Outbound::new(id, self.out.clone());
                        if self.streams.send(Stream { id, headers, incoming, out }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Frame::Data { id, fin, data } => {
                        if let Some(tx) = open.get(&id) {
                            if !data.is_empty() && tx.send(data).await.is_err() {
                                open.remove(&id);
                            }
                        }
                        if fin {
                            open.remove(&id);
                        }
                    }
                    Frame::RstStream { id, .. } => {
                        open.remove(&id);
                    }
                    // The client's pings (odd ids) come back; ours would be even (none are sent).
                    Frame::Ping { id } if id % 2 == 1 => {
                        let _ = self.ctrl.send(Frame::Ping { id });
                    }
                    Frame::GoAway { .. } => return Ok(()),
                    _ => {}
                }
            }
            if rd.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut ctrl: mpsc::UnboundedReceiver<Frame>,
    mut out: mpsc::Receiver<Out>,
    last_good: Arc<AtomicU32>,
) -> Result<(), SpdyError> {
    let mut encoder = Encoder::new()?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // Replies and pings first: a stream's reply is queued before anything is sent on it.
        let frame = tokio::select! {
            biased;
            Some(f) = ctrl.recv() => f,
            o = out.recv() => match o {
                Some(Out::Data(id, data)) => Frame::Data { id, fin: false, data },
                Some(Out::Close(id)) => Frame::Data { id, fin: true, data: Bytes::new() },
                Some(Out::Finish) | None => break,
            },
        };
        encoder.encode(&frame, &mut buf)?;
        wr.write_all(&buf).await?;
        buf.clear();
        wr.flush().await?;
    }
    while let Ok(f) = ctrl.try_recv() {
        encoder.encode(&f, &mut buf)?;
    }
    encoder.encode(&Frame::GoAway { last_good: last_good.load(Ordering::Relaxed), status: 0 }, &mut buf)?;
    wr.write_all(&buf).await?;
    wr.flush().await?;
    wr.shutdown().await?;
    Ok(())
}

/// Whether a request asks to upgrade to SPDY/3.1.
pub fn requested(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains(want)))
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "spdy/3.1")
}

/// Why an `X-Stream-Protocol-Version` negotiation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiation {
    /// The client offered none (400).
    Missing,
    /// None of the client's is ours (403, with the ones we accept).
    NoMatch(String),
}

/// The first of the client's `X-Stream-Protocol-Version`s (headers, comma-separated) that
/// the server speaks, as upstream's `httpstream.Handshake`.
pub fn negotiate(headers: &http::HeaderMap, supported: &[&'static str]) -> Result<&'static str, Negotiation> {
    let offered: Vec<String> = headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Err(Negotiation::Missing);
    }
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied()).ok_or_else(|| {
        Negotiation::NoMatch(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
        ))
    })
}

/// An exec or attach over SPDY: wait for the client's streams (error, then those asked
/// for: stdin, stdout, stderr, resize), run the session, write its status on the error
/// stream and close.
pub async fn serve_remotecommand<IO, F, Fut>(io: IO, protocol: &str, opts: Options, run: F)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let conn = Connection::serve(io, |_| Ok(()));
    let resizable = !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io");
    let wanted = [
        ("error", true),
        ("stdin", opts.stdin),
        ("stdout", opts.stdout),
        ("stderr", opts.stderr),
        ("resize", opts.tty && resizable),
    ];
    let expected = wanted.iter().filter(|(_, on)| *on).count();
    let Connection { mut streams, gone, out, tasks } = conn;
    let mut got: HashMap<&'static str, Stream> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while got.len() < expected {
        match tokio::time::timeout_at(deadline, streams.recv()).await {
            Ok(Some(s)) => {
                let kind = s.headers.get("streamtype").unwrap_or_default().to_string();
                match wanted.iter().find(|(k, on)| *on && *k == kind) {
                    Some((k, _)) => {
                        got.insert(k, s);
                    }
                    None => tracing::debug!(stream_type = %kind, "an unexpected stream: ignored"),
                }
            }
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(expected, got = got.len(), "timed out waiting for the client's streams");
                close(out, tasks).await;
                return;
            }
        }
    }
    // Streams opened later are not used; their reader side is dropped as they come.
    let drain = tokio::spawn(async move { while streams.recv().await.is_some() {} });
    let mut take = |k: &str| got.remove(k);
    let (error, stdin, stdout, stderr, resize) =
        (take("error"), take("stdin"), take("stdout"), take("stderr"), take("resize"));
    let ours: Vec<Outbound> =
        [&error, &stdin, &stdout, &stderr, &resize].into_iter().flatten().map(|s| s.out.clone()).collect();
    let session = Session {
        stdin: stdin.map(|s| s.incoming),
        stdout: stdout.map(|s| s.out),
        stderr: stderr.map(|s| s.out),
        resize: resize.map(|s| decode_resizes(s.incoming)),
        gone: gone.clone(),
    };
    let outcome = run(session).await;
    if let (Some(e), Some(body)) = (&error, StatusFormat::of(protocol).render(&outcome)) {
        e.out.send(Bytes::from(body)).await;
    }
    for o in &ours {
        o.close().await;
    }
    drain.abort();
    close(out, tasks).await;
}

/// The SPDY/3 header dictionary (the SPDY/3 draft, section 2.6.10.1).
#[rustfmt::skip]
pub const DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\
\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\
\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03\
age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\
\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10co\
ntent-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0b\
content-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\
\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\
\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-mat\
ch\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\
\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-\
authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\
\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\
\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06\
method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\x07vers\
ion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cook\
ie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101201202205206300302303304305306307402\
405406407408409410411412413414415416417502504505203\x20Non-Authoritative\x20Information204\x20\
No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Request401\x20Unauthorized403\x20Forbi\
dden404\x20Not\x20Found500\x20Internal\x20Server\x20Error501\x20Not\x20Implemented503\x20Ser\
vice\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20No\
v\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,t\
ext/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text\
/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq\
=0.";

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Python's zlib (one compressor, primed with the dictionary, sync-flushed
    /// per block) as spdystream writes them: kubectl's error stream of an exec, then a
    /// port-forward data stream.
    const SYN_ERROR: &[u8] = b"\x80\x03\x00\x01\x00\x00\x00\x28\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x78\xf9\xe3\xc6\xa7\xc2\x02\xa6\x23\x46\x70\x3a\x2b\x29\x4a\x4d\xcc\x85\x16\x25\xac\xa9\xa0\x80\x06\x00\x00\x00\xff\xff";
    const SYN_DATA: &[u8] = b"\x80\x03\x00\x01\x00\x00\x00\x2e\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x02\xa5\x47\x48\xd1\x5c\x04\xce\x05\x16\x06\x16\x06\x40\x9a\xb3\x08\x12\x95\x99\xa0\x24\xce\x68\x80\xa1\x19\x54\x0e\x25\x02\x00\x00\x00\xff\xff";

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = d.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    #[test]
    fn the_dictionary_is_the_spec_s() {
        assert_eq!(DICTIONARY.len(), 1423);
        // Its Adler-32 is the dictionary id zlib puts in every SPDY/3 header stream.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in DICTIONARY {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(b << 16 | a, 0xe3c6_a7c2);
    }

    #[test]
    fn syn_streams_from_another_zlib_are_read() {
        let mut d = Decoder::default();
        let frames = decode_all(&mut d, &[SYN_ERROR, SYN_DATA].concat());
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    id: 1,
                    associated: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: Headers::new().with("streamtype", "error")
                },
                Frame::SynStream {
                    id: 3,
                    associated: 0,
                    priority: 0,
                    fin: false,
                    unidirectional: false,
                    headers: Headers::new().with("port", "8080").with("requestid", "0").with("streamtype", "data")
                },
            ]
        );
        assert_eq!(frames[1].clone(), frames[1]);
        // Byte by byte, a frame is only taken once it is whole.
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in SYN_ERROR.iter().chain(SYN_DATA) {
            buf.put_u8(*b);
            if let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn other_frames_by_the_spec_s_layout() {
        let mut d = Decoder::default();
        let bytes: &[u8] = &[
            // DATA on stream 5, FIN, "hi".
            0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x02, b'h', b'i', //
            // RST_STREAM stream 5, CANCEL.
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 5, 0, 0, 0, 5, //
            // SETTINGS: one, persisted flag, INITIAL_WINDOW_SIZE (7) = 65536.
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 1, 0, 0, //
            // PING 7.
            0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 7, //
            // WINDOW_UPDATE stream 5 by 1024.
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 5, 0, 0, 4, 0, //
            // GOAWAY, last good 3, OK.
            0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 0, 0, 0, //
            // CREDENTIAL (10): skipped.
            0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0, 0,
        ];
        assert_eq!(
            decode_all(&mut d, bytes),
            [
                Frame::Data { id: 5, fin: true, data: Bytes::from_static(b"hi") },
                Frame::RstStream { id: 5, status: 5 },
                Frame::Settings { entries: vec![(1, 7, 65536)] },
                Frame::Ping { id: 7 },
                Frame::WindowUpdate { id: 5, delta: 1024 },
                Frame::GoAway { last_good: 3, status: 0 },
                Frame::Unknown { kind: 10 },
            ]
        );
        // Written back, the same bytes.
        let mut e = Encoder::new().unwrap();
        let mut out = BytesMut::new();
        for f in decode_all(&mut Decoder::default(), &bytes[..bytes.len() - 10]) {
            e.encode(&f, &mut out).unwrap();
        }
        assert_eq!(&out[..], &bytes[..bytes.len() - 10]);
        // Another version, and stream 0, are errors.
        let v2 = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(Decoder::default().decode(&mut BytesMut::from(&v2[..])), Err(SpdyError::Version(2))));
        let zero = [0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Decoder::default().decode(&mut BytesMut::from(&zero[..])).is_err());
        let short = [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(Decoder::default().decode(&mut BytesMut::from(&short[..])).is_err());
    }

    fn many_sorted() -> Headers {
        Headers::new().with("a", "1").with("a", "3").with("b", "2")
    }

    #[test]
    fn header_blocks_round_trip_through_one_stream_each_way() {
        let mut e = Encoder::new().unwrap();
        let mut d = Decoder::default();
        let mut out = BytesMut::new();
        let many = Headers::new().with("a", "1").with("a", "3").with("b", "2");
        let frames = [
            Frame::SynReply { id: 1, fin: false, headers: Headers::new() },
            Frame::SynStream { id: 3, associated: 1, priority: 7, fin: true, unidirectional: true, headers: many },
            Frame::Headers { id: 3, fin: false, headers: Headers::new().with("x-long", &"0123456789".repeat(500)) },
            Frame::SynReply { id: 5, fin: true, headers: Headers::new().with("streamtype", "stdout") },
        ];
        for f in &frames {
            e.encode(f, &mut out).unwrap();
        }
        assert_eq!(decode_all(&mut d, &out), frames);
        // Values of one name go together, NUL-separated, in one pair.
        assert_eq!(Headers::new().with("a", "1").with("a", "2").to_block(), b"\0\0\0\x01\0\0\0\x01a\0\0\0\x031\x002");
        let mixed = Headers::new().with("a", "1").with("b", "2").with("a", "3");
        assert_eq!(Headers::from_block(&mixed.to_block()).unwrap(), many_sorted());
        // A header block that is not zlib ends the connection.
        let mut bad = BytesMut::new();
        bad.put_slice(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4]);
        assert!(matches!(Decoder::default().decode(&mut bad), Err(SpdyError::Headers(_))));
    }

    #[test]
    fn protocols_are_negotiated_as_upstream_does() {
        let mut h = http::HeaderMap::new();
        assert_eq!(negotiate(&h, REMOTECOMMAND_PROTOCOLS), Err(Negotiation::Missing));
        h.append("x-stream-protocol-version", "v4.channel.k8s.io".parse().unwrap());
        h.append("x-stream-protocol-version", "v3.channel.k8s.io, v2.channel.k8s.io".parse().unwrap());
        assert_eq!(negotiate(&h, REMOTECOMMAND_PROTOCOLS), Ok("v4.channel.k8s.io"));
        assert!(
            matches!(negotiate(&h, PORTFORWARD_PROTOCOLS), Err(Negotiation::NoMatch(m)) if m.contains("portforward.k8s.io"))
        );
        h.insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
        assert!(!requested(&h));
        h.insert(http::header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert!(requested(&h));
    }

    /// A client's side of a connection, frames written and read with the same codec.
    struct Client {
        io: tokio::io::DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl Client {
        fn new(io: tokio::io::DuplexStream) -> Client {
            Client { io, enc: Encoder::new().unwrap(), dec: Decoder::default(), buf: BytesMut::new() }
        }
        async fn send(&mut self, f: Frame) {
            let mut out = BytesMut::new();
            self.enc.encode(&f, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                let read = tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf));
                if read.await.expect("a frame within 5 s").unwrap() == 0 {
                    return None;
                }
            }
        }
        async fn open(&mut self, id: u32, headers: Headers) {
            self.send(Frame::SynStream { id, associated: 0, priority: 0, fin: false, unidirectional: false, headers })
                .await;
        }
    }

    #[tokio::test]
    async fn a_remote_command_over_spdy() {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let opts = Options { stdin: true, stdout: true, stderr: true, tty: false };
        let session =
            tokio::spawn(serve_remotecommand(server, "v4.channel.k8s.io", opts, |mut s: Session| async move {
                // Echo stdin to stdout until it ends, say so on stderr, exit 3.
                let (out, err) = (s.stdout.take().unwrap(), s.stderr.take().unwrap());
                let mut stdin = s.stdin.take().unwrap();
                while let Some(b) = stdin.recv().await {
                    out.send(b).await;
                }
                err.send(Bytes::from_static(b"eof")).await;
                Outcome::Exited(3)
            }));
        let mut c = Client::new(client);
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            c.open(id, Headers::new().with("streamType", kind)).await;
            assert_eq!(c.recv().await, Some(Frame::SynReply { id, fin: false, headers: Headers::new() }));
        }
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.recv().await, Some(Frame::Ping { id: 1 }));
        c.send(Frame::Data { id: 3, fin: false, data: Bytes::from_static(b"hello") }).await;
        assert_eq!(c.recv().await, Some(Frame::Data { id: 5, fin: false, data: Bytes::from_static(b"hello") }));
        c.send(Frame::WindowUpdate { id: 5, delta: 100 }).await;
        c.send(Frame::Data { id: 3, fin: true, data: Bytes::new() }).await;
        assert_eq!(c.recv().await, Some(Frame::Data { id: 7, fin: false, data: Bytes::from_static(b"eof") }));
        let Some(Frame::Data { id: 1, fin: false, data }) = c.recv().await else { panic!("no status") };
        let status: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let mut fins = Vec::new();
        for _ in 0..4 {
            match c.recv().await {
                Some(Frame::Data { id, fin: true, data }) if data.is_empty() => fins.push(id),
                other => panic!("expected a FIN, got {other:?}"),
            }
        }
        assert_eq!(fins, [1, 3, 5, 7]);
        assert_eq!(c.recv().await, Some(Frame::GoAway { last_good: 7, status: 0 }));
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), session).await.expect("the session ends").unwrap();
    }

    #[tokio::test]
    async fn refused_streams_are_reset_and_even_ids_are_errors() {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut conn = Connection::serve(server, |h: &Headers| h.get("port").map(|_| ()).ok_or("no port".to_string()));
        let mut c = Client::new(client);
        c.open(1, Headers::new()).await;
        assert_eq!(c.recv().await, Some(Frame::RstStream { id: 1, status: REFUSED_STREAM }));
        c.open(2, Headers::new().with("port", "80")).await;
        assert_eq!(c.recv().await, Some(Frame::RstStream { id: 2, status: PROTOCOL_ERROR }));
        c.open(3, Headers::new().with("port", "80")).await;
        assert!(matches!(c.recv().await, Some(Frame::SynReply { id: 3, .. })));
        let s = conn.streams.recv().await.unwrap();
        assert_eq!((s.id, s.headers.get("Port")), (3, Some("80")));
        // The client going away is seen.
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), conn.gone.cancelled()).await.unwrap();
        assert!(conn.streams.recv().await.is_none());
    }
}
