//! The Job sync (upstream `syncJob`, `manageJob` and `trackJobStatusAndRemoveFinalizers`)
//! as pure steps over the Job, its pods and the time. A sync is
//!
//! 1. [`Sync::new`]: count the pods (finished pods still carrying the
//!    `batch.kubernetes.io/job-tracking` finalizer are new; `status.uncountedTerminatedPods`
//!    holds those being counted) and decide whether the Job is finishing;
//! 2. [`Sync::pod_work`]: the pods to delete (finishing, suspended, too many) or create;
//! 3. [`Sync::pods_done`]: what the pod writes achieved — then completion and `Suspended`;
//! 4. [`Sync::track`]: the pods to count (into `uncountedTerminatedPods`, written first)
//!    and whose finalizer to remove;
//! 5. [`Sync::finalizers_removed`]: move the pods whose finalizer is gone from
//!    `uncountedTerminatedPods` into `succeeded`/`failed`, and once nothing is uncounted or
//!    terminating, add the final `Complete`/`Failed` condition (after the interim
//!    `SuccessCriteriaMet`/`FailureTarget` one).
//!
//! Counting through the finalizer, as upstream does, means a pod deleted after it
//! finished (by a user, the pod GC or a node going away) is still counted exactly once:
//! it cannot disappear before the controller has recorded it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicy, SuccessPolicy, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::{Selector, SelectorExt};

use super::backoff::{self, Record};
use super::indexes::{self, COMPLETION_INDEX};
use super::policy;
use crate::pods;

/// The finalizer on a Job's pods until the Job has counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const LEGACY_JOB_NAME: &str = "job-name";
/// `spec.managedBy` of Jobs this controller manages (and the default).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream's `MaxUncountedPods`.
pub const MAX_UNCOUNTED: usize = 500;
/// Upstream's `MaxPodCreateDeletePerSync`.
pub const MAX_PER_SYNC: usize = 500;

/// An event for the Job: (warning?, reason, message).
pub type Event = (bool, &'static str, String);

/// A Job the controller leaves alone this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It has its `Complete` or `Failed` condition.
    Finished,
    /// `spec.managedBy` names another controller.
    ManagedElsewhere(String),
    /// A `completionMode` this controller does not know (an event is due).
    UnknownCompletionMode(String),
}

/// The spec with API defaults applied (`parallelism` 1; `completions` 1 when neither is
/// set; `backoffLimit` 6), for API servers that store Jobs undefaulted.
#[derive(Debug, Clone)]
pub struct Spec {
    pub parallelism: i32,
    pub completions: Option<i32>,
    pub backoff_limit: i32,
    pub indexed: bool,
    pub suspend: bool,
    pub active_deadline: Option<i64>,
    pub failure_policy: Option<PodFailurePolicy>,
    pub success_policy: Option<SuccessPolicy>,
    /// `podReplacementPolicy: Failed` (or a pod failure policy): replace pods only once
    /// they have failed, not while terminating.
    pub only_replace_failed: bool,
    pub restart_on_failure: bool,
}

pub fn is_finished(job: &Job) -> bool {
    finished_type(job).is_some()
}

/// `Complete` or `Failed`, if the Job has that condition True.
pub fn finished_type(job: &Job) -> Option<&'static str> {
    job.status.as_ref()?.conditions.as_ref()?.iter().filter(|c| c.status == "True").find_map(|c| {
        match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        }
    })
}

