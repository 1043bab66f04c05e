use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

const RUN: Fit = Fit { should_run: true, should_continue: true };
const STAY: Fit = Fit { should_run: false, should_continue: true };
const NO: Fit = Fit { should_run: false, should_continue: false };

fn now() -> Timestamp {
    Timestamp::from_second(10_000).unwrap()
}

fn ds(strategy: serde_json::Value) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 3},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"role": "edge"}}}}
    }))
    .unwrap()
}

struct P {
    name: &'static str,
    node: &'static str,
    /// Bound (`spec.nodeName`) or only pinned by affinity.
    bound: bool,
    hash: &'static str,
    phase: &'static str,
    /// Ready since (seconds); `None` = not ready.
    ready_at: Option<i64>,
    created: i64,
    deleting: bool,
}

impl Default for P {
    fn default() -> Self {
        P {
            name: "p",
            node: "n1",
            bound: true,
            hash: "new",
            phase: "Running",
            ready_at: Some(1_000),
            created: 1,
            deleting: false,
        }
    }
}

fn pod(p: P) -> Arc<Pod> {
    let affinity = eligibility::pin_to_node(None, p.node);
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(p.name.into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".into(), "agent".into()), (HASH_LABEL.into(), p.hash.into())])),
            owner_references: Some(vec![pods::controller_ref("apps/v1", "DaemonSet", "agent", "ds-uid")]),
            creation_timestamp: Some(Time(Timestamp::from_second(p.created).unwrap())),
            deletion_timestamp: p.deleting.then(|| Time(Timestamp::from_second(5_000).unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: p.bound.then(|| p.node.to_string()),
            affinity: Some(affinity),
            ..Default::default()
        }),
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

fn fits(list: &[(&str, Fit)]) -> BTreeMap<String, Fit> {
    list.iter().map(|(n, f)| (n.to_string(), *f)).collect()
}

fn view<'a>(fits: &'a BTreeMap<String, Fit>, pods: &'a BTreeMap<String, Vec<Arc<Pod>>>) -> View<'a> {
    View { fits, pods, hash: "new", generation: None, min_ready_seconds: 0, now: now() }
}

fn run_manage(fits: &BTreeMap<String, Fit>, pods: &[Arc<Pod>], surge: bool) -> Manage {
    let grouped = by_node(pods, false);
    manage(&view(fits, &grouped), surge, &mut Backoff::default(), "ds-uid/1", Instant::now())
}

#[test]
fn creates_on_eligible_nodes_without_a_pod() {
    let f = fits(&[("n1", RUN), ("n2", RUN), ("n3", STAY), ("n4", NO)]);
    let m = run_manage(&f, &[pod(P { name: "a", node: "n1", ..Default::default() })], false);
    assert_eq!(m.create, vec!["n2"]);
    assert!(m.delete.is_empty() && m.orphaned.is_empty());
}

#[test]
fn keeps_only_the_oldest_pod_per_node() {
    let f = fits(&[("n1", RUN)]);
    let pods = [
        pod(P { name: "young", created: 30, ..Default::default() }),
        pod(P { name: "old", created: 10, ..Default::default() }),
        pod(P { name: "pinned-only", bound: false, created: 5, ..Default::default() }),
        pod(P { name: "going", created: 1, deleting: true, ..Default::default() }),
    ];
    let m = run_manage(&f, &pods, false);
    // Bound pods rank before unbound ones; a pod being deleted is left alone.
    assert_eq!(m.delete, vec!["young", "pinned-only"]);
    assert!(m.create.is_empty());
}

#[test]
fn deletes_pods_where_they_may_not_stay_and_on_vanished_nodes() {
    let f = fits(&[("n1", NO), ("n2", STAY)]);
    let pods = [
        pod(P { name: "evicted", node: "n1", ..Default::default() }),
        pod(P { name: "evicting", node: "n1", deleting: true, ..Default::default() }),
        pod(P { name: "tolerated", node: "n2", ..Default::default() }),
        pod(P { name: "ghost", node: "gone", ..Default::default() }),
        pod(P { name: "ghost-unbound", node: "gone", bound: false, ..Default::default() }),
    ];
    let m = run_manage(&f, &pods, false);
    assert_eq!(m.delete, vec!["evicted"]);
    assert_eq!(m.orphaned, vec!["ghost", "ghost-unbound"]);
    assert!(m.create.is_empty());
}

#[test]
fn failed_pods_are_deleted_with_backoff_and_succeeded_ones_at_once() {
    let f = fits(&[("n1", RUN), ("n2", RUN)]);
    let pods = [
        pod(P { name: "crashed", node: "n1", phase: "Failed", ..Default::default() }),
        pod(P { name: "done", node: "n2", phase: "Succeeded", ..Default::default() }),
    ];
    let grouped = by_node(&pods, false);
    let mut backoff = Backoff::default();
    let t0 = Instant::now();
    let m = manage(&view(&f, &grouped), false, &mut backoff, "u/1", t0);
    assert_eq!(m.delete, vec!["crashed", "done"]);
    assert_eq!(m.failed, vec![("crashed".to_string(), "n1".to_string())]);
    assert_eq!(m.succeeded, vec![("done".to_string(), "n2".to_string())]);
    assert_eq!(m.retry_in, None);
    // The same node fails again at once: backing off (1 s), recheck then.
    let m = manage(&view(&f, &grouped), false, &mut backoff, "u/1", t0 + Duration::from_millis(200));
    assert_eq!(m.delete, vec!["done"]);
    assert_eq!(m.retry_in, Some(Duration::from_millis(800)));
    // After the delay it is deleted, and the next delay doubles.
    let t1 = t0 + Duration::from_millis(1_100);
    let m = manage(&view(&f, &grouped), false, &mut backoff, "u/1", t1);
    assert_eq!(m.delete, vec!["crashed", "done"]);
    assert_eq!(backoff.waiting("u/1/n1", t1 + Duration::from_secs(1)), Some(Duration::from_secs(1)));
    // Failed pods that are already being deleted are gone from the plan.
    let grouped = by_node(&[pod(P { name: "crashed", phase: "Failed", deleting: true, ..Default::default() })], false);
    assert!(grouped.is_empty());
    assert_eq!(by_node(&[pod(P { phase: "Failed", deleting: true, ..Default::default() })], true).len(), 1);
}

#[test]
fn backoff_doubles_caps_and_expires() {
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let t = Instant::now();
    assert_eq!(b.waiting("k", t), None);
    b.next("k", t);
    assert_eq!(b.waiting("k", t), Some(Duration::from_secs(1)));
    b.next("k", t);
    b.next("k", t);
    b.next("k", t);
    assert_eq!(b.waiting("k", t), Some(Duration::from_secs(4)));
    assert_eq!(b.waiting("k", t + Duration::from_secs(5)), None);
    // Untouched for more than twice the maximum: starts over.
    b.next("k", t + Duration::from_secs(9));
    assert_eq!(b.waiting("k", t + Duration::from_secs(9)), Some(Duration::from_secs(1)));
    b.gc(t + Duration::from_secs(30));
    assert!(b.entries.is_empty());
}

#[test]
fn surge_keeps_old_pod_until_new_one_is_available() {
    let f = fits(&[("n1", RUN), ("n2", RUN), ("n3", RUN)]);
    let pods = [
        // n1: new pod not ready yet, old ready: keep both.
        pod(P { name: "n1-old", node: "n1", hash: "old", created: 1, ..Default::default() }),
        pod(P { name: "n1-new", node: "n1", ready_at: None, created: 2, ..Default::default() }),
        // n2: new pod available: old goes; the extra new pod goes too.
        pod(P { name: "n2-old", node: "n2", hash: "old", created: 1, ..Default::default() }),
        pod(P { name: "n2-new", node: "n2", created: 2, ..Default::default() }),
        pod(P { name: "n2-new2", node: "n2", created: 3, ..Default::default() }),
        // n3: old pod not ready: replaced.
        pod(P { name: "n3-old", node: "n3", hash: "old", ready_at: None, created: 1, ..Default::default() }),
        pod(P { name: "n3-new", node: "n3", ready_at: None, created: 2, ..Default::default() }),
    ];
    let m = run_manage(&f, &pods, true);
    assert_eq!(m.delete, vec!["n2-new2", "n2-old", "n3-old"]);
    assert!(m.create.is_empty());
    // Surging, a node whose only pod is being deleted gets a new one at once.
    let m = run_manage(&fits(&[("n1", RUN)]), &[pod(P { deleting: true, ..Default::default() })], true);
    assert_eq!(m.create, vec!["n1"]);
    let m = run_manage(&fits(&[("n1", RUN)]), &[pod(P { deleting: true, ..Default::default() })], false);
    assert!(m.create.is_empty());
}

#[test]
fn rolling_update_without_surge_stays_within_max_unavailable() {
    let f = fits(&[("n1", RUN), ("n2", RUN), ("n3", RUN), ("n4", RUN)]);
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", hash: "old", ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ..Default::default() }),
            pod(P { name: "c", node: "n3", hash: "old", ..Default::default() }),
            pod(P { name: "d", node: "n4", ..Default::default() }),
        ],
        false,
    );
    let v = view(&f, &pods);
    assert_eq!(rolling_update(&v, 0, 1).delete, vec!["a"]);
    assert_eq!(rolling_update(&v, 0, 2).delete, vec!["a", "b"]);
    assert!(rolling_update(&v, 0, 1).create.is_empty());
    // A node still waiting for its new pod counts as unavailable: no room left.
    let f2 = fits(&[("n1", RUN), ("n2", RUN), ("n3", RUN), ("n4", RUN), ("n5", RUN)]);
    assert!(rolling_update(&view(&f2, &pods), 0, 1).delete.is_empty());
    // Unavailable old pods are replaced regardless of the budget.
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", hash: "old", ready_at: None, ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ready_at: None, ..Default::default() }),
            pod(P { name: "c", node: "n3", hash: "old", ..Default::default() }),
            pod(P { name: "d", node: "n4", ..Default::default() }),
        ],
        false,
    );
    assert_eq!(rolling_update(&view(&f, &pods), 0, 1).delete, vec!["a", "b"]);
    // A new pod that is not available yet holds the next deletion back.
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", ready_at: None, ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ..Default::default() }),
        ],
        false,
    );
    let f = fits(&[("n1", RUN), ("n2", RUN)]);
    assert!(rolling_update(&view(&f, &pods), 0, 1).delete.is_empty());
    // minReadySeconds: ready but not yet available counts as unavailable.
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", ready_at: Some(9_995), ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ..Default::default() }),
        ],
        false,
    );
    let mut v = view(&f, &pods);
    assert_eq!(rolling_update(&v, 0, 1).delete, vec!["b"]);
    v.min_ready_seconds = 10;
    assert!(rolling_update(&v, 0, 1).delete.is_empty());
}

