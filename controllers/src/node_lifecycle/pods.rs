//! Status changes the node lifecycle controller makes to pods: Ready=False for pods of a
//! node that is not ready (`MarkPodsNotReady`), and the `DisruptionTarget` condition before
//! a taint eviction. Each is one condition, written as a strategic merge patch of
//! `status.conditions` (merged by type, so nothing else the pod says is overwritten). Pure.

use k8s_openapi::{
    api::core::v1::{Pod, PodCondition},
    apimachinery::pkg::apis::meta::v1::Time,
};

/// Whether to mark a node's pods not ready, from its Ready status now and at the last pass:
/// always while it is unreachable (no kubelet will say otherwise), once when it turns
/// `False` (the kubelet is alive and owns its pods' readiness).
pub fn should_mark_not_ready(ready: Option<&str>, was: Option<&str>) -> bool {
    match ready {
        Some("Unknown") => true,
        Some("False") => was == Some("True"),
        _ => false,
    }
}

/// The pod's Ready condition turned `False` (reason and message stay the kubelet's); `None`
/// if it has no Ready condition or it already is `False`.
pub fn not_ready(pod: &Pod, now: &Time) -> Option<PodCondition> {
    let cond = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if cond.status == "False" {
        return None;
    }
    let mut cond = cond.clone();
    cond.status = "False".into();
    cond.last_transition_time = Some(now.clone());
    Some(cond)
}

/// `DisruptionTarget=True` (reason `DeletionByTaintManager`); `None` if the pod already
/// says so.
pub fn disruption_target(pod: &Pod, now: &Time) -> Option<PodCondition> {
    let want = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == want.type_));
    match current {
        Some(c) if c.status == want.status && c.reason == want.reason && c.message == want.message => None,
        _ => Some(want),
    }
}

/// The strategic merge patch setting one pod condition.
pub fn condition_patch(cond: &PodCondition) -> serde_json::Value {
    serde_json::json!({ "status": { "conditions": [cond] } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util_endpoints::tests::pod;

    #[test]
    fn when_to_mark() {
        assert!(should_mark_not_ready(Some("Unknown"), Some("Unknown")));
        assert!(should_mark_not_ready(Some("Unknown"), None));
        assert!(should_mark_not_ready(Some("False"), Some("True")));
        assert!(!should_mark_not_ready(Some("False"), Some("False")));
        assert!(!should_mark_not_ready(Some("False"), None));
        assert!(!should_mark_not_ready(Some("True"), Some("Unknown")));
        assert!(!should_mark_not_ready(None, Some("True")));
    }

    #[test]
    fn marks_ready_false_once() {
        let now = crate::util_api::now();
        let p = pod("a", "10.0.0.1", true);
        let c = not_ready(&p, &now).unwrap();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.last_transition_time.as_ref()),
            ("Ready", "False", Some(&now))
        );
        let patch = condition_patch(&c);
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(patch["status"]["conditions"][0]["status"], "False");
        let mut done = p.clone();
        done.status.as_mut().unwrap().conditions = Some(vec![c]);
        assert_eq!(not_ready(&done, &now), None);
        let mut no_cond = p.clone();
        no_cond.status.as_mut().unwrap().conditions = None;
        assert_eq!(not_ready(&no_cond, &now), None);
    }

    #[test]
    fn disruption_target_added_once() {
        let now = crate::util_api::now();
        let p = pod("a", "10.0.0.1", true);
        let c = disruption_target(&p, &now).unwrap();
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("DisruptionTarget", "True"));
        let mut marked = p.clone();
        marked.status.as_mut().unwrap().conditions.as_mut().unwrap().push(c);
        assert_eq!(disruption_target(&marked, &now), None);
    }
}
