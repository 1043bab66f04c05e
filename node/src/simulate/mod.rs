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
//!   and [`EXIT_CODE_ANNOTATION`]`: "N"` makes a run-to-completion pod fail with exit code N.
//!
//! Everything is level-triggered: a restarted simulator takes its nodes over and
//! converges. Failed writes are retried with backoff; conflicts re-read.

mod config;
mod error;
mod heartbeat;
mod ipam;
mod lease;
mod node_object;
mod nodes;
mod pod_status;
mod pods;
mod queue;
mod register;
mod retry;
mod spread;

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::SimConfig;
pub use error::SimError;
pub use heartbeat::HEARTBEAT_ANNOTATION;
pub use node_object::{KUBELET_VERSION, NODE_IP, SIM_LABEL};
pub use pod_status::{EXIT_CODE_ANNOTATION, READY_ANNOTATION};

use heartbeat::{Heartbeat, Wakers};
use nodes::NodeTable;
use pods::PodSim;
use retry::is_not_found;

/// The field manager of every write.
const FIELD_MANAGER: &str = "keelson-sim";
/// Nodes deleted at once on exit, and how long that may take in all.
const EXIT_DELETE_CONCURRENCY: usize = 32;
const EXIT_DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// Run `cfg.count` simulated nodes until `stop` fires: register them, then keep their
/// Leases and status fresh and their pods moving. Returns `Ok` once stopped (after deleting
/// the Nodes if `cfg.delete_nodes_on_exit`); errors only for an invalid `cfg` or a
/// registration the API server rejects as invalid.
pub async fn run(client: kube::Client, cfg: SimConfig, stop: CancellationToken) -> Result<(), SimError> {
    cfg.validate()?;
    let span = tracing::info_span!("simulate", nodes = cfg.count, prefix = %cfg.name_prefix);
    run_validated(client, Arc::new(cfg), stop).instrument(span).await
}

async fn run_validated(client: kube::Client, cfg: Arc<SimConfig>, stop: CancellationToken) -> Result<(), SimError> {
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
        serve(&client, &cfg, &table, &stop).await;
    }
    if cfg.delete_nodes_on_exit {
        delete_nodes(&client, &table).await;
    }
    registered.map(drop)
}

/// The running simulation: node and pod watches, heartbeats and pod writes, until `stop`.
async fn serve(client: &kube::Client, cfg: &Arc<SimConfig>, table: &Arc<NodeTable>, stop: &CancellationToken) {
    let wakers = Arc::new(Wakers::default());
    let heart = Arc::new(Heartbeat::new(client.clone(), cfg.clone(), table.clone(), wakers.clone()));
    let pods = Arc::new(PodSim::new(client.clone(), cfg.clone(), table.clone()));
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