#[test]
fn rolling_update_with_surge_creates_before_deleting() {
    let f = fits(&[("n1", RUN), ("n2", RUN), ("n3", RUN), ("n4", NO)]);
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", hash: "old", ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ..Default::default() }),
            pod(P { name: "c", node: "n3", hash: "old", ready_at: None, ..Default::default() }),
        ],
        false,
    );
    let r = rolling_update(&view(&f, &pods), 1, 0);
    // n3's old pod is unavailable: a new pod there at once; one more within maxSurge.
    assert_eq!(r.create, vec!["n3", "n1"]);
    assert!(r.delete.is_empty());
    // A surged node: old pod deleted once the new one is available.
    let pods = by_node(
        &[
            pod(P { name: "a-old", node: "n1", hash: "old", created: 1, ..Default::default() }),
            pod(P { name: "a-new", node: "n1", created: 2, ..Default::default() }),
            pod(P { name: "b-old", node: "n2", hash: "old", created: 1, ..Default::default() }),
            pod(P { name: "b-new", node: "n2", ready_at: None, created: 2, ..Default::default() }),
            pod(P { name: "c", node: "n3", hash: "old", ..Default::default() }),
        ],
        false,
    );
    let r = rolling_update(&view(&f, &pods), 1, 0);
    assert_eq!(r.delete, vec!["a-old"]);
    // b is still surging: no room for c.
    assert!(r.create.is_empty());
    // An old pod on a node the DaemonSet left goes only once the rest are available.
    let f = fits(&[("n1", RUN), ("n2", NO)]);
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", ..Default::default() }),
            pod(P { name: "left", node: "n2", hash: "old", ..Default::default() }),
        ],
        false,
    );
    assert_eq!(rolling_update(&view(&f, &pods), 1, 0).delete, vec!["left"]);
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", ready_at: None, ..Default::default() }),
            pod(P { name: "left", node: "n2", hash: "old", ..Default::default() }),
        ],
        false,
    );
    assert!(rolling_update(&view(&f, &pods), 1, 0).delete.is_empty());
}

