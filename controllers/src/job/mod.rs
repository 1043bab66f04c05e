//! The Job controller (upstream `pkg/controller/job`, batch/v1): runs a Job's pods until
//! enough succeed (`completions`, `parallelism`, NonIndexed or Indexed), or it fails
//! (`backoffLimit`, `activeDeadlineSeconds`, `podFailurePolicy`); suspends and resumes it;
//! counts its pods through the `batch.kubernetes.io/job-tracking` finalizer; replaces
//! failed pods with exponential backoff; and reports it all in status. The decision is
//! [`plan`]; this module reads the caches and writes. Alongside run the TTL-after-finished
//! loop ([`ttl`]) and the removal of tracking finalizers from pods whose Job is gone or
//! finished (upstream's orphan-pod queue).

pub mod backoff;
pub mod indexes;
pub mod plan;
pub mod policy;
pub mod ttl;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use self::plan::{Done, PodWork, Skip, Sync, TRACKING_FINALIZER};
use crate::events::Events;
use crate::expectations::{Expectations, TTL};
use crate::util_api::{is_namespace_terminating, is_not_found};
use crate::util_runtime::lock;
use crate::{pods, Context, Error};

/// Finalizer removals in flight at once, per Job.
const FINALIZER_WRITES: usize = 16;
/// How often pods are swept for tracking finalizers nobody will remove.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);
/// How soon a sync that found the cache behind its own status write looks again.
const STALE_WAIT: Duration = Duration::from_secs(1);
/// How long it waits for that at most before going on anyway.
const STALE_MAX: Duration = Duration::from_secs(10);

/// Pods (by uid) whose tracking finalizer this controller removed but the cache still
/// shows (upstream's `uidTrackingExpectations`): they are counted already.
#[derive(Default)]
struct Removals {
    inner: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Removals {
    fn expect(&self, key: &str, uid: &str) {
        lock(&self.inner).entry(key.to_string()).or_default().insert(uid.to_string(), Instant::now());
    }

    fn observed(&self, key: &str, uid: &str) {
        let mut m = lock(&self.inner);
        if let Some(s) = m.get_mut(key) {
            s.remove(uid);
            if s.is_empty() {
                m.remove(key);
            }
        }
    }

    /// The uids still pending: the cache shows them with the finalizer (`shown`).
    fn pending(&self, key: &str, shown: impl Fn(&str) -> bool) -> HashSet<String> {
        let mut m = lock(&self.inner);
        let Some(s) = m.get_mut(key) else { return HashSet::new() };
        s.retain(|u, at| shown(u) && at.elapsed() < TTL);
        let out = s.keys().cloned().collect();
        if s.is_empty() {
            m.remove(key);
        }
        out
    }

    fn forget(&self, key: &str) {
        lock(&self.inner).remove(key);
    }
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    jobs: Store<Job>,
    exp: Expectations,
    removals: Removals,
    backoff: Mutex<HashMap<String, backoff::Record>>,
    /// Job key → the resourceVersions our status writes replaced (and when).
    superseded: Mutex<HashMap<String, (Vec<String>, Instant)>>,
    events: Events,
    orphans: mpsc::UnboundedSender<(String, String)>,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (job_store, job_writer) = reflector::store::<Job>();
    let (tx, rx) = mpsc::unbounded();
    let pod_stream =
        reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "job-controller"),
        ctx: ctx.clone(),
        pods: pod_store,
        jobs: job_store.clone(),
        exp: Expectations::default(),
        removals: Removals::default(),
        backoff: Mutex::new(HashMap::new()),
        superseded: Mutex::new(HashMap::new()),
        orphans: tx,
    });
    let deleted_state = state.clone();
    let job_stream =
        reflector::reflector(job_writer, watcher(Api::<Job>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .inspect(move |ev| {
                if let Ok(watcher::Event::Delete(job)) = ev {
                    forget_job(&deleted_state, job);
                }
            })
            .touched_objects();
    let mapper_state = state.clone();
    let main = Controller::for_stream(job_stream, job_store)
        .watches_stream(pod_stream, move |pod: Pod| jobs_of(&mapper_state, &pod))
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("job", &ctx.config.write_traces, reconcile), error_policy, state.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "job sync");
            }
        });
    let (_, ttl_res, _) = tokio::join!(main, ttl::run(ctx.clone()), release_orphans(state, rx));
    ttl_res
}

