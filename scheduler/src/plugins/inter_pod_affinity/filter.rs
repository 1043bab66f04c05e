//! The InterPodAffinity filter: PreFilter counts matching pods per topology domain over the
//! snapshot once per pod; Filter then checks each node against those counts.

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeData,
    plugins::topology::TopologyCounts,
    pod_info::PodInfo,
    pod_terms::AffinityTerm,
    snapshot::Snapshot,
};

pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// Per-pod counts, computed once by [`pre_filter`].
#[derive(Debug, Clone, Default)]
pub struct FilterState {
    /// Existing pods whose required anti-affinity matches the incoming pod, per domain.
    existing_anti_affinity: TopologyCounts,
    /// Existing pods matching all of the incoming pod's required affinity terms, per domain.
    affinity: TopologyCounts,
    /// Existing pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity: TopologyCounts,
    /// The incoming pod matches all its own required affinity terms.
    self_match: bool,
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, snap: &Snapshot) -> bool {
    !terms.is_empty()
        && terms.iter().all(|t| t.matches(&pod.namespace, &pod.labels, snap.namespace_labels(&pod.namespace)))
}

/// `None` when there is nothing to check (upstream's Skip).
pub fn pre_filter(pod: &PodInfo, snap: &Snapshot) -> Option<FilterState> {
    let mut anti_nodes = snap.nodes_with_anti_affinity_pods().peekable();
    if !pod.affinity.has_required() && anti_nodes.peek().is_none() {
        return None;
    }
    let mut s = FilterState::default();
    let own_ns_labels = snap.namespace_labels(&pod.namespace);
    for ni in anti_nodes {
        let labels = ni.labels();
        for existing in &ni.pods {
            for t in &existing.affinity.required_anti_affinity {
                if t.matches(&pod.namespace, &pod.labels, own_ns_labels) {
                    s.existing_anti_affinity.add_for_node(&t.topology_key, labels, 1);
                }
            }
        }
    }
    let aff = &pod.affinity.required_affinity;
    let anti = &pod.affinity.required_anti_affinity;
    if !aff.is_empty() || !anti.is_empty() {
        for ni in snap.nodes() {
            let labels = ni.labels();
            for existing in &ni.pods {
                if matches_all(aff, existing, snap) {
                    for t in aff {
                        s.affinity.add_for_node(&t.topology_key, labels, 1);
                    }
                }
                let ns_labels = snap.namespace_labels(&existing.namespace);
                for t in anti {
                    if t.matches(&existing.namespace, &existing.labels, ns_labels) {
                        s.anti_affinity.add_for_node(&t.topology_key, labels, 1);
                    }
                }
            }
        }
    }
    s.self_match = matches_all(aff, pod, snap);
    Some(s)
}

fn satisfies_affinity(pod: &PodInfo, s: &FilterState, node: &NodeData) -> bool {
    let mut pods_exist = true;
    for t in &pod.affinity.required_affinity {
        let Some(v) = node.labels.get(&t.topology_key) else { return false };
        if s.affinity.get(&t.topology_key, v) <= 0 {
            pods_exist = false;
        }
    }
    // The first pod of a group with affinity to itself may go anywhere with the topology.
    pods_exist || (s.affinity.is_empty() && s.self_match)
}

fn satisfies_anti_affinity(pod: &PodInfo, s: &FilterState, node: &NodeData) -> bool {
    pod.affinity
        .required_anti_affinity
        .iter()
        .all(|t| node.labels.get(&t.topology_key).is_none_or(|v| s.anti_affinity.get(&t.topology_key, v) <= 0))
}

fn satisfies_existing_anti_affinity(s: &FilterState, node: &NodeData) -> bool {
    s.existing_anti_affinity.is_empty() || node.labels.iter().all(|(k, v)| s.existing_anti_affinity.get(k, v) <= 0)
}

