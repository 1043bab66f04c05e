//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node.
//!
//! A node is eligible when the pod's `nodeName`, `nodeSelector` and required node affinity
//! match it and its tolerations (the template's plus the DaemonSet defaults) tolerate the
//! node's `NoSchedule`/`NoExecute` taints ([`eligibility`]). Pods are created pinned to their
//! node by a required `matchFields metadata.name In [node]` affinity (the scheduler binds
//! them) and labelled `controller-revision-hash` and `pod-template-generation`, in
//! slow-start batches with expectations so a lagging cache never creates twice. Extra pods
//! on a node, pods on nodes that no longer qualify or no longer exist, and finished pods are
//! deleted (failed ones with backoff, then recreated). Template history is kept as
//! ControllerRevisions ([`history`]); RollingUpdate (maxUnavailable / maxSurge) and OnDelete
//! updates; the status `kubectl rollout status daemonset` reads. Decisions: [`plan`].
//!
//! Not done (upstream has them): DaemonSet `conditions` (upstream sets none either) and
//! events on the pod when several DaemonSets select it.

pub mod eligibility;
pub mod history;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::eligibility::Fit;
use self::plan::{Strategy, View};
use crate::events::Events;
use crate::expectations::Expectations;
use crate::{pods, util_api, util_runtime, Context, Error};

const KIND: &str = "DaemonSet";

/// How soon a DaemonSet waiting for its expectations is looked at again without an event.
const PENDING_RECHECK: Duration = Duration::from_secs(30);

struct State {
    ctx: Context,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    exp: Expectations,
    events: Events,
    backoff: Mutex<plan::Backoff>,
    gone: Gone,
}

/// DaemonSet pods the watch saw deleted (for a while): a pod created and deleted before a
/// reconcile looked still confirms its creation expectation.
#[derive(Clone, Default)]
struct Gone(Arc<Mutex<HashMap<String, Instant>>>);

impl Gone {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        match self.0.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        }
    }

    fn record(&self, p: &Pod) {
        if !pods::controller_of(&p.metadata).is_some_and(|r| r.kind == KIND) {
            return;
        }
        let mut m = self.lock();
        if m.len() >= 256 && m.len().is_power_of_two() {
            m.retain(|_, at| at.elapsed() < crate::expectations::TTL);
        }
        m.insert(format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), Instant::now());
    }

    fn seen(&self, ns: &str, name: &str) -> bool {
        self.lock().contains_key(&format!("{ns}/{name}"))
    }
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let gone = Gone::default();
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let seen = gone.clone();
    let pod_stream =
        reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .map(move |ev| {
                if let Ok(watcher::Event::Delete(p)) = &ev {
                    seen.record(p);
                }
                ev
            })
            .touched_objects();
    let (rev_reader, rev_writer) = reflector::store::<ControllerRevision>();
    let rev_stream = reflector::reflector(
        rev_writer,
        watcher(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let node_events =
        reflector::reflector(node_writer, watcher(Api::<Node>::all(client.clone()), watcher::Config::default()))
            .default_backoff();

    let controller = Controller::new(Api::<DaemonSet>::all(client.clone()), watcher::Config::default());
    let dss = controller.store();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "daemonset-controller"),
        ctx: ctx.clone(),
        pods: pod_reader,
        nodes: node_reader,
        revisions: rev_reader,
        exp: Expectations::default(),
        backoff: Mutex::new(plan::Backoff::default()),
        gone,
    });
    let (for_pods, for_revs) = (dss.clone(), dss.clone());
    let results = controller
        .watches_stream(pod_stream, move |p: Pod| daemonsets_of(&for_pods, &p.metadata))
        .watches_stream(rev_stream, move |r: ControllerRevision| daemonsets_of(&for_revs, &r.metadata))
        .reconcile_on(node_triggers(node_events, dss))
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed("daemonset", &ctx.config.write_traces, reconcile),
            util_runtime::retry_policy::<DaemonSet, State>,
            state,
        );
    util_runtime::drive(results, &ctx.stop).await;
    Ok(())
}

/// The DaemonSets a pod or revision event concerns: its controller if that is a
/// DaemonSet, or (an orphan) every DaemonSet in its namespace that selects it.
fn daemonsets_of(dss: &Store<DaemonSet>, meta: &ObjectMeta) -> Vec<ObjectRef<DaemonSet>> {
    let ns = meta.namespace.clone().unwrap_or_default();
    match pods::controller_of(meta) {
        Some(r) if r.kind == KIND && r.api_version.starts_with("apps/") => {
            vec![ObjectRef::new(&r.name).within(&ns)]
        }
        Some(_) => vec![],
        None => {
            let labels = pods::labels(meta);
            dss.state()
                .iter()
                .filter(|d| d.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|d| plan::selector(d).ok().flatten().is_some_and(|s| s.matches(&labels)))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect()
        }
    }
}

