use std::time::Duration;

use super::*;
use crate::testutil::*;

fn cpu(s: &Snapshot, node: &str) -> i64 {
    s.node(node).map(|n| n.requested.milli_cpu).unwrap_or(-1)
}

#[test]
fn nodes_added_changed_removed() {
    let mut s = Snapshot::new();
    assert_eq!(s.upsert_node(node_data(&std_node("a", &[]))), NodeChange::Added);
    assert_eq!(s.upsert_node(node_data(&std_node("a", &[]))), NodeChange::Unchanged);
    assert_eq!(s.upsert_node(node_data(&std_node("a", &[("zone", "x")]))), NodeChange::Changed);
    s.upsert_node(node_data(&std_node("b", &[])));
    s.upsert_node(node_data(&std_node("c", &[])));
    assert!(s.remove_node("a"));
    assert!(!s.remove_node("a"));
    assert_eq!(s.num_nodes(), 2);
    let mut names: Vec<_> = (0..s.num_nodes()).filter_map(|i| s.node_at(i)).map(|n| n.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    assert!(s.node("a").is_none());
}

#[test]
fn pods_aggregate_on_their_node_and_follow_updates() {
    let mut s = snapshot(&[std_node("a", &[]), std_node("b", &[])], &[]);
    s.upsert_pod(bound(pod("d", "p", &[("cpu", "1")]), "a"));
    s.upsert_pod(bound(pod("d", "q", &[("cpu", "500m")]), "a"));
    assert_eq!(cpu(&s, "a"), 1500);
    // An update replaces the earlier version.
    s.upsert_pod(bound(pod("d", "p", &[("cpu", "2")]), "a"));
    assert_eq!(cpu(&s, "a"), 2500);
    assert_eq!(s.node("a").map(|n| n.pods.len()), Some(2));
    assert!(s.remove_pod("d/q").is_some());
    assert_eq!(cpu(&s, "a"), 2000);
    assert!(s.remove_pod("d/q").is_none());
}

#[test]
fn pods_on_unknown_nodes_count_once_the_node_arrives() {
    let mut s = Snapshot::new();
    s.upsert_pod(bound(pod("d", "p", &[("cpu", "1")]), "late"));
    assert_eq!(s.num_nodes(), 0);
    s.upsert_node(node_data(&std_node("late", &[])));
    assert_eq!(cpu(&s, "late"), 1000);
    // The node goes; its pod stays counted until deleted, but the node is not offered.
    s.remove_node("late");
    assert_eq!(s.num_nodes(), 0);
    s.upsert_node(node_data(&std_node("late", &[])));
    assert_eq!(cpu(&s, "late"), 1000);
    s.remove_node("late");
    s.remove_pod("d/p");
    s.upsert_node(node_data(&std_node("late", &[])));
    assert_eq!(cpu(&s, "late"), 0);
}

#[test]
fn assume_confirm_forget_expire() {
    let now = std::time::Instant::now();
    let mut s = snapshot(&[std_node("a", &[]), std_node("b", &[])], &[]);
    let p = info(&pod("d", "p", &[("cpu", "1")]));
    s.assume(&p, "a");
    assert!(s.is_assumed("d/p"));
    assert_eq!(cpu(&s, "a"), 1000);
    // The watch shows it bound: confirmed, no longer assumed.
    s.upsert_pod(bound(pod("d", "p", &[("cpu", "1")]), "a"));
    assert!(!s.is_assumed("d/p"));
    assert_eq!(s.expire_assumed(now + Duration::from_secs(3600)), 0);
    assert_eq!(cpu(&s, "a"), 1000);
    // A failed binding forgets; a stale UID does not.
    let q = info(&pod("d", "q", &[("cpu", "1")]));
    s.assume(&q, "b");
    assert!(!s.forget("d/q", "other-uid"));
    assert!(s.forget("d/q", &q.uid));
    assert_eq!(cpu(&s, "b"), 0);
    // A binding that finished but is never confirmed expires.
    s.assume(&q, "b");
    s.finish_binding("d/q", &q.uid, now + Duration::from_secs(30));
    assert_eq!(s.expire_assumed(now + Duration::from_secs(29)), 0);
    assert_eq!(s.expire_assumed(now + Duration::from_secs(30)), 1);
    assert_eq!((cpu(&s, "b"), s.assumed_len()), (0, 0));
    // Until its binding finishes, an assumption never expires.
    s.assume(&q, "b");
    assert_eq!(s.expire_assumed(now + Duration::from_secs(3600)), 0);
}

#[test]
fn affinity_indexes() {
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity};
    let mut s = snapshot(&[std_node("a", &[])], &[]);
    let mut p = pod("d", "p", &[]);
    spec_mut(&mut p).affinity =
        Some(Affinity { pod_anti_affinity: Some(PodAntiAffinity::default()), ..Default::default() });
    s.upsert_pod(bound(p, "a"));
    assert_eq!(s.nodes_with_affinity_pods().count(), 1);
    assert_eq!(s.nodes_with_anti_affinity_pods().count(), 0, "no required terms");
    s.remove_pod("d/p");
    assert_eq!(s.nodes_with_affinity_pods().count(), 0);
}
