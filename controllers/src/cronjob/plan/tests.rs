use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobSpec, JobStatus, JobTemplateSpec};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cronjob(schedule: &str, f: impl FnOnce(&mut CronJobSpec, &mut CronJobStatus)) -> CronJob {
    let mut spec = CronJobSpec {
        schedule: schedule.into(),
        concurrency_policy: Some("Allow".into()),
        successful_jobs_history_limit: Some(3),
        failed_jobs_history_limit: Some(1),
        suspend: Some(false),
        job_template: JobTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "cron".into())])),
                annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                ..Default::default()
            }),
            spec: Some(JobSpec { backoff_limit: Some(2), ..Default::default() }),
        },
        ..Default::default()
    };
    let mut status = CronJobStatus::default();
    f(&mut spec, &mut status);
    CronJob {
        metadata: ObjectMeta {
            name: Some("cj".into()),
            namespace: Some("ns".into()),
            uid: Some("cj-uid".into()),
            creation_timestamp: Some(Time(ts("2024-01-01T10:00:30Z"))),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(status),
    }
}

fn job(name: &str, uid: &str, state: Option<&str>, start: i64, done_at: Option<&str>) -> Arc<Job> {
    let conditions = state.map(|s| vec![JobCondition { type_: s.into(), status: "True".into(), ..Default::default() }]);
    Arc::new(Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            owner_references: Some(vec![pods::controller_ref("batch/v1", "CronJob", "cj", "cj-uid")]),
            ..Default::default()
        },
        spec: None,
        status: Some(JobStatus {
            conditions,
            start_time: Some(Time(Timestamp::from_second(start).unwrap())),
            completion_time: done_at.map(|t| Time(ts(t))),
            ..Default::default()
        }),
    })
}