/// What about a node can change where daemon pods belong: its labels and taints.
type Fingerprint = (BTreeMap<String, String>, Vec<(String, Option<String>, String)>);

fn fingerprint(n: &Node) -> Fingerprint {
    let taints: &[Taint] = n.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    (
        n.metadata.labels.clone().unwrap_or_default(),
        taints.iter().map(|t| (t.key.clone(), t.value.clone(), t.effect.clone())).collect(),
    )
}

/// Every DaemonSet, whenever a node appears, goes, or changes labels or taints (and after
/// each full list of nodes); status-only node updates are ignored.
fn node_triggers(
    events: impl Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send + 'static,
    dss: Store<DaemonSet>,
) -> impl Stream<Item = ObjectRef<DaemonSet>> + Send + 'static {
    let mut known: HashMap<String, Fingerprint> = HashMap::new();
    events.flat_map(move |ev| {
        let changed = match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                let fp = fingerprint(&n);
                known.insert(n.name_any(), fp.clone()).as_ref() != Some(&fp)
            }
            Ok(watcher::Event::Delete(n)) => {
                known.remove(&n.name_any());
                true
            }
            Ok(watcher::Event::InitDone) => true,
            Ok(watcher::Event::Init) => false,
            Err(e) => {
                tracing::debug!(error = %e, "node watch failed; retrying");
                false
            }
        };
        let refs: Vec<ObjectRef<DaemonSet>> =
            if changed { dss.state().iter().map(|d| ObjectRef::from_obj(d.as_ref())).collect() } else { vec![] };
        futures::stream::iter(refs)
    })
}

fn invalid(what: String, reason: impl ToString) -> Error {
    Error::Invalid { what, reason: reason.to_string() }
}

async fn ready<K: Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>, what: &str) -> Result<(), Error> {
    store.wait_until_ready().await.map_err(|e| invalid(format!("{what} cache"), e))
}

#[tracing::instrument(skip_all, fields(ns = ds.metadata.namespace.as_deref().unwrap_or(""), name = ds.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(ds: Arc<DaemonSet>, st: Arc<State>) -> Result<Action, Error> {
    ready(&st.pods, "pod").await?;
    ready(&st.nodes, "node").await?;
    ready(&st.revisions, "controller revision").await?;
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    let sel = match plan::selector(&ds) {
        Ok(Some(s)) => s,
        Ok(None) => {
            st.events.warning(
                ds.object_ref(&()),
                "SelectingAll",
                "Sync",
                "This daemon set is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Action::await_change());
        }
        Err(e) => return Err(invalid(format!("DaemonSet {ns}/{name} selector"), e)),
    };
    // Upstream: the status of a DaemonSet being deleted can't be computed reliably.
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Keyed by uid: a DaemonSet recreated under the same name starts clean.
    let key = format!("{ns}/{name}/{uid}");

    let spec = eligibility::daemon_pod_spec(&ds);
    let fits: BTreeMap<String, Fit> =
        st.nodes.state().iter().map(|n| (n.name_any(), eligibility::node_fit(&spec, n))).collect();

    let ns_pods: Vec<Arc<Pod>> =
        st.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
    let mine = claim_pods(&st, &ds, &sel, &ns_pods).await?;
    let (hash, old) = construct_history(&st, &ds, &sel, &mine).await?;

    let shown: HashMap<&str, bool> = ns_pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.deletion_timestamp.is_some())))
        .collect();
    let (adds, dels) = st.exp.pending(&key, |n| shown.get(n).copied().or_else(|| st.gone.seen(&ns, n).then_some(true)));
    let synced = adds.is_empty() && dels.is_empty();

    let grouped = plan::by_node(&mine, false);
    let view = View {
        fits: &fits,
        pods: &grouped,
        hash: &hash,
        generation: plan::template_generation(&ds),
        min_ready_seconds: ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0),
        now: Timestamp::now(),
    };
    // Don't act again until the cache shows this DaemonSet's last creates and deletes (the
    // watch brings them; the recheck only matters if an expectation has to lapse).
    let mut retry: Option<Duration> = (!synced).then_some(PENDING_RECHECK);
    let result = if synced { update(&st, &ds, &view, &key, &old, &mine, &mut retry).await } else { Ok(()) };

    let (counts, next_available) = plan::counts(&view);
    let status = write_status(&st, &ds, &counts, synced).await;
    result?;
    status?;
    if let Some(s) = next_available {
        let d = Duration::from_secs(s.max(1) as u64);
        retry = Some(retry.map_or(d, |r| r.min(d)));
    }
    Ok(match retry {
        Some(d) => Action::requeue(d.max(Duration::from_millis(100))),
        None => Action::await_change(),
    })
}

