use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule, SuccessPolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

const NOW: i64 = 10_000;

fn job(f: impl FnOnce(&mut JobSpec, &mut JobStatus)) -> Job {
    let mut spec = JobSpec {
        backoff_limit: Some(6),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "batch".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let mut status = JobStatus::default();
    f(&mut spec, &mut status);
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("ns".into()),
            uid: Some("job-uid".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(status),
    }
}

#[derive(Clone, Copy)]
struct P {
    name: &'static str,
    phase: &'static str,
    finalizer: bool,
    ready: bool,
    deleting: bool,
    index: Option<i32>,
    exit: i32,
    finished_at: i64,
    restarts: i32,
}

impl Default for P {
    fn default() -> Self {
        P {
            name: "p",
            phase: "Running",
            finalizer: true,
            ready: true,
            deleting: false,
            index: None,
            exit: 0,
            finished_at: NOW - 1,
            restarts: 0,
        }
    }
}

fn pod(p: P) -> Arc<Pod> {
    let terminal = matches!(p.phase, "Succeeded" | "Failed");
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(p.name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{}", p.name)),
            finalizers: p.finalizer.then(|| vec![TRACKING_FINALIZER.to_string()]),
            owner_references: Some(vec![pods::controller_ref("batch/v1", "Job", "pi", "job-uid")]),
            annotations: p.index.map(|i| BTreeMap::from([(COMPLETION_INDEX.to_string(), i.to_string())])),
            deletion_timestamp: p.deleting.then(|| Time(t(NOW - 5))),
            creation_timestamp: Some(Time(t(NOW - 100))),
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: Some("n1".into()), ..Default::default() }),
        status: Some(PodStatus {
            phase: Some(p.phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if p.ready && !terminal { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(t(NOW - 50))),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                restart_count: p.restarts,
                state: Some(ContainerState {
                    terminated: terminal.then(|| ContainerStateTerminated {
                        exit_code: p.exit,
                        finished_at: Some(Time(t(p.finished_at))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn sync_of(j: &Job, pods: Vec<Arc<Pod>>) -> Sync {
    Sync::new(j, pods, t(NOW), true, HashSet::new(), Record::default()).unwrap()
}

fn has_cond(s: &JobStatus, type_: &str) -> Option<JobCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True").cloned()
}

/// Run the five steps with every write succeeding; what step 2 asked for.
fn full_sync(s: &mut Sync) -> PodWork {
    let work = s.pod_work();
    let done = match &work {
        PodWork::Terminate(v) | PodWork::Delete(v) => Done {
            deleted: v.len() as i32,
            deleted_ready: v.iter().filter(|p| pods::is_ready(p)).count() as i32,
            created: 0,
        },
        PodWork::Create(v) => Done { created: v.len() as i32, ..Default::default() },
        _ => Done::default(),
    };
    s.pods_done(&work, done);
    let track = s.track();
    let removed: HashSet<String> = track.remove.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    s.finalizers_removed(&removed);
    work
}

#[test]
fn spec_defaults_and_skips() {
    let s = spec_of(&job(|_, _| {})).unwrap();
    assert_eq!((s.parallelism, s.completions, s.backoff_limit, s.indexed), (1, Some(1), 6, false));
    let s = spec_of(&job(|sp, _| sp.parallelism = Some(3))).unwrap();
    assert_eq!((s.parallelism, s.completions), (3, None));
    let s = spec_of(&job(|sp, _| {
        sp.backoff_limit = None;
        sp.completion_mode = Some("Indexed".into());
        sp.completions = Some(4);
        sp.pod_replacement_policy = Some("Failed".into());
    }))
    .unwrap();
    assert!(s.indexed && s.only_replace_failed && s.backoff_limit == 6);
    assert_eq!(
        spec_of(&job(|sp, _| sp.managed_by = Some("example.com/other".into()))).unwrap_err(),
        Skip::ManagedElsewhere("example.com/other".into())
    );
    assert!(spec_of(&job(|sp, _| sp.managed_by = Some(MANAGED_BY.into()))).is_ok());
    assert!(matches!(
        spec_of(&job(|sp, _| sp.completion_mode = Some("Weird".into()))),
        Err(Skip::UnknownCompletionMode(_))
    ));
    let done = job(|_, st| st.conditions = Some(vec![condition("Complete", "", "", t(1))]));
    assert_eq!(spec_of(&done).unwrap_err(), Skip::Finished);
}

#[test]
fn new_job_starts_up_to_parallelism_pods() {
    let j = job(|sp, _| {
        sp.completions = Some(5);
        sp.parallelism = Some(2);
    });
    let mut s = sync_of(&j, vec![]);
    assert!(matches!(full_sync(&mut s), PodWork::Create(v) if v == vec![None, None]));
    assert_eq!(s.status.start_time, Some(Time(t(NOW))));
    assert_eq!(s.status.active, Some(2));
    assert_eq!(s.status.ready, Some(0));
    assert!(s.status.conditions.is_none());

    // Remaining completions bound the pods.
    let j = job(|sp, st| {
        sp.completions = Some(5);
        sp.parallelism = Some(4);
        st.succeeded = Some(3);
    });
    let mut s = sync_of(&j, vec![]);
    assert!(matches!(s.pod_work(), PodWork::Create(v) if v.len() == 2));
}

#[test]
fn unseen_creations_hold_back_new_ones() {
    let j = job(|_, _| {});
    let mut s = Sync::new(&j, vec![], t(NOW), false, HashSet::new(), Record::default()).unwrap();
    assert!(matches!(s.pod_work(), PodWork::Nothing));
}

#[test]
fn success_is_counted_through_the_finalizer_then_completes() {
    let j = job(|_, _| {});
    let done = pod(P { name: "a", phase: "Succeeded", ..Default::default() });
    let mut s = sync_of(&j, vec![done.clone()]);
    assert!(matches!(s.pod_work(), PodWork::Nothing));
    s.pods_done(&PodWork::Nothing, Done::default());
    assert_eq!(s.finished.as_ref().map(|c| c.type_.as_str()), Some("SuccessCriteriaMet"));
    let track = s.track();
    assert!(track.flush);
    assert_eq!(track.remove.len(), 1);
    // Written first: the uid as uncounted, and the interim condition.
    let unc = s.status.uncounted_terminated_pods.clone().unwrap();
    assert_eq!(unc.succeeded, Some(vec!["uid-a".to_string()]));
    let scm = has_cond(&s.status, "SuccessCriteriaMet").unwrap();
    assert_eq!(scm.reason.as_deref(), Some("CompletionsReached"));
    assert!(has_cond(&s.status, "Complete").is_none());
    // Then the finalizer goes, the pod is counted and the Job completes.
    assert!(s.finalizers_removed(&HashSet::from(["uid-a".to_string()])));
    assert_eq!(s.status.succeeded, Some(1));
    assert_eq!(s.status.uncounted_terminated_pods.as_ref().unwrap().succeeded, None);
    let c = has_cond(&s.status, "Complete").unwrap();
    assert_eq!(c.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(s.status.completion_time, Some(Time(t(NOW))));
    assert!(s.finished_now());
    assert!(s.events.iter().any(|e| e.1 == "Completed"));
}

#[test]
fn a_failed_finalizer_removal_leaves_the_pod_uncounted() {
    let j = job(|sp, _| sp.completions = Some(2));
    let done = pod(P { name: "a", phase: "Succeeded", ..Default::default() });
    let mut s = sync_of(&j, vec![done]);
    s.pod_work();
    s.pods_done(&PodWork::Create(vec![None]), Done { created: 1, ..Default::default() });
    s.track();
    assert!(!s.finalizers_removed(&HashSet::new()));
    assert_eq!(s.status.uncounted_terminated_pods.as_ref().unwrap().succeeded, Some(vec!["uid-a".to_string()]));
    assert_eq!(s.status.succeeded, None);
    // Next sync (pod still with finalizer, uid uncounted): not counted twice.
    let j2 = job(|sp, st| {
        sp.completions = Some(2);
        st.uncounted_terminated_pods = s.status.uncounted_terminated_pods.clone();
    });
    let a = pod(P { name: "a", phase: "Succeeded", ..Default::default() });
    let b = pod(P { name: "b", ..Default::default() });
    let s2 = sync_of(&j2, vec![a, b]);
    assert_eq!(s2.succeeded, 1);
}

#[test]
fn pods_gone_from_the_cache_are_counted_once() {
    // uid-a is uncounted and its pod is gone (finalizer removed, pod deleted): counted.
    let j = job(|sp, st| {
        sp.completions = Some(3);
        st.uncounted_terminated_pods =
            Some(UncountedTerminatedPods { succeeded: Some(vec!["uid-a".into()]), failed: Some(vec!["uid-x".into()]) });
        st.succeeded = Some(1);
    });
    let mut s = sync_of(&j, vec![]);
    assert_eq!((s.succeeded, s.failed), (2, 1));
    full_sync(&mut s);
    assert_eq!(s.status.succeeded, Some(2));
    assert_eq!(s.status.failed, Some(1));
    let unc = s.status.uncounted_terminated_pods.clone().unwrap();
    assert!(unc.succeeded.is_none() && unc.failed.is_none());
}

#[test]
fn removals_in_flight_are_not_recounted() {
    // The status already counted uid-a; the pod cache still shows its finalizer.
    let j = job(|sp, st| {
        sp.completions = Some(2);
        st.succeeded = Some(1);
    });
    let a = pod(P { name: "a", phase: "Succeeded", ..Default::default() });
    let s = Sync::new(&j, vec![a.clone()], t(NOW), true, HashSet::from(["uid-a".into()]), Record::default()).unwrap();
    assert_eq!(s.succeeded, 1);
    let s = sync_of(&j, vec![a]);
    assert_eq!(s.succeeded, 2, "without the expectation it would count again");
}

#[test]
fn failures_count_back_off_and_get_replaced() {
    let j = job(|sp, _| sp.backoff_limit = Some(3));
    let f = pod(P { name: "f", phase: "Failed", exit: 1, finished_at: NOW - 4, ..Default::default() });
    let mut s = sync_of(&j, vec![f]);
    assert_eq!(s.failed, 1);
    assert_eq!(s.backoff, Record { failures_after_last_success: 1, last_failure: Some(t(NOW - 4)) });
    // One failure: wait 10s from it (6s left).
    assert!(matches!(s.pod_work(), PodWork::Backoff(d) if d == Duration::from_secs(6)));
    s.pods_done(&PodWork::Backoff(Duration::from_secs(6)), Done::default());
    assert_eq!(s.requeue, Some(Duration::from_secs(6)));
    let track = s.track();
    assert_eq!(s.status.uncounted_terminated_pods.as_ref().unwrap().failed, Some(vec!["uid-f".to_string()]));
    assert_eq!(track.remove.len(), 1);
    s.finalizers_removed(&HashSet::from(["uid-f".to_string()]));
    assert_eq!(s.status.failed, Some(1));
    assert!(s.status.conditions.is_none());

    // Later, with the record carried over: a replacement.
    let j = job(|sp, st| {
        sp.backoff_limit = Some(3);
        st.failed = Some(1);
    });
    let mut s = Sync::new(&j, vec![], t(NOW + 20), true, HashSet::new(), s.backoff).unwrap();
    assert!(matches!(s.pod_work(), PodWork::Create(v) if v.len() == 1));
}

#[test]
fn backoff_limit_fails_the_job_after_its_pods_are_gone() {
    let j = job(|sp, st| {
        sp.backoff_limit = Some(1);
        sp.parallelism = Some(2);
        sp.completions = Some(4);
        st.failed = Some(1);
        st.start_time = Some(Time(t(NOW - 60)));
    });
    let f = pod(P { name: "f", phase: "Failed", exit: 2, ..Default::default() });
    let r = pod(P { name: "r", ..Default::default() });
    let mut s = sync_of(&j, vec![f, r.clone()]);
    assert_eq!(s.failed, 2);
    let ft = s.finished.clone().unwrap();
    assert_eq!((ft.type_.as_str(), ft.reason.as_deref()), ("FailureTarget", Some("BackoffLimitExceeded")));
    let work = s.pod_work();
    assert!(matches!(&work, PodWork::Terminate(v) if v.len() == 1));
    s.pods_done(&work, Done { deleted: 1, deleted_ready: 1, created: 0 });
    assert_eq!((s.n_active, s.terminating, s.ready), (0, 1, 0));
    let track = s.track();
    // Both pods counted as failed (the running one because the Job is failing).
    let mut failed = s.status.uncounted_terminated_pods.clone().unwrap().failed.unwrap();
    failed.sort();
    assert_eq!(failed, ["uid-f", "uid-r"]);
    assert!(has_cond(&s.status, "FailureTarget").is_some());
    assert_eq!(track.remove.len(), 2);
    s.finalizers_removed(&HashSet::from(["uid-f".to_string(), "uid-r".to_string()]));
    assert_eq!(s.status.failed, Some(3));
    // A pod is still terminating: not Failed yet.
    assert!(has_cond(&s.status, "Failed").is_none());

    // Next sync: the pods are gone; the FailureTarget becomes Failed.
    let j2 = Job { status: Some(s.status.clone()), ..j.clone() };
    let mut s2 = sync_of(&j2, vec![]);
    assert_eq!(s2.finished.as_ref().unwrap().type_, "Failed");
    full_sync(&mut s2);
    let failed = has_cond(&s2.status, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failed.message.as_deref(), Some("Job has reached the specified backoff limit"));
    assert!(s2.status.completion_time.is_none());
    assert!(s2.events.iter().any(|e| e.0 && e.1 == "BackoffLimitExceeded"));
}

#[test]
fn incomplete_termination_is_not_finished() {
    let j = job(|sp, st| {
        sp.backoff_limit = Some(0);
        st.failed = Some(1);
    });
    let r = pod(P { name: "r", ..Default::default() });
    let mut s = sync_of(&j, vec![r]);
    let work = s.pod_work();
    s.pods_done(&work, Done::default());
    assert!(s.finished.is_none());
    s.track();
    assert!(has_cond(&s.status, "FailureTarget").is_none());
}

#[test]
fn restarts_of_on_failure_pods_count_against_the_limit() {
    let j = job(|sp, _| {
        sp.backoff_limit = Some(2);
        sp.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    });
    let r = pod(P { name: "r", restarts: 2, ..Default::default() });
    let s = sync_of(&j, vec![r.clone()]);
    assert_eq!(s.finished.as_ref().unwrap().reason.as_deref(), Some("BackoffLimitExceeded"));
    let j = job(|sp, _| sp.backoff_limit = Some(2));
    assert!(sync_of(&j, vec![r]).finished.is_none());
}

#[test]
fn active_deadline() {
    let j = job(|sp, st| {
        sp.active_deadline_seconds = Some(30);
        st.start_time = Some(Time(t(NOW - 10)));
    });
    let s = sync_of(&j, vec![pod(P::default())]);
    assert!(s.finished.is_none());
    assert_eq!(s.requeue, Some(Duration::from_secs(20)));
    let j = job(|sp, st| {
        sp.active_deadline_seconds = Some(30);
        st.start_time = Some(Time(t(NOW - 30)));
    });
    let s = sync_of(&j, vec![pod(P::default())]);
    let c = s.finished.unwrap();
    assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("FailureTarget", Some("DeadlineExceeded")));
    // Suspended: the clock does not run.
    let j = job(|sp, st| {
        sp.active_deadline_seconds = Some(30);
        sp.suspend = Some(true);
        st.start_time = Some(Time(t(NOW - 300)));
    });
    assert!(sync_of(&j, vec![]).finished.is_none());
}

#[test]
fn suspend_deletes_pods_without_counting_them_and_resume_restarts_the_clock() {
    let j = job(|sp, st| {
        sp.suspend = Some(true);
        sp.parallelism = Some(2);
        sp.completions = Some(2);
        st.start_time = Some(Time(t(NOW - 100)));
    });
    let a = pod(P { name: "a", ..Default::default() });
    let b = pod(P { name: "b", ready: false, ..Default::default() });
    let mut s = sync_of(&j, vec![a, b]);
    let work = full_sync(&mut s);
    assert!(matches!(&work, PodWork::Delete(v) if v.len() == 2));
    let c = has_cond(&s.status, "Suspended").unwrap();
    assert_eq!(c.reason.as_deref(), Some("JobSuspended"));
    assert_eq!(s.status.active, None);
    assert_eq!(s.status.terminating, Some(2));
    assert_eq!(s.status.failed, None);
    assert!(s.events.iter().any(|e| e.1 == "Suspended"));

    // Suspended from the start: no start time, no pods.
    let j = job(|sp, _| sp.suspend = Some(true));
    let mut s = sync_of(&j, vec![]);
    assert!(matches!(full_sync(&mut s), PodWork::Delete(v) if v.is_empty()));
    assert!(s.status.start_time.is_none());

    // Resumed.
    let suspended = s.status.clone();
    let j = job(|_, st| *st = suspended);
    let mut s = sync_of(&j, vec![]);
    assert!(matches!(full_sync(&mut s), PodWork::Create(v) if v.len() == 1));
    let c = s.status.conditions.iter().flatten().find(|c| c.type_ == "Suspended").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("JobResumed")));
    assert_eq!(s.status.start_time, Some(Time(t(NOW))));
    assert!(s.events.iter().any(|e| e.1 == "Resumed"));
}

#[test]
fn too_many_pods_are_trimmed_least_advanced_first() {
    let j = job(|sp, _| {
        sp.parallelism = Some(1);
        sp.completions = Some(3);
    });
    let running = pod(P { name: "running", ..Default::default() });
    let pending = pod(P { name: "pending", phase: "Pending", ready: false, ..Default::default() });
    let mut s = sync_of(&j, vec![running, pending]);
    match s.pod_work() {
        PodWork::Delete(v) => {
            assert_eq!(v.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["pending"])
        }
        w => panic!("{w:?}"),
    }
}

#[test]
fn work_queue_jobs_stop_creating_after_a_success() {
    let j = job(|sp, _| sp.parallelism = Some(3));
    let mut s = sync_of(&j, vec![]);
    assert!(matches!(s.pod_work(), PodWork::Create(v) if v.len() == 3));
    let done = pod(P { name: "a", phase: "Succeeded", ..Default::default() });
    let b = pod(P { name: "b", ..Default::default() });
    let mut s = sync_of(&j, vec![done.clone(), b]);
    assert!(matches!(full_sync(&mut s), PodWork::Nothing));
    assert!(s.finished.is_none());
    let mut s = sync_of(&j, vec![done]);
    full_sync(&mut s);
    assert!(has_cond(&s.status, "Complete").is_some());
}

#[test]
fn terminating_pods_count_as_failed_and_may_hold_back_replacements() {
    let deleting = pod(P { name: "d", deleting: true, ..Default::default() });
    // TerminatingOrFailed (default): failed now, replaced now.
    let j = job(|_, _| {});
    let mut s = sync_of(&j, vec![deleting.clone()]);
    assert_eq!((s.failed, s.terminating, s.n_active), (1, 1, 0));
    assert!(matches!(s.pod_work(), PodWork::Backoff(_)));
    // Failed: neither until it has failed.
    let j = job(|sp, _| sp.pod_replacement_policy = Some("Failed".into()));
    let mut s = sync_of(&j, vec![deleting]);
    assert_eq!(s.failed, 0);
    assert!(matches!(s.pod_work(), PodWork::Nothing));
}

#[test]
fn pod_failure_policy_fails_or_ignores() {
    let rule = |action: &str, code: i32| PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: "In".into(),
            values: vec![code],
        }),
        on_pod_conditions: None,
    };
    let j = job(|sp, _| {
        sp.pod_failure_policy = Some(PodFailurePolicy { rules: vec![rule("Ignore", 3), rule("FailJob", 42)] })
    });
    let ignored = pod(P { name: "i", phase: "Failed", exit: 3, ..Default::default() });
    let mut s = sync_of(&j, vec![ignored]);
    assert_eq!(s.failed, 0);
    assert!(s.finished.is_none());
    let track = {
        let w = s.pod_work();
        s.pods_done(&w, Done::default());
        s.track()
    };
    assert_eq!(track.remove.len(), 1, "released but not counted");
    assert!(s.status.uncounted_terminated_pods.as_ref().unwrap().failed.is_none());

    let fatal = pod(P { name: "x", phase: "Failed", exit: 42, ..Default::default() });
    let s = sync_of(&j, vec![fatal]);
    let c = s.finished.unwrap();
    assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("FailureTarget", Some("PodFailurePolicy")));
    assert!(c.message.unwrap().contains("exit code 42"));
}

#[test]
fn indexed_jobs_fill_missing_indexes_and_report_them() {
    let j = job(|sp, st| {
        sp.completion_mode = Some("Indexed".into());
        sp.completions = Some(5);
        sp.parallelism = Some(3);
        st.completed_indexes = Some("0".into());
        st.succeeded = Some(1);
    });
    let done1 = pod(P { name: "one", phase: "Succeeded", index: Some(1), ..Default::default() });
    let run3 = pod(P { name: "three", index: Some(3), ..Default::default() });
    let mut s = sync_of(&j, vec![done1, run3]);
    assert_eq!(s.succeeded, 2);
    let work = full_sync(&mut s);
    assert!(matches!(&work, PodWork::Create(v) if *v == vec![Some(2), Some(4)]));
    assert_eq!(s.status.completed_indexes.as_deref(), Some("0-1"));
    assert_eq!(s.status.succeeded, Some(2));
    assert!(s.status.uncounted_terminated_pods.as_ref().unwrap().succeeded.is_none());
}

#[test]
fn indexed_duplicates_and_strays_are_removed() {
    let j = job(|sp, _| {
        sp.completion_mode = Some("Indexed".into());
        sp.completions = Some(2);
        sp.parallelism = Some(2);
    });
    let a = pod(P { name: "a", index: Some(0), ..Default::default() });
    let b = pod(P { name: "b", index: Some(0), ready: false, ..Default::default() });
    let c = pod(P { name: "c", index: Some(7), ..Default::default() });
    let d = pod(P { name: "d", index: Some(1), ..Default::default() });
    let mut s = sync_of(&j, vec![a, b, c, d]);
    match s.pod_work() {
        PodWork::Delete(v) => {
            let mut names: Vec<_> = v.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
            names.sort();
            assert_eq!(names, ["b", "c"]);
        }
        w => panic!("{w:?}"),
    }
}

#[test]
fn success_policy_ends_indexed_jobs_early() {
    let j = job(|sp, _| {
        sp.completion_mode = Some("Indexed".into());
        sp.completions = Some(4);
        sp.parallelism = Some(4);
        sp.success_policy = Some(SuccessPolicy {
            rules: vec![SuccessPolicyRule { succeeded_indexes: Some("0".into()), succeeded_count: None }],
        });
    });
    let leader = pod(P { name: "l", phase: "Succeeded", index: Some(0), ..Default::default() });
    let worker = pod(P { name: "w", index: Some(1), ..Default::default() });
    let mut s = sync_of(&j, vec![leader, worker]);
    let c = s.finished.clone().unwrap();
    assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("SuccessCriteriaMet", Some("SuccessPolicy")));
    let work = full_sync(&mut s);
    assert!(matches!(&work, PodWork::Terminate(v) if v.len() == 1));
    assert!(has_cond(&s.status, "SuccessCriteriaMet").is_some());
    // The worker is still terminating.
    assert!(has_cond(&s.status, "Complete").is_none());
    let j2 = Job { status: Some(s.status.clone()), ..j };
    let mut s2 = sync_of(&j2, vec![]);
    full_sync(&mut s2);
    let c = has_cond(&s2.status, "Complete").unwrap();
    assert_eq!(c.reason.as_deref(), Some("SuccessPolicy"));
}

#[test]
fn pods_from_the_template() {
    let j = job(|_, _| {});
    let p = pod_for(&j, None);
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "batch");
    assert_eq!(labels[CONTROLLER_UID], "job-uid");
    assert_eq!(labels[LEGACY_CONTROLLER_UID], "job-uid");
    assert_eq!(labels[JOB_NAME], "pi");
    assert_eq!(labels[LEGACY_JOB_NAME], "pi");
    assert_eq!(p.metadata.finalizers, Some(vec![TRACKING_FINALIZER.to_string()]));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
    let owner = pods::controller_of(&p.metadata).unwrap();
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "job-uid"));
    assert!(selector(&j).unwrap().matches(&labels));

    let p = pod_for(&j, Some(3));
    assert_eq!(p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX], "3");
    assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "3");
    assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-3-"));
    let spec = p.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
    let env = spec.containers[0].env.clone().unwrap();
    assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
}

#[test]
fn only_explicit_selectors_adopt_orphans() {
    let orphan = Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some("o".into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".into(), "batch".into())])),
            ..Default::default()
        },
        ..Default::default()
    });
    assert!(adoptable(&job(|_, _| {}), std::slice::from_ref(&orphan)).is_empty());
    let j = job(|sp, _| {
        sp.selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "batch".into())])),
            match_expressions: None,
        })
    });
    assert_eq!(adoptable(&j, std::slice::from_ref(&orphan)).len(), 1);
}

#[test]
fn conditions_are_set_once() {
    let mut conds = vec![];
    assert!(!ensure_condition(&mut conds, "Suspended", "False", "JobResumed", "Job resumed", t(1)));
    assert!(conds.is_empty());
    assert!(ensure_condition(&mut conds, "Suspended", "True", "JobSuspended", "Job suspended", t(1)));
    assert!(!ensure_condition(&mut conds, "Suspended", "True", "JobSuspended", "Job suspended", t(2)));
    assert!(ensure_condition(&mut conds, "Suspended", "False", "JobResumed", "Job resumed", t(3)));
    assert_eq!(conds.len(), 1);
    assert_eq!(conds[0].last_transition_time, Some(Time(t(3))));
}
