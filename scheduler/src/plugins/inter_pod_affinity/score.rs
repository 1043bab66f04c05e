//! The InterPodAffinity score: every existing pod adds (or, for anti-affinity, subtracts)
//! term weights to its node's topology domain — the incoming pod's preferred terms matching
//! it, and its own required affinity (weight 1) and preferred terms matching the incoming
//! pod. A node scores the sum over its domains; scores are then scaled min–max to 0–100.

use crate::{
    framework::MAX_NODE_SCORE,
    node_info::{NodeData, NodeInfo},
    plugins::topology::TopologyCounts,
    pod_info::PodInfo,
    pod_terms::WeightedTerm,
    snapshot::Snapshot,
};

/// Upstream's default `hardPodAffinityWeight`.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

#[derive(Debug, Clone, Default)]
pub struct ScoreState {
    scores: TopologyCounts,
}

fn add_terms(
    scores: &mut TopologyCounts,
    terms: &[WeightedTerm],
    target: &PodInfo,
    snap: &Snapshot,
    node: &NodeInfo,
    sign: i64,
) {
    let ns_labels = snap.namespace_labels(&target.namespace);
    for t in terms {
        if t.term.matches(&target.namespace, &target.labels, ns_labels) {
            scores.add_for_node(&t.term.topology_key, node.labels(), sign * t.weight);
        }
    }
}

fn process_existing(scores: &mut TopologyCounts, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, snap: &Snapshot) {
    if node.labels().is_empty() {
        return;
    }
    add_terms(scores, &pod.affinity.preferred_affinity, existing, snap, node, 1);
    add_terms(scores, &pod.affinity.preferred_anti_affinity, existing, snap, node, -1);
    let ns_labels = snap.namespace_labels(&pod.namespace);
    for t in &existing.affinity.required_affinity {
        if t.matches(&pod.namespace, &pod.labels, ns_labels) {
            scores.add_for_node(&t.topology_key, node.labels(), HARD_POD_AFFINITY_WEIGHT);
        }
    }
    add_terms(scores, &existing.affinity.preferred_affinity, pod, snap, node, 1);
    add_terms(scores, &existing.affinity.preferred_anti_affinity, pod, snap, node, -1);
}

/// `None` when no node would get a non-zero score (upstream's Skip).
pub fn pre_score(pod: &PodInfo, snap: &Snapshot) -> Option<ScoreState> {
    let mut scores = TopologyCounts::default();
    if pod.affinity.has_preferred() {
        for ni in snap.nodes() {
            for existing in &ni.pods {
                process_existing(&mut scores, pod, existing, ni, snap);
            }
        }
    } else {
        for ni in snap.nodes_with_affinity_pods() {
            for existing in ni.pods.iter().filter(|p| p.affinity.any) {
                process_existing(&mut scores, pod, existing, ni, snap);
            }
        }
    }
    (!scores.is_empty()).then_some(ScoreState { scores })
}

pub fn score(s: &ScoreState, node: &NodeData) -> i64 {
    s.scores.keys().map(|k| s.scores.for_node(k, &node.labels)).sum()
}

/// Min–max scaling to 0–100.
pub fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else { return };
    let diff = max.saturating_sub(min);
    for s in scores.iter_mut() {
        *s = if diff > 0 { (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64 } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use k8s_openapi::{
        api::core::v1::{Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm},
        apimachinery::pkg::apis::meta::v1::LabelSelector,
    };

    fn weighted(app: &str, key: &str, weight: i32) -> WeightedPodAffinityTerm {
        WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels(&[("app", app)])),
                    ..Default::default()
                }),
                topology_key: key.into(),
                ..Default::default()
            },
        }
    }

    fn preferring(p: Pod, aff: Vec<WeightedPodAffinityTerm>, anti: Vec<WeightedPodAffinityTerm>) -> Pod {
        let mut p = p;
        spec_mut(&mut p).affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(aff),
                ..Default::default()
            }),
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(anti),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![std_node("n1", &[("zone", "a")]), std_node("n2", &[("zone", "a")]), std_node("n3", &[("zone", "b")])]
    }

    fn scores(snap: &Snapshot, p: &PodInfo) -> Option<Vec<i64>> {
        let s = pre_score(p, snap)?;
        let mut v: Vec<i64> = snap.nodes().filter_map(|n| n.node.as_deref()).map(|n| score(&s, n)).collect();
        normalize(&mut v);
        Some(v)
    }

    #[test]
    fn incoming_preferences() {
        let db = bound(with_labels(pod("d", "db", &[]), &[("app", "db")]), "n1");
        let cache = bound(with_labels(pod("d", "cache", &[]), &[("app", "cache")]), "n3");
        let snap = snapshot(&nodes(), &[db, cache]);
        let p = info(&preferring(
            pod("d", "web", &[]),
            vec![weighted("db", "zone", 10)],
            vec![weighted("cache", "zone", 5)],
        ));
        // Raw: zone a +10, zone b -5 → scaled min–max.
        assert_eq!(scores(&snap, &p), Some(vec![100, 100, 0]));
    }

    #[test]
    fn existing_pods_terms_count_for_the_incoming_pod() {
        let mut fan = preferring(pod("d", "fan", &[]), vec![weighted("web", "kubernetes.io/hostname", 4)], vec![]);
        spec_mut(&mut fan)
            .affinity
            .as_mut()
            .unwrap()
            .pod_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution =
            Some(vec![weighted("web", "zone", 1).pod_affinity_term]);
        let snap = snapshot(&nodes(), &[bound(fan, "n2")]);
        let p = info(&with_labels(pod("d", "web", &[]), &[("app", "web")]));
        // n2: hostname +4, zone a +1 (hard affinity); n1: zone a +1; n3: 0.
        assert_eq!(scores(&snap, &p), Some(vec![20, 100, 0]));
        // Nothing to score for a pod nobody cares about.
        assert_eq!(scores(&snap, &info(&pod("d", "other", &[]))), None);
    }

    #[test]
    fn normalize_min_max() {
        let mut s = [-5, 0, 5];
        normalize(&mut s);
        assert_eq!(s, [0, 50, 100]);
        let mut same = [3, 3];
        normalize(&mut same);
        assert_eq!(same, [0, 0]);
    }
}