/// `manage`, then (when it had nothing to do) a rolling update step, then history cleanup.
async fn update(
    st: &State,
    ds: &DaemonSet,
    view: &View<'_>,
    key: &str,
    old: &[Arc<ControllerRevision>],
    mine: &[Arc<Pod>],
    retry: &mut Option<Duration>,
) -> Result<(), Error> {
    let observed = ds.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
    let prefix = format!("{}/{observed}", ds.uid().unwrap_or_default());
    let m = {
        let mut b = match st.backoff.lock() {
            Ok(b) => b,
            Err(e) => e.into_inner(),
        };
        let now = Instant::now();
        b.gc(now);
        plan::manage(view, plan::allows_surge(ds), &mut b, &prefix, now)
    };
    let ns = ds.namespace().unwrap_or_default();
    for (pod, node) in &m.failed {
        st.events.warning(
            ds.object_ref(&()),
            "FailedDaemonPod",
            "Delete",
            format!("Found failed daemon pod {ns}/{pod} on node {node}, will try to kill it"),
        );
    }
    for (pod, node) in &m.succeeded {
        st.events.normal(
            ds.object_ref(&()),
            "SucceededDaemonPod",
            "Delete",
            format!("Found succeeded daemon pod {ns}/{pod} on node {node}, will try to delete it"),
        );
    }
    *retry = m.retry_in;
    if !m.is_empty() {
        sync_nodes(st, ds, key, view.hash, &m.create, &m.delete, &m.orphaned).await?;
    } else {
        let desired = view.fits.values().filter(|f| f.should_run).count() as i32;
        let strategy =
            plan::strategy(ds, desired).map_err(|e| invalid(format!("DaemonSet {ns}/{}", ds.name_any()), e))?;
        if let Strategy::RollingUpdate { max_surge, max_unavailable } = strategy {
            let r = plan::rolling_update(view, max_surge, max_unavailable);
            sync_nodes(st, ds, key, view.hash, &r.create, &r.delete, &[]).await?;
        }
    }
    cleanup_history(st, ds, old, mine).await
}

/// `getDaemonPods`: the DaemonSet's pods, adopting selected orphans and releasing the pods
/// it no longer selects.
async fn claim_pods(st: &State, ds: &DaemonSet, sel: &Selector, ns_pods: &[Arc<Pod>]) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = ds.uid().unwrap_or_default();
    let claims = plan::claim(ns_pods, &uid, sel, false);
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let mut mine = claims.owned;
    if !claims.adopt.is_empty() && fresh_owner(st, ds).await? {
        for p in claims.adopt {
            match adopt(&api, ds, &p.metadata).await {
                Ok(()) => mine.push(p),
                Err(e) => tracing::debug!(pod = ?p.metadata.name, error = %e, "adoption failed"),
            }
        }
    }
    for p in &claims.release {
        if let Err(e) = release(&api, &uid, &p.metadata).await {
            tracing::debug!(pod = ?p.metadata.name, error = %e, "release failed");
        }
    }
    Ok(mine)
}

/// Upstream's `RecheckDeletionTimestamp`: adopt only for a DaemonSet that still exists, is
/// the same object and is not being deleted (read fresh, not from the cache).
async fn fresh_owner(st: &State, ds: &DaemonSet) -> Result<bool, Error> {
    let api: Api<DaemonSet> = Api::namespaced(st.ctx.client.clone(), &ds.namespace().unwrap_or_default());
    Ok(match api.get_opt(&ds.name_any()).await? {
        Some(d) => d.metadata.uid == ds.metadata.uid && d.metadata.deletion_timestamp.is_none(),
        None => false,
    })
}

/// Set an object's owner references, guarded by the resourceVersion the decision saw.
async fn set_owners<K>(api: &Api<K>, meta: &ObjectMeta, refs: Vec<OwnerReference>) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"resourceVersion": meta.resource_version, "ownerReferences": refs}});
    api.patch(meta.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn adopt<K>(api: &Api<K>, ds: &DaemonSet, meta: &ObjectMeta) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.push(pods::controller_ref("apps/v1", KIND, &ds.name_any(), &ds.uid().unwrap_or_default()));
    set_owners(api, meta, refs).await
}

