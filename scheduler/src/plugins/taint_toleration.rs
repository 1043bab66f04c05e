//! TaintToleration: reject nodes with a NoSchedule/NoExecute taint the pod does not
//! tolerate; prefer nodes with fewer untolerated PreferNoSchedule taints.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::{
    framework::{normalize::default_normalize, FilterResult, Rejection},
    node_info::NodeData,
    pod_info::PodInfo,
};

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    fn set(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    if set(&t.effect).is_some_and(|e| e != taint.effect) {
        return false;
    }
    if set(&t.key).is_some_and(|k| k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule/NoExecute taint not tolerated (`FindMatchingUntoleratedTaint` with
/// `DoNotScheduleTaintsFilterFunc`).
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").find(|t| !tolerated(tolerations, t))
}

pub fn filter(pod: &PodInfo, node: &NodeData) -> FilterResult {
    match untolerated_taint(&node.taints, &pod.tolerations) {
        None => Ok(()),
        Some(t) => Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        ))),
    }
}

/// The pod's tolerations that count for scoring (effect PreferNoSchedule or empty).
pub fn prefer_no_schedule_tolerations(pod: &PodInfo) -> Vec<Toleration> {
    pod.tolerations
        .iter()
        .filter(|t| matches!(t.effect.as_deref(), None | Some("") | Some("PreferNoSchedule")))
        .cloned()
        .collect()
}

/// Raw score: the number of PreferNoSchedule taints not tolerated.
pub fn score(tolerations: &[Toleration], node: &NodeData) -> i64 {
    node.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !tolerated(tolerations, t)).count() as i64
}

/// Fewer intolerable taints is better.
pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*};

    fn node_with(taints: Vec<Taint>) -> NodeData {
        let mut n = node_data(&std_node("n1", &[]));
        n.taints = taints;
        n
    }

    #[test]
    fn toleration_matching() {
        let t = taint("k", "v", "NoSchedule");
        assert!(tolerates(&toleration("k", "Equal", "v", "NoSchedule"), &t));
        assert!(tolerates(&toleration("k", "", "v", ""), &t));
        assert!(tolerates(&toleration("k", "Exists", "", ""), &t));
        assert!(tolerates(&toleration("", "Exists", "", ""), &t), "empty key with Exists tolerates everything");
        assert!(!tolerates(&toleration("k", "Equal", "w", "NoSchedule"), &t));
        assert!(!tolerates(&toleration("k", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
        assert!(!tolerates(&toleration("k", "Bogus", "v", ""), &t));
    }

    #[test]
    fn filter_rejects_untolerated_hard_taints() {
        let cp = taint("node-role.kubernetes.io/control-plane", "", "NoSchedule");
        let n = node_with(vec![taint("soft", "x", "PreferNoSchedule"), cp.clone()]);
        let mut p = pod("default", "p", &[]);
        let err = filter(&info(&p), &n).unwrap_err();
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(err.reasons, vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]);
        spec_mut(&mut p).tolerations =
            Some(vec![toleration("node-role.kubernetes.io/control-plane", "Exists", "", "NoSchedule")]);
        assert!(filter(&info(&p), &n).is_ok());
        let n = node_with(vec![taint("dedicated", "gpu", "NoExecute")]);
        assert_eq!(filter(&info(&p), &n).unwrap_err().reasons, vec!["node(s) had untolerated taint {dedicated: gpu}"]);
    }

    #[test]
    fn score_counts_prefer_no_schedule() {
        let n = node_with(vec![
            taint("a", "1", "PreferNoSchedule"),
            taint("b", "1", "PreferNoSchedule"),
            taint("c", "1", "NoSchedule"),
        ]);
        let mut p = pod("default", "p", &[]);
        assert_eq!(score(&prefer_no_schedule_tolerations(&info(&p)), &n), 2);
        spec_mut(&mut p).tolerations =
            Some(vec![toleration("a", "Exists", "", "PreferNoSchedule"), toleration("b", "Exists", "", "NoSchedule")]);
        // The NoSchedule toleration does not count for scoring.
        assert_eq!(score(&prefer_no_schedule_tolerations(&info(&p)), &n), 1);
        let mut s = [0, 1, 2];
        normalize(&mut s);
        assert_eq!(s, [100, 50, 0]);
    }
}
