//! Helpers for in-process store tests: free loopback ports, single- and multi-master
//! stores, and waits that fail with a message saying what hung.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use keelson_store::{Store, StoreConfig};
use tempfile::TempDir;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEELSON_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A loopback port that is free now and stays free until the caller binds it.
///
/// `bind(127.0.0.1:0)` hands out ports from the kernel's ephemeral range, which outgoing
/// connections (one master dialling another) also take their source ports from, so a port
/// picked that way can be taken before the process meant to listen on it starts. These
/// come from below that range (`ip_local_port_range` starts at 32768), walking up from a
/// random point so that consecutive test binaries do not reuse each other's ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, rand::random::<u32>() % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// Await `fut`, failing the test with `what` if it takes longer than `d`.
pub async fn within<T>(d: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// Poll `check` until it returns Some, failing with `what` after `d`.
pub async fn eventually<T, F, Fut>(d: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + d;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {d:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Master {
    pub store: Store,
    pub config: StoreConfig,
    pub dir: TempDir,
}

/// Configurations for an `n`-master cluster on loopback.
pub fn cluster_configs(n: usize, tweak: impl Fn(&mut StoreConfig)) -> (Vec<StoreConfig>, Vec<TempDir>) {
    let peers: Vec<(String, String)> =
        (1..=n).map(|i| (format!("m{i}"), format!("127.0.0.1:{}", free_port()))).collect();
    let mut cfgs = Vec::new();
    let mut dirs = Vec::new();
    for (name, peer) in &peers {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = StoreConfig {
            name: name.clone(),
            data_dir: dir.path().to_path_buf(),
            peer_addr: peer.clone(),
            client_addr: format!("127.0.0.1:{}", free_port()),
            initial_cluster: peers.clone(),
            ..StoreConfig::default()
        };
        tweak(&mut cfg);
        cfgs.push(cfg);
        dirs.push(dir);
    }
    (cfgs, dirs)
}

/// Start an `n`-master cluster in this process and wait for a leader.
pub async fn start_cluster(n: usize, tweak: impl Fn(&mut StoreConfig)) -> Vec<Master> {
    let (cfgs, dirs) = cluster_configs(n, tweak);
    let opens = cfgs.iter().cloned().map(Store::open);
    let stores = within(WAIT, "stores to open", futures::future::join_all(opens)).await;
    let mut out = Vec::new();
    for ((store, config), dir) in stores.into_iter().zip(cfgs).zip(dirs) {
        out.push(Master { store: store.expect("open store"), config, dir });
    }
    for m in &out {
        m.store.wait_for_leader(WAIT).await.expect("a leader is elected");
    }
    out
}

pub async fn start_single(tweak: impl Fn(&mut StoreConfig)) -> Master {
    start_cluster(1, tweak).await.pop().expect("one master")
}
