//! The disruption controller (upstream `pkg/controller/disruption`): the status of every
//! PodDisruptionBudget. Its pods are those its selector picks in its namespace; its
//! expected count is their number (integer `minAvailable`) or the summed scale of their
//! controllers (ReplicationController, Deployment through its ReplicaSet, ReplicaSet,
//! StatefulSet, else any controller's `scale` subresource); `currentHealthy` counts ready
//! pods not being deleted nor admitted for eviction (`disruptedPods`, pruned after
//! [`plan::DELETION_TIMEOUT`]); `disruptionsAllowed` is what is healthy beyond
//! `desiredHealthy`. Written through `/status` only when it changed; a failed sync writes
//! the fail-safe status (no disruptions, `SyncFailed`). The arithmetic: [`plan`].
//!
//! Not done (upstream has it): clearing stale `DisruptionTarget` pod conditions.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{GroupVersionKind, SelectorExt};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use self::plan::Counts;
use crate::events::Events;
use crate::{pods, util_api, util_runtime, Context, Error};

struct State {
    ctx: Context,
    pods: Store<Pod>,
    rss: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    rcs: Store<ReplicationController>,
    events: Events,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let wc = watcher::Config::default;
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let pod_stream = reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), wc()))
        .default_backoff()
        .touched_objects();
    let (rss, rs_events) = util_runtime::reflect(Api::<ReplicaSet>::all(client.clone()), wc());
    let (deployments, d_events) = util_runtime::reflect(Api::<Deployment>::all(client.clone()), wc());
    let (statefulsets, ss_events) = util_runtime::reflect(Api::<StatefulSet>::all(client.clone()), wc());
    let (rcs, rc_events) = util_runtime::reflect(Api::<ReplicationController>::all(client.clone()), wc());

    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client.clone()), wc());
    let pdbs = controller.store();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "disruption-controller"),
        ctx: ctx.clone(),
        pods: pod_reader,
        rss,
        deployments,
        statefulsets,
        rcs,
    });
    let for_pods = pdbs.clone();
    let results = controller
        .watches_stream(pod_stream, move |p: Pod| budgets_of(&for_pods, &p))
        .reconcile_on(scale_triggers(rs_events, pdbs.clone(), |r: &ReplicaSet| {
            r.spec.as_ref().and_then(|s| s.replicas)
        }))
        .reconcile_on(scale_triggers(d_events, pdbs.clone(), |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas)))
        .reconcile_on(scale_triggers(ss_events, pdbs.clone(), |s: &StatefulSet| {
            s.spec.as_ref().and_then(|s| s.replicas)
        }))
        .reconcile_on(scale_triggers(rc_events, pdbs, |r: &ReplicationController| {
            r.spec.as_ref().and_then(|s| s.replicas)
        }))
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed("disruption", &ctx.config.write_traces, reconcile),
            util_runtime::retry_policy::<PodDisruptionBudget, State>,
            state,
        );
    util_runtime::drive(results, &ctx.stop).await;
    Ok(())
}

/// The budgets a pod event concerns: every budget of its namespace that selects it.
fn budgets_of(pdbs: &Store<PodDisruptionBudget>, pod: &Pod) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.metadata.namespace.as_deref();
    let labels = pods::labels(&pod.metadata);
    pdbs.state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == ns)
        .filter(|b| plan::selector(b).is_some_and(|s| s.matches(&labels)))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// The budgets of a workload's namespace, whenever its `spec.replicas` changes (or it
/// appears or goes): its scale may be a budget's expected count.
fn scale_triggers<W>(
    events: util_runtime::Events<W>,
    pdbs: Store<PodDisruptionBudget>,
    replicas: fn(&W) -> Option<i32>,
) -> impl Stream<Item = ObjectRef<PodDisruptionBudget>> + Send + 'static
where
    W: Resource<DynamicType = ()> + Clone + Send + 'static,
{
    let mut known: HashMap<String, Option<i32>> = HashMap::new();
    events.flat_map(move |ev| {
        let ns = match ev {
            Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) => {
                let r = replicas(&w);
                (known.insert(w.uid().unwrap_or_default(), r) != Some(r)).then(|| w.namespace())
            }
            Ok(watcher::Event::Delete(w)) => {
                known.remove(&w.uid().unwrap_or_default());
                Some(w.namespace())
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => {
                tracing::debug!(error = %e, "workload watch failed; retrying");
                None
            }
        };
        let refs: Vec<ObjectRef<PodDisruptionBudget>> = match ns {
            Some(ns) => pdbs
                .state()
                .iter()
                .filter(|b| b.metadata.namespace == ns)
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect(),
            None => vec![],
        };
        futures::stream::iter(refs)
    })
}

fn invalid(what: String, reason: impl ToString) -> Error {
    Error::Invalid { what, reason: reason.to_string() }
}

async fn ready<K: Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>, what: &str) -> Result<(), Error> {
    store.wait_until_ready().await.map_err(|e| invalid(format!("{what} cache"), e))
}