#[test]
fn status_counts_what_rollout_status_reads() {
    let f = fits(&[("n1", RUN), ("n2", RUN), ("n3", RUN), ("n4", NO), ("n5", STAY)]);
    let pods = by_node(
        &[
            pod(P { name: "a", node: "n1", ..Default::default() }),
            pod(P { name: "b", node: "n2", hash: "old", ready_at: Some(9_995), ..Default::default() }),
            pod(P { name: "x", node: "n4", ..Default::default() }),
            pod(P { name: "y", node: "n5", ..Default::default() }),
        ],
        false,
    );
    let mut v = view(&f, &pods);
    v.min_ready_seconds = 10;
    let (c, next) = counts(&v);
    assert_eq!(
        c,
        Counts { desired: 3, current: 2, misscheduled: 2, ready: 2, available: 1, unavailable: 2, updated: 1 }
    );
    assert_eq!(next, Some(5));
    v.min_ready_seconds = 0;
    let (c, next) = counts(&v);
    assert_eq!(c.available, 2);
    assert_eq!(c.unavailable, 1);
    assert_eq!(next, None);
}

#[test]
fn status_waits_for_min_ready_seconds() {
    let f = fits(&[("n1", RUN)]);
    let pods = by_node(&[pod(P { name: "b", ready_at: Some(9_995), ..Default::default() })], false);
    let mut v = view(&f, &pods);
    v.min_ready_seconds = 10;
    let (c, next) = counts(&v);
    assert_eq!((c.ready, c.available, c.unavailable), (1, 0, 1));
    assert_eq!(next, Some(5));
}