fn active_ref(name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        kind: Some("Job".into()),
        name: Some(name.into()),
        namespace: Some("ns".into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

fn every_minute() -> Schedule {
    Schedule::parse("* * * * *", &TimeZone::UTC).unwrap()
}

#[test]
fn most_recent_time_and_missed_counts() {
    let s = every_minute();
    let created = ts("2024-01-01T10:00:30Z");
    // Before the first start time: nothing.
    assert_eq!(most_recent_schedule_time(created, None, None, ts("2024-01-01T10:00:59Z"), &s).unwrap().1, None);
    // Exactly one due.
    let (_, t, m) = most_recent_schedule_time(created, None, None, ts("2024-01-01T10:01:10Z"), &s).unwrap();
    assert_eq!((t, m), (Some(ts("2024-01-01T10:01:00Z")), Missed::None));
    // Several missed: the most recent one.
    let (_, t, m) = most_recent_schedule_time(created, None, None, ts("2024-01-01T10:05:10Z"), &s).unwrap();
    assert_eq!((t, m), (Some(ts("2024-01-01T10:05:00Z")), Missed::Few));
    // Hundreds missed.
    let (_, t, m) = most_recent_schedule_time(created, None, None, ts("2024-01-02T10:05:10Z"), &s).unwrap();
    assert_eq!((t, m), (Some(ts("2024-01-02T10:05:00Z")), Missed::Many));
    // The last schedule time moves the start.
    let last = Some(ts("2024-01-01T10:05:00Z"));
    assert_eq!(most_recent_schedule_time(created, last, None, ts("2024-01-01T10:05:40Z"), &s).unwrap().1, None);
    // A starting deadline bounds how far back it looks.
    let (earliest, t, m) = most_recent_schedule_time(created, None, Some(30), ts("2024-01-02T10:05:10Z"), &s).unwrap();
    assert_eq!(earliest, ts("2024-01-02T10:04:40Z"));
    assert_eq!((t, m), (Some(ts("2024-01-02T10:05:00Z")), Missed::None));
    // Irregular schedules are exact too.
    let s = Schedule::parse("30 6-16/4 * * 1-5", &TimeZone::UTC).unwrap();
    let (_, t, _) = most_recent_schedule_time(created, None, None, ts("2024-01-10T12:00:00Z"), &s).unwrap();
    assert_eq!(t, Some(ts("2024-01-10T10:30:00Z")));
    // Never firing is an error.
    let s = Schedule::parse("0 0 30 2 *", &TimeZone::UTC).unwrap();
    assert!(most_recent_schedule_time(created, None, None, ts("2024-01-10T12:00:00Z"), &s).is_err());
}

#[test]
fn requeue_waits_for_the_next_start() {
    let s = every_minute();
    let created = ts("2024-01-01T10:00:30Z");
    let d = next_schedule_in(created, Some(ts("2024-01-01T10:01:00Z")), ts("2024-01-01T10:01:00.5Z"), &s).unwrap();
    assert_eq!(d, Duration::from_millis(59_500) + NEXT_SCHEDULE_DELTA);
    // Missed ones: from now.
    let d = next_schedule_in(created, None, ts("2024-01-01T10:07:20Z"), &s).unwrap();
    assert_eq!(d, Duration::from_secs(40) + NEXT_SCHEDULE_DELTA);
}

#[test]
fn job_names_and_templates() {
    assert_eq!(
        job_name("cj", ts("2024-01-01T10:01:00Z")),
        format!("cj-{}", ts("2024-01-01T10:01:00Z").as_second() / 60)
    );
    let cj = cronjob("* * * * *", |_, _| {});
    let j = job_from_template(&cj, ts("2024-01-01T10:01:00Z"), &TimeZone::UTC);
    let a = j.metadata.annotations.as_ref().unwrap();
    assert_eq!(a[SCHEDULED_TIMESTAMP], "2024-01-01T10:01:00Z");
    assert_eq!(a["note"], "x");
    assert_eq!(j.metadata.labels.as_ref().unwrap()["app"], "cron");
    let owner = &j.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("CronJob", "cj-uid", Some(true)));
    assert_eq!(j.spec.unwrap().backoff_limit, Some(2));
    let tz = load_tz("Etc/GMT-2").unwrap();
    assert_eq!(rfc3339_in(ts("2024-01-01T10:01:00Z"), &tz), "2024-01-01T12:01:00+02:00");
}

#[test]
fn starts_the_most_recent_due_job() {
    let cj = cronjob("* * * * *", |_, _| {});
    let now = ts("2024-01-01T10:03:10Z");
    let plan = decide(&cj, &[], &HashSet::new(), now);
    let (j, at) = plan.create.expect("a job");
    assert_eq!(at, ts("2024-01-01T10:03:00Z"));
    assert_eq!(j.metadata.name, Some(job_name("cj", at)));
    assert_eq!(plan.requeue, Some(Duration::from_secs(50) + NEXT_SCHEDULE_DELTA));
    // Once running, the status shows it.
    let created = Job { metadata: ObjectMeta { uid: Some("j1".into()), ..j.metadata.clone() }, ..j };
    let (st, requeue) = started(&cj, plan.status, &created, at, now);
    assert_eq!(st.active.as_ref().unwrap().len(), 1);
    assert_eq!(st.active.as_ref().unwrap()[0].uid.as_deref(), Some("j1"));
    assert_eq!(st.last_schedule_time, Some(Time(at)));
    assert_eq!(requeue, Some(Duration::from_secs(50) + NEXT_SCHEDULE_DELTA));
}

#[test]
fn nothing_before_the_first_start_or_twice_for_one_time() {
    let cj = cronjob("*/5 * * * *", |_, _| {});
    let plan = decide(&cj, &[], &HashSet::new(), ts("2024-01-01T10:04:00Z"));
    assert!(plan.create.is_none());
    assert_eq!(plan.requeue, Some(Duration::from_secs(60) + NEXT_SCHEDULE_DELTA));
    // Already scheduled at 10:05.
    let cj = cronjob("*/5 * * * *", |_, st| st.last_schedule_time = Some(Time(ts("2024-01-01T10:05:00Z"))));
    let plan = decide(&cj, &[], &HashSet::new(), ts("2024-01-01T10:06:00Z"));
    assert!(plan.create.is_none());
    // In the active list by name.
    let name = job_name("cj", ts("2024-01-01T10:05:00Z"));
    let cj = cronjob("*/5 * * * *", |_, st| st.active = Some(vec![active_ref(&name, "u")]));
    let j = job(&name, "u", None, 0, None);
    let plan = decide(&cj, &[j], &HashSet::new(), ts("2024-01-01T10:06:00Z"));
    assert!(plan.create.is_none());
}

#[test]
fn suspend_deadline_and_bad_specs() {
    let now = ts("2024-01-01T10:03:10Z");
    let cj = cronjob("* * * * *", |s, _| s.suspend = Some(true));
    let plan = decide(&cj, &[], &HashSet::new(), now);
    assert!(plan.create.is_none() && plan.requeue.is_none());

    // Due at 10:03:00 but only 5 seconds of slack: missed (and not looked for again).
    let cj = cronjob("* * * * *", |s, _| s.starting_deadline_seconds = Some(5));
    let plan = decide(&cj, &[], &HashSet::new(), now);
    assert!(plan.create.is_none());
    assert_eq!(plan.requeue, Some(Duration::from_secs(50) + NEXT_SCHEDULE_DELTA));
    // Within the deadline: started.
    let cj = cronjob("* * * * *", |s, _| s.starting_deadline_seconds = Some(30));
    assert!(decide(&cj, &[], &HashSet::new(), now).create.is_some());

    let cj = cronjob("61 * * * *", |_, _| {});
    let plan = decide(&cj, &[], &HashSet::new(), now);
    assert!(plan.create.is_none() && plan.requeue.is_none());
    assert!(plan.events.iter().any(|e| e.0 && e.1 == "UnparseableSchedule"));

    let cj = cronjob("* * * * *", |s, _| s.time_zone = Some("Mars/Olympus".into()));
    let plan = decide(&cj, &[], &HashSet::new(), now);
    assert!(plan.create.is_none() && plan.events.iter().any(|e| e.1 == "UnknownTimeZone"));

    let cj = cronjob("0 0 30 2 *", |_, _| {});
    let plan = decide(&cj, &[], &HashSet::new(), now);
    assert!(plan.create.is_none() && plan.events.iter().any(|e| e.1 == "InvalidSchedule"));
}

#[test]
fn time_zone_shifts_start_times_and_the_annotation() {
    // 12:00 at UTC+2 is 10:00Z.
    let cj = cronjob("0 12 * * *", |s, _| s.time_zone = Some("Etc/GMT-2".into()));
    let plan = decide(&cj, &[], &HashSet::new(), ts("2024-01-02T10:00:05Z"));
    let (j, at) = plan.create.unwrap();
    assert_eq!(at, ts("2024-01-02T10:00:00Z"));
    assert_eq!(j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2024-01-02T12:00:00+02:00");
}

#[test]
fn concurrency_policies() {
    let now = ts("2024-01-01T10:03:10Z");
    let running = job("cj-old", "old", None, 10, None);
    let with_active = |policy: &str| {
        let policy = policy.to_string();
        cronjob("* * * * *", move |s, st| {
            s.concurrency_policy = Some(policy);
            st.active = Some(vec![active_ref("cj-old", "old")]);
            st.last_schedule_time = Some(Time(ts("2024-01-01T10:02:00Z")));
        })
    };
    let plan = decide(&with_active("Forbid"), std::slice::from_ref(&running), &HashSet::new(), now);
    assert!(plan.create.is_none());
    assert!(plan.events.iter().any(|e| e.1 == "JobAlreadyActive"));
    assert!(plan.requeue.is_some());

    let plan = decide(&with_active("Replace"), std::slice::from_ref(&running), &HashSet::new(), now);
    assert!(plan.create.is_some());
    assert_eq!(plan.replace.len(), 1);
    assert_eq!(plan.replace[0].uid.as_deref(), Some("old"));

    let plan = decide(&with_active("Allow"), std::slice::from_ref(&running), &HashSet::new(), now);
    assert!(plan.create.is_some() && plan.replace.is_empty());

    // Forbid with the previous run finished: it starts.
    let done = job("cj-old", "old", Some("Complete"), 10, Some("2024-01-01T10:02:30Z"));
    let plan = decide(&with_active("Forbid"), &[done], &HashSet::new(), now);
    assert!(plan.create.is_some());
    assert!(plan.status.active.unwrap().is_empty());
    assert_eq!(plan.status.last_successful_time, Some(Time(ts("2024-01-01T10:02:30Z"))));
}

#[test]
fn finished_missing_and_unexpected_jobs() {
    let now = ts("2024-01-01T10:02:30Z");
    let cj = cronjob("* * * * *", |_, st| {
        st.active = Some(vec![active_ref("a", "a"), active_ref("b", "b"), active_ref("gone", "gone")]);
        st.last_schedule_time = Some(Time(ts("2024-01-01T10:02:00Z")));
    });
    let jobs = [
        job("a", "a", Some("Failed"), 1, None),
        job("b", "b", None, 2, None),
        job("stray", "stray", None, 3, None),
        job("c", "c", Some("Complete"), 4, Some("2024-01-01T10:01:40Z")),
    ];
    let plan = decide(&cj, &jobs, &HashSet::from(["gone".to_string()]), now);
    let uids: Vec<_> = plan.status.active.iter().flatten().map(|r| r.uid.clone().unwrap()).collect();
    assert_eq!(uids, ["b"]);
    let reasons: Vec<_> = plan.events.iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"SawCompletedJob"));
    assert!(reasons.contains(&"MissingJob"));
    assert!(reasons.contains(&"UnexpectedJob"));
    assert_eq!(plan.status.last_successful_time, Some(Time(ts("2024-01-01T10:01:40Z"))));
    // An active entry not in the cache but not confirmed gone stays.
    let plan = decide(&cj, &jobs, &HashSet::new(), now);
    assert_eq!(plan.status.active.iter().flatten().count(), 2);
}

