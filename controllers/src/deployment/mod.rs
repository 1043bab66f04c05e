//! The Deployment controller (upstream `pkg/controller/deployment`): one ReplicaSet per
//! pod template (labelled with its `pod-template-hash`), rolled forward by RollingUpdate
//! (within maxSurge / maxUnavailable) or Recreate, scaled proportionally when resized
//! mid-rollout, paused and resumed, old ReplicaSets kept as revision history
//! (`kubectl rollout undo` picks one), and the status and conditions that
//! `kubectl rollout status` reads. Pure parts: [`hash`], [`rolling`], [`status`]; the
//! writes: [`sync`].

pub mod hash;
pub mod rolling;
pub mod status;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};

use crate::events::Events;
use crate::{pods, Context, Error};

pub(crate) struct State {
    pub ctx: Context,
    pub rss: Store<ReplicaSet>,
    /// Pods, for Recreate: the new ReplicaSet waits until no old pod runs (terminating
    /// ones included), which old ReplicaSets' status does not tell.
    pub pods: crate::util_runtime::Reflector<k8s_openapi::api::core::v1::Pod>,
    pub events: Events,
}

/// Annotations upstream writes (kubectl reads them: `rollout history`, `rollout undo`).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (rs_reader, rs_writer) = reflector::store::<ReplicaSet>();
    let rs_stream =
        reflector::reflector(rs_writer, watcher(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let controller = Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default());
    let deployments = controller.store();
    let pods = crate::util_runtime::spawn_reflector(Api::all(client.clone()), watcher::Config::default());
    let state = Arc::new(State {
        events: Events::new(client, "deployment-controller"),
        ctx: ctx.clone(),
        rss: rs_reader,
        pods,
    });
    controller
        .watches_stream(rs_stream, move |rs: ReplicaSet| deployments_of(&deployments, &rs))
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("deployment", &ctx.config.write_traces, reconcile), error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "deployment sync");
            }
        })
        .await;
    Ok(())
}

/// A Deployment's selector (`None`: it selects nothing, or everything — both refused).
pub fn selector(d: &Deployment) -> Option<Selector> {
    let s = &d.spec.as_ref()?.selector;
    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return None;
    }
    Selector::try_from(s.clone()).ok()
}

fn deployments_of(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" => vec![ObjectRef::new(&r.name).within(&ns)],
        Some(_) => vec![],
        None => {
            let labels = pods::labels(&rs.metadata);
            deployments
                .state()
                .iter()
                .filter(|d| d.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|d| selector(d).is_some_and(|s| s.matches(&labels)))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect()
        }
    }
}

fn error_policy(_d: Arc<Deployment>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "deployment sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[tracing::instrument(skip_all, fields(ns = d.metadata.namespace.as_deref().unwrap_or(""), name = d.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(d: Arc<Deployment>, st: Arc<State>) -> Result<Action, Error> {
    st.rss
        .wait_until_ready()
        .await
        .map_err(|e| Error::Invalid { what: "replicaset cache".into(), reason: e.to_string() })?;
    sync::Sync::new(&st, &d)?.run().await
}
