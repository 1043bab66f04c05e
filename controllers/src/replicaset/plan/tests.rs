use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;

fn owner(replicas: i32) -> Owner {
    Owner {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        namespace: "ns".into(),
        name: "rs".into(),
        uid: "rs-uid".into(),
        replicas,
        selector: Some(Selector::from_iter([("app".to_string(), "web".to_string())])),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into()), ("tier".into(), "fe".into())])),
                ..Default::default()
            }),
            spec: None,
        },
        min_ready_seconds: 0,
        generation: Some(1),
        deleting: false,
    }
}

struct P {
    name: &'static str,
    owner: Option<&'static str>,
    labels: &'static [(&'static str, &'static str)],
    node: Option<&'static str>,
    phase: &'static str,
    ready_at: Option<i64>,
    created: i64,
}

impl Default for P {
    fn default() -> Self {
        P {
            name: "p",
            owner: Some("rs-uid"),
            labels: &[("app", "web")],
            node: Some("n1"),
            phase: "Running",
            ready_at: Some(10),
            created: 1,
        }
    }
}

fn pod(p: P) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(p.name.into()),
            namespace: Some("ns".into()),
            labels: Some(p.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            owner_references: p.owner.map(|u| vec![pods::controller_ref("apps/v1", "ReplicaSet", "rs", u)]),
            creation_timestamp: Some(Time(Timestamp::from_second(p.created).unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: p.node.map(str::to_string), ..Default::default() }),
        status: Some(PodStatus {
            phase: Some(p.phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if p.ready_at.is_some() { "True" } else { "False" }.into(),
                last_transition_time: p.ready_at.map(|s| Time(Timestamp::from_second(s).unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

#[test]
fn claims_own_adopt_release_and_leave_others_alone() {
    let pods = vec![
        pod(P { name: "mine", ..Default::default() }),
        pod(P { name: "orphan", owner: None, ..Default::default() }),
        pod(P { name: "orphan-other-labels", owner: None, labels: &[("app", "db")], ..Default::default() }),
        pod(P { name: "mine-relabelled", labels: &[("app", "db")], ..Default::default() }),
        pod(P { name: "someone-elses", owner: Some("other"), ..Default::default() }),
        pod(P { name: "finished-orphan", owner: None, phase: "Succeeded", ..Default::default() }),
    ];
    let c = claim(&owner(3), &pods);
    let names = |v: &[Arc<Pod>]| v.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(names(&c.owned), ["mine"]);
    assert_eq!(names(&c.adopt), ["orphan"]);
    assert_eq!(names(&c.release), ["mine-relabelled"]);
    // Being deleted: it adopts nothing and releases nothing.
    let mut o = owner(3);
    o.deleting = true;
    let c = claim(&o, &pods);
    assert!(c.adopt.is_empty() && c.release.is_empty());
    assert_eq!(c.owned.len(), 2);
    // No selector: selects nothing.
    let mut o = owner(3);
    o.selector = None;
    assert!(claim(&o, &pods).adopt.is_empty());
}

#[test]
fn scale_counts_pending_creates_and_deletes() {
    let active = vec![pod(P { name: "a", ..Default::default() }), pod(P { name: "b", ..Default::default() })];
    assert_eq!(scale(&owner(5), &active, 0, &[], &active), Scale::Create(3));
    // Two creates the watch has not shown yet: only one more.
    assert_eq!(scale(&owner(5), &active, 2, &[], &active), Scale::Create(1));
    assert_eq!(scale(&owner(2), &active, 0, &[], &active), Scale::Nothing);
    assert_eq!(scale(&owner(1), &active, 0, &[], &active).len_deleted(), 1);
    // "a" is already being deleted (not yet shown): one to go is "b".
    assert_eq!(scale(&owner(0), &active, 0, &["a".into()], &active), Scale::Delete(vec!["b".into()]));
    assert_eq!(scale(&owner(1), &active, 0, &["a".into()], &active), Scale::Nothing);
    assert_eq!(scale(&owner(10_000), &[], 0, &[], &[]), Scale::Create(BURST));
}

impl Scale {
    fn len_deleted(&self) -> usize {
        match self {
            Scale::Delete(v) => v.len(),
            _ => 0,
        }
    }
}

#[test]
fn deletion_ranking_follows_upstream() {
    let o = owner(0);
    let cands = vec![
        pod(P { name: "ready-old", ready_at: Some(10), created: 1, node: Some("n1"), ..Default::default() }),
        pod(P { name: "unscheduled", node: None, phase: "Pending", ready_at: None, ..Default::default() }),
        pod(P { name: "pending", phase: "Pending", ready_at: None, node: Some("n2"), ..Default::default() }),
        pod(P { name: "not-ready", ready_at: None, node: Some("n2"), ..Default::default() }),
        pod(P { name: "ready-new", ready_at: Some(20), created: 1, node: Some("n3"), ..Default::default() }),
        pod(P { name: "crowded", ready_at: Some(10), created: 1, node: Some("n4"), ..Default::default() }),
        pod(P { name: "crowded-2", ready_at: Some(10), created: 2, node: Some("n4"), ..Default::default() }),
    ];
    let order = rank_for_deletion(&cands, &cands, &o);
    assert_eq!(order, ["unscheduled", "pending", "not-ready", "crowded-2", "crowded", "ready-new", "ready-old"]);
}

#[test]
fn slow_start_doubles() {
    assert_eq!(slow_start_batches(0), Vec::<usize>::new());
    assert_eq!(slow_start_batches(1), [1]);
    assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
}

#[test]
fn counts_follow_readiness_and_min_ready_seconds() {
    let mut o = owner(3);
    o.min_ready_seconds = 30;
    let now = Timestamp::from_second(100).unwrap();
    let active = vec![
        pod(P { name: "a", ready_at: Some(10), ..Default::default() }),
        pod(P { name: "b", ready_at: Some(90), labels: &[("app", "web"), ("tier", "fe")], ..Default::default() }),
        pod(P { name: "c", ready_at: None, ..Default::default() }),
    ];
    let c = counts(&o, &active, now);
    assert_eq!((c.replicas, c.fully_labeled, c.ready, c.available), (3, 1, 2, 1));
    assert_eq!(c.next_available_in, Some(20));
}
