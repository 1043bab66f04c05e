//! The real kubelet: one node whose pods run in runc/crun containers (each under a
//! detached [`runtime::shim`]), in network namespaces wired by CNI plugins, from images
//! pulled from OCI registries.
//!
//! [`run`] registers the Node (capacity from the host), keeps its Lease and status fresh,
//! waits for the podCIDR node IPAM gives it (Ready says NetworkNotReady until then), and
//! runs a worker per pod bound to it. Stopping leaves pods running: a restarted kubelet
//! adopts them from what it recorded under `root_dir` and cleans up after pods deleted
//! while it was down.

pub mod config;
pub mod events;
pub mod image;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod stream;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::KubeletConfig;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("registering the node: {0}")]
    Register(String),
    #[error("{0}")]
    Setup(String),
}

/// Now, as the API's timestamps are written.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Why this host cannot run a real node, if it cannot (not root, no runtime, no CNI).
pub fn preflight(cfg: &KubeletConfig) -> Result<(), KubeletError> {
    if !rustix::process::geteuid().is_root() {
        return Err(KubeletError::Setup("a real node needs root (containers, mounts, network namespaces)".into()));
    }
    let found = |p: &std::path::Path| {
        if p.components().count() > 1 {
            p.is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        }
    };
    if !found(&cfg.runtime) {
        return Err(KubeletError::Setup(format!("the container runtime {} is not installed", cfg.runtime.display())));
    }
    if !cfg.cni_bin_dirs.iter().any(|d| d.join("bridge").is_file()) {
        return Err(KubeletError::Setup(format!(
            "no CNI plugins (bridge, host-local, loopback) in {}",
            cfg.cni_bin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Resolve a bare runtime name through PATH.
fn resolve(p: &std::path::Path) -> std::path::PathBuf {
    if p.components().count() > 1 {
        return p.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(p)).find(|c| c.is_file()))
        .unwrap_or_else(|| p.to_path_buf())
}

/// The node's DNS on its bridge's address (made here first, so the server can bind before
/// any pod exists), when it serves DNS itself; `None` when it doesn't or cannot.
fn start_dns(
    client: &kube::Client,
    cfg: &KubeletConfig,
    cidr: &str,
    stop: &CancellationToken,
) -> Option<(tokio::task::JoinHandle<()>, CancellationToken)> {
    if !cfg.serve_dns || !cfg.cluster_dns.is_empty() {
        return None;
    }
    let net = match cidr.parse::<network::IpNet>() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(pod_cidr = %cidr, error = %e, "no cluster DNS: the podCIDR does not parse");
            return None;
        }
    };
    let gateway = net.first_host();
    if let Err(e) = network::ensure_bridge(&cfg.bridge, gateway, net.prefix_len) {
        tracing::error!(bridge = %cfg.bridge, error = %e, "no cluster DNS: the bridge could not be made");
        return None;
    }
    let d = crate::dns::DnsConfig {
        listen: vec![std::net::SocketAddr::new(gateway, 53)],
        cluster_domain: cfg.cluster_domain.clone(),
        upstreams: Vec::new(),
        ttl: 5,
    };
    tracing::info!(address = %gateway, domain = %cfg.cluster_domain, "serving cluster DNS");
    let dns_stop = stop.child_token();
    let client = client.clone();
    let s = dns_stop.clone();
    let task = tokio::spawn(
        async move {
            if let Err(e) = crate::dns::run(client, d, s).await {
                tracing::error!(error = %e, "cluster DNS stopped");
            }
        }
        .instrument(tracing::info_span!("dns")),
    );
    Some((task, dns_stop))
}

/// Run the node until `stop`.
pub async fn run(client: kube::Client, mut cfg: KubeletConfig, stop: CancellationToken) -> Result<(), KubeletError> {
    preflight(&cfg)?;
    cfg.runtime = resolve(&cfg.runtime);
    for d in [cfg.pods_dir(), cfg.images_dir(), cfg.runtime_root(), cfg.ipam_dir()] {
        std::fs::create_dir_all(&d).map_err(|e| KubeletError::Setup(format!("{}: {e}", d.display())))?;
    }
    // The kubelet endpoint, bound before the Node is registered with its port.
    let endpoint = match cfg.kubelet_tls.clone() {
        Some(tls) => {
            let addr = std::net::SocketAddr::new(cfg.node_ip, cfg.kubelet_port);
            let s = server::Server::bind(addr, &tls)
                .await
                .map_err(|e| KubeletError::Setup(format!("kubelet endpoint: {e}")))?;
            cfg.kubelet_port = s.port;
            tracing::info!(address = %std::net::SocketAddr::new(cfg.node_ip, s.port), "kubelet endpoint serving containerLogs");
            Some(s)
        }
        None => {
            tracing::warn!("no kubelet endpoint (no --tls-cert-file): kubectl logs will not reach this node");
            None
        }
    };
    let cfg = Arc::new(cfg);
    let runtime =
        runtime::Runtime { binary: cfg.runtime.clone(), root: cfg.runtime_root(), shim_exe: cfg.shim_exe.clone() };
    let runtime_version = match runtime.version().await {
        Ok(v) => format!("{}://{v}", runtime.name()),
        Err(e) => return Err(KubeletError::Setup(format!("the container runtime does not work: {e}"))),
    };
    let images = image::ImageStore::new(cfg.images_dir(), cfg.insecure_registries.clone())
        .map_err(|e| KubeletError::Setup(format!("image store: {e}")))?;
    let span = tracing::info_span!("kubelet", node = %cfg.node_name);
    async move {
        tracing::info!(runtime = %runtime_version, root = %cfg.root_dir.display(), "starting the node");
        if node::register(&client, &cfg, &stop).await?.is_none() {
            return Ok(());
        }
        let (cidr_tx, mut cidr_rx) = watch::channel(None::<String>);
        let (cni_tx, cni_rx) = watch::channel(None::<Arc<network::Cni>>);
        let mut tasks = tokio::task::JoinSet::new();
        let (events, write_events) =
            events::Events::new(client.clone(), &cfg.node_name, (cfg.event_qps, cfg.event_burst), stop.clone());
        tasks.spawn(write_events.instrument(tracing::info_span!("events")));
        let shared = Arc::new(pod::Shared {
            events,
            client: client.clone(),
            cfg: cfg.clone(),
            runtime,
            images,
            cni: cni_rx,
            names: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        if let Some(s) = endpoint {
            tasks.spawn(s.serve(shared.clone(), stop.clone()).instrument(tracing::info_span!("kubelet-endpoint")));
        }
        tasks.spawn(
            node::heartbeat(client.clone(), cfg.clone(), runtime_version, cidr_tx, stop.clone())
                .instrument(tracing::info_span!("heartbeat")),
        );
        if cfg.proxy {
            let p = crate::proxy::ProxyConfig {
                node_name: cfg.node_name.clone(),
                node_ips: vec![cfg.node_ip],
                table: cfg.proxy_table.clone(),
                netns: None,
                resync: std::time::Duration::from_secs(30),
            };
            let (client, stop) = (client.clone(), stop.clone());
            tasks.spawn(
                async move {
                    if let Err(e) = crate::proxy::run(client, p, stop).await {
                        tracing::error!(error = %e, "the service proxy stopped");
                    }
                }
                .instrument(tracing::info_span!("proxy")),
            );
        }
        if cfg.local_storage {
            let s = crate::storage::StorageConfig { node_name: cfg.node_name.clone(), dir: cfg.storage_dir() };
            let (client, stop) = (client.clone(), stop.clone());
            tasks.spawn(
                async move {
                    if let Err(e) = crate::storage::run(client, s, stop).await {
                        tracing::error!(error = %e, "the local-path provisioner stopped");
                    }
                }
                .instrument(tracing::info_span!("local-path")),
            );
        }
        // Pod networking (and the node's DNS on the bridge) follows the podCIDR.
        let net_cfg = cfg.clone();
        let net_stop = stop.clone();
        let net_client = client.clone();
        tasks.spawn(async move {
            let mut dns: Option<(String, tokio::task::JoinHandle<()>, CancellationToken)> = None;
            loop {
                let cidr = cidr_rx.borrow_and_update().clone();
                if let Some(cidr) = cidr {
                    if dns.as_ref().is_none_or(|(c, _, _)| *c != cidr) {
                        if let Some((_, task, dns_stop)) = dns.take() {
                            dns_stop.cancel();
                            let _ = task.await;
                        }
                        dns = start_dns(&net_client, &net_cfg, &cidr, &net_stop)
                            .map(|(task, dns_stop)| (cidr.clone(), task, dns_stop));
                    }
                    let c = network::CniConfig {
                        plugin_dirs: net_cfg.cni_bin_dirs.clone(),
                        bridge: net_cfg.bridge.clone(),
                        pod_cidr: cidr.clone(),
                        ipam_data_dir: net_cfg.ipam_dir(),
                        mtu: None,
                        network_name: "keelson".into(),
                    };
                    tracing::info!(pod_cidr = %cidr, bridge = %net_cfg.bridge, "pod networking ready");
                    cni_tx.send_replace(Some(Arc::new(network::Cni::new(c))));
                }
                tokio::select! {
                    () = net_stop.cancelled() => break,
                    r = cidr_rx.changed() => if r.is_err() { break },
                }
            }
            if let Some((_, task, dns_stop)) = dns {
                dns_stop.cancel();
                let _ = task.await;
            }
        });
        tasks.spawn(pod::run(shared, stop.clone()).instrument(tracing::info_span!("pods")));
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a kubelet task failed");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}
