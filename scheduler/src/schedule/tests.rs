use super::*;
use crate::testutil::*;
use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

fn nodes(n: usize) -> Vec<k8s_openapi::api::core::v1::Node> {
    (0..n).map(|i| std_node(&format!("n{i}"), &[])).collect()
}

#[test]
fn picks_the_least_allocated_node() {
    let snap = snapshot(
        &nodes(3),
        &[
            bound(pod("d", "a", &[("cpu", "3"), ("memory", "6Gi")]), "n0"),
            bound(pod("d", "b", &[("cpu", "2"), ("memory", "4Gi")]), "n1"),
        ],
    );
    let p = info(&pod("d", "p", &[("cpu", "1"), ("memory", "2Gi")]));
    let placement = Algorithm::seeded(None, 1).schedule(&p, &snap).unwrap();
    assert_eq!(placement, Placement { node: "n2".into(), evaluated: 3, feasible: 3 });
}

#[test]
fn unschedulable_pods_get_upstreams_message() {
    let mut tainted = std_node("cp", &[]);
    tainted.spec.as_mut().unwrap().taints =
        Some(vec![taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")]);
    let mut all = nodes(3);
    all.push(tainted.clone());
    all.push({
        let mut t = tainted;
        t.metadata.name = Some("cp2".into());
        t
    });
    let snap = snapshot(&all, &[]);
    let p = info(&pod("d", "big", &[("cpu", "5")]));
    let err = Algorithm::seeded(None, 1).schedule(&p, &snap).unwrap_err();
    assert_eq!(
        err.message(),
        "0/5 nodes are available: 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, \
         3 Insufficient cpu. preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, \
         3 No preemption victims found for incoming pod."
    );
}

#[test]
fn no_nodes() {
    let err = Algorithm::seeded(None, 1).schedule(&info(&pod("d", "p", &[])), &Snapshot::new()).unwrap_err();
    assert_eq!(err.message(), "no nodes available to schedule pods");
}

#[test]
fn examines_only_enough_nodes_and_rotates_the_start() {
    let snap = snapshot(&nodes(1000), &[]);
    let mut alg = Algorithm::seeded(None, 7);
    let p = info(&pod("d", "p", &[("cpu", "100m")]));
    let first = alg.schedule(&p, &snap).unwrap();
    // 1000 nodes: 42% = 420 feasible nodes are enough.
    assert_eq!((first.evaluated, first.feasible), (420, 420));
    assert_eq!(alg.next_start, 420);
    alg.schedule(&p, &snap).unwrap();
    assert_eq!(alg.next_start, 840);
    alg.schedule(&p, &snap).unwrap();
    assert_eq!(alg.next_start, 260, "wraps around");
    let mut all = Algorithm::seeded(Some(100), 7);
    assert_eq!(all.schedule(&p, &snap).unwrap().evaluated, 1000);
}

#[test]
fn ties_are_broken_at_random() {
    let snap = snapshot(&nodes(4), &[]);
    let p = info(&pod("d", "p", &[("cpu", "1")]));
    let mut alg = Algorithm::seeded(None, 3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(alg.schedule(&p, &snap).unwrap().node);
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn pinned_pods_examine_only_their_node() {
    let snap = snapshot(&nodes(5), &[]);
    let mut p = pod("d", "ds", &[]);
    spec_mut(&mut p).affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec!["n3".into()]),
                    }]),
                    match_expressions: None,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut alg = Algorithm::seeded(None, 1);
    assert_eq!(alg.schedule(&info(&p), &snap).unwrap(), Placement { node: "n3".into(), evaluated: 1, feasible: 1 });
    // The pinned node is full: only it is blamed, the others did not satisfy NodeAffinity.
    let snap = snapshot(&[node("n3", &[("cpu", "1"), ("pods", "0")], &[]), std_node("n4", &[])], &[]);
    let err = alg.schedule(&info(&p), &snap).unwrap_err();
    assert_eq!(
        err.message(),
        "0/2 nodes are available: 1 Too many pods, 1 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
         preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
         1 Preemption is not helpful for scheduling."
    );
}

