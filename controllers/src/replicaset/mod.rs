//! The ReplicaSet and ReplicationController controller (upstream `pkg/controller/replicaset`):
//! keep `spec.replicas` active pods that match the selector — adopt orphans, release pods
//! that no longer match, create in slow-start batches, delete by rank — and report the
//! counts in status. The decision is [`plan`]; this module reads the caches and writes.

pub mod kinds;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, ReplicationController};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use self::kinds::{status_patch, ReplicaKind};
use self::plan::{Owner, Scale};
use crate::events::Events;
use crate::expectations::Expectations;
use crate::{pods, Context, Error};

struct State {
    ctx: Context,
    pods: Store<Pod>,
    exp: Expectations,
    events: Events,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    tokio::try_join!(run_kind::<ReplicaSet>(ctx.clone()), run_kind::<ReplicationController>(ctx))?;
    Ok(())
}

/// Requeue after a failed sync.
const RETRY: Duration = Duration::from_secs(2);

async fn run_kind<K: ReplicaKind>(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let pod_stream =
        reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let owners = controller.store();
    let exp = Expectations::default();
    let state = Arc::new(State {
        events: Events::new(client.clone(), K::CONTROLLER),
        ctx: ctx.clone(),
        pods: pod_reader,
        exp: exp.clone(),
    });
    controller
        .watches_stream(pod_stream, move |pod: Pod| {
            // Every pod event (deletions too) meets its owner's create expectation.
            if let (Some(r), Some(name)) = (pods::controller_of(&pod.metadata), pod.metadata.name.as_deref()) {
                if r.kind == K::KIND {
                    exp.observed(&format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), r.name), name);
                }
            }
            owners_of::<K>(&owners, &pod)
        })
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed(
                if K::KIND == "ReplicaSet" { "replicaset" } else { "replicationcontroller" },
                &ctx.config.write_traces,
                reconcile::<K>,
            ),
            error_policy::<K>,
            state,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replica sync");
            }
        })
        .await;
    Ok(())
}

/// The owners a pod event concerns: its controller of this kind, or (an orphan) every
/// owner in its namespace that selects it.
fn owners_of<K: ReplicaKind>(owners: &Store<K>, pod: &Pod) -> Vec<ObjectRef<K>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&pod.metadata) {
        Some(r) if r.kind == K::KIND => vec![ObjectRef::new(&r.name).within(&ns)],
        Some(_) => vec![],
        None => owners
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
            .filter(|o| o.owner().selects(pod))
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect(),
    }
}

fn error_policy<K: ReplicaKind>(_obj: Arc<K>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "replica sync failed; retrying");
    Action::requeue(RETRY)
}

fn reference(o: &Owner) -> ObjectReference {
    ObjectReference {
        api_version: Some(o.api_version.into()),
        kind: Some(o.kind.into()),
        name: Some(o.name.clone()),
        namespace: Some(o.namespace.clone()),
        uid: Some(o.uid.clone()),
        ..Default::default()
    }
}

