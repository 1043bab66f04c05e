use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(100_000).unwrap()
}

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
    serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "ns", "generation": 2}, "spec": spec}))
        .unwrap()
}

fn spec(v: serde_json::Value) -> PodDisruptionBudgetSpec {
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, ready: bool, owner: Option<&str>) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            owner_references: owner.map(|u| vec![pods::controller_ref("apps/v1", "ReplicaSet", u, u)]),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn deleting(p: Arc<Pod>) -> Arc<Pod> {
    let mut p = (*p).clone();
    p.metadata.deletion_timestamp = Some(at(1));
    Arc::new(p)
}

#[test]
fn expected_and_desired_follow_the_spec() {
    // minAvailable as a number: the pods themselves are expected.
    let s = spec(json!({"minAvailable": 2}));
    assert!(!needs_scale(&s));
    assert_eq!(expected_and_desired(&s, 3, 0), Ok((3, 2)));
    // minAvailable as a percentage of the controllers' scale, rounded up.
    let s = spec(json!({"minAvailable": "50%"}));
    assert!(needs_scale(&s));
    assert_eq!(expected_and_desired(&s, 2, 5), Ok((5, 3)));
    // maxUnavailable: expected minus the allowance (rounded up), never below zero.
    let s = spec(json!({"maxUnavailable": 1}));
    assert_eq!(expected_and_desired(&s, 3, 4), Ok((4, 3)));
    let s = spec(json!({"maxUnavailable": "30%"}));
    assert_eq!(expected_and_desired(&s, 3, 10), Ok((10, 7)));
    let s = spec(json!({"maxUnavailable": 5}));
    assert_eq!(expected_and_desired(&s, 3, 3), Ok((3, 0)));
    let s = spec(json!({"maxUnavailable": "x"}));
    assert!(expected_and_desired(&s, 3, 3).is_err());
    assert_eq!(expected_and_desired(&spec(json!({})), 3, 3), Ok((0, 0)));
}

#[test]
fn controllers_are_distinct_and_unmanaged_pods_listed() {
    let pods =
        [pod("a", true, Some("rs1")), pod("b", true, Some("rs1")), pod("c", true, Some("rs2")), pod("d", true, None)];
    let (refs, unmanaged) = controllers(&pods);
    assert_eq!(
        refs.iter().map(|(r, p)| (r.uid.as_str(), p.as_str())).collect::<Vec<_>>(),
        vec![("rs1", "a"), ("rs2", "c")]
    );
    assert_eq!(unmanaged, vec!["d"]);
    assert_eq!(group("apps/v1"), "apps");
    assert_eq!(group("v1"), "");
}

#[test]
fn selection_is_by_namespace_and_selector() {
    let all = [pod("a", true, None)];
    assert_eq!(select(&pdb(json!({"selector": {"matchLabels": {"app": "web"}}})), &all).len(), 1);
    assert_eq!(select(&pdb(json!({"selector": {"matchLabels": {"app": "db"}}})), &all).len(), 0);
    // Empty selector: every pod of the namespace; no selector: none.
    assert_eq!(select(&pdb(json!({"selector": {}})), &all).len(), 1);
    assert_eq!(select(&pdb(json!({})), &all).len(), 0);
    let mut other = (*all[0]).clone();
    other.metadata.namespace = Some("other".into());
    assert_eq!(select(&pdb(json!({"selector": {}})), &[Arc::new(other)]).len(), 0);
}

