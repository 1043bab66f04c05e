//! `keelson bench store`: etcd's `benchmark put|range` shape over the etcd v3 protocol,
//! so one command measures keelson and a real etcd on identical work.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

use super::fsync;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BenchOp {
    Put,
    Range,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Debug)]
pub struct StoreBenchArgs {
    /// etcd v3 endpoints (host:port or http://host:port), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections shared by the clients (spread over the endpoints).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Total requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys written by `put` (etcd's benchmark defaults to 1).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    #[arg(long, value_enum, default_value = "put")]
    pub op: BenchOp,
    /// Range consistency: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Directory on the data disk for the fdatasync probe.
    #[arg(long, default_value = ".")]
    pub probe_dir: PathBuf,
    /// A label printed with the figures (e.g. "keelson-3").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also print one JSON line with the figures.
    #[arg(long)]
    pub json: bool,
}

fn key_bytes(n: u64, size: usize) -> Vec<u8> {
    let s = format!("{n:0size$}");
    let b = s.into_bytes();
    b[b.len().saturating_sub(size.max(1))..].to_vec()
}

async fn connect(addr: &str) -> Result<Channel> {
    let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
    Endpoint::from_shared(url.clone())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

pub async fn run(a: StoreBenchArgs) -> Result<()> {
    if a.clients == 0 || a.conns == 0 || a.total == 0 {
        bail!("--clients, --conns and --total must be positive");
    }
    let mut channels = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        channels.push(connect(&a.endpoints[i % a.endpoints.len()]).await?);
    }
    let value = vec![b'v'; a.val_size];
    let range_key = key_bytes(0, a.key_size);
    if a.op == BenchOp::Range {
        // Something to read.
        let mut c = KvClient::new(channels[0].clone());
        c.put(PutRequest { key: range_key.clone(), value: value.clone(), ..Default::default() })
            .await
            .context("seeding the range key")?;
    }
    let before = fsync::probe(&a.probe_dir)?;
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let mut client = KvClient::new(channels[i % channels.len()].clone()).max_decoding_message_size(64 << 20);
        let issued = issued.clone();
        let errors = errors.clone();
        let value = value.clone();
        let range_key = range_key.clone();
        let (op, total, key_size, space, serializable) =
            (a.op, a.total, a.key_size, a.key_space_size.max(1), a.consistency == Consistency::S);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut first_error: Option<String> = None;
            while issued.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let res = match op {
                    BenchOp::Put => {
                        let key = key_bytes(rand::random::<u64>() % space, key_size);
                        client.put(PutRequest { key, value: value.clone(), ..Default::default() }).await.map(|_| ())
                    }
                    BenchOp::Range => client
                        .range(RangeRequest { key: range_key.clone(), serializable, ..Default::default() })
                        .await
                        .map(|_| ()),
                };
                match res {
                    Ok(()) => {
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(s) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| s.to_string());
                    }
                }
            }
            (hist, first_error)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first_error = None;
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(h)?;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let elapsed = started.elapsed();
    let after = fsync::probe(&a.probe_dir)?;
    let ok = hist.len();
    let errs = errors.load(Ordering::Relaxed);
    let rps = ok as f64 / elapsed.as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let op = match a.op {
        BenchOp::Put => "put".to_string(),
        BenchOp::Range => format!("range-{}", if a.consistency == Consistency::L { "l" } else { "s" }),
    };
    println!(
        "{label}{sep}op={op} clients={} conns={} total={} ok={ok} errors={errs} elapsed={:.2}s throughput={rps:.0}/s \
         p50={:.2}ms p99={:.2}ms max={:.2}ms fsync-before={:.0}/s(p50 {:.2}ms) fsync-after={:.0}/s(p50 {:.2}ms)",
        a.clients,
        a.conns,
        a.total,
        elapsed.as_secs_f64(),
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
        before.syncs_per_sec,
        before.p50.as_secs_f64() * 1000.0,
        after.syncs_per_sec,
        after.p50.as_secs_f64() * 1000.0,
        label = a.label,
        sep = if a.label.is_empty() { "" } else { " " },
    );
    if let Some(e) = &first_error {
        println!("first error: {e}");
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "label": a.label, "op": op, "clients": a.clients, "conns": a.conns, "total": a.total,
                "ok": ok, "errors": errs, "elapsed_s": elapsed.as_secs_f64(), "throughput": rps,
                "p50_ms": ms(hist.value_at_quantile(0.50)), "p99_ms": ms(hist.value_at_quantile(0.99)),
                "max_ms": ms(hist.max()),
                "fsync_before_per_s": before.syncs_per_sec, "fsync_after_per_s": after.syncs_per_sec,
                "fsync_before_p50_ms": before.p50.as_secs_f64() * 1000.0,
            })
        );
    }
    if ok == 0 {
        bail!("no request succeeded");
    }
    Ok(())
}
