//! The collector's three kinds of work, each reading fresh objects before it writes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::ApiResource;
use serde_json::json;

use super::decide::{self, Decision, OwnerState, FOREGROUND, ORPHAN};
use super::{lock, Cause, Shared, Work};
use crate::Error;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const RETRY: Duration = Duration::from_secs(1);

/// One step, as a span continuing the trace of what called for it (an owner's deletion,
/// say), and counted as the `garbagecollector` controller's.
pub(super) async fn process(shared: &Arc<Shared>, w: Work) {
    let (step, uid) = match &w {
        Work::Attempt(u) => ("attempt", u),
        Work::Foreground(u) => ("foreground", u),
        Work::Orphan(u) => ("orphan", u),
    };
    let span = tracing::info_span!(
        target: keelson_scheduler::trace::TARGET,
        "controller.reconcile",
        otel.name = "reconcile garbagecollector",
        k8s.controller = "garbagecollector",
        k8s.object.uid = %uid,
        gc.step = step,
    );
    match shared.take_cause(&w) {
        Some(Cause::Step(parent)) => {
            let _ = span.set_parent(parent.context());
        }
        Some(Cause::Version(rv)) => {
            shared.ctx.config.write_traces.tie(&span, Some(&rv));
        }
        None => {
            shared.ctx.config.write_traces.tie(&span, None);
        }
    }
    let started = std::time::Instant::now();
    let res = async {
        match &w {
            Work::Attempt(uid) => attempt(shared, uid).await,
            Work::Foreground(uid) => foreground(shared, uid).await,
            Work::Orphan(uid) => orphan(shared, uid).await,
        }
    }
    .instrument(span.clone())
    .await;
    let outcome = res.as_ref().map(|()| kube::runtime::controller::Action::await_change()).map_err(|_| ());
    crate::metrics::metrics().reconciled("garbagecollector", &outcome, started.elapsed());
    if let Err(e) = res {
        tracing::debug!(work = ?w, error = %e, "garbage collection step failed; retrying");
        shared.set_cause(&w, Cause::Step(span));
        shared.retry(w, RETRY);
    }
}

/// The API of an object in the graph.
fn api_of(shared: &Shared, ty: usize, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
    let ar = shared.graph().types.get(ty)?.clone();
    Some(match namespace {
        Some(ns) => Api::namespaced_with(shared.ctx.client.clone(), ns, &ar),
        None => Api::all_with(shared.ctx.client.clone(), &ar),
    })
}

/// The resource type an owner reference names.
fn owner_type(shared: &Shared, r: &OwnerReference) -> Option<(ApiResource, bool)> {
    let group = r.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    lock(&shared.kinds).get(&(group.to_string(), r.kind.clone())).cloned()
}

/// What an owner reference points at: the graph first, else a live read.
async fn owner_state(shared: &Shared, r: &OwnerReference, dependent_ns: Option<&str>) -> Result<OwnerState, Error> {
    let known = shared.graph().nodes.get(&r.uid).map(|n| n.deleting && n.has(FOREGROUND));
    if let Some(waiting) = known {
        return Ok(if waiting { OwnerState::WaitingForDependents } else { OwnerState::Solid });
    }
    let Some((ar, namespaced)) = owner_type(shared, r) else {
        // An owner kind this cluster does not serve (yet): leave the dependent alone.
        return Ok(OwnerState::Solid);
    };
    let api: Api<DynamicObject> = match (namespaced, dependent_ns) {
        (true, Some(ns)) => Api::namespaced_with(shared.ctx.client.clone(), ns, &ar),
        (true, None) => return Ok(OwnerState::Solid),
        (false, _) => Api::all_with(shared.ctx.client.clone(), &ar),
    };
    Ok(match api.get_metadata_opt(&r.name).await? {
        None => OwnerState::Absent,
        Some(o) if o.metadata.uid.as_deref() != Some(r.uid.as_str()) => OwnerState::Absent,
        Some(o) => {
            let fg = o.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == FOREGROUND));
            if o.metadata.deletion_timestamp.is_some() && fg {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Solid
            }
        }
    })
}

