use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::json;

use super::*;
use crate::statefulset::identity::tests::sts;

const NOW: i64 = 1_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

/// A set without claim templates unless `extra` gives some.
fn set(extra: serde_json::Value) -> Set {
    let mut base = json!({"spec": {"volumeClaimTemplates": null}});
    merge(&mut base, extra);
    sts(base)
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn template(image: &str) -> PodTemplateSpec {
    serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": image}]}}))
    .unwrap()
}

/// One revision, current and update.
fn same() -> Revisions {
    Revisions {
        current: "web-r1".into(),
        update: "web-r1".into(),
        current_template: template("nginx:1"),
        update_template: template("nginx:1"),
        collision_count: 0,
    }
}

/// A rollout from `web-r1` (nginx:1) to `web-r2` (nginx:2).
fn rolling() -> Revisions {
    Revisions { update: "web-r2".into(), update_template: template("nginx:2"), ..same() }
}

/// A pod of `s` at `ordinal` and revision `rev` in `state`: ready (Running and Ready since
/// second `ready_at`), running, pending, failed, succeeded, or terminating (ready, deleting).
fn pod_at(s: &Set, ordinal: i32, rev: &str, state: &str, ready_at: i64) -> Arc<Pod> {
    let mut p = identity::new_pod(s, &template("nginx:1"), rev, ordinal);
    p.metadata.uid = Some(format!("uid-{ordinal}"));
    let (phase, ready) = match state {
        "ready" | "terminating" => ("Running", true),
        "running" => ("Running", false),
        "pending" => ("Pending", false),
        "failed" => ("Failed", false),
        "succeeded" => ("Succeeded", false),
        other => panic!("{other}"),
    };
    if state == "terminating" {
        p.metadata.deletion_timestamp = Some(Time(now()));
    }
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(Timestamp::from_second(ready_at).unwrap())),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Arc::new(p)
}

fn pod(s: &Set, ordinal: i32, rev: &str, state: &str) -> Arc<Pod> {
    pod_at(s, ordinal, rev, state, 0)
}

struct World {
    set: Set,
    revs: Revisions,
    pods: Vec<Arc<Pod>>,
    in_flight: HashSet<String>,
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
}

impl World {
    fn new(set: Set, revs: Revisions) -> World {
        World { set, revs, pods: vec![], in_flight: HashSet::new(), claims: HashMap::new() }
    }

    fn with(mut self, f: impl Fn(&Set) -> Vec<Arc<Pod>>) -> World {
        self.pods = f(&self.set);
        self
    }

    fn claim(mut self, name: &str, owners: Vec<OwnerReference>, deleting: bool) -> World {
        let c = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some("7".into()),
                owner_references: (!owners.is_empty()).then_some(owners),
                deletion_timestamp: deleting.then(|| Time(now())),
                ..Default::default()
            },
            ..Default::default()
        };
        self.claims.insert(name.into(), Arc::new(c));
        self
    }

    fn plan(&self) -> Plan {
        plan(&Input {
            set: &self.set,
            revisions: &self.revs,
            pods: &self.pods,
            in_flight: &self.in_flight,
            claims: &self.claims,
            now: now(),
        })
    }
}

/// The plan's steps, spelled short, by phase.
fn steps(p: &Plan) -> Vec<Vec<String>> {
    p.phases
        .iter()
        .map(|ph| {
            ph.iter()
                .flatten()
                .map(|s| match s {
                    Step::CreateClaim { claim, .. } => format!("claim {}", claim.metadata.name.clone().unwrap()),
                    Step::CreatePod(p) => {
                        format!("create {}@{}", p.metadata.name.clone().unwrap(), identity::revision(p))
                    }
                    Step::DeletePod { name, why } => format!("delete {name} {why:?}"),
                    Step::LabelPod { name, .. } => format!("label {name}"),
                    Step::SetClaimOwners { claim, owners, .. } => {
                        let uids: Vec<_> = owners.iter().map(|o| o.uid.clone()).collect();
                        format!("owners {claim} {uids:?}")
                    }
                    Step::Fail(m) => format!("fail {m}"),
                })
                .collect()
        })
        .collect()
}

fn flat(p: &Plan) -> Vec<String> {
    steps(p).into_iter().flatten().collect()
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_in_order() {
    let w = World::new(set(json!({})), same());
    assert_eq!(flat(&w.plan()), ["create web-0@web-r1"]);
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "pending")]);
    assert!(flat(&w.plan()).is_empty(), "web-0 is not Running and Ready yet");
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "running")]);
    assert!(flat(&w.plan()).is_empty());
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["create web-1@web-r1"]);
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["create web-2@web-r1"]);
    let w = w.with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    assert!(flat(&w.plan()).is_empty());
}

