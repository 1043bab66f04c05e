//! The PodTopologySpread score (soft constraints): a node scores the matching pods in its
//! domains (weighted by log(domains + 2), plus maxSkew - 1); fewer is better after
//! normalisation. Feasible nodes missing a topology key are not scored.

use std::collections::HashMap;

use crate::{
    framework::MAX_NODE_SCORE,
    node_info::{NodeData, NodeInfo},
    pod_info::PodInfo,
    pod_terms::SpreadConstraint,
    snapshot::Snapshot,
};

use super::{count_matching, has_all_keys, node_included};

const HOSTNAME: &str = "kubernetes.io/hostname";
/// The raw score of a node that is not scored (upstream's `invalidScore`).
pub const IGNORED: i64 = -1;

#[derive(Debug, Clone, Default)]
pub struct ScoreState {
    constraints: Vec<SpreadConstraint>,
    /// Per constraint: matching pods per domain among the feasible nodes' domains.
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

/// `None` when the pod has no soft constraints. `feasible` are the nodes that passed filtering.
pub fn pre_score(pod: &PodInfo, feasible: &[&NodeData], snap: &Snapshot) -> Option<ScoreState> {
    let constraints: Vec<SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).cloned().collect();
    if constraints.is_empty() {
        return None;
    }
    let mut counts = vec![HashMap::new(); constraints.len()];
    let mut scored = 0usize;
    for node in feasible.iter().filter(|n| has_all_keys(n, &constraints)) {
        scored += 1;
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key != HOSTNAME {
                if let Some(v) = node.labels.get(&c.topology_key) {
                    counts[i].entry(v.clone()).or_insert(0);
                }
            }
        }
    }
    let weights = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME { scored } else { counts[i].len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    for ni in snap.nodes() {
        let Some(node) = ni.node.as_deref() else { continue };
        if !has_all_keys(node, &constraints) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !node_included(c, pod, node) {
                continue;
            }
            let Some(v) = node.labels.get(&c.topology_key) else { continue };
            if let Some(n) = counts[i].get_mut(v) {
                *n += count_matching(&ni.pods, &c.selector, &pod.namespace);
            }
        }
    }
    Some(ScoreState { constraints, counts, weights })
}

/// Raw score ([`IGNORED`] for nodes missing a topology key).
pub fn score(pod: &PodInfo, s: &ScoreState, node: &NodeData, info: &NodeInfo) -> i64 {
    if !has_all_keys(node, &s.constraints) {
        return IGNORED;
    }
    let mut total = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(v) = node.labels.get(&c.topology_key) else { continue };
        let count = if c.topology_key == HOSTNAME {
            count_matching(&info.pods, &c.selector, &pod.namespace)
        } else {
            s.counts[i].get(v).copied().unwrap_or(0)
        };
        total += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
    }
    total.round() as i64
}

/// Fewer matching pods is better: `100 × (max + min - score) / max`; unscored nodes get 0.
pub fn normalize(scores: &mut [i64]) {
    let valid = scores.iter().copied().filter(|s| *s != IGNORED);
    let min = valid.clone().min().unwrap_or(0);
    let max = valid.max().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = if *s == IGNORED {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plugins::topology_spread::test_support::spread, testutil::*};

    fn web(name: &str, node: &str) -> std::sync::Arc<PodInfo> {
        bound(with_labels(pod("d", name, &[]), &[("app", "web")]), node)
    }

    fn run(snap: &Snapshot, p: &PodInfo) -> Option<Vec<i64>> {
        let feasible: Vec<&NodeData> = snap.nodes().filter_map(|n| n.node.as_deref()).collect();
        let s = pre_score(p, &feasible, snap)?;
        let mut v: Vec<i64> = snap.nodes().filter_map(|ni| Some(score(p, &s, ni.node.as_deref()?, ni))).collect();
        normalize(&mut v);
        Some(v)
    }

    #[test]
    fn prefers_emptier_zones_and_skips_unlabelled_nodes() {
        let nodes = vec![std_node("a1", &[("zone", "a")]), std_node("b1", &[("zone", "b")]), std_node("x", &[])];
        let snap = snapshot(&nodes, &[web("w1", "a1"), web("w2", "a1")]);
        let p = info(&spread(pod("d", "w3", &[]), "zone", 1, "ScheduleAnyway", "web"));
        // Two domains: weight ln 4 ≈ 1.386; a: round(2 × 1.386) = 3, b: 0 → a 100×(3+0-3)/3 = 0, b 100.
        assert_eq!(run(&snap, &p), Some(vec![0, 100, 0]));
    }

    #[test]
    fn hostname_counts_per_node_and_max_skew_softens() {
        let nodes = vec![std_node("n1", &[]), std_node("n2", &[])];
        let snap = snapshot(&nodes, &[web("w1", "n1")]);
        let p = info(&spread(pod("d", "w2", &[]), "kubernetes.io/hostname", 3, "ScheduleAnyway", "web"));
        // weight ln 4; n1: 1.386 + 2 = 3, n2: 2 → n1 100×(3+2-3)/3 = 66, n2 100.
        assert_eq!(run(&snap, &p), Some(vec![66, 100]));
        assert_eq!(run(&snap, &info(&pod("d", "plain", &[]))), None);
    }

    #[test]
    fn normalize_rules() {
        let mut s = [0, 0, IGNORED];
        normalize(&mut s);
        assert_eq!(s, [100, 100, 0]);
        let mut s = [2, 4];
        normalize(&mut s);
        assert_eq!(s, [100, 50]);
    }
}
