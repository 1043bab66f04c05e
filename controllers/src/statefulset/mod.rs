//! The StatefulSet controller (upstream `pkg/controller/statefulset`): pods with stable
//! names `<set>-<ordinal>`, hostnames and claims (`<template>-<set>-<ordinal>`, made before
//! the pod); created in ordinal order one at a time once the ones below are Running and
//! Ready (OrderedReady) or all at once (Parallel); scaled down from the highest ordinal;
//! failed or deleted pods recreated; the template history kept as ControllerRevisions and
//! rolled out from the highest ordinal down to the partition (RollingUpdate) or when pods
//! are deleted (OnDelete); claims owned per `persistentVolumeClaimRetentionPolicy`; and the
//! counts and revisions reported in status. The decision is [`plan`]; this module reads
//! the caches and writes.

pub mod history;
pub mod identity;
pub mod plan;
pub mod set;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use self::plan::{Revisions, Step, Unit, Why};
use self::set::{Set, Status};
use crate::events::Events;
use crate::expectations::Expectations;
use crate::util_api::{is_conflict, is_not_found};
use crate::util_runtime::{spawn_reflector, Reflector};
use crate::{pods, Context, Error};

/// At most this many revision names are tried when hashes collide.
const MAX_COLLISIONS: usize = 100;

struct State {
    ctx: Context,
    pods: Store<Pod>,
    claims: Reflector<PersistentVolumeClaim>,
    exp: Expectations,
    events: Events,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let pod_stream =
        reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let claims = spawn_reflector(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default());
    let controller = Controller::new(Api::<StatefulSet>::all(client.clone()), watcher::Config::default());
    let sets = controller.store();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "statefulset-controller"),
        ctx: ctx.clone(),
        pods: pod_reader,
        claims,
        exp: Expectations::default(),
    });
    controller
        .watches_stream(pod_stream, move |pod: Pod| sets_of(&sets, &pod))
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("statefulset", &ctx.config.write_traces, reconcile), error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "statefulset sync");
            }
        })
        .await;
    Ok(())
}

/// The sets a pod event concerns: its controller if a StatefulSet, or (an orphan) every
/// set in its namespace that selects it (`getStatefulSetsForPod`).
fn sets_of(sets: &Store<StatefulSet>, pod: &Pod) -> Vec<ObjectRef<StatefulSet>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&pod.metadata) {
        Some(r) if r.kind == set::KIND && r.api_version.starts_with("apps/") => {
            vec![ObjectRef::new(&r.name).within(&ns)]
        }
        Some(_) => vec![],
        None => sets
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|s| selects(s, pod))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect(),
    }
}

/// Whether a set's selector (a non-empty, valid one) matches a pod.
fn selects(sts: &StatefulSet, pod: &Pod) -> bool {
    let Some(sel) = sts.spec.as_ref().map(|s| &s.selector) else { return false };
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    !empty && Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(&pods::labels(&pod.metadata)))
}

fn error_policy(_obj: Arc<StatefulSet>, err: &Error, _st: Arc<State>) -> Action {
    tracing::debug!(error = %err, "statefulset sync failed; retrying");
    Action::requeue(crate::util_runtime::retry_delay(err))
}

fn reference(set: &Set) -> ObjectReference {
    ObjectReference {
        api_version: Some(set::API_VERSION.into()),
        kind: Some(set::KIND.into()),
        name: Some(set.name.clone()),
        namespace: Some(set.namespace.clone()),
        uid: Some(set.uid.clone()),
        ..Default::default()
    }
}

fn cache_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid { what: what.into(), reason: e.to_string() }
}

