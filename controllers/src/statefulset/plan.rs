//! The StatefulSet decision (upstream `updateStatefulSet`), as pure functions over the set,
//! its current and update revisions, its pods and the namespace's claims: which pod to
//! create, fix, delete for scale-down or replace for an update next, in which order, and
//! the status to report.
//!
//! The work comes in phases (the replicas in range; the claims of condemned pods; the
//! condemned pods; the rolling update), each a list of units (the steps for one pod, run in
//! order). OrderedReady ("monotonic") plans stop at the first pod that must be waited for;
//! Parallel ones hold every unit of a phase, run together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::identity::{self, Obj};
use super::set::{Set, Status};
use crate::pods;

/// Seconds before looking again at a pod held back by a claim an earlier pod still owns.
pub const STALE_CLAIM_RECHECK: i64 = 2;

/// Most pods created or deleted at once (upstream's `MaxBatchSize`).
pub const MAX_BATCH: usize = 500;

/// The set's current and update revisions and the templates they hold.
#[derive(Debug, Clone)]
pub struct Revisions {
    pub current: String,
    pub update: String,
    pub current_template: PodTemplateSpec,
    pub update_template: PodTemplateSpec,
    pub collision_count: i32,
}

/// What the plan sees.
pub struct Input<'a> {
    pub set: &'a Set,
    pub revisions: &'a Revisions,
    /// The set's pods (see [`mark_deleted`] for those it deleted that the cache still
    /// shows running).
    pub pods: &'a [Arc<Pod>],
    /// Pods it created that the cache does not show yet.
    pub in_flight: &'a HashSet<String>,
    /// The claims of the set's namespace, by name.
    pub claims: &'a HashMap<String, Arc<PersistentVolumeClaim>>,
    pub now: Timestamp,
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It failed or succeeded: it is replaced.
    Finished,
    /// Its ordinal is out of range.
    ScaleDown,
    /// It is not at the update revision.
    Update,
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create a pod's missing claim (already created: fine).
    CreateClaim {
        pod: String,
        claim: Box<PersistentVolumeClaim>,
    },
    CreatePod(Box<Pod>),
    DeletePod {
        name: String,
        why: Why,
    },
    /// Merge these identity labels into the pod.
    LabelPod {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Set a claim's owner references (pinned to the resourceVersion seen).
    SetClaimOwners {
        claim: String,
        pod: String,
        resource_version: Option<String>,
        owners: Vec<OwnerReference>,
    },
    /// Stop here and retry later (an error upstream).
    Fail(String),
}

/// The steps for one pod, in order.
pub type Unit = Vec<Step>;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: Status,
    /// Phases, in order; a phase's units run in order (OrderedReady) or together (Parallel).
    pub phases: Vec<Vec<Unit>>,
    /// Seconds until a ready pod becomes available, or until `minReadySeconds` has passed
    /// when some are not available yet (a recheck).
    pub recheck_in: Option<i64>,
}

impl Plan {
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.phases.iter().flatten().flatten()
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// `isRunningAndReady`.
pub fn running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && pods::is_ready(p)
}