#[test]
fn history_limits_delete_the_oldest() {
    let jobs = [
        job("s1", "s1", Some("Complete"), 10, None),
        job("s2", "s2", Some("Complete"), 30, None),
        job("s3", "s3", Some("Complete"), 20, None),
        job("s4", "s4", Some("Complete"), 40, None),
        job("f1", "f1", Some("Failed"), 5, None),
        job("f2", "f2", Some("Failed"), 50, None),
        job("r", "r", None, 1, None),
    ];
    let del: Vec<_> =
        history_to_delete(&jobs, Some(2), Some(1)).iter().map(|j| j.metadata.name.clone().unwrap()).collect();
    assert_eq!(del, ["s1", "s3", "f1"]);
    assert!(history_to_delete(&jobs, None, None).is_empty());
    let del: Vec<_> =
        history_to_delete(&jobs, Some(0), None).iter().map(|j| j.metadata.name.clone().unwrap()).collect();
    assert_eq!(del, ["s1", "s3", "s2", "s4"]);
    // Part of a sync.
    let cj = cronjob("* * * * *", |s, _| {
        s.successful_jobs_history_limit = Some(1);
        s.failed_jobs_history_limit = Some(0);
    });
    let plan = decide(&cj, &jobs, &HashSet::new(), ts("2024-01-01T10:00:40Z"));
    assert_eq!(plan.delete.len(), 5);
}

#[test]
fn deleting_cronjobs_only_update_status() {
    let mut cj = cronjob("* * * * *", |_, _| {});
    cj.metadata.deletion_timestamp = Some(Time(ts("2024-01-01T10:03:00Z")));
    let plan = decide(&cj, &[], &HashSet::new(), ts("2024-01-01T10:03:10Z"));
    assert!(plan.create.is_none() && plan.requeue.is_none());
}

#[test]
fn status_comparison_ignores_ref_details() {
    let a = CronJobStatus { active: Some(vec![active_ref("a", "1")]), ..Default::default() };
    let mut b = a.clone();
    b.active.as_mut().unwrap()[0].resource_version = Some("9".into());
    assert!(same_status(&a, &b));
    b.last_schedule_time = Some(Time(Timestamp::UNIX_EPOCH));
    assert!(!same_status(&a, &b));
}