#[test]
fn a_lower_pod_going_unready_holds_back_the_next() {
    let w =
        World::new(set(json!({})), same()).with(|s| vec![pod(s, 0, "web-r1", "running"), pod(s, 1, "web-r1", "ready")]);
    assert!(flat(&w.plan()).is_empty());
    let w = World::new(set(json!({})), same()).with(|s| vec![pod(s, 0, "web-r1", "terminating")]);
    assert!(flat(&w.plan()).is_empty(), "wait for a terminating pod to go");
}

#[test]
fn min_ready_seconds_holds_back_the_next_pod_and_schedules_a_recheck() {
    let w = World::new(set(json!({"spec": {"minReadySeconds": 30}})), same())
        .with(|s| vec![pod_at(s, 0, "web-r1", "ready", NOW - 10)]);
    let p = w.plan();
    assert!(flat(&p).is_empty());
    assert_eq!(p.recheck_in, Some(20));
    assert_eq!((p.status.ready_replicas, p.status.available_replicas), (1, 0));
    let w = w.with(|s| vec![pod_at(s, 0, "web-r1", "ready", NOW - 30)]);
    let p = w.plan();
    assert_eq!(flat(&p), ["create web-1@web-r1"]);
    assert_eq!(p.recheck_in, Some(30), "not all available yet: look again after minReadySeconds");
}

#[test]
fn parallel_creates_every_missing_pod_at_once() {
    let w = World::new(set(json!({"spec": {"podManagementPolicy": "Parallel"}})), same())
        .with(|s| vec![pod(s, 1, "web-r1", "pending")]);
    let p = w.plan();
    assert_eq!(steps(&p), [vec!["create web-0@web-r1", "create web-2@web-r1"]]);
    assert_eq!(p.phases[0].len(), 2, "one unit per pod, run together");
}

#[test]
fn ordinals_start_where_spec_ordinals_says() {
    let w = World::new(set(json!({"spec": {"ordinals": {"start": 3}, "podManagementPolicy": "Parallel"}})), same())
        .with(|s| vec![pod(s, 0, "web-r1", "ready")]);
    assert_eq!(
        flat(&w.plan()),
        ["create web-3@web-r1", "create web-4@web-r1", "create web-5@web-r1", "delete web-0 ScaleDown"]
    );
}

#[test]
fn claims_are_made_before_the_pod_that_mounts_them() {
    let s = set(json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "www"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}));
    let w = World::new(s, same());
    let p = w.plan();
    assert_eq!(flat(&p), ["claim www-web-0", "create web-0@web-r1"]);
    let Step::CreatePod(pod) = &p.phases[0][0][1] else { panic!() };
    let vols = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
    assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-0");
    let Step::CreateClaim { claim, .. } = &p.phases[0][0][0] else { panic!() };
    assert!(claim.metadata.owner_references.is_none(), "Retain: no owners");
    // An existing claim is reused; one being deleted holds the pod back.
    let w = w.claim("www-web-0", vec![], false);
    assert_eq!(flat(&w.plan()), ["create web-0@web-r1"]);
    let w = w.claim("www-web-0", vec![], true);
    assert_eq!(flat(&w.plan()), ["fail pvc www-web-0 is being deleted"]);
}

#[test]
fn a_pending_pod_gets_its_missing_claims() {
    let s = set(json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}}));
    let w = World::new(s, same()).with(|s| vec![pod(s, 0, "web-r1", "pending")]);
    assert_eq!(flat(&w.plan()), ["claim www-web-0"]);
}

