//! keelson-controllers: the controllers (kube-runtime based), run only on the Raft leader.
//!
//! Every controller is an ordinary Kubernetes client: it gets a [`kube::Client`] (in keelson
//! an in-process one whose transport is the API router and whose writes are fenced to the
//! leader's Raft term; against another API server, one from a kubeconfig) and a stop
//! token, and runs until the token fires. [`run`] starts them all.

pub mod context;
pub mod error;
pub mod events;
pub mod expectations;
pub mod metrics;
pub mod observe;
pub mod pods;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod root_ca;
pub mod serviceaccount;
pub mod statefulset;

mod util_api;
mod util_endpoints;
mod util_runtime;

pub use context::{Context, ControllerConfig};
pub use error::Error;

use futures::future::BoxFuture;

/// One controller: its name (for logs and spans) and its loop.
type Loop = (&'static str, fn(Context) -> BoxFuture<'static, Result<(), Error>>);

/// Every controller, in start order.
const CONTROLLERS: &[Loop] = &[
    ("replicaset", |c| Box::pin(replicaset::run(c))),
    ("deployment", |c| Box::pin(deployment::run(c))),
    ("garbage-collector", |c| Box::pin(gc::run(c))),
    ("endpoints", |c| Box::pin(endpoints::run(c))),
    ("endpointslice", |c| Box::pin(endpointslice::run(c))),
    ("namespace", |c| Box::pin(namespace::run(c))),
    ("serviceaccount", |c| Box::pin(serviceaccount::run(c))),
    ("root-ca-cert-publisher", |c| Box::pin(root_ca::run(c))),
    ("node-lifecycle", |c| Box::pin(node_lifecycle::run(c))),
    ("node-ipam", |c| Box::pin(node_ipam::run(c))),
    ("statefulset", |c| Box::pin(statefulset::run(c))),
    ("daemonset", |c| Box::pin(daemonset::run(c))),
    ("job", |c| Box::pin(job::run(c))),
    ("cronjob", |c| Box::pin(cronjob::run(c))),
    ("disruption", |c| Box::pin(disruption::run(c))),
    ("horizontal-pod-autoscaler", |c| Box::pin(hpa::run(c))),
];

/// Run every controller until `ctx.stop` fires; a controller that fails is logged and
/// restarted after a short backoff (it is level-triggered, so a restart loses nothing).
pub async fn run(ctx: Context) {
    let mut tasks = tokio::task::JoinSet::new();
    for &(name, f) in CONTROLLERS {
        let ctx = ctx.clone();
        tasks.spawn(async move { supervise(name, f, ctx).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn supervise(name: &'static str, f: fn(Context) -> BoxFuture<'static, Result<(), Error>>, ctx: Context) {
    use tracing::Instrument;
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let span = tracing::info_span!("controller", controller = name);
        let res = f(ctx.clone()).instrument(span).await;
        if ctx.stop.is_cancelled() {
            return;
        }
        match res {
            Ok(()) => tracing::warn!(controller = name, "controller returned before stop; restarting"),
            Err(e) => tracing::warn!(controller = name, error = %e, "controller failed; restarting"),
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}
