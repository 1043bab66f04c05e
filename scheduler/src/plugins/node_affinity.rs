//! NodeAffinity: `spec.nodeSelector` and required node affinity as a filter (with
//! upstream's PreFilter shortcut for pods pinned to named nodes), preferred node affinity
//! (the summed weights of matching terms) as a score.

use crate::{
    framework::{normalize::default_normalize, FilterResult, Rejection},
    node_info::NodeData,
    pod_info::PodInfo,
};

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
/// PreFilter: the pinned node names of the required terms have nothing in common.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";
/// Nodes a PreFilter ruled out are reported with this reason.
pub const ERR_REASON_NOT_PINNED: &str = "node(s) didn't satisfy plugin(s) [NodeAffinity]";

/// What PreFilter concludes about which nodes to examine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreFilter {
    AllNodes,
    /// Only these node names can fit (DaemonSet-style `metadata.name` pinning).
    Only(Vec<String>),
    /// No node can fit.
    Conflict,
}

pub fn pre_filter(pod: &PodInfo) -> PreFilter {
    match pod.node_affinity.pinned_node_names() {
        None => PreFilter::AllNodes,
        Some(names) if names.is_empty() => PreFilter::Conflict,
        Some(names) => PreFilter::Only(names),
    }
}

pub fn filter(pod: &PodInfo, node: &NodeData) -> FilterResult {
    if pod.node_affinity.matches(&node.name, &node.labels) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(ERR_REASON_POD))
    }
}

/// Whether there is anything to score (upstream's PreScore skip).
pub fn wants_score(pod: &PodInfo) -> bool {
    !pod.preferred_node_affinity.is_empty()
}

/// Raw score: the sum of the weights of the preferred terms the node matches.
pub fn score(pod: &PodInfo, node: &NodeData) -> i64 {
    pod.preferred_node_affinity.iter().filter(|p| p.term.matches(&node.name, &node.labels)).map(|p| p.weight).sum()
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PreferredSchedulingTerm,
    };

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn term(exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm { match_expressions: Some(exprs), match_fields: Some(fields) }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> Pod {
        let mut p = pod("d", "p", &[]);
        spec_mut(&mut p).affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn node(name: &str, l: &[(&str, &str)]) -> NodeData {
        node_data(&std_node(name, l))
    }

    #[test]
    fn node_selector() {
        let mut p = pod("d", "p", &[]);
        spec_mut(&mut p).node_selector = Some(labels(&[("disk", "ssd")]));
        let p = info(&p);
        assert!(filter(&p, &node("a", &[("disk", "ssd")])).is_ok());
        let err = filter(&p, &node("b", &[("disk", "hdd")])).unwrap_err();
        assert_eq!((err.code, err.reasons), (Code::UnschedulableAndUnresolvable, vec![ERR_REASON_POD.into()]));
    }

    #[test]
    fn required_expressions_all_operators() {
        let cases: Vec<(NodeSelectorRequirement, &[(&str, &str)], bool)> = vec![
            (req("zone", "In", &["a", "b"]), &[("zone", "b")], true),
            (req("zone", "In", &["a"]), &[("zone", "c")], false),
            (req("zone", "NotIn", &["a"]), &[("zone", "c")], true),
            (req("zone", "NotIn", &["a"]), &[], true),
            (req("zone", "NotIn", &["a"]), &[("zone", "a")], false),
            (req("gpu", "Exists", &[]), &[("gpu", "")], true),
            (req("gpu", "Exists", &[]), &[], false),
            (req("gpu", "DoesNotExist", &[]), &[], true),
            (req("gpu", "DoesNotExist", &[]), &[("gpu", "1")], false),
            (req("cores", "Gt", &["4"]), &[("cores", "8")], true),
            (req("cores", "Gt", &["4"]), &[("cores", "4")], false),
            (req("cores", "Lt", &["4"]), &[("cores", "2")], true),
            (req("cores", "Lt", &["4"]), &[("cores", "x")], false),
            (req("zone", "In", &[]), &[("zone", "a")], false),
        ];
        for (r, l, want) in cases {
            let p = info(&with_required(vec![term(vec![r.clone()], vec![])]));
            assert_eq!(filter(&p, &node("n", l)).is_ok(), want, "{r:?} on {l:?}");
        }
    }

    #[test]
    fn terms_are_ored_and_empty_terms_match_nothing() {
        let p = info(&with_required(vec![
            term(vec![req("zone", "In", &["a"])], vec![]),
            term(vec![req("zone", "In", &["b"])], vec![]),
        ]));
        assert!(filter(&p, &node("n", &[("zone", "b")])).is_ok());
        let p = info(&with_required(vec![term(vec![], vec![])]));
        assert!(filter(&p, &node("n", &[])).is_err());
        let p = info(&with_required(vec![]));
        assert!(filter(&p, &node("n", &[])).is_err());
    }

    #[test]
    fn match_fields_and_prefilter_pinning() {
        let p = info(&with_required(vec![term(vec![], vec![req("metadata.name", "In", &["n1", "n2"])])]));
        assert!(filter(&p, &node("n1", &[])).is_ok());
        assert!(filter(&p, &node("n3", &[])).is_err());
        assert_eq!(pre_filter(&p), PreFilter::Only(vec!["n1".into(), "n2".into()]));
        let conflict = info(&with_required(vec![term(
            vec![],
            vec![req("metadata.name", "In", &["n1"]), req("metadata.name", "In", &["n2"])],
        )]));
        assert_eq!(pre_filter(&conflict), PreFilter::Conflict);
        let unpinned = info(&with_required(vec![
            term(vec![], vec![req("metadata.name", "In", &["n1"])]),
            term(vec![req("zone", "Exists", &[])], vec![]),
        ]));
        assert_eq!(pre_filter(&unpinned), PreFilter::AllNodes);
        let bad_field = info(&with_required(vec![term(vec![], vec![req("metadata.uid", "In", &["x"])])]));
        assert!(filter(&bad_field, &node("x", &[])).is_err());
        assert_eq!(pre_filter(&info(&pod("d", "p", &[]))), PreFilter::AllNodes);
    }

    #[test]
    fn preferred_weights() {
        let mut p = pod("d", "p", &[]);
        spec_mut(&mut p).affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm { weight: 5, preference: term(vec![req("zone", "In", &["a"])], vec![]) },
                    PreferredSchedulingTerm { weight: 2, preference: term(vec![req("disk", "Exists", &[])], vec![]) },
                    PreferredSchedulingTerm { weight: 9, preference: term(vec![], vec![]) },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = info(&p);
        assert!(wants_score(&p));
        let raw: Vec<i64> = [node("a", &[("zone", "a"), ("disk", "1")]), node("b", &[("zone", "a")]), node("c", &[])]
            .iter()
            .map(|n| score(&p, n))
            .collect();
        assert_eq!(raw, vec![7, 5, 0]);
        let mut s = raw;
        normalize(&mut s);
        assert_eq!(s, vec![100, 71, 0]);
        assert!(!wants_score(&info(&pod("d", "q", &[]))));
    }
}
