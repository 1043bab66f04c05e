//! Simulated nodes (like KWOK): `count` Nodes that register, hold their Leases and post
//! their status like kubelets, and "run" the pods bound to them without any containers —
//! status Running with a fake address, Succeeded/Failed for run-to-completion pods after
//! [`SimConfig::job_run`], deleted for good when their deletion starts. Every address the
//! nodes report is loopback (`127.0.0.1`); pod addresses are never contacted.
//!
//! Knobs for tests, as annotations:
//! - on a Node, [`HEARTBEAT_ANNOTATION`]`: "stopped"` pauses its Lease renewals and status
//!   heartbeats (removing it resumes them at once);
//! - on a Pod, [`READY_ANNOTATION`]`: "false"` keeps it (and its containers) not Ready,
//!   and [`EXIT_CODE_ANNOTATION`]`: "N"` makes a run-to-completion pod fail with exit code N;
//! - on a Pod, [`CPU_USAGE_ANNOTATION`]`: "250m"` and [`MEMORY_USAGE_ANNOTATION`]`: "64Mi"`
//!   set what the whole pod uses while it runs (split over its containers in proportion to
//!   their requests, equally when none has one; a change counts from when it is seen).
//!   Without them (or with a value that is not a quantity) each container uses 10% of its
//!   request, 1m CPU / 1Mi memory without one.
//!
//! Usage is served with [`SimConfig::kubelet_port`]: one HTTPS endpoint on `127.0.0.1` for
//! all the nodes (each reports its port as `status.daemonEndpoints.kubeletEndpoint.Port`),
//! client certificates required, answering `GET /metrics/resource` as a kubelet does — the
//! Prometheus text metrics-server scrapes: `node_cpu_usage_seconds_total` and
//! `node_memory_working_set_bytes` (labelled `node`: one endpoint, many nodes; each node
//! uses its pods' sum plus 50m CPU and 128Mi), the `pod_*` and `container_*` families and
//! `container_start_time_seconds` for every running pod, and `resource_scrape_error`.
//! Without it no usage is tracked at all.
//!
//! Everything is level-triggered: a restarted simulator takes its nodes over and
//! converges. Failed writes are retried with backoff; conflicts re-read.

mod config;
mod error;
mod heartbeat;
mod ipam;
pub(crate) mod kubelet_server;
pub(crate) mod lease;
pub(crate) mod node_object;
mod nodes;
mod pod_status;
mod pods;
mod queue;
mod register;
pub(crate) mod retry;
mod spread;
pub(crate) mod usage;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{KubeletTls, SimConfig};
pub use error::SimError;
pub use heartbeat::HEARTBEAT_ANNOTATION;
pub use node_object::{KUBELET_VERSION, NODE_IP, SIM_LABEL};
pub use pod_status::{EXIT_CODE_ANNOTATION, READY_ANNOTATION};
pub use usage::{CPU_USAGE_ANNOTATION, MEMORY_USAGE_ANNOTATION};

use heartbeat::{Heartbeat, Wakers};
use kubelet_server::KubeletServer;
use nodes::NodeTable;
use pods::PodSim;
use retry::is_not_found;
use usage::UsageTable;

/// The field manager of every write.
const FIELD_MANAGER: &str = "keelson-sim";
/// Nodes deleted at once on exit, and how long that may take in all.
const EXIT_DELETE_CONCURRENCY: usize = 32;
const EXIT_DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Run `cfg.count` simulated nodes until `stop` fires: start the kubelet endpoint (with
/// `cfg.kubelet_port`), register the nodes, then keep their Leases and status fresh and
/// their pods moving. Returns `Ok` once stopped (after deleting the Nodes if
/// `cfg.delete_nodes_on_exit`); errors only for an invalid `cfg`, a kubelet endpoint that
/// cannot start, or a registration the API server rejects as invalid.
pub async fn run(client: kube::Client, cfg: SimConfig, stop: CancellationToken) -> Result<(), SimError> {
    cfg.validate()?;
    let span = tracing::info_span!("simulate", nodes = cfg.count, prefix = %cfg.name_prefix);
    start(client, cfg, stop).instrument(span).await
}

/// The usage table the kubelet endpoint serves: only with one (else nothing is tracked).
fn usage_table(cfg: &SimConfig) -> Option<Arc<Mutex<UsageTable>>> {
    cfg.kubelet_port.map(|_| Arc::new(Mutex::new(UsageTable::new(cfg.count, Timestamp::now()))))
}

/// Bind the kubelet endpoint (if any; `cfg.kubelet_port` becomes the port bound, which the
/// nodes report), then run.
async fn start(client: kube::Client, mut cfg: SimConfig, stop: CancellationToken) -> Result<(), SimError> {
    let usage = usage_table(&cfg);
    let server = match (cfg.kubelet_port, &cfg.kubelet_tls, &usage) {
        (Some(port), Some(tls), Some(usage)) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let server = KubeletServer::bind(addr, tls, usage.clone(), &cfg.name_prefix).await?;
            cfg.kubelet_port = Some(server.port());
            tracing::info!(
                port = server.port(),
                address = %SocketAddr::from((Ipv4Addr::LOCALHOST, server.port())),
                "kubelet endpoint serving /metrics/resource for the simulated nodes"
            );
            Some(server)
        }
        _ => None,
    };
    // Stopped when the sim stops, or when it returns early (a failed registration).
    let server_stop = stop.child_token();
    let server_task = server.map(|s| {
        let span = tracing::info_span!("sim", task = "kubelet-endpoint");
        tokio::spawn(s.serve(server_stop.clone()).instrument(span))
    });
    let result = run_validated(client, Arc::new(cfg), usage, stop).await;
    server_stop.cancel();
    if let Some(task) = server_task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "kubelet endpoint failed");
        }
    }
    result
}