pub fn spec_of(job: &Job) -> Result<Spec, Skip> {
    if is_finished(job) {
        return Err(Skip::Finished);
    }
    let s = job.spec.clone().unwrap_or_default();
    if let Some(m) = s.managed_by.as_deref().filter(|m| *m != MANAGED_BY) {
        return Err(Skip::ManagedElsewhere(m.to_string()));
    }
    let indexed = match s.completion_mode.as_deref() {
        None | Some("NonIndexed") => false,
        Some("Indexed") => true,
        Some(other) => return Err(Skip::UnknownCompletionMode(other.to_string())),
    };
    let completions = match (s.completions, s.parallelism) {
        (None, None) => Some(1),
        (c, _) => c,
    };
    // Indexed Jobs need completions (validation); with none, one index.
    let completions = if indexed { Some(completions.unwrap_or(1)) } else { completions };
    let restart = s.template.spec.as_ref().and_then(|p| p.restart_policy.as_deref()) == Some("OnFailure");
    Ok(Spec {
        parallelism: s.parallelism.unwrap_or(1).max(0),
        completions: completions.map(|c| c.max(0)),
        backoff_limit: s.backoff_limit.unwrap_or(if s.backoff_limit_per_index.is_some() { i32::MAX } else { 6 }),
        indexed,
        suspend: s.suspend == Some(true),
        active_deadline: s.active_deadline_seconds,
        only_replace_failed: s.pod_replacement_policy.as_deref() == Some("Failed") || s.pod_failure_policy.is_some(),
        failure_policy: s.pod_failure_policy,
        success_policy: s.success_policy,
        restart_on_failure: restart,
    })
}

/// The selector a Job's pods match: `spec.selector`, else its controller-uid label.
pub fn selector(job: &Job) -> Option<Selector> {
    let explicit = job.spec.as_ref().and_then(|s| s.selector.clone()).filter(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    });
    match explicit {
        Some(s) => Selector::try_from(s).ok(),
        None => {
            let uid = job.metadata.uid.clone()?;
            Some(Selector::from_iter([(CONTROLLER_UID.to_string(), uid)]))
        }
    }
}

/// Orphans this Job adopts: pods without a controller that match an explicit
/// `spec.selector` (a generated one names this Job's uid, so only its own pods match).
pub fn adoptable(job: &Job, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let explicit = job.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some();
    if !explicit || job.metadata.deletion_timestamp.is_some() || is_finished(job) {
        return vec![];
    }
    let Some(sel) = selector(job) else { return vec![] };
    pods.iter()
        .filter(|p| p.metadata.namespace == job.metadata.namespace)
        .filter(|p| pods::controller_of(&p.metadata).is_none() && p.metadata.deletion_timestamp.is_none())
        .filter(|p| sel.matches(&pods::labels(&p.metadata)))
        .cloned()
        .collect()
}

pub fn has_finalizer(p: &Pod) -> bool {
    p.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// `isPodFailed`: Failed, or (unless only failed pods are replaced) deleted before
/// succeeding.
pub fn is_failed(p: &Pod, spec: &Spec) -> bool {
    if phase(p) == "Failed" {
        return true;
    }
    !spec.only_replace_failed && p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded"
}

pub fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn find<'a>(conds: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conds.iter().find(|c| c.type_ == type_)
}

/// `ensureJobConditionStatus`: set a condition (a False one is only ever an update);
/// whether anything changed.
pub fn ensure_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let mut c = condition(type_, reason, message, now);
    c.status = status.into();
    if let Some(old) = conds.iter_mut().find(|c| c.type_ == type_) {
        let same = old.status == status
            && old.reason.as_deref().unwrap_or("") == reason
            && old.message.as_deref().unwrap_or("") == message;
        if same {
            return false;
        }
        *old = c;
        return true;
    }
    if status != "False" {
        conds.push(c);
        return true;
    }
    false
}

/// Restart counts of running/pending pods reached the backoff limit
/// (`pastBackoffLimitOnFailure`, restartPolicy OnFailure only).
fn past_backoff_limit_on_failure(spec: &Spec, pods: &[Arc<Pod>]) -> bool {
    if !spec.restart_on_failure {
        return false;
    }
    let mut restarts = 0i64;
    for p in pods {
        if matches!(phase(p), "Running" | "Pending") {
            let st = p.status.as_ref();
            for list in
                [st.and_then(|s| s.init_container_statuses.as_ref()), st.and_then(|s| s.container_statuses.as_ref())]
                    .into_iter()
                    .flatten()
            {
                restarts += list.iter().map(|c| i64::from(c.restart_count)).sum::<i64>();
            }
        }
    }
    if spec.backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= i64::from(spec.backoff_limit)
    }
}

