//! NodeResourcesFit: the pod's requests must fit in the node's allocatable minus what its
//! pods request (and the pod count under `pods`); scored with the LeastAllocated strategy
//! (cpu and memory, weight 1 each, counting unset requests as 100m / 200Mi).

use std::borrow::Cow;

use crate::{
    framework::{Code, FilterResult, Rejection, MAX_NODE_SCORE},
    node_info::{NodeData, NodeInfo},
    pod_info::PodInfo,
};

pub fn filter(pod: &PodInfo, node: &NodeData, info: &NodeInfo) -> FilterResult {
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    if info.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push("Too many pods".into());
    }
    let want = &pod.requests.requests;
    let have = &node.allocatable;
    let used = &info.requested;
    let short = |want: i64, have: i64, used: i64| want > 0 && want > have.saturating_sub(used);
    if short(want.milli_cpu, have.milli_cpu, used.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if short(want.memory, have.memory, used.memory) {
        reasons.push("Insufficient memory".into());
    }
    if short(want.ephemeral_storage, have.ephemeral_storage, used.ephemeral_storage) {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, &q) in &want.scalars {
        if short(q, have.scalar(name), used.scalar(name)) {
            reasons.push(format!("Insufficient {name}").into());
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection { code: Code::Unschedulable, reasons })
    }
}

/// `(capacity - requested) * 100 / capacity`, 0 when over capacity or without capacity.
fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested).saturating_mul(MAX_NODE_SCORE) / capacity
}

/// LeastAllocated: the average free fraction of cpu and memory after placing the pod.
pub fn score(pod: &PodInfo, node: &NodeData, info: &NodeInfo) -> i64 {
    let cpu = (info.non_zero_milli_cpu.saturating_add(pod.requests.non_zero_milli_cpu), node.allocatable.milli_cpu);
    let mem = (info.non_zero_memory.saturating_add(pod.requests.non_zero_memory), node.allocatable.memory);
    let (mut total, mut weights) = (0, 0);
    for (requested, capacity) in [cpu, mem] {
        if capacity == 0 {
            continue;
        }
        total += least_requested_score(requested, capacity);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        total / weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn check(n: &k8s_openapi::api::core::v1::Node, pods: &[std::sync::Arc<PodInfo>], p: &PodInfo) -> FilterResult {
        let ni = node_info(n, pods);
        filter(p, &node_data(n), &ni)
    }

    #[test]
    fn fits_and_reports_every_shortage() {
        let n = node("n1", &[("cpu", "2"), ("memory", "4Gi"), ("pods", "3"), ("example.com/gpu", "1")], &[]);
        let existing = vec![bound(pod("d", "a", &[("cpu", "1500m"), ("memory", "1Gi")]), "n1")];
        assert!(check(&n, &existing, &info(&pod("d", "p", &[("cpu", "500m"), ("memory", "3Gi")]))).is_ok());
        let err = check(
            &n,
            &existing,
            &info(&pod("d", "p", &[("cpu", "501m"), ("memory", "4Gi"), ("example.com/gpu", "2")])),
        )
        .unwrap_err();
        assert_eq!(err.code, Code::Unschedulable);
        assert_eq!(err.reasons, vec!["Insufficient cpu", "Insufficient memory", "Insufficient example.com/gpu"]);
        let err = check(&n, &existing, &info(&pod("d", "p", &[("ephemeral-storage", "1Gi"), ("other.io/x", "1")])))
            .unwrap_err();
        assert_eq!(err.reasons, vec!["Insufficient ephemeral-storage", "Insufficient other.io/x"]);
    }

    #[test]
    fn pod_count_and_zero_requests() {
        let n = node("n1", &[("cpu", "1"), ("pods", "2")], &[]);
        let two = vec![bound(pod("d", "a", &[]), "n1"), bound(pod("d", "b", &[]), "n1")];
        assert!(check(&n, &two[..1], &info(&pod("d", "p", &[]))).is_ok());
        assert_eq!(check(&n, &two, &info(&pod("d", "p", &[]))).unwrap_err().reasons, vec!["Too many pods"]);
        // A node without `pods` allocatable takes no pods at all (like upstream).
        let n = node("n2", &[("cpu", "1")], &[]);
        assert!(check(&n, &[], &info(&pod("d", "p", &[]))).is_err());
        // Zero requests always fit the resources, even on a full node.
        let n = node("n3", &[("cpu", "1"), ("pods", "10")], &[]);
        let full = vec![bound(pod("d", "a", &[("cpu", "1")]), "n3")];
        assert!(check(&n, &full, &info(&pod("d", "p", &[]))).is_ok());
    }

    #[test]
    fn init_containers_and_overhead_count() {
        let n = node("n1", &[("cpu", "2"), ("pods", "10")], &[]);
        let mut p = pod("d", "p", &[("cpu", "1")]);
        spec_mut(&mut p).init_containers = Some(vec![container(&[("cpu", "2")])]);
        assert!(check(&n, &[], &info(&p)).is_ok());
        spec_mut(&mut p).overhead =
            Some([("cpu".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("1m".into()))].into());
        assert_eq!(check(&n, &[], &info(&p)).unwrap_err().reasons, vec!["Insufficient cpu"]);
    }

    #[test]
    fn least_allocated_score() {
        let n = node("n1", &[("cpu", "4"), ("memory", "8Gi"), ("pods", "10")], &[]);
        let existing = vec![bound(pod("d", "a", &[("cpu", "1"), ("memory", "2Gi")]), "n1")];
        let ni = node_info(&n, &existing);
        let p = info(&pod("d", "p", &[("cpu", "1"), ("memory", "2Gi")]));
        // cpu (4-2)/4 = 50, memory (8-4)/8 = 50.
        assert_eq!(score(&p, &node_data(&n), &ni), 50);
        // Best-effort pods count as 100m / 200Mi: cpu (4000-1100)*100/4000 = 72, memory 72.
        let be = info(&pod("d", "be", &[]));
        assert_eq!(score(&be, &node_data(&n), &ni), 72);
        assert_eq!(least_requested_score(5, 4), 0);
        assert_eq!(least_requested_score(1, 0), 0);
        let empty = node("n2", &[("pods", "10")], &[]);
        assert_eq!(score(&p, &node_data(&empty), &node_info(&empty, &[])), 0);
    }
}