/// `isUnavailable`: not running and ready, terminating, or not ready for minReadySeconds.
pub fn unavailable(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    !running_and_ready(p) || terminating(p) || !pods::is_available(p, min_ready_seconds, now)
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// Pods the controller deleted that the cache still shows running count as terminating.
pub fn mark_deleted(pods: Vec<Arc<Pod>>, deleted: &HashSet<String>, now: Timestamp) -> Vec<Arc<Pod>> {
    pods.into_iter()
        .map(|p| {
            if !terminating(&p) && deleted.contains(name(&p)) {
                let mut q = (*p).clone();
                q.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                Arc::new(q)
            } else {
                p
            }
        })
        .collect()
}

/// The replica counts of `pods` (`computeReplicaStatus`).
fn count(status: &mut Status, pods: &[&Arc<Pod>], set: &Set, revs: &Revisions, now: Timestamp) {
    for p in pods {
        status.replicas += 1;
        if running_and_ready(p) {
            status.ready_replicas += 1;
            if pods::is_available(p, set.min_ready_seconds, now) {
                status.available_replicas += 1;
            }
        }
        if !terminating(p) {
            let r = identity::revision(p);
            if r == revs.current {
                status.current_replicas += 1;
            }
            if r == revs.update {
                status.updated_replicas += 1;
            }
        }
    }
}

/// `completeRollingUpdate`: a rolling update whose every replica is updated and ready is
/// done: the update revision becomes the current one.
pub fn complete_rolling_update(set: &Set, status: &mut Status) {
    if !set.on_delete
        && status.updated_replicas == set.replicas
        && status.ready_replicas == set.replicas
        && status.replicas == set.replicas
    {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
}

/// `getStatefulSetMaxUnavailable`: an absolute number or a percentage of the replicas
/// (rounded down), at least 1.
pub fn max_unavailable(v: Option<&IntOrString>, replicas: i32) -> Result<i32, String> {
    let n = match v {
        None => 1,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| format!("invalid maxUnavailable {s:?}"))?;
            (pct * i64::from(replicas) / 100) as i32
        }
    };
    Ok(n.max(1))
}

/// `newVersionedStatefulSetPod`'s choice: a pod below the partition is made at the current
/// revision, any other at the update revision.
pub fn at_current_revision(set: &Set, ordinal: i32) -> bool {
    // Upstream's condition, precedence included: `rolling && (no rollingUpdate && below
    // currentReplicas) || (rollingUpdate && below partition)`.
    (!set.on_delete && set.partition.is_none() && ordinal < set.start + set.shown.current_replicas)
        || set.partition.is_some_and(|p| ordinal < set.start + p)
}

struct Ctx<'a> {
    set: &'a Set,
    claims: &'a HashMap<String, Arc<PersistentVolumeClaim>>,
}

impl Ctx<'_> {
    fn claim(&self, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(name)
    }

    /// `createPersistentVolumeClaims`: the pod's missing claims (with the owners the policy
    /// asks for), or a stop when one is being deleted.
    fn ensure_claims(&self, ordinal: i32, pod_uid: Option<&str>) -> Unit {
        let set = self.set;
        let pod_name = identity::pod_name(&set.name, ordinal);
        let mut unit = Vec::new();
        for mut c in identity::claims_for(set, ordinal) {
            let cname = c.metadata.name.clone().unwrap_or_default();
            match self.claim(&cname) {
                Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                    unit.push(Step::Fail(format!("pvc {cname} is being deleted")));
                    return unit;
                }
                Some(_) => {}
                None => {
                    let owners = identity::claim_owners(
                        &[],
                        set.retention,
                        Obj::set(set),
                        Obj::pod(&pod_name, pod_uid),
                        set.in_range(ordinal),
                    );
                    c.metadata.owner_references = (!owners.is_empty()).then_some(owners);
                    unit.push(Step::CreateClaim { pod: pod_name.clone(), claim: Box::new(c) });
                }
            }
        }
        unit
    }

    /// `UpdatePodClaimForRetentionPolicy`: the owner references of the pod's existing
    /// claims that do not follow the retention policy.
    fn owner_fixes(&self, ordinal: i32, pod_uid: Option<&str>) -> Unit {
        let set = self.set;
        let pod_name = identity::pod_name(&set.name, ordinal);
        let (so, po, in_range) = (Obj::set(set), Obj::pod(&pod_name, pod_uid), set.in_range(ordinal));
        let mut unit = Vec::new();
        for c in identity::claims_for(set, ordinal) {
            let cname = c.metadata.name.unwrap_or_default();
            let Some(existing) = self.claim(&cname) else { continue };
            let refs = existing.metadata.owner_references.clone().unwrap_or_default();
            if !identity::claim_owners_up_to_date(&refs, set.retention, so, po, in_range) {
                unit.push(Step::SetClaimOwners {
                    claim: cname,
                    pod: pod_name.clone(),
                    resource_version: existing.metadata.resource_version.clone(),
                    owners: identity::claim_owners(&refs, set.retention, so, po, in_range),
                });
            }
        }
        unit
    }

    /// `PodClaimIsStale`: a claim of a pod to create still belongs to an earlier pod.
    fn claims_stale(&self, ordinal: i32) -> bool {
        let set = self.set;
        let pod_name = identity::pod_name(&set.name, ordinal);
        identity::claims_for(set, ordinal).iter().any(|c| {
            let cname = c.metadata.name.as_deref().unwrap_or("");
            self.claim(cname).is_some_and(|e| {
                let refs = e.metadata.owner_references.clone().unwrap_or_default();
                identity::claim_is_stale(&refs, set.retention, Obj::pod(&pod_name, None))
            })
        })
    }
}