/// `controller.ActivePods` order: the pods to delete first come first (unscheduled,
/// pending, not ready, ready for less time, more restarts, newer).
pub fn sort_for_deletion(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| pods::deletion_order(a, 0, b, 0));
}

/// `activePodsForRemoval`: for Indexed Jobs every pod without a valid index and all but
/// the most advanced pod of a repeated index; then the first `at_least` by
/// [`sort_for_deletion`].
pub fn pods_for_removal(spec: &Spec, active: &[Arc<Pod>], at_least: usize) -> Vec<Arc<Pod>> {
    let mut rm = Vec::new();
    let mut left: Vec<Arc<Pod>> = Vec::new();
    if spec.indexed {
        let completions = spec.completions.unwrap_or(0);
        let mut by_index: std::collections::BTreeMap<i32, Vec<Arc<Pod>>> = Default::default();
        for p in active {
            match indexes::valid(p, completions) {
                Some(ix) => by_index.entry(ix).or_default().push(p.clone()),
                None => rm.push(p.clone()),
            }
        }
        for (_, mut same) in by_index {
            sort_for_deletion(&mut same);
            let keep = same.pop();
            rm.extend(same);
            left.extend(keep);
        }
    } else {
        left = active.to_vec();
    }
    if rm.len() < at_least {
        sort_for_deletion(&mut left);
        let more = at_least - rm.len();
        rm.extend(left.into_iter().take(more));
    }
    rm
}

/// A pod for the Job (`index` for Indexed Jobs): the template with the Job's labels,
/// the tracking finalizer and the Job as controller; Indexed pods also get their index
/// (annotation, label, `JOB_COMPLETION_INDEX`), hostname `<job>-<index>` and generateName
/// `<job>-<index>-`.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    if index.is_some() {
        if let Some(ps) = template.spec.as_mut() {
            for c in ps.containers.iter_mut().chain(ps.init_containers.iter_mut().flatten()) {
                let env = c.env.get_or_insert_with(Vec::new);
                if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                    env.push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                            }),
                            ..Default::default()
                        }),
                    });
                }
            }
        }
    }
    let owner = pods::controller_ref("batch/v1", "Job", &name, &uid);
    let mut pod = pods::from_template(&template, &ns, &name, owner);
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in [(CONTROLLER_UID, &uid), (LEGACY_CONTROLLER_UID, &uid), (JOB_NAME, &name), (LEGACY_JOB_NAME, &name)] {
        labels.insert(k.to_string(), v.clone());
    }
    let finalizers = pod.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_string());
    }
    if let Some(ix) = index {
        pod.metadata.annotations.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), ix.to_string());
        labels_mut(&mut pod).insert(COMPLETION_INDEX.into(), ix.to_string());
        if let Some(ps) = pod.spec.as_mut() {
            ps.hostname = Some(format!("{name}-{ix}"));
        }
        pod.metadata.generate_name = Some(indexes::generate_name(&name, ix));
    }
    pod
}

fn labels_mut(p: &mut Pod) -> &mut std::collections::BTreeMap<String, String> {
    p.metadata.labels.get_or_insert_with(Default::default)
}

/// What to do about the pods this sync.
#[derive(Debug, Clone)]
pub enum PodWork {
    Nothing,
    /// The Job is finishing: delete its active pods, keeping their finalizers (they are
    /// counted as failed).
    Terminate(Vec<Arc<Pod>>),
    /// Delete these pods (suspended, or too many), removing their finalizer first (they
    /// are not failures).
    Delete(Vec<Arc<Pod>>),
    /// Create one pod per entry (its completion index for Indexed Jobs).
    Create(Vec<Option<i32>>),
    /// Pods are missing, but failed pods are not replaced before this.
    Backoff(Duration),
}

/// What the pod writes of a [`PodWork`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Done {
    /// Pods deleted (or already gone).
    pub deleted: i32,
    /// Of those, ready ones.
    pub deleted_ready: i32,
    /// Pods created.
    pub created: i32,
}