#[test]
fn retention_when_deleted_delete_makes_the_set_own_new_claims() {
    let s = set(json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
        "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}}));
    let w = World::new(s, same());
    let p = w.plan();
    let Step::CreateClaim { claim, .. } = &p.phases[0][0][0] else { panic!() };
    let owners = claim.metadata.owner_references.clone().unwrap();
    assert_eq!((owners[0].uid.as_str(), owners[0].controller), ("set-uid", Some(true)));
    // An existing claim of a healthy pod without the reference gets it.
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready")]).claim("www-web-0", vec![], false);
    let f = flat(&w.plan());
    assert_eq!(f[0], r#"owners www-web-0 ["set-uid"]"#);
}

#[test]
fn retention_when_scaled_delete_hands_condemned_claims_to_their_pod_first() {
    let s = set(json!({"spec": {"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"},
        "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]}}));
    let w = World::new(s, same())
        .with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready")])
        .claim("www-web-0", vec![], false)
        .claim("www-web-1", vec![], false);
    assert_eq!(steps(&w.plan()), [vec![r#"owners www-web-1 ["uid-1"]"#], vec!["delete web-1 ScaleDown"]]);
    // A claim still owned by an earlier web-1 holds back web-1's re-creation.
    let old = pods::controller_ref("v1", "Pod", "web-1", "uid-old");
    let mut w = w.with(|s| vec![pod(s, 0, "web-r1", "ready")]).claim("www-web-1", vec![old], false);
    w.set.replicas = 2;
    let p = w.plan();
    assert!(flat(&p).is_empty());
    assert_eq!(p.recheck_in, Some(STALE_CLAIM_RECHECK));
}

#[test]
fn ordered_scale_down_goes_highest_first_one_at_a_time() {
    let w = World::new(set(json!({"spec": {"replicas": 1}})), same())
        .with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    assert_eq!(flat(&w.plan()), ["delete web-2 ScaleDown"]);
    let w = w
        .with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r1", "terminating")]);
    assert!(flat(&w.plan()).is_empty(), "wait for web-2 to go");
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["delete web-1 ScaleDown"]);
}

#[test]
fn ordered_scale_down_waits_for_unhealthy_pods_but_may_take_the_first_unhealthy_one() {
    // An unhealthy replica in range blocks everything.
    let w = World::new(set(json!({"spec": {"replicas": 1}})), same())
        .with(|s| vec![pod(s, 0, "web-r1", "running"), pod(s, 1, "web-r1", "ready")]);
    assert!(flat(&w.plan()).is_empty());
    // The highest condemned pod is itself the first unhealthy one: it goes.
    let w =
        w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r1", "running")]);
    assert_eq!(flat(&w.plan()), ["delete web-2 ScaleDown"]);
    // A lower condemned pod is unhealthy: a healthy highest one still goes (upstream
    // checks only the pod it deletes), an unhealthy one waits for the lower one.
    let w =
        w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "running"), pod(s, 2, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["delete web-2 ScaleDown"]);
    let w =
        w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "running"), pod(s, 2, "web-r1", "running")]);
    assert!(flat(&w.plan()).is_empty());
}

#[test]
fn parallel_scale_down_deletes_all_at_once() {
    let w = World::new(set(json!({"spec": {"replicas": 1, "podManagementPolicy": "Parallel"}})), same())
        .with(|s| vec![pod(s, 0, "web-r1", "pending"), pod(s, 1, "web-r1", "running"), pod(s, 2, "web-r1", "ready")]);
    assert_eq!(steps(&w.plan()), [vec!["delete web-2 ScaleDown", "delete web-1 ScaleDown"]]);
}

#[test]
fn failed_pods_are_deleted_then_recreated() {
    let w = World::new(set(json!({})), same())
        .with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "failed"), pod(s, 2, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["delete web-1 Finished"]);
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "succeeded")]);
    assert_eq!(flat(&w.plan()), ["delete web-0 Finished"]);
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 2, "web-r1", "ready")]);
    assert_eq!(flat(&w.plan()), ["create web-1@web-r1"]);
}

#[test]
fn pods_in_flight_are_not_created_twice() {
    let mut w = World::new(set(json!({})), same());
    w.in_flight.insert("web-0".into());
    assert!(flat(&w.plan()).is_empty());
    w.set.parallel = true;
    assert_eq!(flat(&w.plan()), ["create web-1@web-r1", "create web-2@web-r1"]);
}

#[test]
fn pods_deleted_but_shown_running_count_as_terminating() {
    let s = set(json!({}));
    let pods = vec![pod(&s, 0, "web-r1", "ready"), pod(&s, 1, "web-r1", "ready")];
    let marked = mark_deleted(pods, &HashSet::from(["web-1".to_string()]), now());
    assert!(marked[0].metadata.deletion_timestamp.is_none());
    assert!(marked[1].metadata.deletion_timestamp.is_some());
    let mut w = World::new(s, same());
    w.pods = marked;
    assert!(flat(&w.plan()).is_empty(), "web-1 is going: wait");
}

