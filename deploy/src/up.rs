//! `keelson up`: a one-master cluster in one process — the quick start. Prints the admin
//! kubeconfig's path once the API answers, then runs until interrupted.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::server::ServerArgs;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the cluster keeps its state, PKI and kubeconfig.
    #[arg(long, default_value = "keelson-data")]
    pub data_dir: PathBuf,
    /// host:port of the Kubernetes API (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub api_addr: String,
    /// host:port for the embedded store's peer traffic.
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub peer_addr: String,
    /// host:port of the etcd v3 endpoint.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub etcd_addr: String,
    /// How long Events are kept (`1h`, `30m`, `90s` or seconds).
    #[arg(long, default_value = "1h", value_parser = crate::server::parse_duration)]
    pub event_ttl: std::time::Duration,
}

pub async fn run(a: UpArgs) -> Result<()> {
    let args = ServerArgs {
        name: "up".into(),
        data_dir: a.data_dir.clone(),
        peer_addr: a.peer_addr,
        etcd_addr: a.etcd_addr,
        api_addr: a.api_addr,
        pki_dir: None,
        api_sans: Vec::new(),
        event_ttl: a.event_ttl,
        service_cluster_ip_range: (std::net::Ipv4Addr::new(10, 96, 0, 0), 12),
        service_node_port_range: (30000, 32767),
        initial_cluster: None,
        initial_cluster_state: "new".into(),
        initial_cluster_token: "keelson-up".into(),
        heartbeat_ms: 100,
        election_timeout_ms: 300,
        snapshot_count: 20_000,
        max_batch: 1024,
        cluster_cidr: "10.244.0.0/16".into(),
        node_cidr_mask_size: 24,
        node_monitor_grace_period: std::time::Duration::from_secs(40),
        no_controllers: false,
        metric_resolution: std::time::Duration::from_secs(15),
        horizontal_pod_autoscaler_sync_period: std::time::Duration::from_secs(15),
        horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration::from_secs(300),
    };
    let (store, etcd, mut api) = crate::server::start(&args).await?;
    tokio::select! {
        r = &mut api.ready => {
            if r.is_ok() {
                println!("{}", api.kubeconfig.display());
                eprintln!("keelson: the cluster is up at {}; kubectl --kubeconfig {} get ns", api.url, api.kubeconfig.display());
                eprintln!(
                    "keelson: no node joined: the real node agent is not built yet; for simulated nodes run: keelson agent --simulate 3 --kubeconfig {}",
                    api.kubeconfig.display()
                );
            }
        }
        _ = tokio::signal::ctrl_c() => {
            store.shutdown().await;
            return Ok(());
        }
    }
    crate::server::wait_and_shutdown(store, etcd, api.task).await
}