/// What [`Sync::track`] asks for.
#[derive(Debug, Default)]
pub struct Track {
    /// Write `Sync::status` before touching any finalizer.
    pub flush: bool,
    /// Pods whose tracking finalizer to remove.
    pub remove: Vec<Arc<Pod>>,
}

/// One sync of one Job.
#[derive(Debug)]
pub struct Sync {
    pub job: Job,
    pub spec: Spec,
    pub now: Timestamp,
    /// The Job's pods (controller reference to it).
    pub pods: Vec<Arc<Pod>>,
    pub active: Vec<Arc<Pod>>,
    /// The status being built.
    pub status: JobStatus,
    /// No pod creations or deletions of earlier syncs are still unseen.
    pub satisfied: bool,
    /// Pods whose finalizer removal is in flight (already counted).
    pub expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    pub n_active: i32,
    pub ready: i32,
    pub terminating: i32,
    pub succeeded: i32,
    pub failed: i32,
    prev_indexes: BTreeSet<i32>,
    pub succeeded_indexes: BTreeSet<i32>,
    /// The condition the Job is finishing with (interim or final type).
    pub finished: Option<JobCondition>,
    /// The backoff record once this sync's newly finished pods are counted.
    pub backoff: Record,
    pub requeue: Option<Duration>,
    pub events: Vec<Event>,
    manage_called: bool,
    status_changed: bool,
    uids_with_finalizer: HashSet<String>,
    reached_max_uncounted: bool,
}