/// A Job is gone: drop what the controller kept about it, and release its pods (they
/// keep their tracking finalizers otherwise).
fn forget_job(st: &State, job: &Job) {
    let key =
        format!("{}/{}", job.metadata.namespace.as_deref().unwrap_or(""), job.metadata.name.as_deref().unwrap_or(""));
    st.exp.forget(&key);
    st.removals.forget(&key);
    lock(&st.backoff).remove(&key);
    lock(&st.superseded).remove(&key);
    for p in st.pods.state() {
        let ours = pods::controller_of(&p.metadata).is_some_and(|r| Some(&r.uid) == job.metadata.uid.as_ref());
        if ours && plan::has_finalizer(&p) {
            let _ = st.orphans.unbounded_send(pod_key(&p));
        }
    }
}

fn pod_key(p: &Pod) -> (String, String) {
    (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default())
}

/// The Jobs a pod event concerns: its controller (if a Job), or for an orphan the Jobs
/// whose explicit selector matches it. A pod whose tracking finalizer nobody else will
/// remove is queued for [`release_orphans`].
fn jobs_of(st: &State, pod: &Pod) -> Vec<ObjectRef<Job>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&pod.metadata) {
        Some(r) if r.kind == "Job" => {
            let oref = ObjectRef::new(&r.name).within(&ns);
            if plan::has_finalizer(pod) {
                let live = st
                    .jobs
                    .get(&oref)
                    .is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()) && !plan::is_finished(&j));
                if !live {
                    let _ = st.orphans.unbounded_send(pod_key(pod));
                }
            }
            vec![oref]
        }
        Some(_) => vec![],
        None => {
            if plan::has_finalizer(pod) {
                let _ = st.orphans.unbounded_send(pod_key(pod));
            }
            let one = [Arc::new(pod.clone())];
            st.jobs
                .state()
                .iter()
                .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|j| !plan::adoptable(j, &one).is_empty())
                .map(|j| ObjectRef::from_obj(j.as_ref()))
                .collect()
        }
    }
}

fn error_policy(_obj: Arc<Job>, err: &Error, _st: Arc<State>) -> Action {
    Action::requeue(crate::util_runtime::retry_delay(err))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..Default::default()
    }
}

fn emit(st: &State, job: &Job, events: &[plan::Event]) {
    for (warning, reason, msg) in events {
        if *warning {
            st.events.warning(reference(job), reason, "Sync", msg.clone());
        } else {
            st.events.normal(reference(job), reason, "Sync", msg.clone());
        }
    }
}