#[tracing::instrument(skip_all, fields(ns = pdb.metadata.namespace.as_deref().unwrap_or(""), name = pdb.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(pdb: Arc<PodDisruptionBudget>, st: Arc<State>) -> Result<Action, Error> {
    ready(&st.pods, "pod").await?;
    ready(&st.rss, "replicaset").await?;
    ready(&st.deployments, "deployment").await?;
    ready(&st.statefulsets, "statefulset").await?;
    ready(&st.rcs, "replicationcontroller").await?;
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    let ns_pods: Vec<Arc<Pod>> =
        st.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
    let pods = plan::select(&pdb, &ns_pods);
    let now = Timestamp::now();
    let spec = pdb.spec.clone().unwrap_or_default();

    let counted = match expected(&st, &ns, &spec, &pods).await {
        Ok(c) => c,
        Err(message) => {
            st.events.warning(
                pdb.object_ref(&()),
                "CalculateExpectedPodCountFailed",
                "Sync",
                format!("Failed to calculate the number of expected pods: {message}"),
            );
            if let Some(status) = plan::fail_safe(&pdb, &message, now) {
                write(&st, &pdb, status).await?;
            }
            return Err(invalid(format!("PodDisruptionBudget {ns}/{name}"), message));
        }
    };
    let ((expected_pods, desired_healthy), unmanaged) = counted;
    let (disrupted, recheck, expired) =
        plan::disrupted(&pods, pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()), now);
    let counts =
        Counts { current_healthy: plan::healthy(&pods, &disrupted, now), desired_healthy, expected_pods, disrupted };
    if let Some(status) = plan::status(&pdb, &counts, now) {
        let reference = pdb.object_ref(&());
        if pods.is_empty() {
            st.events.normal(reference.clone(), "NoPods", "Sync", "No matching pods found".into());
        }
        if !unmanaged.is_empty() {
            let selector = serde_json::to_string(&spec.selector).unwrap_or_default();
            st.events.warning(
                reference.clone(),
                "UnmanagedPods",
                "Sync",
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. \
                     As a result, the status of the PDB cannot be calculated correctly, which may result in undefined \
                     behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an \
                     integer value."
                ),
            );
        }
        for p in &expired {
            tracing::info!(pod = %p, "pod was expected to be deleted but it wasn't");
        }
        write(&st, &pdb, status).await?;
    }
    Ok(match recheck {
        Some(t) => {
            let left = t.as_second() - now.as_second();
            Action::requeue(Duration::from_secs(left.max(1) as u64))
        }
        None => Action::await_change(),
    })
}

/// `getExpectedPodCount`: ((expectedPods, desiredHealthy), unmanaged pods), or why not.
async fn expected(
    st: &State,
    ns: &str,
    spec: &k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec,
    pods: &[Arc<Pod>],
) -> Result<((i32, i32), Vec<String>), String> {
    let (mut scale, mut unmanaged) = (0, Vec::new());
    if plan::needs_scale(spec) {
        let (refs, orphans) = plan::controllers(pods);
        unmanaged = orphans;
        let mut counted: HashSet<String> = HashSet::new();
        for (r, pod) in refs {
            match find_scale(st, ns, &r).await? {
                Some((uid, n)) => {
                    if counted.insert(uid) {
                        scale += n;
                    }
                }
                None => return Err(format!("found no controllers for pod {pod:?}")),
            }
        }
    }
    Ok((plan::expected_and_desired(spec, pods.len() as i32, scale)?, unmanaged))
}

fn is_kind(r: &OwnerReference, kind: &str, groups: &[&str]) -> bool {
    r.kind == kind && groups.contains(&plan::group(&r.api_version))
}

fn in_store<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: &str, r: &OwnerReference) -> Option<Arc<K>> {
    store.get(&ObjectRef::new(&r.name).within(ns)).filter(|o| o.meta().uid.as_deref() == Some(r.uid.as_str()))
}

/// The controller `r` and its scale (its uid, to count each controller once), trying
/// upstream's finders in order: ReplicationController, Deployment (through a ReplicaSet it
/// controls), ReplicaSet (not controlled by a Deployment), StatefulSet, then the `scale`
/// subresource of whatever the reference names.
async fn find_scale(st: &State, ns: &str, r: &OwnerReference) -> Result<Option<(String, i32)>, String> {
    if is_kind(r, "ReplicationController", &[""]) {
        if let Some(rc) = in_store(&st.rcs, ns, r) {
            return Ok(Some((r.uid.clone(), rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))));
        }
    }
    if is_kind(r, "ReplicaSet", &["apps", "extensions"]) {
        if let Some(rs) = in_store(&st.rss, ns, r) {
            match pods::controller_of(&rs.metadata) {
                Some(d) if d.kind == "Deployment" => {
                    if is_kind(d, "Deployment", &["apps", "extensions"]) {
                        if let Some(dep) = in_store(&st.deployments, ns, d) {
                            let n = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                            return Ok(Some((d.uid.clone(), n)));
                        }
                    }
                }
                _ => return Ok(Some((r.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))),
            }
        }
    }
    if is_kind(r, "StatefulSet", &["apps"]) {
        if let Some(ss) = in_store(&st.statefulsets, ns, r) {
            return Ok(Some((r.uid.clone(), ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))));
        }
    }
    scale_subresource(st, ns, r).await
}

/// `getScaleController`: the `scale` subresource of the referenced object.
async fn scale_subresource(st: &State, ns: &str, r: &OwnerReference) -> Result<Option<(String, i32)>, String> {
    let (group, version) = match r.api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &r.kind);
    let (ar, _) = match kube::discovery::pinned_kind(&st.ctx.client, &gvk).await {
        Ok(found) => found,
        Err(e) => return Err(format!("no resource for {}/{}: {e}", r.api_version, r.kind)),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(st.ctx.client.clone(), ns, &ar);
    match api.get_scale(&r.name).await {
        Ok(scale) if scale.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            Ok(Some((r.uid.clone(), scale.spec.and_then(|s| s.replicas).unwrap_or(0))))
        }
        Ok(_) => Ok(None),
        Err(e) if util_api::is_not_found(&e) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Write a budget's status through `/status` (guarded by the resourceVersion the decision saw).
async fn write(
    st: &State,
    pdb: &PodDisruptionBudget,
    status: k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let mut new = pdb.clone();
    new.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(st.ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    api.replace_status(&pdb.name_any(), &PostParams::default(), &new).await?;
    Ok(())
}
