//! One directed link's TCP proxy: a listener that forwards every accepted connection to
//! one upstream address, both directions through a [`Mode`] — a fixed latency with
//! jitter, or loss as TCP shows it to the application (see the parent module's doc).
//!
//! Each direction is a reader and a writer joined by a queue of timestamped chunks: the
//! reader stamps every chunk with its release time (never earlier than the chunk before
//! it, so order is kept) and reads on; the writer waits until each chunk's time and
//! writes it. A slow release never stops reading, so throughput survives the latency.
//! Closing a link ([`Link::stop`], or dropping it) resets every proxied connection on
//! both sides, so the masters notice at once and reconnect.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes read at most at once (one chunk).
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction before the reader waits for the writer.
const QUEUE: usize = 256;
/// How long the proxy tries to reach the upstream for an accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many retransmissions of one chunk are modelled.
const MAX_RETRIES: u32 = 16;
/// How long [`Link::stop`] waits for the link's tasks to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a link does to the bytes it forwards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Every chunk is released `base` × (1 ± `jitter`) after it was read (`jitter` a
    /// fraction of `base`, 0 to 1), never before the chunk ahead of it.
    Delay { base: Duration, jitter: f64 },
    /// Each transmission of a chunk is lost with probability `loss`; a lost chunk — and,
    /// in order, everything behind it — is released after the retransmission timeouts
    /// (`rto`, doubling per consecutive loss of the same chunk, at most `rto_max` each).
    /// Independently each connection is reset after an exponentially distributed time
    /// with `resets_per_s` resets per second (0: never).
    Loss { loss: f64, rto: Duration, rto_max: Duration, resets_per_s: f64 },
}

impl Mode {
    /// The same mode with every number in range (NaN and out-of-range values clamped), so
    /// no input can make the schedule panic.
    pub fn sane(self) -> Mode {
        let unit = |x: f64, max: f64| if x.is_finite() && x > 0.0 { x.min(max) } else { 0.0 };
        match self {
            Mode::Delay { base, jitter } => {
                Mode::Delay { base: base.min(Duration::from_secs(60)), jitter: unit(jitter, 1.0) }
            }
            Mode::Loss { loss, rto, rto_max, resets_per_s } => {
                let rto = rto.clamp(Duration::from_millis(1), Duration::from_secs(60));
                Mode::Loss {
                    loss: unit(loss, 0.95),
                    rto,
                    rto_max: rto_max.clamp(rto, Duration::from_secs(60)),
                    resets_per_s: unit(resets_per_s, 1000.0),
                }
            }
        }
    }

    /// When a new connection is to be reset (`None`: never).
    fn reset_after(&self, rng: &mut StdRng) -> Option<Duration> {
        match *self {
            Mode::Loss { resets_per_s, .. } if resets_per_s > 0.0 => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                Duration::try_from_secs_f64(-u.ln() / resets_per_s).ok().map(|d| d.min(Duration::from_secs(86_400)))
            }
            _ => None,
        }
    }
}

/// Counters of one link, updated as it runs.
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    connect_failures: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    lost: AtomicU64,
    resets: AtomicU64,
}

/// A snapshot of a link's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted.
    pub connections: u64,
    /// Accepted connections whose upstream could not be reached (reset at once).
    pub connect_failures: u64,
    /// Bytes delivered to the upstream, and back to the connecting side.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Chunk transmissions lost (each held one retransmission timeout).
    pub lost: u64,
    /// Connections the loss model reset.
    pub resets: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.connections += o.connections;
        self.connect_failures += o.connect_failures;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.lost += o.lost;
        self.resets += o.resets;
    }
}

impl Stats {
    fn counts(&self) -> Counts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            connections: g(&self.connections),
            connect_failures: g(&self.connect_failures),
            bytes_up: g(&self.bytes_up),
            bytes_down: g(&self.bytes_down),
            lost: g(&self.lost),
            resets: g(&self.resets),
        }
    }
}