#[tracing::instrument(skip_all, fields(kind = K::KIND, ns = obj.meta().namespace.as_deref().unwrap_or(""), name = obj.meta().name.as_deref().unwrap_or("")))]
async fn reconcile<K: ReplicaKind>(obj: Arc<K>, st: Arc<State>) -> Result<Action, Error> {
    st.pods.wait_until_ready().await.map_err(|e| Error::Invalid { what: "pod cache".into(), reason: e.to_string() })?;
    let owner = obj.owner();
    let key = owner.key();
    let ns_pods: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(owner.namespace.as_str()))
        .collect();
    let claims = plan::claim(&owner, &ns_pods);
    let pods_api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &owner.namespace);
    let mut mine = claims.owned.clone();
    if !claims.adopt.is_empty() && fresh_owner::<K>(&st, &owner).await? {
        for p in &claims.adopt {
            match adopt(&pods_api, &owner, p).await {
                Ok(()) => mine.push(p.clone()),
                Err(e) => tracing::debug!(pod = ?p.metadata.name, error = %e, "adoption failed"),
            }
        }
    }
    for p in &claims.release {
        if let Err(e) = release(&pods_api, &owner, p).await {
            tracing::debug!(pod = ?p.metadata.name, error = %e, "release failed");
        }
    }
    let active: Vec<Arc<Pod>> = mine.into_iter().filter(|p| pods::is_active(p)).collect();
    let shown: HashMap<&str, bool> = ns_pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.deletion_timestamp.is_some())))
        .collect();
    let (adds, dels) = st.exp.pending(&key, |n| shown.get(n).copied());
    let mut failure: Option<(&str, String)> = None;
    if !owner.deleting {
        match plan::scale(&owner, &active, adds.len(), &dels, &ns_pods) {
            Scale::Nothing => {}
            Scale::Create(n) => {
                if let Err(e) = create(&st, &pods_api, &owner, n).await {
                    failure = Some(("FailedCreate", e.to_string()));
                }
            }
            Scale::Delete(names) => {
                if let Err(e) = delete(&st, &pods_api, &owner, &names).await {
                    failure = Some(("FailedDelete", e.to_string()));
                }
            }
        }
    }
    let counts = plan::counts(&owner, &active, jiff::Timestamp::now());
    let (shown_counts, shown_gen, shown_failure) = obj.shown();
    let same = plan::Counts { next_available_in: None, ..counts } == shown_counts
        && shown_gen == owner.generation
        && shown_failure == failure.is_some();
    if !same {
        let api: Api<K> = Api::namespaced(st.ctx.client.clone(), &owner.namespace);
        let patch = status_patch(&counts, owner.generation, failure.as_ref().map(|(r, m)| (*r, m.as_str())));
        api.patch_status(&owner.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if let Some((_, m)) = failure {
        return Err(Error::Invalid { what: format!("{} {key}", owner.kind), reason: m });
    }
    Ok(match counts.next_available_in {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::await_change(),
    })
}

/// Upstream's `RecheckDeletionTimestamp`: adopt only for an owner that still exists, is
/// the same object and is not being deleted (read fresh, not from the cache).
async fn fresh_owner<K: ReplicaKind>(st: &State, owner: &Owner) -> Result<bool, Error> {
    let api: Api<K> = Api::namespaced(st.ctx.client.clone(), &owner.namespace);
    Ok(match api.get_opt(&owner.name).await? {
        Some(o) => o.meta().uid.as_deref() == Some(owner.uid.as_str()) && o.meta().deletion_timestamp.is_none(),
        None => false,
    })
}

/// Take an orphan: add a controller reference, guarded by its resourceVersion.
async fn adopt(api: &Api<Pod>, owner: &Owner, pod: &Pod) -> Result<(), Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(pods::controller_ref(owner.api_version, owner.kind, &owner.name, &owner.uid));
    let name = pod.metadata.name.clone().unwrap_or_default();
    // A merge patch pinned to the resourceVersion the decision saw (409 if it moved).
    let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version, "ownerReferences": refs}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Drop this owner's reference from a pod it no longer selects.
async fn release(api: &Api<Pod>, owner: &Owner, pod: &Pod) -> Result<(), Error> {
    let refs: Vec<_> =
        pod.metadata.owner_references.clone().unwrap_or_default().into_iter().filter(|r| r.uid != owner.uid).collect();
    let name = pod.metadata.name.clone().unwrap_or_default();
    // A merge patch pinned to the resourceVersion the decision saw (409 if it moved).
    let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version, "ownerReferences": refs}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Create `n` pods in slow-start batches (1, 2, 4, …), stopping at the first failing batch.
async fn create(st: &State, api: &Api<Pod>, owner: &Owner, n: usize) -> Result<(), Error> {
    let key = owner.key();
    let oref = pods::controller_ref(owner.api_version, owner.kind, &owner.name, &owner.uid);
    let pod = pods::from_template(&owner.template, &owner.namespace, &owner.name, oref);
    for batch in plan::slow_start_batches(n) {
        let pp = PostParams::default();
        let results = futures::future::join_all((0..batch).map(|_| api.create(&pp, &pod))).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.metadata.name.unwrap_or_default();
                    st.exp.created(&key, &name);
                    st.events.normal(reference(owner), "SuccessfulCreate", "Create", format!("Created pod: {name}"));
                }
                Err(e) => {
                    st.events.warning(reference(owner), "FailedCreate", "Create", format!("Error creating: {e}"));
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e.into());
        }
    }
    Ok(())
}

async fn delete(st: &State, api: &Api<Pod>, owner: &Owner, names: &[String]) -> Result<(), Error> {
    let key = owner.key();
    let results = futures::future::join_all(
        names.iter().map(|n| async move { (n, api.delete(n, &DeleteParams::default()).await) }),
    )
    .await;
    let mut first_err = None;
    for (name, r) in results {
        match r {
            Ok(_) => {
                st.exp.deleted(&key, name);
                st.events.normal(reference(owner), "SuccessfulDelete", "Delete", format!("Deleted pod: {name}"));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                st.events.warning(reference(owner), "FailedDelete", "Delete", format!("Error deleting: {e}"));
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