async fn release<K>(api: &Api<K>, uid: &str, meta: &ObjectMeta) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs = meta.owner_references.clone().unwrap_or_default().into_iter().filter(|r| r.uid != uid).collect();
    set_owners(api, meta, refs).await
}

/// `constructHistory`: the current revision's hash (creating the revision if none holds
/// the template, deduplicating and renumbering otherwise) and the old revisions.
async fn construct_history(
    st: &State,
    ds: &DaemonSet,
    sel: &Selector,
    mine: &[Arc<Pod>],
) -> Result<(String, Vec<Arc<ControllerRevision>>), Error> {
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(st.ctx.client.clone(), &ns);
    let ns_revs: Vec<Arc<ControllerRevision>> =
        st.revisions.state().into_iter().filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
    let claims = plan::claim(&ns_revs, &uid, sel, false);
    let mut revs = claims.owned;
    if !claims.adopt.is_empty() && fresh_owner(st, ds).await? {
        for r in claims.adopt {
            match adopt(&api, ds, &r.metadata).await {
                Ok(()) => revs.push(r),
                Err(e) => tracing::debug!(revision = ?r.metadata.name, error = %e, "adoption failed"),
            }
        }
    }
    for r in &claims.release {
        if let Err(e) = release(&api, &uid, &r.metadata).await {
            tracing::debug!(revision = ?r.metadata.name, error = %e, "release failed");
        }
    }
    // Label revisions that lack the hash label with their name.
    for r in revs.iter_mut() {
        if r.metadata.labels.as_ref().is_some_and(|l| l.contains_key(history::HASH_LABEL)) {
            continue;
        }
        let n = r.name_any();
        let patch = json!({"metadata": {"labels": {history::HASH_LABEL: n}}});
        *r = Arc::new(api.patch(&n, &PatchParams::default(), &Patch::Merge(&patch)).await?);
    }
    let split = history::split(ds, &revs);
    let next = history::max_revision(&split.old) + 1;
    let cur = match history::keep_current(&split.current) {
        None => snapshot(st, ds, &api, next).await?,
        Some(keep) => {
            let keep_hash = history::hash_of(&keep);
            if split.current.len() > 1 {
                // Relabel pods to the kept revision, then drop the duplicates.
                let pods_api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
                for p in mine {
                    if p.labels().get(history::HASH_LABEL) != Some(&keep_hash) {
                        let patch = json!({"metadata": {"labels": {history::HASH_LABEL: keep_hash}}});
                        pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
                    }
                }
                for c in split.current.iter().filter(|c| c.metadata.name != keep.metadata.name) {
                    delete_ignoring_missing(&api, &c.name_any()).await?;
                }
            }
            if keep.revision < next {
                let patch = json!({"revision": next});
                api.patch(&keep.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            (*keep).clone()
        }
    };
    Ok((history::hash_of(&cur), split.old))
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if util_api::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `snapshot`: create the revision of the current template; on a name collision with a
/// different template, bump `status.collisionCount` (the next sync hashes differently).
async fn snapshot(
    st: &State,
    ds: &DaemonSet,
    api: &Api<ControllerRevision>,
    revision: i64,
) -> Result<ControllerRevision, Error> {
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = history::compute_hash(ds, collisions);
    let cr = history::snapshot(ds, revision, &hash);
    let err = match api.create(&PostParams::default(), &cr).await {
        Ok(c) => return Ok(c),
        Err(e) if util_api::is_conflict(&e) => e,
        Err(e) => return Err(e.into()),
    };
    let existing = api.get(&cr.name_any()).await?;
    if history::matches(ds, &existing) {
        return Ok(existing);
    }
    let ds_api: Api<DaemonSet> = Api::namespaced(st.ctx.client.clone(), &ds.namespace().unwrap_or_default());
    let mut fresh = ds_api.get(&ds.name_any()).await?;
    let fresh_collisions = fresh.status.as_ref().and_then(|s| s.collision_count);
    if fresh_collisions != collisions {
        return Err(invalid(
            format!("DaemonSet {}", ds.name_any()),
            format!("found a stale collision count ({collisions:?}, expected {fresh_collisions:?}); will retry until it is updated"),
        ));
    }
    let status = fresh.status.get_or_insert_with(Default::default);
    status.collision_count = Some(collisions.unwrap_or(0) + 1);
    ds_api.replace_status(&ds.name_any(), &PostParams::default(), &fresh).await?;
    tracing::info!(collisions = collisions.unwrap_or(0) + 1, "hash collision; bumped collisionCount");
    Err(err.into())
}

/// `cleanupHistory`: old revisions beyond `revisionHistoryLimit` that no pod runs.
async fn cleanup_history(
    st: &State,
    ds: &DaemonSet,
    old: &[Arc<ControllerRevision>],
    mine: &[Arc<Pod>],
) -> Result<(), Error> {
    let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
    let live: HashSet<String> = mine.iter().filter_map(|p| p.labels().get(history::HASH_LABEL).cloned()).collect();
    let api: Api<ControllerRevision> = Api::namespaced(st.ctx.client.clone(), &ds.namespace().unwrap_or_default());
    for name in history::to_prune(old, limit, &live) {
        delete_ignoring_missing(&api, &name).await?;
    }
    Ok(())
}

/// `syncNodes`: create daemon pods on `create` (slow-start batches: 1, 2, 4, …, stopping
/// at a failing batch), delete `delete`, and delete `orphaned` at once (no kubelet is left
/// to finish them). Every success is an expectation until the cache shows it.
async fn sync_nodes(
    st: &State,
    ds: &DaemonSet,
    key: &str,
    hash: &str,
    create: &[String],
    delete: &[String],
    orphaned: &[String],
) -> Result<(), Error> {
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let reference = ds.object_ref(&());
    let mut first_err: Option<kube::Error> = None;
    let mut done = 0;
    let mut batch = 1;
    'batches: while done < create.len() {
        let nodes = &create[done..(done + batch).min(create.len())];
        done += nodes.len();
        batch *= 2;
        let pp = PostParams::default();
        let results = futures::future::join_all(nodes.iter().map(|n| {
            let pod = plan::new_pod(ds, hash, n);
            let api = api.clone();
            let pp = pp.clone();
            async move { api.create(&pp, &pod).await }
        }))
        .await;
        let mut failed = false;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.name_any();
                    st.exp.created(key, &name);
                    st.events.normal(reference.clone(), "SuccessfulCreate", "Create", format!("Created pod: {name}"));
                }
                // The namespace is going away: every other create would fail the same way.
                Err(e) if util_api::is_namespace_terminating(&e) => break 'batches,
                Err(e) => {
                    st.events.warning(reference.clone(), "FailedCreate", "Create", format!("Error creating: {e}"));
                    first_err.get_or_insert(e);
                    failed = true;
                }
            }
        }
        if failed {
            break;
        }
    }
    let force = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    let normal = DeleteParams::default();
    let deletes = delete.iter().map(|n| (n, &normal)).chain(orphaned.iter().map(|n| (n, &force)));
    let results = futures::future::join_all(deletes.map(|(n, dp)| {
        let api = api.clone();
        async move { (n, api.delete(n, dp).await) }
    }))
    .await;
    for (name, r) in results {
        match r {
            Ok(_) => {
                st.exp.deleted(key, name);
                st.events.normal(reference.clone(), "SuccessfulDelete", "Delete", format!("Deleted pod: {name}"));
            }
            Err(e) if util_api::is_not_found(&e) => {}
            Err(e) => {
                st.events.warning(reference.clone(), "FailedDelete", "Delete", format!("Error deleting: {e}"));
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `storeDaemonSetStatus`: write the counts (and `observedGeneration` when this sync acted
/// on the current generation) unless the status already shows them.
async fn write_status(st: &State, ds: &DaemonSet, c: &plan::Counts, observe: bool) -> Result<(), Error> {
    let s = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation.unwrap_or(0);
    let same = s.desired_number_scheduled == c.desired
        && s.current_number_scheduled == c.current
        && s.number_misscheduled == c.misscheduled
        && s.number_ready == c.ready
        && s.updated_number_scheduled.unwrap_or(0) == c.updated
        && s.number_available.unwrap_or(0) == c.available
        && s.number_unavailable.unwrap_or(0) == c.unavailable
        && (!observe || s.observed_generation.unwrap_or(0) >= generation);
    if same {
        return Ok(());
    }
    let mut status = json!({
        "desiredNumberScheduled": c.desired,
        "currentNumberScheduled": c.current,
        "numberMisscheduled": c.misscheduled,
        "numberReady": c.ready,
        "updatedNumberScheduled": c.updated,
        "numberAvailable": c.available,
        "numberUnavailable": c.unavailable,
    });
    if observe {
        status["observedGeneration"] = json!(generation);
    }
    let api: Api<DaemonSet> = Api::namespaced(st.ctx.client.clone(), &ds.namespace().unwrap_or_default());
    api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await?;
    Ok(())
}