async fn run_validated(
    client: kube::Client,
    cfg: Arc<SimConfig>,
    usage: Option<Arc<Mutex<UsageTable>>>,
    stop: CancellationToken,
) -> Result<(), SimError> {
    tracing::info!(
        nodes = cfg.count,
        prefix = %cfg.name_prefix,
        renew_interval_ms = cfg.renew_interval.as_millis() as u64,
        status_interval_ms = cfg.status_interval.as_millis() as u64,
        job_run_ms = cfg.job_run.as_millis() as u64,
        "starting simulated nodes"
    );
    let table = Arc::new(NodeTable::new(&cfg));
    let started = tokio::time::Instant::now();
    let registered = register::register_all(&client, &cfg, &table, &stop).await;
    match &registered {
        Ok(Some(r)) => tracing::info!(
            created = r.created,
            taken_over = r.taken_over,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "simulated nodes registered"
        ),
        Ok(None) => tracing::info!("stopped while registering simulated nodes"),
        Err(e) => tracing::error!(error = %e, "registering simulated nodes failed"),
    }
    if let Ok(Some(_)) = registered {
        serve(&client, &cfg, &table, usage, &stop).await;
    }
    if cfg.delete_nodes_on_exit {
        delete_nodes(&client, &table).await;
    }
    registered.map(drop)
}

/// The running simulation: node and pod watches, heartbeats and pod writes, until `stop`.
async fn serve(
    client: &kube::Client,
    cfg: &Arc<SimConfig>,
    table: &Arc<NodeTable>,
    usage: Option<Arc<Mutex<UsageTable>>>,
    stop: &CancellationToken,
) {
    let wakers = Arc::new(Wakers::default());
    let heart = Arc::new(Heartbeat::new(client.clone(), cfg.clone(), table.clone(), wakers.clone()));
    let pods = Arc::new(PodSim::new(client.clone(), cfg.clone(), table.clone(), usage));
    let (synced_tx, synced_rx) = watch::channel(false);
    let span = |task: &'static str| tracing::info_span!("sim", task);
    let mut tasks = JoinSet::new();
    let node_watch = nodes::watch(client.clone(), table.clone(), wakers, synced_tx, stop.clone());
    tasks.spawn(node_watch.instrument(span("node-watch")));
    tasks.spawn(heart.clone().leases(stop.clone()).instrument(span("leases")));
    tasks.spawn(heart.statuses(stop.clone()).instrument(span("node-status")));
    tasks.spawn(pods.clone().watch(synced_rx, stop.clone()).instrument(span("pod-watch")));
    tasks.spawn(pods.work(stop.clone()).instrument(span("pod-writes")));
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "simulation task failed");
        }
    }
}

/// Delete every Node of ours (their Leases go with them), in bounded time.
async fn delete_nodes(client: &kube::Client, table: &NodeTable) {
    let api: Api<Node> = Api::all(client.clone());
    let deletes = stream::iter(0..table.count())
        .map(|i| {
            let api = &api;
            async move {
                let name = table.name(i);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => true,
                    Err(e) if is_not_found(&e) => true,
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "deleting node failed");
                        false
                    }
                }
            }
        })
        .buffer_unordered(EXIT_DELETE_CONCURRENCY)
        .fold((0usize, 0usize), |(ok, failed), r| async move {
            if r {
                (ok + 1, failed)
            } else {
                (ok, failed + 1)
            }
        });
    match tokio::time::timeout(EXIT_DELETE_TIMEOUT, deletes).await {
        Ok((deleted, 0)) => tracing::info!(deleted, "simulated nodes deleted"),
        Ok((deleted, failed)) => tracing::warn!(deleted, failed, "some simulated nodes could not be deleted"),
        Err(_) => tracing::warn!(timeout_s = EXIT_DELETE_TIMEOUT.as_secs(), "deleting simulated nodes timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_tracked_only_with_a_kubelet_endpoint() {
        assert!(usage_table(&SimConfig { count: 5000, ..Default::default() }).is_none());
        let served = usage_table(&SimConfig { count: 3, kubelet_port: Some(0), ..Default::default() }).unwrap();
        assert_eq!(retry::lock(&served).sample(Timestamp::now()).nodes.len(), 3);
    }
}