fn min_requeue(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Sync {
    /// Count and decide whether the Job is finishing. `pods` are the Job's pods;
    /// `satisfied`/`expected_rm` come from the expectations; `prev` is the backoff record.
    pub fn new(
        job: &Job,
        pods: Vec<Arc<Pod>>,
        now: Timestamp,
        satisfied: bool,
        expected_rm: HashSet<String>,
        prev: Record,
    ) -> Result<Sync, Skip> {
        let spec = spec_of(job)?;
        let mut status = job.status.clone().unwrap_or_default();
        let unc = status.uncounted_terminated_pods.get_or_insert_with(UncountedTerminatedPods::default);
        let uncounted_succeeded: HashSet<String> = unc.succeeded.iter().flatten().cloned().collect();
        let uncounted_failed: HashSet<String> = unc.failed.iter().flatten().cloned().collect();
        let active: Vec<Arc<Pod>> = pods.iter().filter(|p| pods::is_active(p)).cloned().collect();
        let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let terminating = pods.iter().filter(|p| pods::is_terminating(p)).count() as i32;
        let mut s = Sync {
            job: job.clone(),
            n_active: active.len() as i32,
            active,
            ready,
            terminating,
            spec,
            now,
            pods,
            status,
            satisfied,
            expected_rm,
            uncounted_succeeded,
            uncounted_failed,
            succeeded: 0,
            failed: 0,
            prev_indexes: BTreeSet::new(),
            succeeded_indexes: BTreeSet::new(),
            finished: None,
            backoff: prev,
            requeue: None,
            events: vec![],
            manage_called: false,
            status_changed: false,
            uids_with_finalizer: HashSet::new(),
            reached_max_uncounted: false,
        };
        s.count(prev);
        s.decide_finish();
        Ok(s)
    }

    /// Counted and countable (a pod with the finalizer, not yet in the uncounted list
    /// and, for Indexed Jobs, with a valid index).
    fn countable<'a>(&'a self, uncounted: &'a HashSet<String>) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        let completions = self.spec.completions.unwrap_or(0);
        self.pods.iter().filter(move |p| {
            let u = uid(p);
            has_finalizer(p)
                && !uncounted.contains(&u)
                && !self.expected_rm.contains(&u)
                && (!self.spec.indexed || indexes::valid(p, completions).is_some())
        })
    }

    fn count(&mut self, prev: Record) {
        let new_succeeded: Vec<Arc<Pod>> =
            self.countable(&self.uncounted_succeeded).filter(|p| phase(p) == "Succeeded").cloned().collect();
        let new_failed: Vec<Arc<Pod>> =
            self.countable(&self.uncounted_failed).filter(|p| is_failed(p, &self.spec)).cloned().collect();
        let counted_failures =
            new_failed.iter().filter(|p| policy::match_failed(self.spec.failure_policy.as_ref(), p).counts).count()
                as i32;
        self.succeeded =
            self.status.succeeded.unwrap_or(0) + new_succeeded.len() as i32 + self.uncounted_succeeded.len() as i32;
        self.failed = self.status.failed.unwrap_or(0) + counted_failures + self.uncounted_failed.len() as i32;
        if self.status.start_time.is_none() && !self.spec.suspend {
            self.status.start_time = Some(Time(self.now));
            self.status_changed = true;
        }
        let times = |v: &[Arc<Pod>]| v.iter().map(|p| backoff::finish_time(p)).collect::<Vec<_>>();
        self.backoff = backoff::advance(prev, &times(&new_succeeded), &times(&new_failed));
        if self.spec.indexed {
            let completions = self.spec.completions.unwrap_or(0);
            self.prev_indexes = indexes::parse(self.status.completed_indexes.as_deref().unwrap_or(""), completions);
            let mut all = self.prev_indexes.clone();
            for p in &self.pods {
                if phase(p) == "Succeeded" && has_finalizer(p) {
                    if let Some(ix) = indexes::valid(p, completions) {
                        all.insert(ix);
                    }
                }
            }
            self.succeeded = all.len() as i32;
            self.succeeded_indexes = all;
        }
    }

    fn failure(&self, reason: &str, message: &str) -> JobCondition {
        // Upstream (JobPodReplacementPolicy/JobManagedBy on) delays the terminal
        // condition: FailureTarget first, Failed once no pod is left running.
        condition("FailureTarget", reason, message, self.now)
    }

    fn decide_finish(&mut self) {
        let conds = self.status.conditions.clone().unwrap_or_default();
        if let Some(c) = find(&conds, "SuccessCriteriaMet").filter(|c| c.status == "True") {
            self.finished = Some(c.clone());
        }
        if self.finished.is_none() {
            if let Some(c) = find(&conds, "FailureTarget").filter(|c| c.status == "True") {
                let mut f = c.clone();
                f.type_ = "Failed".into();
                f.last_probe_time = Some(Time(self.now));
                f.last_transition_time = Some(Time(self.now));
                self.finished = Some(f);
            } else if let Some(msg) = self
                .pods
                .iter()
                .filter(|p| is_failed(p, &self.spec))
                .find_map(|p| policy::match_failed(self.spec.failure_policy.as_ref(), p).fail_job)
            {
                self.finished = Some(condition("FailureTarget", "PodFailurePolicy", &msg, self.now));
            }
        }
        if self.finished.is_none() {
            if self.failed > self.spec.backoff_limit || past_backoff_limit_on_failure(&self.spec, &self.pods) {
                self.finished =
                    Some(self.failure("BackoffLimitExceeded", "Job has reached the specified backoff limit"));
            } else if let Some(left) = self.deadline_left() {
                if left.is_zero() {
                    self.finished =
                        Some(self.failure("DeadlineExceeded", "Job was active longer than specified deadline"));
                } else {
                    self.requeue = min_requeue(self.requeue, left);
                }
            }
        }
        if self.finished.is_none() && self.spec.indexed {
            let completions = self.spec.completions.unwrap_or(0);
            if let Some(msg) =
                policy::match_success(self.spec.success_policy.as_ref(), completions, &self.succeeded_indexes)
            {
                self.finished = Some(condition("SuccessCriteriaMet", "SuccessPolicy", &msg, self.now));
            }
        }
    }

    /// Time left before `activeDeadlineSeconds` (`None`: no deadline, or suspended).
    pub fn deadline_left(&self) -> Option<Duration> {
        let ads = self.spec.active_deadline?;
        if self.spec.suspend {
            return None;
        }
        let start = self.status.start_time.as_ref()?.0;
        let end_ms = start.as_millisecond().saturating_add(ads.saturating_mul(1000));
        Some(Duration::from_millis((end_ms - self.now.as_millisecond()).max(0) as u64))
    }

    fn deleting(&self) -> bool {
        self.job.metadata.deletion_timestamp.is_some()
    }

    /// Step 2: the pods to delete or create.
    pub fn pod_work(&mut self) -> PodWork {
        if self.finished.is_some() {
            return PodWork::Terminate(self.active.clone());
        }
        if !self.satisfied || self.deleting() {
            return PodWork::Nothing;
        }
        self.manage_called = true;
        let active = self.n_active;
        if self.spec.suspend {
            return PodWork::Delete(pods_for_removal(&self.spec, &self.active, self.active.len()));
        }
        let want = match self.spec.completions {
            None if self.succeeded > 0 => active,
            None => self.spec.parallelism,
            Some(c) => (c - self.succeeded).clamp(0, self.spec.parallelism),
        };
        let rm_at_least = (active - want).max(0) as usize;
        let mut rm = pods_for_removal(&self.spec, &self.active, rm_at_least);
        rm.truncate(MAX_PER_SYNC);
        if !rm.is_empty() {
            return PodWork::Delete(rm);
        }
        let terminating = if self.spec.only_replace_failed { self.terminating } else { 0 };
        let diff = want - terminating - active;
        if diff <= 0 {
            return PodWork::Nothing;
        }
        let wait = backoff::remaining(&self.backoff, self.now, backoff::BASE, backoff::MAX);
        if !wait.is_zero() {
            return PodWork::Backoff(wait);
        }
        let diff = (diff as usize).min(MAX_PER_SYNC);
        if self.spec.indexed {
            let completions = self.spec.completions.unwrap_or(0);
            let mut taken = self.succeeded_indexes.clone();
            taken.extend(self.active.iter().filter_map(|p| indexes::of(p)));
            if self.spec.only_replace_failed {
                taken.extend(self.pods.iter().filter(|p| pods::is_terminating(p)).filter_map(|p| indexes::of(p)));
            }
            let ixs = indexes::first_pending(&taken, diff, completions);
            if ixs.is_empty() {
                return PodWork::Nothing;
            }
            return PodWork::Create(ixs.into_iter().map(Some).collect());
        }
        PodWork::Create(vec![None; diff])
    }

    /// Step 3: account for what the pod writes did; then completion and `Suspended`.
    pub fn pods_done(&mut self, work: &PodWork, done: Done) {
        match work {
            PodWork::Terminate(_) => {
                if done.deleted != self.n_active || !self.satisfied {
                    // Not finished yet: pods may remain (or be unseen in the cache).
                    self.finished = None;
                }
                self.n_active -= done.deleted;
                self.terminating += done.deleted;
                self.ready -= done.deleted_ready;
                return;
            }
            PodWork::Delete(_) => {
                self.n_active -= done.deleted;
                self.terminating += done.deleted;
                self.ready -= done.deleted_ready;
            }
            PodWork::Create(_) => self.n_active += done.created,
            PodWork::Backoff(d) => self.requeue = min_requeue(self.requeue, (*d).max(Duration::from_secs(1))),
            PodWork::Nothing => {}
        }
        let complete = match self.spec.completions {
            None => self.succeeded > 0 && self.n_active == 0,
            Some(c) => self.succeeded >= c && self.n_active == 0,
        };
        if complete {
            self.finished = Some(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                self.now,
            ));
        } else if self.manage_called {
            let conds = self.status.conditions.get_or_insert_with(Vec::new);
            if self.spec.suspend {
                if ensure_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", self.now) {
                    self.status_changed = true;
                    self.events.push((false, "Suspended", "Job suspended".into()));
                }
            } else if ensure_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", self.now) {
                self.status_changed = true;
                self.events.push((false, "Resumed", "Job resumed".into()));
                // activeDeadlineSeconds counts from the resume.
                self.status.start_time = Some(Time(self.now));
            }
        }
    }

    /// Step 4: set the counts, put newly finished pods into `uncountedTerminatedPods`,
    /// add the interim condition; the pods whose finalizer can go.
    pub fn track(&mut self) -> Track {
        let mut flush = self.status_changed
            || self.n_active != self.status.active.unwrap_or(0)
            || Some(self.ready) != self.status.ready
            || Some(self.terminating) != self.status.terminating;
        self.status.active = (self.n_active != 0).then_some(self.n_active);
        self.status.ready = Some(self.ready);
        self.status.terminating = Some(self.terminating);

        let completions = self.spec.completions.unwrap_or(0);
        if self.spec.indexed {
            self.pods.sort_by_key(|p| indexes::of(p).unwrap_or(i32::MAX));
        }
        self.uids_with_finalizer = self
            .pods
            .iter()
            .filter(|p| has_finalizer(p) && !self.expected_rm.contains(&uid(p)))
            .map(|p| uid(p))
            .collect();
        if clean_uncounted(&mut self.status, &self.uids_with_finalizer) {
            flush = true;
        }
        let finishing_failed =
            self.finished.as_ref().is_some_and(|c| c.type_ != "SuccessCriteriaMet" && c.type_ != "Complete");
        let mut remove = Vec::new();
        let mut new_indexes = Vec::new();
        let deleting = self.deleting();
        for p in self.pods.clone() {
            let u = uid(&p);
            if !has_finalizer(&p) || self.expected_rm.contains(&u) {
                continue;
            }
            let failed = is_failed(&p, &self.spec);
            let can_remove = deleting || self.finished.is_some() || phase(&p) == "Succeeded" || failed;
            if !can_remove {
                continue;
            }
            remove.push(p.clone());
            let unc = self.status.uncounted_terminated_pods.get_or_insert_with(Default::default);
            if phase(&p) == "Succeeded" && !self.uncounted_failed.contains(&u) {
                if self.spec.indexed {
                    if let Some(ix) = indexes::valid(&p, completions) {
                        if !self.prev_indexes.contains(&ix) {
                            new_indexes.push(ix);
                            flush = true;
                        }
                    }
                } else if !self.uncounted_succeeded.contains(&u) {
                    unc.succeeded.get_or_insert_with(Vec::new).push(u.clone());
                    flush = true;
                }
            } else if failed || finishing_failed {
                let valid_ix = !self.spec.indexed || indexes::valid(&p, completions).is_some();
                if !self.uncounted_failed.contains(&u) && valid_ix {
                    if policy::match_failed(self.spec.failure_policy.as_ref(), &p).counts {
                        unc.failed.get_or_insert_with(Vec::new).push(u.clone());
                        flush = true;
                    }
                }
            }
            let n = new_indexes.len()
                + unc.succeeded.as_ref().map_or(0, Vec::len)
                + unc.failed.as_ref().map_or(0, Vec::len);
            if n >= MAX_UNCOUNTED {
                // Count the rest in a later sync (the status stays small).
                self.reached_max_uncounted = true;
                break;
            }
        }
        if self.spec.indexed {
            self.succeeded_indexes.extend(new_indexes);
            let s = indexes::format(&self.succeeded_indexes);
            if self.status.completed_indexes.as_deref().unwrap_or("") != s {
                flush = true;
            }
            let n = self.succeeded_indexes.len() as i32;
            self.status.succeeded = (n != 0).then_some(n);
            self.status.completed_indexes = (!s.is_empty()).then_some(s);
        }
        if let Some(f) = self.finished.clone() {
            let conds = self.status.conditions.get_or_insert_with(Vec::new);
            if f.type_ == "FailureTarget" {
                conds.push(f.clone());
                flush = true;
                let mut fin = condition(
                    "Failed",
                    f.reason.as_deref().unwrap_or(""),
                    f.message.as_deref().unwrap_or(""),
                    self.now,
                );
                fin.last_probe_time = Some(Time(self.now));
                self.finished = Some(fin);
            } else if f.type_ == "SuccessCriteriaMet" {
                if find(conds, "SuccessCriteriaMet").is_none_or(|c| c.status != "True") {
                    conds.retain(|c| c.type_ != "SuccessCriteriaMet");
                    conds.push(f.clone());
                    flush = true;
                }
                self.finished = Some(condition(
                    "Complete",
                    f.reason.as_deref().unwrap_or(""),
                    f.message.as_deref().unwrap_or(""),
                    self.now,
                ));
            }
        }
        normalize(&mut self.status);
        Track { flush, remove }
    }

    /// Step 5: `removed` are the uids whose finalizer is now gone. Counts them, and
    /// finishes the Job if it can; whether the status changed since step 4.
    pub fn finalizers_removed(&mut self, removed: &HashSet<String>) -> bool {
        self.uids_with_finalizer.retain(|u| !removed.contains(u));
        let mut changed = clean_uncounted(&mut self.status, &self.uids_with_finalizer);
        if self.reached_max_uncounted {
            normalize(&mut self.status);
            return changed;
        }
        let Some(fin) = self.finished.clone() else {
            normalize(&mut self.status);
            return changed;
        };
        let unc = self.status.uncounted_terminated_pods.clone().unwrap_or_default();
        let pending = unc.succeeded.map_or(0, |v| v.len()) + unc.failed.map_or(0, |v| v.len());
        if pending > 0 || self.terminating > 0 {
            normalize(&mut self.status);
            return changed;
        }
        let conds = self.status.conditions.get_or_insert_with(Vec::new);
        let reason = fin.reason.clone().unwrap_or_default();
        let message = fin.message.clone().unwrap_or_default();
        ensure_condition(conds, &fin.type_, "True", &reason, &message, self.now);
        if fin.type_ == "Complete" {
            self.status.completion_time = Some(Time(self.now));
            if let Some(c) = self.spec.completions {
                if self.status.succeeded.unwrap_or(0) > c {
                    self.events.push((
                        true,
                        "TooManySucceededPods",
                        "Too many succeeded pods running after completion count reached".into(),
                    ));
                }
            }
            self.events.push((false, "Completed", "Job completed".into()));
        } else {
            let r: &'static str = match reason.as_str() {
                "BackoffLimitExceeded" => "BackoffLimitExceeded",
                "DeadlineExceeded" => "DeadlineExceeded",
                "PodFailurePolicy" => "PodFailurePolicy",
                _ => "Failed",
            };
            self.events.push((true, r, message));
        }
        changed = true;
        normalize(&mut self.status);
        changed
    }

    /// The Job finished in this sync.
    pub fn finished_now(&self) -> bool {
        self.status
            .conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    }
}