#[tracing::instrument(skip_all, fields(ns = obj.namespace().as_deref().unwrap_or(""), name = obj.name_any()))]
async fn reconcile(obj: Arc<StatefulSet>, st: Arc<State>) -> Result<Action, Error> {
    st.pods.wait_until_ready().await.map_err(|e| cache_error("pod cache", e))?;
    st.claims.store.wait_until_ready().await.map_err(|e| cache_error("claim cache", e))?;
    let set = Set::from_api(&obj);
    let key = set.key();
    let Some(selector) = set.selector.clone() else {
        // A set without a usable selector selects nothing; retrying will not change that.
        tracing::debug!(set = %key, "no valid selector");
        return Ok(Action::await_change());
    };
    let client = st.ctx.client.clone();
    let rev_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &set.namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &set.namespace);

    // Revisions: the set's and the orphans it adopts.
    let listed = rev_api.list(&ListParams::default().labels_from(&selector)).await?;
    let listed: Vec<Arc<ControllerRevision>> = listed.items.into_iter().map(Arc::new).collect();
    let (mut revisions, orphans) = plan::claim_revisions(&set, &listed);
    let mut can_adopt: Option<bool> = None;
    if !orphans.is_empty() {
        let ok = fresh_owner(&st, &set).await?;
        can_adopt = Some(ok);
        if ok {
            for r in &orphans {
                revisions.push(Arc::new(adopt(&rev_api, &set, r.as_ref()).await?));
            }
        }
    }
    history::sort(&mut revisions);

    // Pods: the set's, adopted orphans, released strays.
    let ns_pods: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(set.namespace.as_str()))
        .collect();
    let claims = plan::claim(&set, &ns_pods);
    let mut mine = claims.owned.clone();
    if !claims.adopt.is_empty() {
        let ok = match can_adopt {
            Some(ok) => ok,
            None => fresh_owner(&st, &set).await?,
        };
        if ok {
            for p in &claims.adopt {
                match adopt(&pod_api, &set, p.as_ref()).await {
                    Ok(adopted) => mine.push(Arc::new(adopted)),
                    Err(e) => tracing::debug!(pod = ?p.metadata.name, error = %e, "adoption failed"),
                }
            }
        }
    }
    for p in &claims.release {
        if let Err(e) = release(&pod_api, &set, p.as_ref()).await {
            tracing::debug!(pod = ?p.metadata.name, error = %e, "release failed");
        }
    }

    // Expectations: pods created that the cache lacks are read fresh; pods deleted that
    // it still shows running count as terminating.
    let shown: HashMap<&str, bool> = ns_pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.deletion_timestamp.is_some())))
        .collect();
    let (adds, dels) = st.exp.pending(&key, |n| shown.get(n).copied());
    let mut in_flight = HashSet::new();
    for name in adds {
        match pod_api.get_opt(&name).await {
            Ok(Some(p)) => {
                if pods::controller_of(&p.metadata).is_some_and(|r| r.uid == set.uid) {
                    mine.push(Arc::new(p));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "reading a created pod failed");
                in_flight.insert(name);
            }
        }
    }
    let now = jiff::Timestamp::now();
    let dels: HashSet<String> = dels.into_iter().collect();
    let mine = plan::mark_deleted(mine, &dels, now);

    let revs = revisions_of(&st, &set, &rev_api, &revisions).await?;

    let claim_map: HashMap<String, Arc<PersistentVolumeClaim>> = st
        .claims
        .store
        .state()
        .into_iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(set.namespace.as_str()))
        .filter_map(|c| Some((c.metadata.name.clone()?, c)))
        .collect();
    let input =
        plan::Input { set: &set, revisions: &revs, pods: &mine, in_flight: &in_flight, claims: &claim_map, now };
    let p = plan::plan(&input);
    let result = execute(&st, &set, &p).await;

    // The status, written even when a step failed (upstream does too).
    let status_result = if plan::status_changed(&set, &p.status) {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &set.namespace);
        api.patch_status(&set.name, &PatchParams::default(), &Patch::Merge(&status_patch(&p.status)))
            .await
            .map(|_| ())
            .map_err(Error::from)
    } else {
        Ok(())
    };

    // The history beyond revisionHistoryLimit (never a live revision).
    let mut live: HashSet<String> = HashSet::from([revs.current.clone(), revs.update.clone()]);
    live.extend(mine.iter().map(|p| identity::revision(p).to_string()));
    for name in history::to_prune(&revisions, &live, set.revision_history_limit) {
        match rev_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::debug!(revision = %name, error = %e, "pruning history failed"),
        }
    }

    result?;
    status_result?;
    Ok(match p.recheck_in {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::await_change(),
    })
}

/// Upstream's `RecheckDeletionTimestamp`: adopt only for a set that still exists, is the
/// same object and is not being deleted (read fresh, not from the cache).
async fn fresh_owner(st: &State, set: &Set) -> Result<bool, Error> {
    let api: Api<StatefulSet> = Api::namespaced(st.ctx.client.clone(), &set.namespace);
    Ok(match api.get_opt(&set.name).await? {
        Some(o) => o.metadata.uid.as_deref() == Some(set.uid.as_str()) && o.metadata.deletion_timestamp.is_none(),
        None => false,
    })
}

