//! `keelson server`: one master.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use keelson_store::config::{parse_initial_cluster, strip_scheme, ClusterState};
use keelson_store::{Store, StoreConfig};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This master's name (unique in the cluster).
    #[arg(long)]
    pub name: String,
    /// Where this master keeps its Raft log, state machine and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// host:port for master-to-master traffic (Raft, forwarded requests).
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub peer_addr: String,
    /// host:port of the etcd v3 gRPC endpoint (loopback by default).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub etcd_addr: String,
    /// host:port of the Kubernetes API (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub api_addr: String,
    /// Where the cluster CA, admin certificate and service-account key live (generated on
    /// first start); point every master at the same directory. Default: <data-dir>/pki.
    #[arg(long)]
    pub pki_dir: Option<PathBuf>,
    /// Extra names or addresses for the API serving certificate.
    #[arg(long = "api-san")]
    pub api_sans: Vec<String>,
    /// How long Events are kept (`1h`, `30m`, `90s` or seconds), as Kubernetes' --event-ttl.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub event_ttl: Duration,
    /// The range Service ClusterIPs come from (the first address is the `kubernetes`
    /// Service's), as Kubernetes' --service-cluster-ip-range.
    #[arg(long, default_value = "10.96.0.0/12", value_parser = parse_cidr)]
    pub service_cluster_ip_range: (std::net::Ipv4Addr, u8),
    /// The range NodePorts come from, as Kubernetes' --service-node-port-range.
    #[arg(long, default_value = "30000-32767", value_parser = parse_ports)]
    pub service_node_port_range: (u16, u16),
    /// The bootstrapping masters: `m1=host:port,m2=host:port,…` (peer addresses).
    /// Defaults to this master alone.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap, `existing` to join a cluster that already added this master.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Distinguishes clusters bootstrapped from the same --initial-cluster.
    #[arg(long, default_value = "keelson")]
    pub initial_cluster_token: String,
    /// Raft heartbeat interval (ms).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Raft minimum election timeout (ms); the maximum is twice this.
    #[arg(long, default_value_t = 300)]
    pub election_timeout_ms: u64,
    /// Build a snapshot after this many Raft entries.
    #[arg(long, default_value_t = 20_000)]
    pub snapshot_count: u64,
    /// Most client commands group-committed into one Raft entry.
    #[arg(long, default_value_t = 1024)]
    pub max_batch: usize,
    /// Where node podCIDRs come from (node IPAM), as kube-controller-manager's
    /// --cluster-cidr; `none` turns node IPAM off.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The size of each node's podCIDR, as --node-cidr-mask-size.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// A node whose Lease is older than this is NotReady (Unknown), as
    /// --node-monitor-grace-period (`40s`, `1m` or seconds).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// Don't run the controllers and the scheduler on this master even when it leads
    /// (they can run elsewhere: `keelson controllers --kubeconfig …`).
    #[arg(long)]
    pub no_controllers: bool,
    /// How often kubelets are scraped for the resource metrics API (`kubectl top`, HPA),
    /// as metrics-server's --metric-resolution; `0` = never.
    #[arg(long, default_value = "15s", value_parser = parse_duration_or_zero)]
    pub metric_resolution: Duration,
    /// How often each HorizontalPodAutoscaler is reconciled, as
    /// --horizontal-pod-autoscaler-sync-period.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How far back an HPA looks for a higher recommendation before scaling down (unless
    /// its behavior says otherwise), as --horizontal-pod-autoscaler-downscale-stabilization.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
}

/// [`parse_duration`], or `0`.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// `1h`, `30m`, `90s`, `1h30m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 1h, 30m or 90s"))?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{s:?} is not a duration like 1h, 30m or 90s")),
        };
    }
    if !num.is_empty() || total == 0 {
        return Err(format!("{s:?} is not a duration like 1h, 30m or 90s"));
    }
    Ok(Duration::from_secs(total))
}

impl ServerArgs {
    /// The settings of the controllers and the scheduler this master runs when it leads.
    pub fn leader_options(&self, root_ca_pem: &str) -> Result<crate::leader::LeaderOptions> {
        let cluster_cidr = match self.cluster_cidr.as_str() {
            "" | "none" => None,
            c => {
                parse_cidr(c).map_err(|e| anyhow::anyhow!("--cluster-cidr {c}: {e}"))?;
                Some(c.to_string())
            }
        };
        if !(8..=30).contains(&self.node_cidr_mask_size) {
            anyhow::bail!("--node-cidr-mask-size {} is not between 8 and 30", self.node_cidr_mask_size);
        }
        Ok(crate::leader::LeaderOptions {
            controllers: keelson_controllers::ControllerConfig {
                cluster_cidr,
                node_cidr_mask_size: self.node_cidr_mask_size,
                node_monitor_grace: self.node_monitor_grace_period,
                root_ca_pem: Some(root_ca_pem.to_string()),
                hpa_sync_period: self.horizontal_pod_autoscaler_sync_period,
                hpa_downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
                ..Default::default()
            },
            scheduler: keelson_scheduler::SchedulerConfig::default(),
        })
    }

