//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints as a filter (a node is
//! rejected when placing the pod there would make its domain exceed the global minimum by
//! more than maxSkew), `ScheduleAnyway` constraints as a score favouring emptier domains.
//! `nodeAffinityPolicy` defaults to Honor and `nodeTaintsPolicy` to Ignore, like upstream.
//! (Upstream's cluster-level default constraints, derived from Services and ReplicaSets,
//! are not applied: only a pod's own constraints count.)

pub mod filter;
pub mod score;

pub use filter::{filter, pre_filter, FilterState};
pub use score::{normalize, pre_score, score, ScoreState};

use crate::{
    labels::Selector, node_info::NodeData, plugins::taint_toleration::untolerated_taint, pod_info::PodInfo,
    pod_terms::SpreadConstraint,
};

/// Whether the node has every constraint's topology key.
fn has_all_keys(node: &NodeData, constraints: &[SpreadConstraint]) -> bool {
    constraints.iter().all(|c| node.labels.contains_key(&c.topology_key))
}

/// Whether the node counts as a domain for `c` under its node inclusion policies.
fn node_included(c: &SpreadConstraint, pod: &PodInfo, node: &NodeData) -> bool {
    if c.honor_node_affinity && !pod.node_affinity.matches(&node.name, &node.labels) {
        return false;
    }
    !(c.honor_node_taints && untolerated_taint(&node.taints, &pod.tolerations).is_some())
}

/// Pods in `namespace` matching `selector`, not being deleted (`countPodsMatchSelector`).
fn count_matching(pods: &[std::sync::Arc<PodInfo>], selector: &Selector, namespace: &str) -> i64 {
    if selector.is_empty() {
        return 0;
    }
    pods.iter().filter(|p| !p.deleting && p.namespace == namespace && selector.matches(&p.labels)).count() as i64
}

#[cfg(test)]
pub(crate) mod test_support {
    use k8s_openapi::{
        api::core::v1::{Pod, TopologySpreadConstraint},
        apimachinery::pkg::apis::meta::v1::LabelSelector,
    };

    use crate::testutil::*;

    pub fn spread(p: Pod, key: &str, max_skew: i32, when: &str, app: &str) -> Pod {
        let mut p = p;
        let c = TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector { match_labels: Some(labels(&[("app", app)])), ..Default::default() }),
            ..Default::default()
        };
        spec_mut(&mut p).topology_spread_constraints.get_or_insert_with(Vec::new).push(c);
        p
    }
}
