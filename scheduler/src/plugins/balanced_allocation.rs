//! NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used in
//! similar proportions after placing the pod (score = (1 - std deviation) × 100), using the
//! actual requests. Skipped for pods requesting neither cpu nor memory, like upstream.

use crate::{
    framework::MAX_NODE_SCORE,
    node_info::{NodeData, NodeInfo},
    pod_info::PodInfo,
};

/// Whether to score at all: best-effort pods are skipped.
pub fn wants_score(pod: &PodInfo) -> bool {
    let r = &pod.requests.requests;
    r.milli_cpu != 0 || r.memory != 0
}

pub fn score(pod: &PodInfo, node: &NodeData, info: &NodeInfo) -> i64 {
    let want = &pod.requests.requests;
    let pairs = [
        (info.requested.milli_cpu.saturating_add(want.milli_cpu), node.allocatable.milli_cpu),
        (info.requested.memory.saturating_add(want.memory), node.allocatable.memory),
    ];
    let fractions: Vec<f64> = pairs
        .iter()
        .filter(|(_, alloc)| *alloc != 0)
        .map(|(req, alloc)| (*req as f64 / *alloc as f64).min(1.0))
        .collect();
    let std = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        f if f.len() > 2 => {
            let mean = f.iter().sum::<f64>() / f.len() as f64;
            (f.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / f.len() as f64).sqrt()
        }
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn balanced_usage_scores_higher() {
        let n = node("n1", &[("cpu", "4"), ("memory", "8Gi"), ("pods", "10")], &[]);
        let p = info(&pod("d", "p", &[("cpu", "1"), ("memory", "2Gi")]));
        // 25% cpu and 25% memory: perfectly balanced.
        assert_eq!(score(&p, &node_data(&n), &node_info(&n, &[])), 100);
        // cpu 3/4 = 0.75, memory 2/8 = 0.25: std 0.25 → 75.
        let ni = node_info(&n, &[bound(pod("d", "a", &[("cpu", "2")]), "n1")]);
        assert_eq!(score(&p, &node_data(&n), &ni), 75);
        // Over-committed fractions are capped at 1.
        let ni = node_info(&n, &[bound(pod("d", "a", &[("cpu", "8")]), "n1")]);
        assert_eq!(score(&p, &node_data(&n), &ni), 62);
    }

    #[test]
    fn skips_best_effort_and_missing_capacity() {
        assert!(!wants_score(&info(&pod("d", "be", &[]))));
        assert!(wants_score(&info(&pod("d", "p", &[("memory", "1")]))));
        let n = node("n1", &[("cpu", "4"), ("pods", "10")], &[]);
        let p = info(&pod("d", "p", &[("cpu", "1"), ("memory", "2Gi")]));
        assert_eq!(score(&p, &node_data(&n), &node_info(&n, &[])), 100);
    }
}