pub fn filter(pod: &PodInfo, s: &FilterState, node: &NodeData) -> FilterResult {
    if !satisfies_affinity(pod, s, node) {
        return Err(Rejection::unresolvable(ERR_REASON_AFFINITY));
    }
    if !satisfies_anti_affinity(pod, s, node) {
        return Err(Rejection::unschedulable(ERR_REASON_ANTI_AFFINITY));
    }
    if !satisfies_existing_anti_affinity(s, node) {
        return Err(Rejection::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*};
    use k8s_openapi::{
        api::core::v1::{Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity},
        apimachinery::pkg::apis::meta::v1::LabelSelector,
    };

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector { match_labels: Some(labels(&[("app", app)])), ..Default::default() }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_affinity(p: Pod, aff: Vec<PodAffinityTerm>, anti: Vec<PodAffinityTerm>) -> Pod {
        let mut p = p;
        spec_mut(&mut p).affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(aff),
                ..Default::default()
            }),
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(anti),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            std_node("n1", &[("zone", "a")]),
            std_node("n2", &[("zone", "a")]),
            std_node("n3", &[("zone", "b")]),
            std_node("n4", &[]),
        ]
    }

    fn run(snap: &Snapshot, p: &PodInfo) -> Vec<Result<(), (Code, String)>> {
        let s = pre_filter(p, snap);
        snap.nodes()
            .filter_map(|ni| ni.node.as_deref())
            .map(|n| match &s {
                None => Ok(()),
                Some(s) => filter(p, s, n).map_err(|e| (e.code, e.reasons[0].to_string())),
            })
            .collect()
    }

    #[test]
    fn required_affinity_follows_matching_pods_topology() {
        let db = bound(with_labels(pod("d", "db", &[]), &[("app", "db")]), "n1");
        let snap = snapshot(&nodes(), &[db]);
        let p = info(&with_affinity(pod("d", "web", &[]), vec![term("db", "zone")], vec![]));
        let r = run(&snap, &p);
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1], Ok(()), "same zone as the db pod");
        assert_eq!(r[2], Err((Code::UnschedulableAndUnresolvable, ERR_REASON_AFFINITY.into())));
        assert_eq!(r[3], Err((Code::UnschedulableAndUnresolvable, ERR_REASON_AFFINITY.into())), "no zone label");
        // Another namespace's pod does not count.
        let other = bound(with_labels(pod("other", "db", &[]), &[("app", "db")]), "n1");
        let snap = snapshot(&nodes(), &[other]);
        assert!(run(&snap, &p).iter().all(|r| r.is_err()));
    }

    #[test]
    fn first_pod_of_a_self_affine_group_goes_anywhere_with_the_topology() {
        let snap = snapshot(&nodes(), &[]);
        let p = info(&with_labels(
            with_affinity(pod("d", "web", &[]), vec![term("web", "zone")], vec![]),
            &[("app", "web")],
        ));
        let r = run(&snap, &p);
        assert_eq!(r[..3], [Ok(()), Ok(()), Ok(())]);
        assert!(r[3].is_err());
    }

    #[test]
    fn required_anti_affinity_of_the_incoming_pod() {
        let web = bound(with_labels(pod("d", "w1", &[]), &[("app", "web")]), "n1");
        let snap = snapshot(&nodes(), &[web]);
        let p = info(&with_affinity(pod("d", "w2", &[]), vec![], vec![term("web", "zone")]));
        let r = run(&snap, &p);
        assert_eq!(r[0], Err((Code::Unschedulable, ERR_REASON_ANTI_AFFINITY.into())));
        assert!(r[1].is_err());
        assert_eq!(r[2], Ok(()));
        assert_eq!(r[3], Ok(()), "a node without the topology key is never in the same domain");
    }

    #[test]
    fn existing_pods_anti_affinity_against_the_incoming_pod() {
        let guard = bound(with_affinity(pod("d", "g", &[]), vec![], vec![term("web", "kubernetes.io/hostname")]), "n2");
        let snap = snapshot(&nodes(), &[guard]);
        let p = info(&with_labels(pod("d", "w", &[]), &[("app", "web")]));
        let r = run(&snap, &p);
        assert_eq!(r[1], Err((Code::Unschedulable, ERR_REASON_EXISTING_ANTI_AFFINITY.into())));
        assert!(r[0].is_ok() && r[2].is_ok() && r[3].is_ok());
        // A pod the guard does not select is unaffected, and with nothing to check PreFilter skips.
        let q = info(&pod("d", "q", &[]));
        assert!(run(&snap, &q).iter().all(|r| r.is_ok()));
        assert!(pre_filter(&q, &snapshot(&nodes(), &[])).is_none());
    }
}
