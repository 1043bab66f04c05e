//! The PodDisruptionBudget status (upstream `pkg/controller/disruption` and
//! component-helpers' `poddisruptionbudget`), as pure functions: the pods' distinct
//! controllers, expected and desired healthy counts, the `disruptedPods` still pending,
//! healthy pods, `disruptionsAllowed`, the `DisruptionAllowed` condition, and whether the
//! status shown is already up to date.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};

use crate::pods;

/// Upstream `DeletionTimeout`: how long a pod the eviction API admitted (listed in
/// `disruptedPods`) is expected to take to show a deletionTimestamp.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(2 * 60);

pub const CONDITION: &str = "DisruptionAllowed";
pub const SUFFICIENT: &str = "SufficientPods";
pub const INSUFFICIENT: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

/// `metav1.LabelSelectorAsSelector` of the budget's selector: `None` (no selector, or an
/// invalid one) selects no pod; an empty selector selects every pod of the namespace.
pub fn selector(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let s = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(s).ok()
}

/// The pods of the budget's namespace that it selects.
pub fn select(pdb: &PodDisruptionBudget, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let Some(sel) = selector(pdb) else { return vec![] };
    let ns = pdb.metadata.namespace.as_deref();
    pods.iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns && sel.matches(&pods::labels(&p.metadata)))
        .cloned()
        .collect()
}

/// `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| "invalid value for IntOrString: invalid type: string is not a percentage".to_string())?;
            let x = p * i64::from(total);
            Ok((if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) }) as i32)
        }
    }
}

/// Whether the budget needs its pods' controllers' scale (maxUnavailable, or a percentage
/// minAvailable); an integer minAvailable counts the pods themselves.
pub fn needs_scale(spec: &PodDisruptionBudgetSpec) -> bool {
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// `getExpectedPodCount`: (expectedPods, desiredHealthy) from the number of selected pods
/// and, when [`needs_scale`], the summed scale of their controllers.
pub fn expected_and_desired(spec: &PodDisruptionBudgetSpec, pod_count: i32, scale: i32) -> Result<(i32, i32), String> {
    if let Some(mu) = &spec.max_unavailable {
        let max_unavailable = scaled(mu, scale, true)?;
        return Ok((scale, (scale - max_unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pod_count, *n)),
        Some(v @ IntOrString::String(_)) => Ok((scale, scaled(v, scale, true)?)),
        None => Ok((0, 0)),
    }
}

/// The pods' distinct controller references (one per controller uid, with a pod it
/// controls, for messages) and the pods no controller manages.
pub fn controllers(pods: &[Arc<Pod>]) -> (Vec<(OwnerReference, String)>, Vec<String>) {
    let mut seen = HashSet::new();
    let (mut refs, mut unmanaged) = (Vec::new(), Vec::new());
    for p in pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        match pods::controller_of(&p.metadata) {
            None => unmanaged.push(name),
            Some(r) => {
                if seen.insert(r.uid.clone()) {
                    refs.push((r.clone(), name));
                }
            }
        }
    }
    (refs, unmanaged)
}

/// The API group of an `apiVersion` (`""` for the core group).
pub fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// `buildDisruptedPodMap`: the `disruptedPods` entries still pending (the pod exists, is
/// not yet being deleted and its timeout has not run out), when to look again, and the pods
/// whose deletion never came.
pub fn disrupted(
    pods: &[Arc<Pod>],
    shown: Option<&BTreeMap<String, Time>>,
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>, Vec<String>) {
    let mut keep = BTreeMap::new();
    let (mut recheck, mut expired): (Option<Timestamp>, Vec<String>) = (None, Vec::new());
    let Some(shown) = shown else { return (keep, recheck, expired) };
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(at) = shown.get(&name) else { continue };
        let due = at.0 + DELETION_TIMEOUT;
        if due < now {
            expired.push(name);
        } else {
            recheck = Some(recheck.map_or(due, |r| r.min(due)));
            keep.insert(name, at.clone());
        }
    }
    (keep, recheck, expired)
}

