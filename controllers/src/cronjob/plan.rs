//! The CronJob decision (upstream `syncCronJob`, `cleanupFinishedJobs` and
//! `utils.go`), as pure functions of the CronJob, its Jobs and the time: which Jobs to
//! delete for history limits or a `Replace`, whether to start a Job and for which
//! scheduled time, the status, and when to look again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::schedule::{load_tz, Schedule};
use crate::pods;

/// `batch.kubernetes.io/cronjob-scheduled-timestamp`.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Padding added to every requeue for clock skew (upstream `nextScheduleDelta`).
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed start times than this is reported as `TooManyMissedTimes`.
pub const MANY_MISSED: i64 = 100;

/// How many start times were missed since the last one (upstream `missedSchedulesType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// `mostRecentScheduleTime`: from the last schedule time (else the creation time, and
/// with a starting deadline no earlier than `now - deadline`): that earliest time, the
/// most recent start time at or before `now` (if any) and how many were missed.
/// An error for a schedule that never fires or fires less than a second apart.
pub fn most_recent_schedule_time(
    created: Timestamp,
    last_schedule: Option<Timestamp>,
    starting_deadline: Option<i64>,
    now: Timestamp,
    sched: &Schedule,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = last_schedule.unwrap_or(created);
    if let Some(d) = starting_deadline {
        let deadline = Timestamp::from_second(now.as_second().saturating_sub(d)).unwrap_or(Timestamp::MIN);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let never = || "the schedule never fires (or fires less than a second apart)".to_string();
    let t1 = sched.next(earliest).ok_or_else(never)?;
    let t2 = sched.next(t1).ok_or_else(never)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.as_second() - t1.as_second();
    if between < 1 {
        return Err(never());
    }
    // Roughly how many intervals fit between t1 and now; start the exact search one
    // interval before the last of them (upstream's approximation, exact for regular
    // schedules and @every, and a short walk for irregular ones).
    let elapsed = now.as_second() - t1.as_second();
    let missed = elapsed / between + 1;
    let potential = Timestamp::from_second(t1.as_second() + (missed - 2) * between).unwrap_or(t1);
    let mut most_recent = None;
    let mut t = sched.next(potential);
    let mut guard = 0;
    while let Some(x) = t {
        if x > now || guard > 10_000 {
            break;
        }
        most_recent = Some(x);
        t = sched.next(x);
        guard += 1;
    }
    let kind = if missed > MANY_MISSED { Missed::Many } else { Missed::Few };
    Ok((earliest, most_recent, kind))
}

/// `nextScheduleTimeDuration`: how long until the next start time after the most recent
/// one (or after the last schedule time, or after now), plus [`NEXT_SCHEDULE_DELTA`].
pub fn next_schedule_in(
    created: Timestamp,
    last_schedule: Option<Timestamp>,
    now: Timestamp,
    sched: &Schedule,
) -> Option<Duration> {
    let base = match most_recent_schedule_time(created, last_schedule, None, now, sched) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = sched.next(base)?;
    let ms = next.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(ms.max(0) as u64) + NEXT_SCHEDULE_DELTA)
}

/// The Job for one scheduled time is named `<cronjob>-<minutes since the epoch>`, so a
/// second attempt for the same time collides instead of running twice.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, as Go's `time.RFC3339` writes it (`Z` for a zero offset).
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// `getJobFromTemplate2`: the Job for `scheduled`, with the template's labels,
/// annotations and spec, the scheduled-timestamp annotation and the CronJob as controller.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let tmeta = spec.job_template.metadata.clone().unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.to_string(), rfc3339_in(scheduled, tz));
    let owner = pods::controller_ref(
        "batch/v1",
        "CronJob",
        &name(&cj.metadata),
        cj.metadata.uid.as_deref().unwrap_or_default(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name(&cj.metadata), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: spec.job_template.spec,
        status: None,
    }
}

/// The reference `status.active` keeps for a Job.
pub fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// `Complete` or `Failed` (condition True), if finished.
pub fn finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds.iter().filter(|c| c.status == "True").find_map(|c| match c.type_.as_str() {
        "Complete" => Some("Complete"),
        "Failed" => Some("Failed"),
        _ => None,
    })
}