#[test]
fn a_missing_identity_label_is_put_back() {
    let w = World::new(set(json!({"spec": {"replicas": 1}})), same()).with(|s| {
        let mut p = (*pod(s, 0, "web-r1", "ready")).clone();
        p.metadata.labels.as_mut().unwrap().remove(identity::POD_NAME_LABEL);
        vec![Arc::new(p)]
    });
    assert_eq!(flat(&w.plan()), ["label web-0"]);
}

#[test]
fn rolling_update_replaces_the_highest_outdated_pod_then_waits_for_it() {
    let s = set(json!({}));
    let w = World::new(s, rolling()).with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    let p = w.plan();
    assert_eq!(flat(&p), ["delete web-2 Update"]);
    assert_eq!((p.status.current_replicas, p.status.updated_replicas), (2, 0));
    // web-2 recreated at the update revision, not ready yet: wait (OrderedReady blocks).
    let w =
        w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r2", "running")]);
    assert!(flat(&w.plan()).is_empty());
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r2", "ready")]);
    assert_eq!(flat(&w.plan()), ["delete web-1 Update"]);
    // A missing pod is recreated at the update revision.
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 2, "web-r2", "ready")]);
    assert_eq!(flat(&w.plan()), ["create web-1@web-r2"]);
}

#[test]
fn parallel_rolling_update_waits_for_an_unavailable_updated_pod() {
    let s = set(json!({"spec": {"podManagementPolicy": "Parallel"}}));
    let w = World::new(s, rolling())
        .with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r2", "running")]);
    assert!(flat(&w.plan()).is_empty());
}

#[test]
fn the_rollout_completes_when_every_pod_is_updated_and_ready() {
    let w = World::new(set(json!({})), rolling()).with(|s| (0..3).map(|i| pod(s, i, "web-r2", "ready")).collect());
    let p = w.plan();
    assert!(flat(&p).is_empty());
    let st = &p.status;
    assert_eq!((st.replicas, st.ready_replicas, st.available_replicas), (3, 3, 3));
    assert_eq!((st.current_replicas, st.updated_replicas), (3, 3));
    assert_eq!((st.current_revision.as_str(), st.update_revision.as_str()), ("web-r2", "web-r2"));
    assert_eq!((st.observed_generation, st.collision_count), (Some(1), Some(0)));
}

#[test]
fn partition_keeps_lower_ordinals_at_the_current_revision() {
    let s = set(json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}));
    assert!(at_current_revision(&s, 1) && !at_current_revision(&s, 2));
    let w = World::new(s, rolling()).with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    assert_eq!(flat(&w.plan()), ["delete web-2 Update"]);
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r1", "ready"), pod(s, 2, "web-r2", "ready")]);
    let p = w.plan();
    assert!(flat(&p).is_empty(), "below the partition nothing is replaced");
    assert_eq!((p.status.current_revision.as_str(), p.status.updated_replicas), ("web-r1", 1));
    // A lost pod below the partition comes back at the current revision.
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 2, "web-r2", "ready")]);
    let p = w.plan();
    assert_eq!(flat(&p), ["create web-1@web-r1"]);
    let Step::CreatePod(pod) = &p.phases[0][0][0] else { panic!() };
    assert_eq!(pod.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("nginx:1"));
}