/// `countHealthyPods`: ready pods that are neither being deleted nor about to be.
pub fn healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or("");
            !disrupted.get(name).is_some_and(|at| at.0 + DELETION_TIMEOUT > now)
        })
        .filter(|p| pods::is_ready(p))
        .count() as i32
}

/// `apimeta.SetStatusCondition`: add or update the condition of `c.type_`; its transition
/// time moves only when its status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        None => conditions.push(c),
        Some(x) => {
            if x.status != c.status {
                x.status = c.status;
                x.last_transition_time = c.last_transition_time;
            }
            x.reason = c.reason;
            x.message = c.message;
            x.observed_generation = c.observed_generation;
        }
    }
}

fn now_time(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn condition(status: &str, reason: &str, message: String, generation: Option<i64>, now: Timestamp) -> Condition {
    Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now_time(now),
    }
}

/// `ConditionsAreUpToDate`.
pub fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let s = pdb.status.clone().unwrap_or_default();
    let Some(c) = s.conditions.iter().flatten().find(|c| c.type_ == CONDITION) else { return false };
    if s.observed_generation != pdb.metadata.generation {
        return false;
    }
    if s.disruptions_allowed > 0 {
        c.status == "True" && c.reason == SUFFICIENT
    } else {
        c.status == "False" && c.reason == INSUFFICIENT
    }
}

/// The computed part of a budget's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub expected_pods: i32,
    pub disrupted: BTreeMap<String, Time>,
}

/// `disruptionsAllowed`: healthy beyond desired, and none while no pods are expected (a
/// budget whose first pods just appeared stays safe until its status catches up).
pub fn disruptions_allowed(c: &Counts) -> i32 {
    let d = c.current_healthy - c.desired_healthy;
    if c.expected_pods <= 0 || d <= 0 {
        0
    } else {
        d
    }
}

/// `updatePdbStatus`: the status to write, or `None` if the one shown is up to date.
pub fn status(pdb: &PodDisruptionBudget, c: &Counts, now: Timestamp) -> Option<PodDisruptionBudgetStatus> {
    let allowed = disruptions_allowed(c);
    let s = pdb.status.clone().unwrap_or_default();
    let same = s.current_healthy == c.current_healthy
        && s.desired_healthy == c.desired_healthy
        && s.expected_pods == c.expected_pods
        && s.disruptions_allowed == allowed
        && s.disrupted_pods.clone().unwrap_or_default() == c.disrupted
        && s.observed_generation == pdb.metadata.generation
        && conditions_up_to_date(pdb);
    if same {
        return None;
    }
    let mut conditions = s.conditions.unwrap_or_default();
    let generation = pdb.metadata.generation;
    let cond = if allowed > 0 {
        condition("True", SUFFICIENT, String::new(), generation, now)
    } else {
        condition("False", INSUFFICIENT, String::new(), generation, now)
    };
    set_condition(&mut conditions, cond);
    Some(PodDisruptionBudgetStatus {
        current_healthy: c.current_healthy,
        desired_healthy: c.desired_healthy,
        expected_pods: c.expected_pods,
        disruptions_allowed: allowed,
        disrupted_pods: (!c.disrupted.is_empty()).then(|| c.disrupted.clone()),
        observed_generation: generation,
        conditions: Some(conditions),
    })
}

/// `failSafe`: after a failed sync, allow no disruptions (`DisruptionAllowed` False,
/// `SyncFailed`, with the error); `None` if the status already says so.
pub fn fail_safe(pdb: &PodDisruptionBudget, message: &str, now: Timestamp) -> Option<PodDisruptionBudgetStatus> {
    let mut s = pdb.status.clone().unwrap_or_default();
    let already = s.disruptions_allowed == 0
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == CONDITION && c.status == "False" && c.reason == SYNC_FAILED && c.message == message);
    if already {
        return None;
    }
    s.disruptions_allowed = 0;
    let generation = s.observed_generation;
    set_condition(
        s.conditions.get_or_insert_with(Vec::new),
        condition("False", SYNC_FAILED, message.into(), generation, now),
    );
    Some(s)
}

#[cfg(test)]
mod tests;