fn start_time(job: &Job) -> Option<Timestamp> {
    job.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// `cleanupFinishedJobs`: the finished Jobs beyond the history limits, oldest first
/// (by start time, unstarted last, then by name); Jobs already being deleted do not count.
pub fn history_to_delete(jobs: &[Arc<Job>], successful_limit: Option<i32>, failed_limit: Option<i32>) -> Vec<Arc<Job>> {
    let mut out = Vec::new();
    for (state, limit) in [("Complete", successful_limit), ("Failed", failed_limit)] {
        let Some(limit) = limit else { continue };
        let mut these: Vec<&Arc<Job>> =
            jobs.iter().filter(|j| finished(j) == Some(state) && j.metadata.deletion_timestamp.is_none()).collect();
        let excess = these.len().saturating_sub(limit.max(0) as usize);
        if excess == 0 {
            continue;
        }
        these.sort_by(|a, b| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => name(&a.metadata).cmp(&name(&b.metadata)),
        });
        out.extend(these.into_iter().take(excess).cloned());
    }
    out
}

/// An event for the CronJob: (warning?, reason, message).
pub type Event = (bool, &'static str, String);

/// What one sync does.
#[derive(Debug, Default)]
pub struct Plan {
    /// The status before any Job this sync starts (finished and missing Jobs dropped from
    /// `active`, `lastSuccessfulTime` advanced, history-deleted Jobs dropped).
    pub status: CronJobStatus,
    /// Finished Jobs to delete (history limits).
    pub delete: Vec<Arc<Job>>,
    /// Active Jobs to delete before starting the next one (`Replace`).
    pub replace: Vec<ObjectReference>,
    /// The Job to start and its scheduled time.
    pub create: Option<(Job, Timestamp)>,
    pub events: Vec<Event>,
    /// When to look again (`None`: only on a change).
    pub requeue: Option<Duration>,
}

fn in_active(status: &CronJobStatus, uid: Option<&str>) -> bool {
    uid.is_some() && status.active.iter().flatten().any(|r| r.uid.as_deref() == uid)
}

fn drop_active(status: &mut CronJobStatus, uid: Option<&str>) {
    if let Some(active) = status.active.as_mut() {
        active.retain(|r| r.uid.as_deref() != uid);
    }
}

/// `sync` + `syncCronJob`. `jobs` are the CronJob's Jobs (controller reference to it);
/// `missing` the uids of `status.active` entries the API server confirmed gone.
pub fn decide(cj: &CronJob, jobs: &[Arc<Job>], missing: &HashSet<String>, now: Timestamp) -> Plan {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut plan = Plan { status: cj.status.clone().unwrap_or_default(), ..Default::default() };
    let st = &mut plan.status;

    plan.delete = history_to_delete(jobs, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit);
    for j in &plan.delete {
        drop_active(st, j.metadata.uid.as_deref());
        plan.events.push((false, "SuccessfulDelete", format!("Deleted job {}", name(&j.metadata))));
    }

    let mut children = HashSet::new();
    for j in jobs {
        let uid = j.metadata.uid.as_deref();
        if let Some(u) = uid {
            children.insert(u.to_string());
        }
        let found = in_active(st, uid);
        let done = finished(j);
        if !found && done.is_none() && j.metadata.deletion_timestamp.is_none() {
            plan.events.push((
                true,
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {}", name(&j.metadata)),
            ));
        } else if found && done.is_some() {
            drop_active(st, uid);
            plan.events.push((
                false,
                "SawCompletedJob",
                format!("Saw completed job: {}, status: {}", name(&j.metadata), done.unwrap_or_default()),
            ));
        }
        if done == Some("Complete") {
            if let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.as_ref()) {
                if st.last_successful_time.as_ref().is_none_or(|l| t.0 > l.0) {
                    st.last_successful_time = Some(t.clone());
                }
            }
        }
    }
    let gone: Vec<ObjectReference> = st
        .active
        .iter()
        .flatten()
        .filter(|r| r.uid.as_ref().is_some_and(|u| !children.contains(u) && missing.contains(u)))
        .cloned()
        .collect();
    for r in gone {
        drop_active(st, r.uid.as_deref());
        plan.events.push((false, "MissingJob", format!("Active job went missing: {}", r.name.unwrap_or_default())));
    }

    if cj.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let tz = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(name) => match load_tz(name) {
            Ok(tz) => tz,
            Err(e) => {
                plan.events.push((true, "UnknownTimeZone", format!("invalid timeZone: {name:?}: {e}")));
                return plan;
            }
        },
    };
    if spec.suspend == Some(true) {
        return plan;
    }
    if spec.schedule.contains("TZ") {
        plan.events.push((
            true,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        ));
    }
    let sched = match Schedule::parse(&spec.schedule, &tz) {
        Ok(s) => s,
        Err(e) => {
            plan.events.push((true, "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule)));
            return plan;
        }
    };
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let last = plan.status.last_schedule_time.as_ref().map(|t| t.0);
    let requeue = next_schedule_in(created, last, now, &sched);
    let scheduled = match most_recent_schedule_time(created, last, spec.starting_deadline_seconds, now, &sched) {
        Err(e) => {
            plan.events.push((true, "InvalidSchedule", format!("invalid schedule: {} : {e}", spec.schedule)));
            return plan;
        }
        Ok((_, None, _)) => {
            plan.requeue = requeue;
            return plan;
        }
        Ok((_, Some(t), missed)) => {
            if missed == Missed::Many {
                plan.events.push((
                    true,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                        .into(),
                ));
            }
            t
        }
    };
    plan.requeue = requeue;
    if let Some(d) = spec.starting_deadline_seconds {
        if scheduled.as_second().saturating_add(d) < now.as_second() {
            plan.events.push((
                true,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", rfc3339_in(scheduled, &TimeZone::UTC)),
            ));
            return plan;
        }
    }
    let jname = job_name(&name(&cj.metadata), scheduled);
    let processed = plan.status.active.iter().flatten().any(|r| r.name.as_deref() == Some(jname.as_str()))
        || last == Some(scheduled);
    if processed {
        return plan;
    }
    let active = plan.status.active.as_ref().is_some_and(|a| !a.is_empty());
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if active => {
            plan.events.push((
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return plan;
        }
        Some("Replace") => plan.replace = plan.status.active.clone().unwrap_or_default(),
        _ => {}
    }
    let spec_tz = spec.time_zone.as_deref().map(load_tz).and_then(Result::ok).unwrap_or(TimeZone::UTC);
    plan.create = Some((job_from_template(cj, scheduled, &spec_tz), scheduled));
    plan
}

/// The status once `job` (created for `scheduled`, or found already there) is running,
/// and the requeue for the next start time.
pub fn started(
    cj: &CronJob,
    mut status: CronJobStatus,
    job: &Job,
    scheduled: Timestamp,
    now: Timestamp,
) -> (CronJobStatus, Option<Duration>) {
    let uid = job.metadata.uid.as_deref();
    if !in_active(&status, uid) {
        status.active.get_or_insert_with(Vec::new).push(job_ref(job));
    }
    status.last_schedule_time = Some(Time(scheduled));
    let spec = cj.spec.clone().unwrap_or_default();
    let tz = spec.time_zone.as_deref().map(load_tz).and_then(Result::ok).unwrap_or(TimeZone::UTC);
    let requeue = Schedule::parse(&spec.schedule, &tz).ok().and_then(|s| {
        let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        next_schedule_in(created, Some(scheduled), now, &s)
    });
    (status, requeue)
}

/// The status fields a write compares (so an unchanged status is not written).
pub fn same_status(a: &CronJobStatus, b: &CronJobStatus) -> bool {
    let uids =
        |s: &CronJobStatus| -> Vec<Option<String>> { s.active.iter().flatten().map(|r| r.uid.clone()).collect() };
    uids(a) == uids(b)
        && a.last_schedule_time == b.last_schedule_time
        && a.last_successful_time == b.last_successful_time
}

#[cfg(test)]
mod tests;
