//! The TTL-after-finished controller (upstream `pkg/controller/ttlafterfinished`): a Job
//! with `spec.ttlSecondsAfterFinished` is deleted that many seconds after it finished
//! (its `Complete`/`Failed` condition's transition time), its pods going with it
//! (propagation Background).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::watcher;

use super::plan;
use crate::util_api::is_not_found;
use crate::{Context, Error};

/// When the Job finished (`None`: not finished).
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .find_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// When the Job is due for deletion (`None`: no TTL, not finished, or being deleted).
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if !plan::is_finished(job) {
        return None;
    }
    let fin = finish_time(job)?;
    Timestamp::from_second(fin.as_second().saturating_add(i64::from(ttl))).ok()
}

/// How long until `job` expires at `now` (`Some(ZERO)`: now).
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let at = expires_at(job)?;
    Some(Duration::from_millis((at.as_millisecond() - now.as_millisecond()).max(0) as u64))
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed("ttl-after-finished", &ctx.config.write_traces, reconcile),
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "ttl-after-finished sync");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_obj: Arc<Job>, err: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(crate::util_runtime::retry_delay(err))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(left) = time_left(&job, Timestamp::now()) else { return Ok(Action::await_change()) };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    // Check a fresh copy: the TTL or the finish may have changed since the cache saw it.
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    if fresh.metadata.uid != job.metadata.uid {
        return Ok(Action::await_change());
    }
    match time_left(&fresh, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(d) if !d.is_zero() => return Ok(Action::requeue(d)),
        Some(_) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: fresh.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    tracing::debug!(job = %format!("{ns}/{name}"), "deleting finished job past its TTL");
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn job(ttl: Option<i32>, cond: Option<(&str, i64)>) -> Job {
        Job {
            spec: Some(JobSpec { ttl_seconds_after_finished: ttl, ..Default::default() }),
            status: Some(JobStatus {
                conditions: cond.map(|(t, at)| {
                    vec![JobCondition {
                        type_: t.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_counts_from_the_finish() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(time_left(&job(Some(100), Some(("Complete", 950))), now), Some(Duration::from_secs(50)));
        assert_eq!(time_left(&job(Some(10), Some(("Failed", 950))), now), Some(Duration::ZERO));
        assert_eq!(time_left(&job(Some(0), Some(("Complete", 1_000))), now), Some(Duration::ZERO));
        assert_eq!(time_left(&job(None, Some(("Complete", 950))), now), None);
        assert_eq!(time_left(&job(Some(10), None), now), None);
        assert_eq!(time_left(&job(Some(10), Some(("SuccessCriteriaMet", 950))), now), None);
        let mut deleting = job(Some(10), Some(("Complete", 950)));
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(time_left(&deleting, now), None);
    }
}