#[test]
fn strategy_defaults_and_percentages() {
    let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 0}}));
    assert_eq!(strategy(&d, 10).unwrap(), Strategy::RollingUpdate { max_surge: 0, max_unavailable: 3 });
    assert!(!allows_surge(&d));
    let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "10%"}}));
    assert_eq!(strategy(&d, 5).unwrap(), Strategy::RollingUpdate { max_surge: 1, max_unavailable: 0 });
    assert!(allows_surge(&d));
    let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}));
    assert_eq!(strategy(&d, 5).unwrap(), Strategy::RollingUpdate { max_surge: 0, max_unavailable: 1 });
    let d = ds(json!({}));
    assert_eq!(strategy(&d, 5).unwrap(), Strategy::RollingUpdate { max_surge: 0, max_unavailable: 1 });
    let d = ds(json!({"type": "OnDelete"}));
    assert_eq!(strategy(&d, 5).unwrap(), Strategy::OnDelete);
    assert!(!allows_surge(&d));
    let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "x"}}));
    assert!(strategy(&d, 5).is_err());
    assert_eq!(scaled(&IntOrString::String("50%".into()), 3, true), Ok(2));
    assert_eq!(scaled(&IntOrString::String("50%".into()), 3, false), Ok(1));
}

#[test]
fn new_pods_are_pinned_labelled_and_tolerant() {
    let d = ds(json!({}));
    let p = new_pod(&d, "h1", "n9");
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("h1"));
    assert_eq!(labels.get(GENERATION_LABEL).map(String::as_str), Some("3"));
    assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].kind, "DaemonSet");
    assert_eq!(eligibility::target_node(&p).as_deref(), Some("n9"));
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.node_name, None);
    assert_eq!(spec.node_selector.as_ref().unwrap().get("role").map(String::as_str), Some("edge"));
    assert_eq!(spec.tolerations.as_ref().unwrap().len(), 6);
    assert!(is_updated(&p, "h1", None));
    assert!(is_updated(&p, "other", Some(3)));
    assert!(!is_updated(&p, "other", Some(4)));
    // The upstream annotation wins over metadata.generation.
    let mut d2 = d.clone();
    d2.metadata.annotations = Some(BTreeMap::from([(GENERATION_ANNOTATION.to_string(), "7".to_string())]));
    assert_eq!(template_generation(&d2), Some(7));
}

#[test]
fn claims_adopt_orphans_and_release_unselected() {
    let sel = selector(&ds(json!({}))).unwrap().unwrap();
    let mine = pod(P { name: "mine", ..Default::default() });
    let mut orphan = (*pod(P { name: "orphan", ..Default::default() })).clone();
    orphan.metadata.owner_references = None;
    let mut foreign = orphan.clone();
    foreign.metadata.name = Some("foreign".into());
    foreign.metadata.owner_references = Some(vec![pods::controller_ref("apps/v1", "ReplicaSet", "rs", "rs-uid")]);
    let mut unselected = (*mine).clone();
    unselected.metadata.name = Some("unselected".into());
    unselected.metadata.labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let mut orphan_going = orphan.clone();
    orphan_going.metadata.name = Some("orphan-going".into());
    orphan_going.metadata.deletion_timestamp = Some(Time(now()));
    let all: Vec<Arc<Pod>> =
        vec![mine, Arc::new(orphan), Arc::new(foreign), Arc::new(unselected), Arc::new(orphan_going)];
    let c = claim(&all, "ds-uid", &sel, false);
    let names = |v: &[Arc<Pod>]| v.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(names(&c.owned), vec!["mine"]);
    assert_eq!(names(&c.adopt), vec!["orphan"]);
    assert_eq!(names(&c.release), vec!["unselected"]);
    let c = claim(&all, "ds-uid", &sel, true);
    assert_eq!(names(&c.owned), vec!["mine", "unselected"]);
    assert!(c.adopt.is_empty());
    let mut everything = ds(json!({}));
    everything.spec.as_mut().unwrap().selector = Default::default();
    assert!(selector(&everything).unwrap().is_none());
}