/// `processReplica` for the slot of `ordinal`: the unit, and whether an OrderedReady set
/// must stop here.
fn process_replica(
    cx: &Ctx,
    inp: &Input,
    monotonic: bool,
    ordinal: i32,
    slot: Option<&Arc<Pod>>,
    stale_claims: &mut bool,
) -> (Unit, bool) {
    let set = cx.set;
    let revs = inp.revisions;
    let Some(pod) = slot else {
        let pname = identity::pod_name(&set.name, ordinal);
        if inp.in_flight.contains(&pname) {
            return (Vec::new(), true);
        }
        if cx.claims_stale(ordinal) {
            *stale_claims = true;
            return (Vec::new(), true);
        }
        let (template, revision) = if at_current_revision(set, ordinal) {
            (&revs.current_template, &revs.current)
        } else {
            (&revs.update_template, &revs.update)
        };
        let mut unit = cx.ensure_claims(ordinal, None);
        if !matches!(unit.last(), Some(Step::Fail(_))) {
            unit.push(Step::CreatePod(Box::new(identity::new_pod(set, template, revision, ordinal))));
            unit.extend(cx.owner_fixes(ordinal, None));
        }
        return (unit, true);
    };
    if matches!(phase(pod), "Failed" | "Succeeded") {
        let unit = if terminating(pod) {
            Vec::new()
        } else {
            vec![Step::DeletePod { name: name(pod).to_string(), why: Why::Finished }]
        };
        return (unit, true);
    }
    let uid = pod.metadata.uid.as_deref();
    // A pending pod's claims are made (not for one already going).
    let pending = phase(pod) == "Pending" && !terminating(pod);
    let mut unit = Vec::new();
    if pending {
        unit.extend(cx.ensure_claims(ordinal, uid));
        if matches!(unit.last(), Some(Step::Fail(_))) {
            return (unit, true);
        }
        unit.extend(cx.owner_fixes(ordinal, uid));
    }
    if monotonic
        && (terminating(pod) || !running_and_ready(pod) || !pods::is_available(pod, set.min_ready_seconds, inp.now))
    {
        return (unit, true);
    }
    if !identity::identity_matches(set, pod) {
        unit.push(Step::LabelPod { name: name(pod).to_string(), labels: identity::identity_labels(set, ordinal) });
    }
    if !pending {
        if !identity::storage_matches(set, pod) {
            // A running pod's volumes cannot change; its missing claims are made at least.
            unit.extend(cx.ensure_claims(ordinal, uid));
            if matches!(unit.last(), Some(Step::Fail(_))) {
                return (unit, true);
            }
        }
        unit.extend(cx.owner_fixes(ordinal, uid));
    }
    (unit, false)
}