/// `cleanUncountedPodsWithoutFinalizers`: uncounted pods whose finalizer is gone are
/// counted; whether anything moved.
pub fn clean_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let unc = status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    let mut changed = false;
    let mut moved = (0, 0);
    if let Some(s) = unc.succeeded.as_mut() {
        let before = s.len();
        s.retain(|u| with_finalizer.contains(u));
        moved.0 = (before - s.len()) as i32;
    }
    if let Some(f) = unc.failed.as_mut() {
        let before = f.len();
        f.retain(|u| with_finalizer.contains(u));
        moved.1 = (before - f.len()) as i32;
    }
    if moved.0 > 0 {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + moved.0);
        changed = true;
    }
    if moved.1 > 0 {
        status.failed = Some(status.failed.unwrap_or(0) + moved.1);
        changed = true;
    }
    changed
}

/// Empty lists as absent (how upstream's `omitempty` shows them).
fn normalize(status: &mut JobStatus) {
    let unc = status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    if unc.succeeded.as_ref().is_some_and(Vec::is_empty) {
        unc.succeeded = None;
    }
    if unc.failed.as_ref().is_some_and(Vec::is_empty) {
        unc.failed = None;
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
    if status.succeeded == Some(0) {
        status.succeeded = None;
    }
    if status.failed == Some(0) {
        status.failed = None;
    }
}

#[cfg(test)]
mod tests;