#[tracing::instrument(skip_all, fields(ns = job.metadata.namespace.as_deref().unwrap_or(""), name = job.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, Error> {
    st.pods.wait_until_ready().await.map_err(|e| Error::Invalid { what: "pod cache".into(), reason: e.to_string() })?;
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let rv = job.metadata.resource_version.clone().unwrap_or_default();
    {
        let mut sup = lock(&st.superseded);
        sup.retain(|_, (_, at)| at.elapsed() < STALE_MAX);
        match sup.get(&key) {
            Some((old, at)) if old.contains(&rv) && at.elapsed() < STALE_MAX => return Ok(Action::requeue(STALE_WAIT)),
            Some(_) => {
                sup.remove(&key);
            }
            None => {}
        }
    }
    if plan::is_finished(&job) {
        lock(&st.backoff).remove(&key);
        st.exp.forget(&key);
        st.removals.forget(&key);
        return Ok(Action::await_change());
    }

    let ns_pods: Vec<Arc<Pod>> =
        st.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
    let mut mine: Vec<Arc<Pod>> =
        ns_pods.iter().filter(|p| pods::controller_of(&p.metadata).is_some_and(|r| r.uid == uid)).cloned().collect();
    let pods_api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let orphans = plan::adoptable(&job, &ns_pods);
    if !orphans.is_empty() && fresh_job(&st, &job).await? {
        for p in orphans {
            match adopt(&pods_api, &job, &p).await {
                Ok(adopted) => mine.push(Arc::new(adopted)),
                Err(e) => tracing::debug!(pod = ?p.metadata.name, error = %e, "adoption failed"),
            }
        }
    }

    let shown: HashMap<&str, bool> = ns_pods
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.deletion_timestamp.is_some())))
        .collect();
    let (adds, dels) = st.exp.pending(&key, |n| shown.get(n).copied());
    let satisfied = adds.is_empty() && dels.is_empty();
    let with_finalizer: HashSet<String> =
        mine.iter().filter(|p| plan::has_finalizer(p)).filter_map(|p| p.metadata.uid.clone()).collect();
    let expected_rm = st.removals.pending(&key, |u| with_finalizer.contains(u));
    let prev = lock(&st.backoff).get(&key).copied().unwrap_or_default();
    let now = jiff::Timestamp::now();

    let mut sync = match Sync::new(&job, mine, now, satisfied, expected_rm, prev) {
        Ok(s) => s,
        Err(Skip::UnknownCompletionMode(m)) => {
            st.events.warning(
                reference(&job),
                "UnknownCompletionMode",
                "Sync",
                format!("Skipped Job sync because completion mode {m:?} is unknown"),
            );
            return Ok(Action::await_change());
        }
        Err(_) => return Ok(Action::await_change()),
    };

    let work = sync.pod_work();
    let mut failure: Option<Error> = None;
    let done = match &work {
        PodWork::Terminate(victims) => delete_pods(&st, &key, &job, &pods_api, victims, false, &mut failure).await,
        PodWork::Delete(victims) => delete_pods(&st, &key, &job, &pods_api, victims, true, &mut failure).await,
        PodWork::Create(slots) => create_pods(&st, &key, &job, &pods_api, slots, &mut failure).await,
        PodWork::Backoff(_) | PodWork::Nothing => Done::default(),
    };
    sync.pods_done(&work, done);
    let track = sync.track();

    let mut current = (*job).clone();
    if track.flush {
        current = write_status(&st, &key, current, &sync).await?;
    }
    lock(&st.backoff).insert(key.clone(), sync.backoff);

    for p in &track.remove {
        st.removals.expect(&key, p.metadata.uid.as_deref().unwrap_or(""));
    }
    let results: Vec<(String, Result<(), Error>)> = futures::stream::iter(track.remove.clone())
        .map(|p: Arc<Pod>| {
            let api = pods_api.clone();
            async move {
                let puid = p.metadata.uid.clone().unwrap_or_default();
                (puid, remove_finalizer(&api, p.metadata.name.as_deref().unwrap_or("")).await)
            }
        })
        .buffer_unordered(FINALIZER_WRITES)
        .collect()
        .await;
    let mut removed = HashSet::new();
    for (puid, r) in results {
        match r {
            Ok(()) => {
                removed.insert(puid);
            }
            Err(e) => {
                st.removals.observed(&key, &puid);
                failure.get_or_insert(e);
            }
        }
    }
    if sync.finalizers_removed(&removed) {
        write_status(&st, &key, current, &sync).await?;
    }
    emit(&st, &job, &sync.events);
    if sync.finished_now() {
        lock(&st.backoff).remove(&key);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(match sync.requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Upstream's `RecheckDeletionTimestamp`: adopt only for a Job that still exists, is the
/// same object and is not being deleted (read fresh, not from the cache).
async fn fresh_job(st: &State, job: &Job) -> Result<bool, Error> {
    let api: Api<Job> = Api::namespaced(st.ctx.client.clone(), job.metadata.namespace.as_deref().unwrap_or(""));
    Ok(match api.get_opt(job.metadata.name.as_deref().unwrap_or("")).await? {
        Some(j) => j.metadata.uid == job.metadata.uid && j.metadata.deletion_timestamp.is_none(),
        None => false,
    })
}

/// Take an orphan: controller reference and tracking finalizer, guarded by its
/// resourceVersion.
async fn adopt(api: &Api<Pod>, job: &Job, pod: &Pod) -> Result<Pod, Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(pods::controller_ref(
        "batch/v1",
        "Job",
        job.metadata.name.as_deref().unwrap_or(""),
        job.metadata.uid.as_deref().unwrap_or(""),
    ));
    let mut finalizers = pod.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_string());
    }
    let patch = json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "ownerReferences": refs,
        "finalizers": finalizers,
    }});
    let name = pod.metadata.name.clone().unwrap_or_default();
    Ok(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

async fn remove_finalizer(api: &Api<Pod>, name: &str) -> Result<(), Error> {
    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
    match api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Delete pods (`release`: remove the tracking finalizer first, so they are not counted).
async fn delete_pods(
    st: &State,
    key: &str,
    job: &Job,
    api: &Api<Pod>,
    victims: &[Arc<Pod>],
    release: bool,
    failure: &mut Option<Error>,
) -> Done {
    let results = futures::future::join_all(victims.iter().map(|p| async move {
        let name = p.metadata.name.clone().unwrap_or_default();
        if release && plan::has_finalizer(p) {
            remove_finalizer(api, &name).await?;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok((name, true)),
            Err(e) if is_not_found(&e) => Ok((name, false)),
            Err(e) => Err(Error::from(e)),
        }
    }))
    .await;
    let mut done = Done::default();
    for (p, r) in victims.iter().zip(results) {
        match r {
            Ok((name, existed)) => {
                done.deleted += 1;
                if pods::is_ready(p) {
                    done.deleted_ready += 1;
                }
                if release && existed {
                    st.exp.deleted(key, &name);
                }
                if existed {
                    st.events.normal(reference(job), "SuccessfulDelete", "Delete", format!("Deleted pod: {name}"));
                }
            }
            Err(e) => {
                st.events.warning(reference(job), "FailedDelete", "Delete", format!("Error deleting: {e}"));
                failure.get_or_insert(e);
            }
        }
    }
    done
}

/// Create pods in slow-start batches (1, 2, 4, …), stopping at the first failing batch.
async fn create_pods(
    st: &State,
    key: &str,
    job: &Job,
    api: &Api<Pod>,
    slots: &[Option<i32>],
    failure: &mut Option<Error>,
) -> Done {
    let mut done = Done::default();
    let mut rest = slots;
    let mut size = 1usize;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        size *= 2;
        let pp = PostParams::default();
        let results = futures::future::join_all(batch.iter().map(|ix| {
            let pod = plan::pod_for(job, *ix);
            let pp = &pp;
            async move { api.create(pp, &pod).await }
        }))
        .await;
        let mut failed = false;
        for r in results {
            match r {
                Ok(p) => {
                    let name = p.metadata.name.unwrap_or_default();
                    st.exp.created(key, &name);
                    done.created += 1;
                    st.events.normal(reference(job), "SuccessfulCreate", "Create", format!("Created pod: {name}"));
                }
                // The namespace is going away: nothing more to create.
                Err(e) if is_namespace_terminating(&e) => return done,
                Err(e) => {
                    st.events.warning(reference(job), "FailedCreate", "Create", format!("Error creating: {e}"));
                    failure.get_or_insert(e.into());
                    failed = true;
                }
            }
        }
        if failed {
            break;
        }
    }
    done
}

/// Write `sync.status` (a PUT pinned to the resourceVersion of `current`: a stale read
/// conflicts and is retried); the Job as written.
async fn write_status(st: &State, key: &str, mut current: Job, sync: &Sync) -> Result<Job, Error> {
    let ns = current.metadata.namespace.clone().unwrap_or_default();
    let name = current.metadata.name.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);
    current.status = Some(sync.status.clone());
    let old = current.metadata.resource_version.clone();
    let written = api.replace_status(&name, &PostParams::default(), &current).await?;
    if let Some(old) = old.filter(|o| Some(o) != written.metadata.resource_version.as_ref()) {
        let mut sup = lock(&st.superseded);
        let e = sup.entry(key.to_string()).or_insert_with(|| (Vec::new(), Instant::now()));
        e.0.push(old);
        e.1 = Instant::now();
    }
    Ok(written)
}

