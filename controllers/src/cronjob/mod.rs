//! The CronJob controller (upstream `pkg/controller/cronjob`, the v2 controller): starts
//! a Job from `spec.jobTemplate` at each time `spec.schedule` names (in `spec.timeZone`),
//! honouring `startingDeadlineSeconds`, `concurrencyPolicy` and `suspend`; keeps
//! `status.active`, `lastScheduleTime` and `lastSuccessfulTime`; deletes finished Jobs
//! beyond the history limits; and requeues itself for the next start time. Schedules are
//! [`schedule`], decisions [`plan`]; this module reads the caches and writes.

pub mod plan;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;

use crate::events::Events;
use crate::util_api::{is_conflict, is_namespace_terminating, is_not_found};
use crate::util_runtime::lock;
use crate::{pods, Context, Error};

struct State {
    ctx: Context,
    jobs: Store<Job>,
    events: Events,
    /// CronJob key → the resourceVersion our last status write replaced (and when): a
    /// cache still showing it is older than what we wrote, so a sync waits for the watch.
    superseded: Mutex<HashMap<String, (String, Instant)>>,
}

/// How soon a sync that found the cache behind its own status write looks again.
const STALE_WAIT: Duration = Duration::from_secs(1);
/// How long it waits for that at most before going on anyway.
const STALE_MAX: Duration = Duration::from_secs(10);

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (job_store, job_writer) = reflector::store::<Job>();
    let job_stream =
        reflector::reflector(job_writer, watcher(Api::<Job>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "cronjob-controller"),
        ctx: ctx.clone(),
        jobs: job_store,
        superseded: Mutex::new(HashMap::new()),
    });
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(job_stream)
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("cronjob", &ctx.config.write_traces, reconcile), error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cronjob sync");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_obj: Arc<CronJob>, err: &Error, _st: Arc<State>) -> Action {
    Action::requeue(crate::util_runtime::retry_delay(err))
}

fn reference(cj: &CronJob) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("CronJob".into()),
        name: cj.metadata.name.clone(),
        namespace: cj.metadata.namespace.clone(),
        uid: cj.metadata.uid.clone(),
        ..Default::default()
    }
}

