//! The PodTopologySpread filter (hard constraints).

use std::collections::HashMap;

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeData,
    plugins::topology::TopologyCounts,
    pod_info::PodInfo,
    pod_terms::SpreadConstraint,
    snapshot::Snapshot,
};

use super::{count_matching, has_all_keys, node_included};

pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Matching pods per eligible domain, and each key's minimum and domain count.
#[derive(Debug, Clone, Default)]
pub struct FilterState {
    constraints: Vec<SpreadConstraint>,
    counts: TopologyCounts,
    min: HashMap<String, i64>,
    domains: HashMap<String, i64>,
}

/// `None` when the pod has no hard constraints.
pub fn pre_filter(pod: &PodInfo, snap: &Snapshot) -> Option<FilterState> {
    let constraints: Vec<SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).cloned().collect();
    if constraints.is_empty() {
        return None;
    }
    let mut counts = TopologyCounts::default();
    for ni in snap.nodes() {
        let Some(node) = ni.node.as_deref() else { continue };
        if !has_all_keys(node, &constraints) {
            continue;
        }
        for c in &constraints {
            if !node_included(c, pod, node) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else { continue };
            counts.touch(&c.topology_key, value);
            counts.add(&c.topology_key, value, count_matching(&ni.pods, &c.selector, &pod.namespace));
        }
    }
    let mut min = HashMap::new();
    let mut domains = HashMap::new();
    for c in &constraints {
        if let Some(d) = counts.domains(&c.topology_key) {
            domains.insert(c.topology_key.clone(), d.len() as i64);
            min.insert(c.topology_key.clone(), d.values().copied().min().unwrap_or(0));
        }
    }
    Some(FilterState { constraints, counts, min, domains })
}

pub fn filter(pod: &PodInfo, s: &FilterState, node: &NodeData) -> FilterResult {
    for c in &s.constraints {
        let key = &c.topology_key;
        let Some(value) = node.labels.get(key) else {
            return Err(Rejection::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH));
        };
        // No eligible domain for this key at all: nothing to compare against.
        let (Some(&min), Some(&domains)) = (s.min.get(key), s.domains.get(key)) else { continue };
        // Fewer domains than minDomains: the global minimum counts as 0.
        let min = if domains < c.min_domains { 0 } else { min };
        let self_match = i64::from(c.selector.matches(&pod.labels));
        let skew = s.counts.get(key, value) + self_match - min;
        if skew > c.max_skew {
            return Err(Rejection::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, plugins::topology_spread::test_support::spread, testutil::*};

    fn zones() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            std_node("a1", &[("zone", "a")]),
            std_node("a2", &[("zone", "a")]),
            std_node("b1", &[("zone", "b")]),
            std_node("x", &[]),
        ]
    }

    fn web(name: &str, node: &str) -> std::sync::Arc<PodInfo> {
        bound(with_labels(pod("d", name, &[]), &[("app", "web")]), node)
    }

    fn run(snap: &Snapshot, p: &PodInfo) -> Vec<Result<(), (Code, String)>> {
        let s = pre_filter(p, snap).expect("hard constraints");
        snap.nodes()
            .filter_map(|ni| ni.node.as_deref())
            .map(|n| filter(p, &s, n).map_err(|e| (e.code, e.reasons[0].to_string())))
            .collect()
    }

    #[test]
    fn max_skew_against_the_emptiest_domain() {
        let snap = snapshot(&zones(), &[web("w1", "a1"), web("w2", "a2")]);
        let p = info(&with_labels(spread(pod("d", "w3", &[]), "zone", 1, "DoNotSchedule", "web"), &[("app", "web")]));
        let r = run(&snap, &p);
        // Zone a has 2, zone b 0: another in a gives skew 3.
        assert_eq!(r[0], Err((Code::Unschedulable, ERR_REASON_CONSTRAINTS_NOT_MATCH.into())));
        assert!(r[1].is_err());
        assert_eq!(r[2], Ok(()));
        assert_eq!(r[3], Err((Code::UnschedulableAndUnresolvable, ERR_REASON_NODE_LABEL_NOT_MATCH.into())));
        // maxSkew 3 allows it.
        let p = info(&with_labels(spread(pod("d", "w3", &[]), "zone", 3, "DoNotSchedule", "web"), &[("app", "web")]));
        assert!(run(&snap, &p)[0].is_ok());
    }

    #[test]
    fn terminating_pods_and_other_namespaces_do_not_count_nor_does_a_non_matching_pod() {
        let mut dying = with_labels(pod("d", "w1", &[]), &[("app", "web")]);
        dying.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let other_ns = bound(with_labels(pod("e", "w2", &[]), &[("app", "web")]), "a1");
        let snap = snapshot(&zones(), &[bound(dying, "a1"), other_ns]);
        let p = info(&with_labels(spread(pod("d", "w3", &[]), "zone", 1, "DoNotSchedule", "web"), &[("app", "web")]));
        assert!(run(&snap, &p)[0].is_ok());
        // A pod its own selector does not match adds nothing to its domain.
        let snap = snapshot(&zones(), &[web("w1", "a1")]);
        let q = info(&spread(pod("d", "q", &[]), "zone", 1, "DoNotSchedule", "web"));
        assert!(run(&snap, &q)[0].is_ok());
    }

    #[test]
    fn node_affinity_policy_and_min_domains() {
        // Honor (default): zone b is out of the pod's node selector, so a is the only domain.
        let snap = snapshot(&zones(), &[web("w1", "a1")]);
        let mut p = with_labels(spread(pod("d", "w2", &[]), "zone", 1, "DoNotSchedule", "web"), &[("app", "web")]);
        spec_mut(&mut p).node_selector = Some(labels(&[("zone", "a")]));
        assert!(run(&snap, &info(&p))[0].is_ok());
        // minDomains 2 with one eligible domain: the minimum counts as 0, so skew is 2.
        spec_mut(&mut p).topology_spread_constraints.as_mut().unwrap()[0].min_domains = Some(2);
        assert!(run(&snap, &info(&p))[0].is_err());
        // No hard constraints: nothing to do.
        assert!(pre_filter(&info(&spread(pod("d", "s", &[]), "zone", 1, "ScheduleAnyway", "web")), &snap).is_none());
    }
}
