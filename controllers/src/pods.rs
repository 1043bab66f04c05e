//! Facts about pods every workload controller needs (Kubernetes' `podutil`): active,
//! ready, available, and a pod made from a template for an owner.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Not finished and not being deleted (`controller.IsPodActive`).
pub fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && p.metadata.deletion_timestamp.is_none()
}

/// Being deleted but not finished (counted as terminating).
pub fn is_terminating(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    p.metadata.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed"
}

/// The `Ready` condition is True.
pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// When the pod last became Ready (`None` = not ready).
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Ready for at least `min_ready_seconds` at `now` (`podutil.IsPodAvailable`).
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// Seconds until a ready pod becomes available (`None` if it is not ready or already is).
pub fn until_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    let t = ready_since(p)?;
    let left = t.as_second() + i64::from(min_ready_seconds) - now.as_second();
    (left > 0).then_some(left)
}

/// The controller owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// A controller owner reference (`blockOwnerDeletion` and `controller` true).
pub fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod to create from `template` for its controller (`GetPodFromTemplate`): labels,
/// annotations and finalizers of the template, `generateName` `<prefix>-`.
pub fn from_template(template: &PodTemplateSpec, namespace: &str, prefix: &str, owner: OwnerReference) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut prefix = format!("{prefix}-");
    // generateName leaves room for its random suffix (names are at most 63 characters).
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: Some(namespace.to_string()),
            labels: tmeta.labels.clone(),
            annotations: tmeta.annotations.clone(),
            finalizers: tmeta.finalizers.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// `Toleration.ToleratesTaint`: effect (if set) and key (if set) match, and the value does
/// (`Equal`, the default) or need not (`Exists`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn phase_rank(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None | Some("") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
}

/// Upstream's `ActivePodsWithRanks` order, the pod to delete first first: unscheduled,
/// then pending before running, not ready before ready, more of its owner's pods on its
/// node (`crowd`) first, ready for less time first, more restarts first, newest first.
pub fn deletion_order(a: &Pod, crowd_a: usize, b: &Pod, crowd_b: usize) -> Ordering {
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    node(a)
        .cmp(&node(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(crowd_b.cmp(&crowd_a))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (ta, tb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => y.cmp(&x),
            }
        })
}

/// The labels of an object (empty when none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn pod_ready_at(t: Option<Timestamp>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if t.is_some() { "True" } else { "False" }.into(),
                    last_transition_time: t.map(Time),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = Timestamp::from_second(1_000).unwrap();
        let p = pod_ready_at(Some(Timestamp::from_second(995).unwrap()));
        assert!(is_ready(&p));
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 6, now));
        assert_eq!(until_available(&p, 10, now), Some(5));
        let not = pod_ready_at(None);
        assert!(!is_ready(&not) && !is_available(&not, 0, now));
    }

    #[test]
    fn active_excludes_finished_and_deleting_pods() {
        let mut p = pod_ready_at(None);
        assert!(is_active(&p));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_active(&p));
        let mut d = pod_ready_at(None);
        d.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!is_active(&d) && is_terminating(&d));
    }

    #[test]
    fn template_pods_get_a_short_enough_generate_name() {
        let t = PodTemplateSpec::default();
        let owner = controller_ref("apps/v1", "ReplicaSet", "r", "u");
        let p = from_template(&t, "ns", &"x".repeat(80), owner);
        assert_eq!(p.metadata.generate_name.as_ref().unwrap().len(), 58);
        assert_eq!(p.metadata.owner_references.unwrap()[0].controller, Some(true));
    }
}