#[tracing::instrument(skip_all, fields(ns = cj.metadata.namespace.as_deref().unwrap_or(""), name = cj.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(cj: Arc<CronJob>, st: Arc<State>) -> Result<Action, Error> {
    st.jobs.wait_until_ready().await.map_err(|e| Error::Invalid { what: "job cache".into(), reason: e.to_string() })?;
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let rv = cj.metadata.resource_version.clone().unwrap_or_default();
    {
        let mut sup = lock(&st.superseded);
        sup.retain(|_, (_, at)| at.elapsed() < STALE_MAX);
        match sup.get(&key) {
            Some((old, at)) if *old == rv && at.elapsed() < STALE_MAX => return Ok(Action::requeue(STALE_WAIT)),
            Some(_) => {
                sup.remove(&key);
            }
            None => {}
        }
    }
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs: Vec<Arc<Job>> = st
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| pods::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let jobs_api: Api<Job> = Api::namespaced(st.ctx.client.clone(), &ns);

    // Active entries the cache does not have: gone only if the API server says so.
    let cached: HashSet<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    let mut missing = HashSet::new();
    for r in cj.status.as_ref().and_then(|s| s.active.as_ref()).into_iter().flatten() {
        let (Some(u), Some(n)) = (r.uid.as_deref(), r.name.as_deref()) else { continue };
        if cached.contains(u) {
            continue;
        }
        match jobs_api.get_opt(n).await? {
            Some(j) if j.metadata.uid.as_deref() == Some(u) => {}
            _ => {
                missing.insert(u.to_string());
            }
        }
    }

    let now = jiff::Timestamp::now();
    let plan = plan::decide(&cj, &jobs, &missing, now);
    let mut status = plan.status.clone();
    for (warning, reason, msg) in &plan.events {
        if *warning {
            st.events.warning(reference(&cj), reason, "Sync", msg.clone());
        } else {
            st.events.normal(reference(&cj), reason, "Sync", msg.clone());
        }
    }
    let mut failure: Option<Error> = None;
    for j in &plan.delete {
        let jname = j.metadata.name.clone().unwrap_or_default();
        if let Err(e) = delete_job(&jobs_api, &jname, j.metadata.uid.as_deref()).await {
            st.events.warning(reference(&cj), "FailedDelete", "Delete", format!("Deleted job: {e}"));
            failure.get_or_insert(e);
        }
    }
    let mut requeue = plan.requeue;
    if let Some((job, scheduled)) = plan.create.clone() {
        let mut replaced = true;
        for r in &plan.replace {
            let Some(jname) = r.name.as_deref() else { continue };
            match delete_job(&jobs_api, jname, r.uid.as_deref()).await {
                Ok(()) => {
                    if let Some(a) = status.active.as_mut() {
                        a.retain(|x| x.uid != r.uid);
                    }
                    st.events.normal(reference(&cj), "SuccessfulDelete", "Delete", format!("Deleted job {jname}"));
                }
                Err(e) => {
                    st.events.warning(reference(&cj), "FailedDelete", "Delete", format!("Deleted job: {e}"));
                    failure.get_or_insert(e);
                    replaced = false;
                }
            }
        }
        if replaced {
            match start(&st, &cj, &jobs_api, &job).await {
                Ok(Some(running)) => {
                    let (s, r) = plan::started(&cj, status, &running, scheduled, now);
                    status = s;
                    requeue = r;
                }
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    }
    let shown = cj.status.clone().unwrap_or_default();
    if !plan::same_status(&status, &shown) {
        write_status(&st, &cj, &key, status).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Create the Job (`None`: there is nothing to record, e.g. another actor's Job holds
/// the name or the namespace is going away).
async fn start(st: &State, cj: &CronJob, api: &Api<Job>, job: &Job) -> Result<Option<Job>, Error> {
    let jname = job.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), job).await {
        Ok(created) => {
            st.events.normal(reference(cj), "SuccessfulCreate", "Create", format!("Created job {jname}"));
            Ok(Some(created))
        }
        Err(e) if is_namespace_terminating(&e) => Ok(None),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            // Created before but not recorded (a lost status write): record it if ours.
            let existing = api.get(&jname).await?;
            let ours =
                pods::controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
            let active = cj.status.as_ref().and_then(|s| s.active.as_ref());
            let listed = active.into_iter().flatten().any(|r| r.uid == existing.metadata.uid);
            Ok((ours && !listed).then_some(existing))
        }
        Err(e) => {
            st.events.warning(reference(cj), "FailedCreate", "Create", format!("Error creating job: {e}"));
            Err(e.into())
        }
    }
}

/// Delete a Job (and, through the garbage collector, its pods); `uid` pins it to the
/// Job the decision saw.
async fn delete_job(api: &Api<Job>, name: &str, uid: Option<&str>) -> Result<(), Error> {
    let mut dp = DeleteParams::background();
    if let Some(uid) = uid {
        dp = dp.preconditions(Preconditions { uid: Some(uid.to_string()), resource_version: None });
    }
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Write the status (a PUT pinned to the resourceVersion the sync read: a stale read
/// conflicts and is retried).
async fn write_status(st: &State, cj: &CronJob, key: &str, status: CronJobStatus) -> Result<(), Error> {
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut obj = cj.clone();
    obj.status = Some(status);
    match api.replace_status(&name, &PostParams::default(), &obj).await {
        Ok(written) => {
            let old = cj.meta().resource_version.clone();
            if old.is_some() && written.metadata.resource_version != old {
                lock(&st.superseded).insert(key.to_string(), (old.unwrap_or_default(), Instant::now()));
            }
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            if is_conflict(&e) {
                tracing::debug!(cronjob = key, "status write conflicted; retrying");
            }
            Err(e.into())
        }
    }
}