/// `updateStatefulSet`: the plan for one sync.
pub fn plan(inp: &Input) -> Plan {
    let set = inp.set;
    let revs = inp.revisions;
    let now = inp.now;
    let min_ready = set.min_ready_seconds;
    let cx = Ctx { set, claims: inp.claims };

    // The pods in range by ordinal, and the condemned ones (out of range), highest first.
    let mut replicas: Vec<Option<&Arc<Pod>>> = vec![None; set.replicas.max(0) as usize];
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for p in inp.pods {
        let Some(ord) = identity::ordinal(p) else { continue };
        if set.in_range(ord) {
            replicas[(ord - set.start) as usize] = Some(p);
        } else if ord >= 0 {
            condemned.push((ord, p));
        }
    }
    condemned.sort_by_key(|(ord, _)| std::cmp::Reverse(*ord));

    let mut status = Status {
        observed_generation: set.generation,
        current_revision: revs.current.clone(),
        update_revision: revs.update.clone(),
        collision_count: Some(revs.collision_count),
        ..Default::default()
    };
    let present: Vec<&Arc<Pod>> = replicas.iter().flatten().copied().chain(condemned.iter().map(|(_, p)| *p)).collect();
    count(&mut status, &present, set, revs, now);
    let recheck_in = recheck(set, &present, status.available_replicas, now);

    // The first unavailable pod: in range (a missing one counts), else the lowest condemned.
    let first_unavailable: Option<String> = replicas
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_none_or(|p| unavailable(p, min_ready, now)))
        .map(|(i, s)| s.map_or_else(|| identity::pod_name(&set.name, set.start + i as i32), |p| name(p).to_string()))
        .or_else(|| {
            condemned.iter().rev().find(|(_, p)| unavailable(p, min_ready, now)).map(|(_, p)| name(p).to_string())
        });

    let mut out = Plan { status, phases: Vec::new(), recheck_in };
    if set.deleting {
        complete_rolling_update(set, &mut out.status);
        return out;
    }
    let monotonic = !set.parallel;
    let finish = |mut out: Plan| {
        out.phases.retain(|p| !p.is_empty());
        complete_rolling_update(set, &mut out.status);
        out
    };

    // 1. The replicas in range, in ordinal order.
    let mut units = Vec::new();
    let mut stop = false;
    let mut stale_claims = false;
    for (i, slot) in replicas.iter().enumerate() {
        let (unit, block) = process_replica(&cx, inp, monotonic, set.start + i as i32, *slot, &mut stale_claims);
        let failed = matches!(unit.last(), Some(Step::Fail(_)));
        if !unit.is_empty() {
            units.push(unit);
        }
        if monotonic && (block || failed) {
            stop = true;
            break;
        }
    }
    out.phases.push(units);
    if stale_claims {
        // Nothing watched announces the old claim's removal: look again soon.
        out.recheck_in = Some(out.recheck_in.map_or(STALE_CLAIM_RECHECK, |s| s.min(STALE_CLAIM_RECHECK)));
    }
    if stop {
        return finish(out);
    }

    // 2. The claims of condemned pods follow the retention policy before they go.
    let units: Vec<Unit> = condemned
        .iter()
        .map(|(ord, p)| cx.owner_fixes(*ord, p.metadata.uid.as_deref()))
        .filter(|u| !u.is_empty())
        .collect();
    out.phases.push(units);

    // 3. Condemned pods, highest ordinal first; OrderedReady one at a time and only while
    // every other pod is healthy.
    let mut units = Vec::new();
    for (_, p) in &condemned {
        if terminating(p) {
            if monotonic {
                stop = true;
                break;
            }
            continue;
        }
        let first = first_unavailable.as_deref() == Some(name(p));
        if monotonic && unavailable(p, min_ready, now) && !first {
            stop = true;
            break;
        }
        units.push(vec![Step::DeletePod { name: name(p).to_string(), why: Why::ScaleDown }]);
        if monotonic {
            stop = true;
            break;
        }
    }
    out.phases.push(units);
    if stop || set.on_delete {
        return finish(out);
    }

    // 4. The rolling update, highest ordinal first, down to the partition.
    let update_min = set.partition.unwrap_or(0).max(0) as usize;
    let mut units = Vec::new();
    match &set.max_unavailable {
        None => {
            for slot in replicas.iter().skip(update_min).rev() {
                let Some(p) = slot else { break };
                if identity::revision(p) != revs.update && !terminating(p) {
                    units.push(vec![Step::DeletePod { name: name(p).to_string(), why: Why::Update }]);
                    out.status.current_replicas -= 1;
                    break;
                }
                if unavailable(p, min_ready, now) {
                    break;
                }
            }
        }
        Some(mu) => match max_unavailable(Some(mu), set.replicas) {
            Err(e) => units.push(vec![Step::Fail(e)]),
            Ok(max) => {
                let down = replicas.iter().filter(|s| s.is_none_or(|p| unavailable(p, min_ready, now))).count() as i32;
                let mut budget = max - down;
                for p in replicas.iter().skip(update_min).rev().flatten() {
                    if budget <= 0 {
                        break;
                    }
                    if identity::revision(p) != revs.update && !terminating(p) {
                        units.push(vec![Step::DeletePod { name: name(p).to_string(), why: Why::Update }]);
                        out.status.current_replicas -= 1;
                        budget -= 1;
                    }
                }
            }
        },
    }
    out.phases.push(units);
    finish(out)
}