async fn attempt(shared: &Arc<Shared>, uid: &str) -> Result<(), Error> {
    let node = shared.graph().nodes.get(uid).cloned();
    let Some(node) = node else { return Ok(()) };
    if node.deleting && !node.has(FOREGROUND) {
        return Ok(());
    }
    let Some(api) = api_of(shared, node.ty, node.namespace.as_deref()) else { return Ok(()) };
    // Fresh: the cached owner list may be stale.
    let Some(fresh) = api.get_metadata_opt(&node.name).await? else { return Ok(()) };
    if fresh.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let refs = fresh.metadata.owner_references.clone().unwrap_or_default();
    let mut states = Vec::with_capacity(refs.len());
    for r in &refs {
        states.push(owner_state(shared, r, node.namespace.as_deref()).await?);
    }
    let has_dependents = { !shared.graph().dependents_of(uid).is_empty() };
    let finalizers = fresh.metadata.finalizers.clone().unwrap_or_default();
    match decide::attempt(&refs, &states, &finalizers, has_dependents) {
        Decision::Nothing => Ok(()),
        Decision::RemoveRefs(uids) => {
            let keep = decide::without(&refs, &uids);
            let patch =
                json!({"metadata": {"ownerReferences": keep, "resourceVersion": fresh.metadata.resource_version}});
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(())
        }
        Decision::Delete(policy) => {
            if fresh.metadata.deletion_timestamp.is_some() {
                return Ok(());
            }
            let dp = DeleteParams {
                propagation_policy: Some(match policy {
                    "Orphan" => PropagationPolicy::Orphan,
                    "Foreground" => PropagationPolicy::Foreground,
                    _ => PropagationPolicy::Background,
                }),
                preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
                ..Default::default()
            };
            tracing::debug!(name = %node.name, ns = ?node.namespace, policy, "deleting a dependent whose owners are gone");
            match api.delete(&node.name, &dp).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Remove `finalizer` from an object (read fresh; pinned to its resourceVersion).
async fn finish(api: &Api<DynamicObject>, name: &str, uid: &str, finalizer: &str) -> Result<(), Error> {
    let Some(o) = api.get_metadata_opt(name).await? else { return Ok(()) };
    if o.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let fins = o.metadata.finalizers.clone().unwrap_or_default();
    if !fins.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let patch = json!({"metadata": {"finalizers": decide::drop_finalizer(&fins, finalizer), "resourceVersion": o.metadata.resource_version}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn foreground(shared: &Arc<Shared>, uid: &str) -> Result<(), Error> {
    let node = shared.graph().nodes.get(uid).cloned();
    let Some(node) = node else { return Ok(()) };
    if !(node.deleting && node.has(FOREGROUND)) {
        return Ok(());
    }
    let blocking = { shared.graph().blocking_dependents(uid) };
    if blocking.is_empty() {
        let Some(api) = api_of(shared, node.ty, node.namespace.as_deref()) else { return Ok(()) };
        return finish(&api, &node.name, uid, FOREGROUND).await;
    }
    // Every dependent is looked at (upstream enqueues them all when the owner starts
    // waiting): blocking ones hold the owner, the others must not outlive it either.
    let all = { shared.graph().dependents_of(uid) };
    for d in all {
        let deleting_dependents = { shared.graph().nodes.get(&d).is_some_and(|n| n.deleting && n.has(FOREGROUND)) };
        if !deleting_dependents {
            shared.enqueue_for(Work::Attempt(d), Cause::Step(tracing::Span::current()));
        }
    }
    Ok(())
}

async fn orphan(shared: &Arc<Shared>, uid: &str) -> Result<(), Error> {
    let node = shared.graph().nodes.get(uid).cloned();
    let Some(node) = node else { return Ok(()) };
    if !(node.deleting && node.has(ORPHAN)) {
        return Ok(());
    }
    let deps = shared.graph().dependents_of(uid);
    for d in deps {
        let dn = shared.graph().nodes.get(&d).cloned();
        let Some(dn) = dn else { continue };
        let Some(api) = api_of(shared, dn.ty, dn.namespace.as_deref()) else { continue };
        let Some(fresh) = api.get_metadata_opt(&dn.name).await? else { continue };
        let refs = fresh.metadata.owner_references.clone().unwrap_or_default();
        if !refs.iter().any(|r| r.uid == uid) {
            continue;
        }
        let keep = decide::without(&refs, &[uid.to_string()]);
        let patch = json!({"metadata": {"ownerReferences": keep, "resourceVersion": fresh.metadata.resource_version}});
        api.patch(&dn.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let Some(api) = api_of(shared, node.ty, node.namespace.as_deref()) else { return Ok(()) };
    finish(&api, &node.name, uid, ORPHAN).await
}
