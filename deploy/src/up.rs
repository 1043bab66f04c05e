//! `keelson up`: a one-master cluster in one process — the quick start. Prints the admin
//! kubeconfig's path once the API answers, then runs until interrupted. As root with runc
//! (or crun) and the CNI plugins it also runs one real node in the same process (kubelet,
//! service proxy, cluster DNS, local-path volumes); otherwise it says why not.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

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
    /// The pods' address range, split into one podCIDR per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Run no node in this process (the control plane only).
    #[arg(long)]
    pub no_node: bool,
    /// The in-process node's name (default: this host's name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The in-process node's OCI runtime: runc or crun.
    #[arg(long, default_value = "runc")]
    pub runtime: PathBuf,
    /// A registry (host:port) the node pulls from over plain HTTP; repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// The Linux bridge the node's pods are attached to.
    #[arg(long, default_value = "keelson0")]
    pub bridge: String,
    /// The node's pods' network namespaces are named <prefix><pod uid>.
    #[arg(long, default_value = "keelson-")]
    pub netns_prefix: String,
    /// The nftables table (family ip) the node's service proxy owns.
    #[arg(long, default_value = "keelson")]
    pub proxy_table: String,
    /// The first back-off before a crashed container is restarted (doubling up to 5 min).
    #[arg(long, default_value = "10s", value_parser = crate::agent::parse_duration_ms)]
    pub restart_backoff: std::time::Duration,
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    let name = name.trim_matches(['-', '.']).to_string();
    if name.is_empty() {
        "node".into()
    } else {
        name
    }
}

/// The in-process node's kubelet configuration; its endpoint's certificate comes from the
/// cluster CA, which the API server's kubelet client certificate chains to.
fn node_config(a: &UpArgs, pki_dir: &std::path::Path) -> Result<keelson_node::kubelet::KubeletConfig> {
    let pki = crate::pki::load_or_create(pki_dir)?;
    let (cert_pem, key_pem) = pki.serving_cert("kubelet", &["127.0.0.1".to_string(), "localhost".to_string()])?;
    Ok(keelson_node::kubelet::KubeletConfig {
        node_name: a.node_name.clone().unwrap_or_else(host_name),
        root_dir: a.data_dir.join("agent"),
        runtime: a.runtime.clone(),
        shim_exe: std::env::current_exe().context("cannot find this executable (the container shim)")?,
        bridge: a.bridge.clone(),
        insecure_registries: a.insecure_registries.clone(),
        netns_prefix: a.netns_prefix.clone(),
        proxy_table: a.proxy_table.clone(),
        initial_backoff: a.restart_backoff,
        kubelet_port: 0,
        kubelet_tls: Some(keelson_node::simulate::KubeletTls { cert_pem, key_pem, client_ca_pem: pki.ca_cert.clone() }),
        ..Default::default()
    })
}

/// Start the in-process node, or say why there is none.
async fn start_node(
    a: &UpArgs,
    kubeconfig: &std::path::Path,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if a.no_node {
        return None;
    }
    let cfg = match node_config(a, &a.data_dir.join("pki")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keelson: no node in this process: {e:#}");
            return None;
        }
    };
    if let Err(e) = keelson_node::kubelet::preflight(&cfg) {
        eprintln!(
            "keelson: no node in this process: {e}; join one with: keelson agent --node-name N --kubeconfig {} (or simulated ones: keelson agent --simulate 3 --kubeconfig {})",
            kubeconfig.display(),
            kubeconfig.display()
        );
        return None;
    }
    let client = match crate::kubeclient::from_kubeconfig(kubeconfig, None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keelson: no node in this process: {e:#}");
            return None;
        }
    };
    crate::telemetry::register_on_kubelet();
    eprintln!("keelson: running node {} in this process (runtime {})", cfg.node_name, cfg.runtime.display());
    let stop = stop.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = keelson_node::kubelet::run(client, cfg, stop).await {
            tracing::error!(error = %e, "the in-process node stopped");
            eprintln!("keelson: the in-process node stopped: {e}");
        }
    }))
}

pub async fn run(a: UpArgs) -> Result<()> {
    let args = ServerArgs {
        name: "up".into(),
        data_dir: a.data_dir.clone(),
        peer_addr: a.peer_addr.clone(),
        etcd_addr: a.etcd_addr.clone(),
        api_addr: a.api_addr.clone(),
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
        cluster_cidr: a.cluster_cidr.clone(),
        node_cidr_mask_size: 24,
        node_monitor_grace_period: std::time::Duration::from_secs(40),
        no_controllers: false,
        metric_resolution: std::time::Duration::from_secs(15),
        horizontal_pod_autoscaler_sync_period: std::time::Duration::from_secs(15),
        horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration::from_secs(300),
    };
    let (store, etcd, mut api) = crate::server::start(&args).await?;
    let node_stop = CancellationToken::new();
    let mut node = None;
    tokio::select! {
        r = &mut api.ready => {
            if r.is_ok() {
                println!("{}", api.kubeconfig.display());
                eprintln!("keelson: the cluster is up at {}; kubectl --kubeconfig {} get ns", api.url, api.kubeconfig.display());
                node = start_node(&a, &api.kubeconfig, &node_stop).await;
            }
        }
        _ = tokio::signal::ctrl_c() => {
            store.shutdown().await;
            return Ok(());
        }
    }
    // The node stops first (its pods keep running, as with `keelson agent`), then the store.
    crate::server::wait_and_shutdown_with(store, etcd, api.task, async move {
        node_stop.cancel();
        if let Some(n) = node {
            if tokio::time::timeout(std::time::Duration::from_secs(10), n).await.is_err() {
                tracing::warn!("the in-process node did not stop within 10 s");
            }
        }
    })
    .await
}