/// When to look again for pods becoming available (upstream requeues after
/// `minReadySeconds` while not all are).
fn recheck(set: &Set, pods: &[&Arc<Pod>], available: i32, now: Timestamp) -> Option<i64> {
    if set.min_ready_seconds <= 0 {
        return None;
    }
    let soonest = pods.iter().filter_map(|p| pods::until_available(p, set.min_ready_seconds, now)).min();
    match soonest {
        Some(s) => Some(s.max(1)),
        None if available != set.replicas => Some(i64::from(set.min_ready_seconds)),
        None => None,
    }
}

/// `slowStartBatch` sizes for `n` units: 1, 2, 4, … (at most [`MAX_BATCH`]).
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut size, mut left) = (1usize, n);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size = (size * 2).min(MAX_BATCH);
    }
    out
}

/// `ClaimPods` (filtered by `isMemberOf`): the set's pods among the namespace's, the
/// orphans to adopt (selected, named as its members, not being deleted; none while the set
/// is being deleted) and its pods to release (no longer selected).
#[derive(Debug, Default)]
pub struct Claims {
    pub owned: Vec<Arc<Pod>>,
    pub adopt: Vec<Arc<Pod>>,
    pub release: Vec<Arc<Pod>>,
}

pub fn claim(set: &Set, ns_pods: &[Arc<Pod>]) -> Claims {
    let mut c = Claims::default();
    for p in ns_pods {
        if p.metadata.namespace.as_deref() != Some(set.namespace.as_str()) {
            continue;
        }
        let matches = set.selects(p) && identity::is_member(&set.name, p);
        match pods::controller_of(&p.metadata) {
            Some(r) if r.uid == set.uid => {
                if matches {
                    c.owned.push(p.clone());
                } else if !set.deleting {
                    c.release.push(p.clone());
                }
            }
            Some(_) => {}
            None => {
                if matches && !set.deleting && p.metadata.deletion_timestamp.is_none() {
                    c.adopt.push(p.clone());
                }
            }
        }
    }
    c
}

/// `ListControllerRevisions` + orphans: the revisions the set's selector matches that it
/// controls, and the orphans among them (to adopt).
pub fn claim_revisions(
    set: &Set,
    revisions: &[Arc<ControllerRevision>],
) -> (Vec<Arc<ControllerRevision>>, Vec<Arc<ControllerRevision>>) {
    let mut owned = Vec::new();
    let mut orphans = Vec::new();
    for r in revisions {
        if r.metadata.namespace.as_deref().is_some_and(|n| n != set.namespace)
            || !set.selects_labels(&pods::labels(&r.metadata))
        {
            continue;
        }
        match pods::controller_of(&r.metadata) {
            Some(c) if c.uid == set.uid => owned.push(r.clone()),
            Some(_) => {}
            None => orphans.push(r.clone()),
        }
    }
    (owned, orphans)
}

/// Whether the status to write differs from the one shown (`inconsistentStatus`, plus the
/// collision count).
pub fn status_changed(set: &Set, status: &Status) -> bool {
    &set.shown != status
}

#[cfg(test)]
mod tests;