/// Remove the tracking finalizer from pods whose Job is gone, finished, or not a Job
/// (upstream's orphan-pod worker): those queued by the watches, and a periodic sweep.
async fn release_orphans(st: Arc<State>, mut rx: mpsc::UnboundedReceiver<(String, String)>) {
    let stop = st.ctx.stop.clone();
    if !crate::util_runtime::wait_ready(&st.pods, &stop).await
        || !crate::util_runtime::wait_ready(&st.jobs, &stop).await
    {
        return;
    }
    let mut sweep = tokio::time::interval(ORPHAN_SWEEP);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = rx.next() => match next {
                Some((ns, name)) => release_one(&st, &ns, &name).await,
                None => return,
            },
            _ = sweep.tick() => {
                let stuck: Vec<(String, String)> = st.pods.state().iter()
                    .filter(|p| plan::has_finalizer(p) && !has_live_job(&st, p))
                    .map(|p| pod_key(p))
                    .collect();
                for (ns, name) in stuck {
                    release_one(&st, &ns, &name).await;
                }
            }
        }
    }
}

/// The pod's controller is a Job the cache shows, unfinished.
fn has_live_job(st: &State, pod: &Pod) -> bool {
    match pods::controller_of(&pod.metadata) {
        Some(r) if r.kind == "Job" => {
            let oref = ObjectRef::new(&r.name).within(pod.metadata.namespace.as_deref().unwrap_or(""));
            st.jobs
                .get(&oref)
                .is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()) && !plan::is_finished(&j))
        }
        // Another controller's pod: not ours to touch.
        Some(_) => true,
        None => false,
    }
}