#[test]
fn on_delete_replaces_nothing_but_recreates_at_the_update_revision() {
    let s = set(json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
    let w = World::new(s, rolling()).with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    let p = w.plan();
    assert!(flat(&p).is_empty());
    assert_eq!(p.status.current_revision, "web-r1", "OnDelete never completes a rollout by itself");
    let w = w.with(|s| vec![pod(s, 0, "web-r1", "ready"), pod(s, 2, "web-r1", "ready")]);
    let p = w.plan();
    assert_eq!(flat(&p), ["create web-1@web-r2"]);
    let Step::CreatePod(pod) = &p.phases[0][0][0] else { panic!() };
    assert_eq!(pod.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("nginx:2"));
}

#[test]
fn max_unavailable_replaces_several_at_once() {
    let s = set(json!({"spec": {"replicas": 4, "podManagementPolicy": "Parallel",
        "updateStrategy": {"rollingUpdate": {"maxUnavailable": 2, "partition": 0}}}}));
    let w = World::new(s, rolling()).with(|s| (0..4).map(|i| pod(s, i, "web-r1", "ready")).collect());
    let p = w.plan();
    assert_eq!(steps(&p), [vec!["delete web-3 Update", "delete web-2 Update"]]);
    assert_eq!(p.status.current_replicas, 2);
    // One unavailable already: one more may go.
    let w = w.with(|s| {
        vec![
            pod(s, 0, "web-r1", "ready"),
            pod(s, 1, "web-r1", "ready"),
            pod(s, 2, "web-r1", "ready"),
            pod(s, 3, "web-r2", "running"),
        ]
    });
    assert_eq!(flat(&w.plan()), ["delete web-2 Update"]);
}

#[test]
fn max_unavailable_is_a_number_or_a_percentage_rounded_down_at_least_one() {
    assert_eq!(max_unavailable(None, 10), Ok(1));
    assert_eq!(max_unavailable(Some(&IntOrString::Int(3)), 10), Ok(3));
    assert_eq!(max_unavailable(Some(&IntOrString::String("25%".into())), 10), Ok(2));
    assert_eq!(max_unavailable(Some(&IntOrString::String("5%".into())), 10), Ok(1));
    assert!(max_unavailable(Some(&IntOrString::String("x".into())), 10).is_err());
}

#[test]
fn scaling_comes_before_updating() {
    let w = World::new(set(json!({"spec": {"replicas": 2}})), rolling())
        .with(|s| (0..3).map(|i| pod(s, i, "web-r1", "ready")).collect());
    assert_eq!(flat(&w.plan()), ["delete web-2 ScaleDown"]);
}

#[test]
fn a_deleting_set_only_reports() {
    let mut w = World::new(set(json!({})), same()).with(|s| vec![pod(s, 0, "web-r1", "ready")]);
    w.set.deleting = true;
    let p = w.plan();
    assert!(flat(&p).is_empty());
    assert_eq!(p.status.replicas, 1);
}

#[test]
fn status_counts_and_changes() {
    let w = World::new(set(json!({})), rolling()).with(|s| {
        vec![pod(s, 0, "web-r1", "ready"), pod(s, 1, "web-r2", "running"), pod(s, 2, "web-r2", "terminating")]
    });
    let p = w.plan();
    let st = &p.status;
    assert_eq!((st.replicas, st.ready_replicas, st.available_replicas), (3, 2, 2));
    assert_eq!((st.current_replicas, st.updated_replicas), (1, 1), "terminating pods count for neither revision");
    assert_eq!(st.current_revision, "web-r1");
    assert!(status_changed(&w.set, st));
    let mut shown = w.set.clone();
    shown.shown = st.clone();
    assert!(!status_changed(&shown, st));
}

#[test]
fn claiming_pods_follows_controller_refs_selector_and_names() {
    let s = set(json!({}));
    let mk = |name: &str, owner: Option<&str>, app: &str| {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: owner.map(|u| vec![pods::controller_ref("apps/v1", "StatefulSet", "web", u)]),
                ..Default::default()
            },
            ..Default::default()
        })
    };
    let all = vec![
        mk("web-0", Some("set-uid"), "web"),
        mk("web-1", None, "web"),
        mk("other-1", None, "web"),
        mk("web-2", Some("set-uid"), "db"),
        mk("web-3", Some("other-uid"), "web"),
    ];
    let c = claim(&s, &all);
    let names = |v: &[Arc<Pod>]| v.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(names(&c.owned), ["web-0"]);
    assert_eq!(names(&c.adopt), ["web-1"]);
    assert_eq!(names(&c.release), ["web-2"]);
    let mut deleting = s.clone();
    deleting.deleting = true;
    let c = claim(&deleting, &all);
    assert!(c.adopt.is_empty() && c.release.is_empty());
}

#[test]
fn slow_start_doubles_up_to_the_batch_limit() {
    assert_eq!(slow_start_batches(0), Vec::<usize>::new());
    assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
    let big = slow_start_batches(2000);
    assert_eq!(big.iter().sum::<usize>(), 2000);
    assert!(big.iter().all(|b| *b <= MAX_BATCH));
}

#[test]
fn claiming_revisions_takes_ours_and_selected_orphans() {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    let s = set(json!({}));
    let mk = |name: &str, owner: Option<&str>, app: &str| {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: owner.map(|u| vec![pods::controller_ref("apps/v1", "StatefulSet", "web", u)]),
                ..Default::default()
            },
            data: None,
            revision: 1,
        })
    };
    let all =
        vec![mk("a", Some("set-uid"), "web"), mk("b", None, "web"), mk("c", Some("x"), "web"), mk("d", None, "db")];
    let (owned, orphans) = claim_revisions(&s, &all);
    let names = |v: &[Arc<ControllerRevision>]| v.iter().map(|r| r.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!((names(&owned), names(&orphans)), (vec!["a".to_string()], vec!["b".to_string()]));
}