/// Take an orphan (a pod or a revision): add a controller reference, guarded by its
/// resourceVersion.
async fn adopt<K>(api: &Api<K>, set: &Set, obj: &K) -> Result<K, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.push(pods::controller_ref(set::API_VERSION, set::KIND, &set.name, &set.uid));
    let patch = json!({"metadata": {"resourceVersion": meta.resource_version, "ownerReferences": refs}});
    Ok(api.patch(meta.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// Drop the set's reference from a pod it no longer selects.
async fn release(api: &Api<Pod>, set: &Set, pod: &Pod) -> Result<(), Error> {
    let refs: Vec<_> =
        pod.metadata.owner_references.clone().unwrap_or_default().into_iter().filter(|r| r.uid != set.uid).collect();
    let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version, "ownerReferences": refs}});
    match api.patch(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `getStatefulSetRevisions`: the update revision (the newest one holding the set's
/// template, an older one renumbered, or a new one) and the current one (the status's, or
/// the update one at first), with the templates they hold.
async fn revisions_of(
    st: &State,
    set: &Set,
    api: &Api<ControllerRevision>,
    sorted: &[Arc<ControllerRevision>],
) -> Result<Revisions, Error> {
    let mut collisions = set.shown.collision_count.unwrap_or(0);
    let next = history::next_revision(sorted);
    let candidate = history::new_revision(set, next, collisions);
    let update: ControllerRevision = match history::choose_update(sorted, &candidate) {
        history::Update::Latest(name) => sorted
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
            .map(|r| (**r).clone())
            .unwrap_or(candidate),
        history::Update::Renumber(name, revision) => {
            let patch = json!({"revision": revision});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?
        }
        history::Update::Create => create_revision(st, set, api, next, &mut collisions).await?,
    };
    let current = sorted
        .iter()
        .find(|r| {
            !set.shown.current_revision.is_empty() && r.metadata.name.as_deref() == Some(&set.shown.current_revision)
        })
        .map(|r| (**r).clone())
        .unwrap_or_else(|| update.clone());
    let template = |cr: &ControllerRevision| {
        history::template_of(cr).ok_or_else(|| Error::Invalid {
            what: format!("ControllerRevision {}/{}", set.namespace, cr.name_any()),
            reason: "holds no pod template".into(),
        })
    };
    Ok(Revisions {
        current: current.name_any(),
        update: update.name_any(),
        current_template: template(&current)?,
        update_template: template(&update)?,
        collision_count: collisions,
    })
}

/// `CreateControllerRevision`: create the revision, counting a collision and trying the
/// next name when one of its name holds other data.
async fn create_revision(
    st: &State,
    set: &Set,
    api: &Api<ControllerRevision>,
    revision: i64,
    collisions: &mut i32,
) -> Result<ControllerRevision, Error> {
    for _ in 0..MAX_COLLISIONS {
        let cr = history::new_revision(set, revision, *collisions);
        match api.create(&PostParams::default(), &cr).await {
            Ok(c) => return Ok(c),
            Err(e) if is_conflict(&e) => {
                let existing = api.get(&cr.name_any()).await?;
                if history::equal(&existing, &cr) {
                    return Ok(existing);
                }
                *collisions += 1;
            }
            Err(e) => {
                st.events.warning(reference(set), "FailedCreate", "Create", format!("create ControllerRevision: {e}"));
                return Err(e.into());
            }
        }
    }
    Err(Error::Invalid {
        what: format!("StatefulSet {}", set.key()),
        reason: "too many revision name collisions".into(),
    })
}

/// Run a plan: phase after phase, stopping at the first failure; a Parallel set's units of
/// a phase run together in slow-start batches.
async fn execute(st: &State, set: &Set, p: &plan::Plan) -> Result<(), Error> {
    for phase in &p.phases {
        if set.parallel {
            let mut rest: &[Unit] = phase;
            for size in plan::slow_start_batches(phase.len()) {
                let (batch, tail) = rest.split_at(size);
                rest = tail;
                let results = futures::future::join_all(batch.iter().map(|u| run_unit(st, set, u))).await;
                if let Some(e) = results.into_iter().find_map(Result::err) {
                    return Err(e);
                }
            }
        } else {
            for unit in phase {
                run_unit(st, set, unit).await?;
            }
        }
    }
    Ok(())
}

async fn run_unit(st: &State, set: &Set, unit: &Unit) -> Result<(), Error> {
    for step in unit {
        run_step(st, set, step).await?;
    }
    Ok(())
}

async fn run_step(st: &State, set: &Set, step: &Step) -> Result<(), Error> {
    let client = st.ctx.client.clone();
    let key = set.key();
    let ev = |ok: bool, reason: &str, action: &str, note: String| {
        if ok {
            st.events.normal(reference(set), reason, action, note)
        } else {
            st.events.warning(reference(set), reason, action, note)
        }
    };
    match step {
        Step::CreateClaim { pod, claim } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client, &set.namespace);
            let cname = claim.name_any();
            match api.create(&PostParams::default(), claim).await {
                Ok(_) => {
                    ev(
                        true,
                        "SuccessfulCreate",
                        "Create",
                        format!("create Claim {cname} Pod {pod} in StatefulSet {} success", set.name),
                    );
                    Ok(())
                }
                // Made already (the claim cache is behind): fine.
                Err(e) if is_conflict(&e) => Ok(()),
                Err(e) => {
                    ev(
                        false,
                        "FailedCreate",
                        "Create",
                        format!("create Claim {cname} for Pod {pod} in StatefulSet {} failed error: {e}", set.name),
                    );
                    Err(e.into())
                }
            }
        }
        Step::CreatePod(pod) => {
            let api: Api<Pod> = Api::namespaced(client, &set.namespace);
            let name = pod.name_any();
            match api.create(&PostParams::default(), pod).await {
                Ok(_) => {
                    st.exp.created(&key, &name);
                    ev(
                        true,
                        "SuccessfulCreate",
                        "Create",
                        format!("create Pod {name} in StatefulSet {} successful", set.name),
                    );
                    Ok(())
                }
                // The name is taken (the cache is behind, or another object has it).
                Err(e) if is_conflict(&e) => Err(e.into()),
                Err(e) => {
                    ev(
                        false,
                        "FailedCreate",
                        "Create",
                        format!("create Pod {name} in StatefulSet {} failed error: {e}", set.name),
                    );
                    Err(e.into())
                }
            }
        }
        Step::DeletePod { name, why } => {
            let api: Api<Pod> = Api::namespaced(client, &set.namespace);
            if *why == Why::Finished {
                ev(
                    false,
                    "RecreatingFailedPod",
                    "Delete",
                    format!("StatefulSet {key} is recreating failed Pod {name}"),
                );
            }
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    st.exp.deleted(&key, name);
                    tracing::debug!(pod = %name, why = ?why, "deleted");
                    ev(
                        true,
                        "SuccessfulDelete",
                        "Delete",
                        format!("delete Pod {name} in StatefulSet {} successful", set.name),
                    );
                    Ok(())
                }
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => {
                    ev(
                        false,
                        "FailedDelete",
                        "Delete",
                        format!("delete Pod {name} in StatefulSet {} failed error: {e}", set.name),
                    );
                    Err(e.into())
                }
            }
        }
        Step::LabelPod { name, labels } => {
            let api: Api<Pod> = Api::namespaced(client, &set.namespace);
            let patch = json!({"metadata": {"labels": labels}});
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    ev(
                        true,
                        "SuccessfulUpdate",
                        "Update",
                        format!("update Pod {name} in StatefulSet {} successful", set.name),
                    );
                    Ok(())
                }
                Err(e) => {
                    ev(
                        false,
                        "FailedUpdate",
                        "Update",
                        format!("update Pod {name} in StatefulSet {} failed error: {e}", set.name),
                    );
                    Err(e.into())
                }
            }
        }
        Step::SetClaimOwners { claim, pod, resource_version, owners } => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client, &set.namespace);
            let owners = if owners.is_empty() { Value::Null } else { json!(owners) };
            let patch = json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": owners}});
            match api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => {
                    if !is_conflict(&e) {
                        ev(
                            false,
                            "FailedUpdate",
                            "Update",
                            format!("update Claim {claim} for Pod {pod} in StatefulSet {} failed error: {e}", set.name),
                        );
                    }
                    Err(e.into())
                }
            }
        }
        Step::Fail(reason) => Err(Error::Invalid { what: format!("StatefulSet {key}"), reason: reason.clone() }),
    }
}

/// The status merge patch.
fn status_patch(s: &Status) -> Value {
    json!({"status": {
        "observedGeneration": s.observed_generation,
        "replicas": s.replicas,
        "readyReplicas": s.ready_replicas,
        "currentReplicas": s.current_replicas,
        "updatedReplicas": s.updated_replicas,
        "availableReplicas": s.available_replicas,
        "currentRevision": s.current_revision,
        "updateRevision": s.update_revision,
        "collisionCount": s.collision_count,
    }})
}