/// A running proxy for one link. Dropping it closes everything too (without waiting).
pub struct Link {
    addr: SocketAddr,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Link {
    /// Listen on `bind` (port 0: an ephemeral one) and forward to `upstream`; `seed` makes
    /// the link's random choices (jitter, losses, resets) repeatable per connection.
    pub async fn start(bind: SocketAddr, upstream: SocketAddr, mode: Mode, seed: u64) -> io::Result<Link> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, upstream, mode.sane(), seed, stats.clone(), cancel.clone()));
        Ok(Link { addr, stats, cancel, task: Some(task) })
    }

    /// Where the link listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counts(&self) -> Counts {
        self.stats.counts()
    }

    /// Stop listening, reset every proxied connection and wait (a few seconds at most)
    /// for it all to end. Returns the final counts.
    pub async fn stop(mut self) -> Counts {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
        }
        self.stats.counts()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// SplitMix64: a seed for connection `n` of a link seeded `seed`.
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Mode,
    seed: u64,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, from)) => {
                    n += 1;
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, %upstream, n, "proxy: connection accepted");
                    conns.spawn(serve(client, upstream, mode, mix(seed, n), stats.clone(), cancel.child_token()));
                }
                Err(e) => {
                    // Out of descriptors and the like: don't spin.
                    tracing::debug!(error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Forward one connection until either side closes, the link stops or the loss model
/// resets it; anything but a clean close on both sides resets both sockets.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: Mode,
    seed: u64,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let _ = client.set_nodelay(true);
    let connected = tokio::select! {
        _ = cancel.cancelled() => None,
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)) => r.ok().and_then(Result::ok),
    };
    let Some(mut server) = connected else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    let reset_after = mode.reset_after(&mut rng);
    let up = Schedule::new(mode, rng.gen());
    let down = Schedule::new(mode, rng.gen());
    let clean = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let pipes = async {
            tokio::try_join!(pipe(cr, sw, up, &stats.bytes_up, &stats), pipe(sr, cw, down, &stats.bytes_down, &stats))
        };
        let reset = async {
            match reset_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = reset => {
                stats.resets.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%upstream, "proxy: connection reset (loss model)");
                false
            }
            r = pipes => r.is_ok(),
        }
    };
    if !clean {
        // Closing with SO_LINGER 0 sends RST instead of FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// One direction: a reader stamping chunks, a writer releasing them in order.
async fn pipe<R, W>(mut r: R, mut w: W, mut sched: Schedule, bytes: &AtomicU64, stats: &Stats) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // `None` is the end of the stream (a FIN), delayed like data.
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.read(&mut buf).await?;
            let (at, lost) = sched.release(Instant::now());
            stats.lost.fetch_add(lost, Ordering::Relaxed);
            let chunk = buf.get(..n).filter(|c| !c.is_empty()).map(<[u8]>::to_vec);
            let end = chunk.is_none();
            if tx.send((at, chunk)).await.is_err() || end {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            match chunk {
                Some(data) => {
                    w.write_all(&data).await?;
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                None => {
                    w.shutdown().await?;
                    break;
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Release times of one direction's chunks.
struct Schedule {
    mode: Mode,
    rng: StdRng,
    last: Option<Instant>,
}

impl Schedule {
    fn new(mode: Mode, seed: u64) -> Schedule {
        Schedule { mode: mode.sane(), rng: StdRng::seed_from_u64(seed), last: None }
    }

    /// When a chunk read at `now` is released, and how many of its transmissions were lost.
    fn release(&mut self, now: Instant) -> (Instant, u64) {
        let (hold, lost) = match self.mode {
            Mode::Delay { base, jitter } => {
                let f = if jitter > 0.0 { self.rng.gen_range(1.0 - jitter..=1.0 + jitter) } else { 1.0 };
                (base.mul_f64(f), 0)
            }
            Mode::Loss { loss, rto, rto_max, .. } => {
                let (mut hold, mut timeout, mut lost) = (Duration::ZERO, rto, 0);
                while lost < MAX_RETRIES as u64 && loss > 0.0 && self.rng.gen_bool(loss) {
                    lost += 1;
                    hold += timeout;
                    timeout = (timeout * 2).min(rto_max);
                }
                (hold, lost)
            }
        };
        let at = match self.last {
            Some(last) => (now + hold).max(last),
            None => now + hold,
        };
        self.last = Some(at);
        (at, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// An echo server on 127.0.0.1 (every connection echoes until EOF); its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = l.local_addr().expect("echo addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    async fn link(mode: Mode, seed: u64) -> (Link, SocketAddr) {
        let up = echo().await;
        let l = Link::start("127.0.0.1:0".parse().expect("addr"), up, mode, seed).await.expect("start link");
        (l, up)
    }

    /// Writes `data` and reads the echo back, concurrently.
    async fn round_trip(s: TcpStream, data: Vec<u8>) -> io::Result<Vec<u8>> {
        let (mut r, mut w) = s.into_split();
        let len = data.len();
        let writer = tokio::spawn(async move {
            for part in data.chunks(1000) {
                w.write_all(part).await?;
            }
            w.shutdown().await?;
            Ok::<_, io::Error>(w)
        });
        let mut got = Vec::with_capacity(len);
        r.read_to_end(&mut got).await?;
        writer.await.map_err(io::Error::other)??;
        Ok(got)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn forwards_bytes_intact_and_in_order() {
        let (l, _) = link(Mode::Delay { base: Duration::ZERO, jitter: 0.0 }, 1).await;
        let data = pattern(3 << 20);
        let s = TcpStream::connect(l.addr()).await.expect("connect");
        let got = tokio::time::timeout(WAIT, round_trip(s, data.clone())).await.expect("in time").expect("echo");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes changed or reordered");
        let c = l.stop().await;
        assert_eq!(c.connections, 1);
        assert_eq!((c.bytes_up, c.bytes_down), (data.len() as u64, data.len() as u64));
    }

    #[tokio::test]
    async fn delay_adds_the_latency_and_keeps_order() {
        let base = Duration::from_millis(150);
        let (l, _) = link(Mode::Delay { base, jitter: 0.25 }, 2).await;
        let mut s = TcpStream::connect(l.addr()).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        // Several small messages: each echo must come back after ≥ 2 × 0.75 × base (there
        // and back), in order, and the pipeline must not serialise them.
        let started = Instant::now();
        let mut got = Vec::new();
        for i in 0..20u8 {
            s.write_all(&[i; 10]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut buf = [0u8; 200];
        let first = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("in time").expect("read");
        let first_at = started.elapsed();
        got.extend_from_slice(&buf[..first]);
        while got.len() < 200 {
            let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("in time").expect("read");
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        let all_at = started.elapsed();
        let want: Vec<u8> = (0..20u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(got, want);
        assert!(first_at >= base.mul_f64(1.5), "first echo after {first_at:?}, want ≥ {:?}", base.mul_f64(1.5));
        // 20 messages 5 ms apart: serialising the delays would take 20 × 300 ms.
        assert!(all_at < Duration::from_millis(2000), "all echoes after {all_at:?}: the delays were serialised");
        assert_eq!(l.stop().await.connections, 1);
    }

    #[tokio::test]
    async fn delay_without_jitter_is_exact_per_chunk() {
        let mut s = Schedule::new(Mode::Delay { base: Duration::from_millis(100), jitter: 0.0 }, 3);
        let now = Instant::now();
        assert_eq!(s.release(now), (now + Duration::from_millis(100), 0));
        // A chunk read earlier than the last one's release can't overtake it.
        let mut j = Schedule::new(Mode::Delay { base: Duration::from_millis(100), jitter: 1.0 }, 4);
        let mut last = now;
        for k in 0..1000u64 {
            let (at, _) = j.release(now + Duration::from_micros(k));
            assert!(at >= last && at <= now + Duration::from_millis(201));
            last = at;
        }
    }

    #[tokio::test]
    async fn loss_holds_chunks_for_retransmission_timeouts() {
        let (rto, rto_max) = (Duration::from_millis(200), Duration::from_millis(800));
        let mode = Mode::Loss { loss: 0.3, rto, rto_max, resets_per_s: 0.0 };
        let mut seeds = StdRng::seed_from_u64(5);
        let now = Instant::now();
        let (mut lost_chunks, mut retries) = (0, 0);
        for _ in 0..2000 {
            // A fresh schedule per chunk: its hold alone, not queued behind another.
            let (at, lost) = Schedule::new(mode, seeds.gen()).release(now);
            let hold = at - now;
            if lost == 0 {
                assert_eq!(hold, Duration::ZERO);
            } else {
                lost_chunks += 1;
                retries += lost - 1;
                // 200, +400, +800, +800, …
                let want: Duration = (0..lost as u32).map(|k| (rto * 2u32.pow(k.min(10))).min(rto_max)).sum();
                assert_eq!(hold, want);
            }
        }
        // p = 0.3: about 600 of 2000 chunks lost at least once, ~180 of them again.
        assert!((450..750).contains(&lost_chunks), "{lost_chunks} chunks lost");
        assert!((100..300).contains(&retries), "{retries} lost again");

        // In one schedule a held chunk holds everything behind it.
        let mut s = Schedule::new(mode, 11);
        let mut last = now;
        let mut held_behind = 0;
        for k in 0..2000u64 {
            let (at, lost) = s.release(now + Duration::from_millis(k));
            assert!(at >= last);
            if lost == 0 && at > now + Duration::from_millis(k) {
                held_behind += 1;
            }
            last = at;
        }
        assert!(held_behind > 100, "{held_behind} chunks held behind a lost one");
    }

    #[tokio::test]
    async fn loss_stalls_then_delivers_everything() {
        let mode = Mode::Loss {
            loss: 0.3,
            rto: Duration::from_millis(50),
            rto_max: Duration::from_millis(200),
            resets_per_s: 0.0,
        };
        let (l, _) = link(mode, 6).await;
        let data = pattern(200_000);
        let s = TcpStream::connect(l.addr()).await.expect("connect");
        let started = Instant::now();
        let got = tokio::time::timeout(WAIT, round_trip(s, data.clone())).await.expect("in time").expect("echo");
        assert!(got == data, "bytes changed or reordered");
        let c = l.stop().await;
        assert!(c.lost > 0, "nothing lost: {c:?}");
        // Every loss held the stream for at least one RTO (50 ms); some of them overlap
        // in the two directions, so only the first is certain.
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn loss_model_resets_connections() {
        let mode = Mode::Loss {
            loss: 0.0,
            rto: Duration::from_millis(200),
            rto_max: Duration::from_secs(1),
            resets_per_s: 20.0,
        };
        let (l, _) = link(mode, 7).await;
        let mut s = TcpStream::connect(l.addr()).await.expect("connect");
        // The echo keeps the connection busy; the reset comes within a few 50 ms means.
        let outcome = tokio::time::timeout(WAIT, async {
            let mut buf = [0u8; 64];
            loop {
                if let Err(e) = s.write_all(b"ping").await {
                    return e.kind();
                }
                match s.read(&mut buf).await {
                    Ok(0) => return io::ErrorKind::UnexpectedEof,
                    Ok(_) => {}
                    Err(e) => return e.kind(),
                }
            }
        })
        .await
        .expect("reset in time");
        assert!(
            matches!(outcome, io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            "closed with {outcome:?}, not a reset"
        );
        assert_eq!(l.stop().await.resets, 1);
    }

    #[tokio::test]
    async fn stop_resets_open_connections_and_unknown_upstreams_are_reset() {
        let (l, _) = link(Mode::Delay { base: Duration::ZERO, jitter: 0.0 }, 8).await;
        let mut s = TcpStream::connect(l.addr()).await.expect("connect");
        s.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut b)).await.expect("in time").expect("echo");
        let addr = l.addr();
        let c = tokio::time::timeout(WAIT, l.stop()).await.expect("stopped in time");
        assert_eq!(c.connections, 1);
        let r = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("in time");
        assert!(matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "after stop: {r:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening after stop");

        // Nothing listens upstream: the accepted connection is reset, and counted.
        let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let l = Link::start(
            "127.0.0.1:0".parse().expect("addr"),
            dead,
            Mode::Delay { base: Duration::ZERO, jitter: 0.0 },
            9,
        )
        .await
        .expect("start");
        let mut s = TcpStream::connect(l.addr()).await.expect("connect");
        let r = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("in time");
        assert!(matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "dead upstream: {r:?}");
        assert_eq!(l.stop().await.connect_failures, 1);
    }

    #[test]
    fn insane_modes_are_clamped() {
        let m = Mode::Loss { loss: f64::NAN, rto: Duration::ZERO, rto_max: Duration::ZERO, resets_per_s: -1.0 }.sane();
        assert_eq!(
            m,
            Mode::Loss {
                loss: 0.0,
                rto: Duration::from_millis(1),
                rto_max: Duration::from_millis(1),
                resets_per_s: 0.0
            }
        );
        let m = Mode::Delay { base: Duration::MAX, jitter: 7.0 }.sane();
        assert_eq!(m, Mode::Delay { base: Duration::from_secs(60), jitter: 1.0 });
        let mut s =
            Schedule::new(Mode::Loss { loss: 5.0, rto: Duration::MAX, rto_max: Duration::MAX, resets_per_s: 0.0 }, 1);
        let now = Instant::now();
        let lost: Vec<u64> = (0..1000).map(|_| s.release(now).1).collect();
        // The loss is clamped to 0.95 (some chunks get through) and retries to MAX_RETRIES.
        assert!(lost.contains(&0) && lost.contains(&(MAX_RETRIES as u64)));
        assert!(lost.iter().all(|&l| l <= MAX_RETRIES as u64));
        assert_ne!(mix(1, 1), mix(1, 2));
    }
}