#[test]
fn volume_node_affinity_conflicts_get_upstreams_message() {
    use crate::volumes::{ClaimData, VolumeData};
    let mut snap = snapshot(&nodes(3), &[]);
    snap.volumes.upsert_claim(ClaimData::from_claim(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "d", "name": "data"},
            "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"},
        }))
        .unwrap(),
    ));
    let pv = |node: &str| {
        VolumeData::from_volume(
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}))
            .unwrap(),
        )
    };
    snap.volumes.upsert_volume(pv("n1"));
    let mut p = pod("d", "db", &[]);
    spec_mut(&mut p).volumes = Some(vec![serde_json::from_value(
        serde_json::json!({"name": "v", "persistentVolumeClaim": {"claimName": "data"}}),
    )
    .unwrap()]);
    let p = info(&p);
    let mut alg = Algorithm::seeded(None, 1);
    assert_eq!(alg.schedule(&p, &snap).unwrap(), Placement { node: "n1".into(), evaluated: 3, feasible: 1 });
    // Its volume lives on a node that is gone.
    snap.volumes.upsert_volume(pv("gone"));
    assert_eq!(
        alg.schedule(&p, &snap).unwrap_err().message(),
        "0/3 nodes are available: 3 node(s) had volume node affinity conflict. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn assumed_pods_count_for_the_next_decision() {
    let mut snap = snapshot(&[node("n0", &[("cpu", "1"), ("pods", "10")], &[])], &[]);
    let mut alg = Algorithm::seeded(None, 1);
    let p1 = info(&pod("d", "p1", &[("cpu", "600m")]));
    let placed = alg.schedule(&p1, &snap).unwrap();
    snap.assume(&p1, &placed.node);
    let p2 = info(&pod("d", "p2", &[("cpu", "600m")]));
    assert!(alg.schedule(&p2, &snap).is_err());
    assert!(snap.forget(&p1.key, &p1.uid));
    assert!(alg.schedule(&p2, &snap).is_ok());
}

#[test]
fn taints_and_affinity_weigh_in() {
    let mut soft = std_node("soft", &[]);
    soft.spec.as_mut().unwrap().taints = Some(vec![taint("maintenance", "soon", "PreferNoSchedule")]);
    let snap = snapshot(&[soft, std_node("clean", &[])], &[]);
    let p = info(&pod("d", "p", &[("cpu", "1")]));
    let mut alg = Algorithm::seeded(None, 1);
    for _ in 0..20 {
        assert_eq!(alg.schedule(&p, &snap).unwrap().node, "clean");
    }
}

/// Throughput of decisions on a 5,000-node cluster (run with `--ignored --nocapture`; use
/// an optimised build for meaningful numbers).
#[test]
#[ignore]
fn perf_5000_nodes() {
    let nodes: Vec<_> = (0..5000)
        .map(|i| {
            node(
                &format!("n{i}"),
                &[("cpu", "32"), ("memory", "128Gi"), ("pods", "110")],
                &[("zone", &format!("z{}", i % 3))],
            )
        })
        .collect();
    let pods: Vec<_> = (0..5000 * 20)
        .map(|i| bound(pod("d", &format!("e{i}"), &[("cpu", "100m"), ("memory", "128Mi")]), &format!("n{}", i % 5000)))
        .collect();
    let mut snap = snapshot(&nodes, &pods);
    let mut alg = Algorithm::seeded(None, 1);
    let n = 3000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let p = info(&pod("d", &format!("p{i}"), &[("cpu", "250m"), ("memory", "256Mi")]));
        let placed = alg.schedule(&p, &snap).unwrap();
        snap.assume(&p, &placed.node);
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    println!("{per_sec:.0} pods/s ({} µs/pod)", started.elapsed().as_micros() / n);
}