#[test]
fn disrupted_pods_are_pruned_and_not_counted_healthy() {
    let pods = [pod("a", true, None), pod("b", true, None), deleting(pod("c", true, None)), pod("d", false, None)];
    let shown = BTreeMap::from([
        ("a".to_string(), at(100_000 - 30)),    // pending: kept, not healthy
        ("b".to_string(), at(100_000 - 600)),   // timed out: dropped, healthy again
        ("c".to_string(), at(100_000 - 30)),    // being deleted: dropped
        ("gone".to_string(), at(100_000 - 30)), // no such pod: dropped
    ]);
    let (keep, recheck, expired) = disrupted(&pods, Some(&shown), now());
    assert_eq!(keep.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(recheck, Some(Timestamp::from_second(100_000 - 30 + 120).unwrap()));
    assert_eq!(expired, vec!["b"]);
    assert_eq!(healthy(&pods, &keep, now()), 1);
    assert_eq!(healthy(&pods, &BTreeMap::new(), now()), 2);
    let (keep, recheck, _) = disrupted(&pods, None, now());
    assert!(keep.is_empty() && recheck.is_none());
}

#[test]
fn status_and_condition() {
    let b = pdb(json!({"minAvailable": 2, "selector": {}}));
    let c = Counts { current_healthy: 3, desired_healthy: 2, expected_pods: 3, disrupted: BTreeMap::new() };
    let s = status(&b, &c, now()).unwrap();
    assert_eq!(s.disruptions_allowed, 1);
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.disrupted_pods, None);
    let cond = &s.conditions.as_ref().unwrap()[0];
    assert_eq!((cond.type_.as_str(), cond.status.as_str(), cond.reason.as_str()), (CONDITION, "True", SUFFICIENT));
    assert_eq!(cond.observed_generation, Some(2));
    // Written: up to date, nothing more to write.
    let mut written = b.clone();
    written.status = Some(s.clone());
    assert!(conditions_up_to_date(&written));
    assert_eq!(status(&written, &c, now()), None);
    // One pod fewer: no disruptions allowed; the condition flips (and its time moves).
    let later = Timestamp::from_second(100_500).unwrap();
    let fewer = Counts { current_healthy: 2, ..c.clone() };
    let s2 = status(&written, &fewer, later).unwrap();
    assert_eq!(s2.disruptions_allowed, 0);
    let cond = &s2.conditions.as_ref().unwrap()[0];
    assert_eq!((cond.status.as_str(), cond.reason.as_str()), ("False", INSUFFICIENT));
    assert_eq!(cond.last_transition_time, at(100_500));
    assert_eq!(s2.conditions.as_ref().unwrap().len(), 1);
    // No pods expected: never allowed.
    let none = Counts { current_healthy: 0, desired_healthy: -1, expected_pods: 0, disrupted: BTreeMap::new() };
    assert_eq!(disruptions_allowed(&none), 0);
    // A new generation is observed even if the counts are the same.
    let mut newer = written.clone();
    newer.metadata.generation = Some(3);
    assert_eq!(status(&newer, &c, now()).unwrap().observed_generation, Some(3));
    // The disrupted pods are part of the status.
    let with = Counts { disrupted: BTreeMap::from([("a".to_string(), at(5))]), ..c.clone() };
    assert_eq!(status(&written, &with, now()).unwrap().disrupted_pods.unwrap().len(), 1);
}

#[test]
fn fail_safe_allows_nothing_once() {
    let mut b = pdb(json!({"minAvailable": 1, "selector": {}}));
    let c = Counts { current_healthy: 3, desired_healthy: 1, expected_pods: 3, disrupted: BTreeMap::new() };
    b.status = status(&b, &c, now());
    let s = fail_safe(&b, "found no controllers for pod \"a\"", now()).unwrap();
    assert_eq!(s.disruptions_allowed, 0);
    assert_eq!(s.current_healthy, 3);
    let cond = &s.conditions.as_ref().unwrap()[0];
    assert_eq!((cond.status.as_str(), cond.reason.as_str()), ("False", SYNC_FAILED));
    assert_eq!(cond.message, "found no controllers for pod \"a\"");
    b.status = Some(s);
    assert_eq!(fail_safe(&b, "found no controllers for pod \"a\"", now()), None);
    // Recovered: the status is rewritten with the right condition.
    assert!(!conditions_up_to_date(&b));
    assert_eq!(status(&b, &c, now()).unwrap().disruptions_allowed, 2);
}