async fn release_one(st: &State, ns: &str, name: &str) {
    let Some(pod) = st.pods.get(&ObjectRef::new(name).within(ns)) else { return };
    if !plan::has_finalizer(&pod) || has_live_job(st, &pod) {
        return;
    }
    if let Some(r) = pods::controller_of(&pod.metadata) {
        if r.api_version != "batch/v1" {
            return;
        }
        // The cache may lag: ask the API server before releasing.
        let api: Api<Job> = Api::namespaced(st.ctx.client.clone(), ns);
        match api.get_opt(&r.name).await {
            Ok(Some(j)) if j.metadata.uid.as_deref() == Some(r.uid.as_str()) && !plan::is_finished(&j) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(pod = name, error = %e, "checking an orphan's job failed");
                return;
            }
        }
    }
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), ns);
    if let Err(e) = remove_finalizer(&api, name).await {
        tracing::debug!(pod = name, error = %e, "removing an orphan's tracking finalizer failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_removals_stay_pending_while_the_cache_shows_the_finalizer() {
        let r = Removals::default();
        r.expect("ns/j", "a");
        r.expect("ns/j", "b");
        r.expect("ns/j", "c");
        r.observed("ns/j", "c");
        let pending = r.pending("ns/j", |u| u == "a");
        assert_eq!(pending, HashSet::from(["a".to_string()]));
        assert!(r.pending("ns/j", |_| false).is_empty());
        assert!(lock(&r.inner).is_empty());
        r.expect("ns/k", "x");
        r.forget("ns/k");
        assert!(r.pending("ns/k", |_| true).is_empty());
    }
}