    pub fn config(&self) -> Result<StoreConfig> {
        let peer_addr = strip_scheme(&self.peer_addr).to_string();
        let initial = self.initial_cluster.clone().unwrap_or_else(|| format!("{}={}", self.name, peer_addr));
        Ok(StoreConfig {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            peer_addr,
            client_addr: strip_scheme(&self.etcd_addr).to_string(),
            initial_cluster: parse_initial_cluster(&initial)?,
            initial_cluster_state: self.initial_cluster_state.parse::<ClusterState>()?,
            cluster_token: self.initial_cluster_token.clone(),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            election_timeout_min: Duration::from_millis(self.election_timeout_ms),
            election_timeout_max: Duration::from_millis(self.election_timeout_ms * 2),
            snapshot_after_entries: self.snapshot_count,
            max_batch_commands: self.max_batch.max(1),
            ..StoreConfig::default()
        })
    }
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let (store, etcd, api) = start(&args).await?;
    wait_and_shutdown(store, etcd, api.task).await
}

/// Start a master: the store, its etcd endpoint and the API server.
pub async fn start(
    args: &ServerArgs,
) -> Result<(Store, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, crate::api::ApiHandle)> {
    let cfg = args.config()?;
    // Chaos failpoints (debug builds only; a release build refuses the variable).
    keelson_store::failpoints::arm_from_env()?;
    let etcd_addr = cfg.client_addr.clone();
    let etcd_listener = tokio::net::TcpListener::bind(&etcd_addr)
        .await
        .with_context(|| format!("cannot listen on --etcd-addr {etcd_addr}"))?;
    let api_listener = crate::api::bind(&args.api_addr).await?;
    let sans: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter_map(|(_, addr)| {
            addr.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        })
        .chain(args.api_sans.iter().cloned())
        .collect();
    let store = Store::open(cfg).await?;
    let stop = store.stopped();
    tracing::info!(
        name = %args.name,
        member = format_args!("{:016x}", store.member_id()),
        cluster = format_args!("{:016x}", store.cluster_id()),
        etcd = %etcd_addr,
        peer = %args.peer_addr,
        "keelson master started"
    );
    let etcd = tokio::spawn(keelson_store::etcd::serve(store.clone(), etcd_listener, stop.clone()));
    let opts = crate::api::ApiOptions {
        name: args.name.clone(),
        data_dir: args.data_dir.clone(),
        api_addr: args.api_addr.clone(),
        pki_dir: args.pki_dir.clone(),
        sans,
        event_ttl: args.event_ttl,
        service_ranges: keelson_api::alloc::ServiceRanges {
            network: args.service_cluster_ip_range.0,
            prefix: args.service_cluster_ip_range.1,
            node_ports: args.service_node_port_range,
        },
        metric_resolution: Some(args.metric_resolution).filter(|r| !r.is_zero()),
    };
    let api = match crate::api::start(store.clone(), opts, api_listener, stop.clone()).await {
        Ok(a) => a,
        Err(e) => {
            store.shutdown().await;
            return Err(e);
        }
    };
    if !args.no_controllers {
        let leader = match args.leader_options(api.server.ca_pem()) {
            Ok(o) => o,
            Err(e) => {
                store.shutdown().await;
                return Err(e);
            }
        };
        tokio::spawn(crate::leader::run(store.clone(), api.server.clone(), leader, stop.clone()));
    }
    Ok((store, etcd, api))
}

/// Run until SIGINT/SIGTERM or a serving task fails, then shut the store down cleanly.
pub async fn wait_and_shutdown(
    store: Store,
    etcd: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<()> {
    wait_and_shutdown_with(store, etcd, api, async {}).await
}

/// [`wait_and_shutdown`], running `before` after the signal and before the store stops.
pub async fn wait_and_shutdown_with(
    store: Store,
    etcd: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    before: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        why = store.raft_failed() => {
            tracing::error!(reason = %why, "the store's Raft stopped; exiting (fail-stop) so this master restarts from its durable state");
            Err(anyhow::anyhow!("the store's Raft stopped: {why}"))
        }
        r = etcd => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("etcd endpoint failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("etcd endpoint task failed: {e}")),
        },
        r = api => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("API server failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("API server task failed: {e}")),
        },
    };
    tracing::info!("shutting down");
    before.await;
    store.shutdown().await;
    outcome
}

fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    keelson_api::alloc::ServiceRanges::parse_cidr(s).map_err(|e| e.to_string())
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    keelson_api::alloc::ServiceRanges::parse_ports(s).map_err(|e| e.to_string())
}
