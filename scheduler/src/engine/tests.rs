use std::{sync::Arc, time::Duration};

use super::{fake_api::*, *};
use crate::plugins::volume_binding::ANN_SELECTED_NODE;
use crate::testutil::*;

async fn synced_scheduler(api: &FakeApi, nodes: &[k8s_openapi::api::core::v1::Node]) -> Scheduler {
    let now = Instant::now();
    let mut s = Scheduler::new(api.client(), SchedulerConfig::default());
    s.on_namespace(Change::Init);
    s.on_namespace(Change::InitDone);
    s.on_node(Change::Init, now);
    for n in nodes {
        s.on_node(Change::InitApply(node_data(n)), now);
    }
    s.on_node(Change::InitDone, now);
    s.on_pod(Change::Init, now);
    s.on_pod(Change::InitDone, now);
    assert!(s.synced());
    s.on_claim(Change::Init, now);
    s.on_claim(Change::InitDone, now);
    s.on_volume(Change::Init, now);
    s.on_volume(Change::InitDone, now);
    s.on_class(Change::Init, now);
    s.on_class(Change::InitApply(local_path_class()), now);
    s.on_class(Change::InitDone, now);
    s
}

fn local_path_class() -> ClassData {
    ClassData::from_class(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "local-path"},
            "provisioner": "keelson.io/local-path",
            "volumeBindingMode": "WaitForFirstConsumer",
        }))
        .unwrap(),
    )
}

fn claim(name: &str, extra: serde_json::Value) -> ClaimData {
    let mut c = serde_json::json!({
        "metadata": {"namespace": "d", "name": name, "uid": format!("uid-{name}")},
        "spec": {"storageClassName": "local-path", "resources": {"requests": {"storage": "1Gi"}}},
    });
    json_merge(&mut c, extra);
    ClaimData::from_claim(&serde_json::from_value(c).unwrap())
}

fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A pending pod mounting the claims.
fn with_claims(name: &str, claims: &[&str]) -> Arc<PodInfo> {
    let mut p = pod("d", name, &[("cpu", "1")]);
    spec_mut(&mut p).volumes = Some(
        claims
            .iter()
            .map(|c| {
                serde_json::from_value(serde_json::json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
                    .unwrap()
            })
            .collect(),
    );
    Arc::new(info(&p))
}

fn pending(name: &str, cpu: &str) -> Arc<PodInfo> {
    Arc::new(info(&pod("d", name, &[("cpu", cpu)])))
}

/// Pop and schedule the next pod, then wait for its binding (if any) to finish.
async fn schedule_next(s: &mut Scheduler) {
    let now = Instant::now();
    let popped = s.queue.pop(now).expect("a pending pod");
    s.schedule_one(popped, now);
    if let Some(joined) = s.binds.join_next_with_id().await {
        s.on_bind_joined(joined, Instant::now());
    }
}

#[tokio::test]
async fn binds_a_pending_pod_assumes_it_and_confirms_it() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    s.on_pod(Change::Apply(pending("p", "1")), Instant::now());
    let popped = s.queue.pop(Instant::now()).unwrap();
    s.schedule_one(popped, Instant::now());
    assert!(s.snapshot.is_assumed("d/p"));
    assert_eq!(s.snapshot.node("n1").map(|n| n.requested.milli_cpu), Some(1000));
    let joined = s.binds.join_next_with_id().await.unwrap();
    s.on_bind_joined(joined, Instant::now());
    assert!(!s.queue.contains("d/p"));
    let b = api.wait_for("binding", |r| r.path == "/api/v1/namespaces/d/pods/p/binding").await;
    let body: serde_json::Value = serde_json::from_str(&b.body).unwrap();
    assert_eq!((body["target"]["kind"].as_str(), body["target"]["name"].as_str()), (Some("Node"), Some("n1")));
    // An older, unbound version arriving late changes nothing.
    s.on_pod(Change::Apply(pending("p", "1")), Instant::now());
    assert!(!s.queue.contains("d/p") && s.snapshot.is_assumed("d/p"));
    // The watch shows the binding: confirmed.
    s.on_pod(Change::Apply(bound(pod("d", "p", &[("cpu", "1")]), "n1")), Instant::now());
    assert!(!s.snapshot.is_assumed("d/p"));
    let ev = api.wait_for("Scheduled event", |r| r.path.contains("/events") && r.body.contains("\"Scheduled\"")).await;
    assert!(ev.body.contains("Successfully assigned d/p to n1"), "{}", ev.body);
    assert_eq!(ev.path, "/apis/events.k8s.io/v1/namespaces/d/events");
}

#[tokio::test]
async fn unschedulable_pods_get_an_event_and_a_condition_then_back_off() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    s.on_pod(Change::Apply(pending("big", "64")), Instant::now());
    schedule_next(&mut s).await;
    assert_eq!((s.queue.active_len(), s.queue.unschedulable_len()), (0, 1));
    let msg = "0/1 nodes are available: 1 Insufficient cpu. \
               preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
    let ev =
        api.wait_for("FailedScheduling", |r| r.path.contains("/events") && r.body.contains("FailedScheduling")).await;
    assert!(ev.body.contains(msg) && ev.body.contains("\"Warning\""), "{}", ev.body);
    let st =
        api.wait_for("status patch", |r| r.method == "PATCH" && r.path == "/api/v1/namespaces/d/pods/big/status").await;
    assert_eq!(st.content_type, "application/strategic-merge-patch+json");
    assert!(st.body.contains("PodScheduled") && st.body.contains("Unschedulable") && st.body.contains(msg));
    // A node joining is a cluster event: the pod is retried once its initial backoff passed.
    let t = Instant::now() + Duration::from_secs(2);
    s.on_node(Change::Apply(node_data(&node("huge", &[("cpu", "128"), ("pods", "10")], &[]))), t);
    assert_eq!(s.queue.active_len(), 1);
    // Deleted while pending: forgotten.
    s.on_pod(Change::Delete(pending("big", "64")), t);
    assert!(!s.queue.contains("d/big"));
}

#[tokio::test]
async fn bind_conflicts_drop_the_pod_and_errors_retry_it() {
    let api = FakeApi::start(|r| {
        if r.path.ends_with("/pods/taken/binding") {
            Reply::Json(409, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":409,"reason":"Conflict","message":"already assigned"}"#.into())
        } else if r.path.ends_with("/pods/flaky/binding") {
            Reply::Json(500, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":500,"message":"boom"}"#.into())
        } else {
            ok_writes(r)
        }
    })
    .await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    s.on_pod(Change::Apply(pending("taken", "1")), Instant::now());
    schedule_next(&mut s).await;
    assert!(!s.queue.contains("d/taken") && s.snapshot.pod("d/taken").is_none());
    s.on_pod(Change::Apply(pending("flaky", "1")), Instant::now());
    schedule_next(&mut s).await;
    assert!(s.snapshot.pod("d/flaky").is_none(), "assumption dropped");
    assert_eq!(s.queue.unschedulable_len(), 1, "retried after a backoff");
    api.wait_for("binding error event", |r| r.body.contains("binding rejected")).await;
}

#[tokio::test]
async fn relists_delete_what_they_do_not_list() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[]), std_node("n2", &[])]).await;
    let now = Instant::now();
    s.on_pod(Change::Apply(pending("gone", "1")), now);
    s.on_pod(Change::Apply(bound(pod("d", "old", &[("cpu", "1")]), "n1")), now);
    s.on_pod(Change::Apply(pending("kept", "1")), now);
    s.on_pod(Change::Init, now);
    s.on_pod(Change::InitApply(pending("kept", "1")), now);
    s.on_pod(Change::InitDone, now);
    assert!(!s.queue.contains("d/gone") && s.queue.contains("d/kept"));
    assert!(s.snapshot.pod("d/old").is_none());
    s.on_node(Change::Init, now);
    s.on_node(Change::InitApply(node_data(&std_node("n2", &[]))), now);
    s.on_node(Change::InitDone, now);
    assert_eq!(s.snapshot.node_names(), ["n2"]);
}

#[tokio::test]
async fn other_schedulers_pods_and_bound_or_finished_pods_are_not_queued() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    let now = Instant::now();
    let mut other = pod("d", "other", &[]);
    spec_mut(&mut other).scheduler_name = Some("my-scheduler".into());
    s.on_pod(Change::Apply(Arc::new(info(&other))), now);
    let mut done = pod("d", "done", &[("cpu", "1")]);
    done.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
    s.on_pod(Change::Apply(bound(done, "n1")), now);
    assert_eq!(s.queue.active_len(), 0);
    assert_eq!(s.snapshot.node("n1").map(|n| n.pods.len()), Some(0), "finished pods hold nothing");
}

fn list(kind: &str, items: &str) -> Reply {
    Reply::Json(
        200,
        format!(r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"resourceVersion":"1"}},"items":[{items}]}}"#),
    )
}

#[tokio::test]
async fn run_schedules_from_the_watches_and_stops_promptly() {
    let api = FakeApi::start(|r| {
        if r.method == "GET" && r.query.contains("watch=true") {
            return Reply::Hang;
        }
        if r.method == "GET" && r.path == "/api/v1/nodes" {
            return list(
                "NodeList",
                r#"{"metadata":{"name":"n1"},"status":{"allocatable":{"cpu":"4","memory":"8Gi","pods":"110"}}}"#,
            );
        }
        if r.method == "GET" && r.path == "/api/v1/pods" {
            return list(
                "PodList",
                r#"{"metadata":{"name":"p","namespace":"d","uid":"u1"},"spec":{"containers":[{"name":"c"}]}},
                   {"metadata":{"name":"q","namespace":"d","uid":"u2"},"spec":{"containers":[{"name":"c"}],
                    "volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"data"}}]}}"#,
            );
        }
        if r.method == "GET" && r.path == "/api/v1/namespaces" {
            return list("NamespaceList", "");
        }
        if r.method == "GET" && r.path == "/api/v1/persistentvolumeclaims" {
            return list(
                "PersistentVolumeClaimList",
                r#"{"metadata":{"name":"data","namespace":"d","uid":"c1"},"spec":{"storageClassName":"local-path"}}"#,
            );
        }
        if r.method == "GET" && r.path == "/api/v1/persistentvolumes" {
            return list("PersistentVolumeList", "");
        }
        if r.method == "GET" && r.path == "/apis/storage.k8s.io/v1/storageclasses" {
            return list(
                "StorageClassList",
                r#"{"metadata":{"name":"local-path"},"provisioner":"p","volumeBindingMode":"WaitForFirstConsumer"}"#,
            );
        }
        ok_writes(r)
    })
    .await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::run(api.client(), SchedulerConfig::default(), stop.clone()));
    api.wait_for("binding", |r| r.path == "/api/v1/namespaces/d/pods/p/binding").await;
    api.wait_for("binding", |r| r.path == "/api/v1/namespaces/d/pods/q/binding").await;
    assert!(api.recorded().iter().any(|r| r.method == "PATCH" && r.path.ends_with("/persistentvolumeclaims/data")));
    stop.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops promptly").expect("no panic");
    assert!(res.is_ok(), "{res:?}");
}

#[tokio::test]
async fn run_stops_before_the_watches_sync_and_rejects_bad_config() {
    let api = FakeApi::start(|_| Reply::Hang).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(crate::run(api.client(), SchedulerConfig::default(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let res = tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops promptly").expect("no panic");
    assert!(res.is_ok());
    let bad = SchedulerConfig { bind_concurrency: 0, ..Default::default() };
    assert!(matches!(crate::run(api.client(), bad, CancellationToken::new()).await, Err(Error::Config(_))));
}

#[tokio::test]
async fn unbound_claims_get_the_chosen_node_before_the_pod_is_bound() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    let now = Instant::now();
    s.on_claim(Change::Apply(claim("data", serde_json::json!({}))), now);
    s.on_pod(Change::Apply(with_claims("db-0", &["data"])), now);
    let popped = s.queue.pop(now).unwrap();
    s.schedule_one(popped, now);
    // Assumed at once, so another pod of the claim follows it before the watch shows it.
    assert_eq!(s.snapshot.volumes.claim("d/data").unwrap().selected_node.as_deref(), Some("n1"));
    let joined = s.binds.join_next_with_id().await.unwrap();
    s.on_bind_joined(joined, Instant::now());
    let reqs = api.recorded();
    let patch =
        reqs.iter().position(|r| r.method == "PATCH" && r.path == "/api/v1/namespaces/d/persistentvolumeclaims/data");
    let binding = reqs.iter().position(|r| r.path == "/api/v1/namespaces/d/pods/db-0/binding");
    assert!(patch.is_some() && binding.is_some() && patch < binding, "{reqs:#?}");
    let body: serde_json::Value = serde_json::from_str(&reqs[patch.unwrap()].body).unwrap();
    assert_eq!(body["metadata"]["annotations"][ANN_SELECTED_NODE], "n1");
    assert_eq!(reqs[patch.unwrap()].content_type, "application/merge-patch+json");
    // The watch shows the annotation: the assumption is dropped, the claim keeps it.
    s.on_claim(
        Change::Apply(claim("data", serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1"}}}))),
        now,
    );
    assert_eq!(s.snapshot.volumes.claim("d/data").unwrap().selected_node.as_deref(), Some("n1"));
}

#[tokio::test]
async fn a_bound_claim_pins_its_pod_to_the_volumes_node() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[]), std_node("n2", &[]), std_node("n3", &[])]).await;
    let now = Instant::now();
    let bound = serde_json::json!({"spec": {"volumeName": "pvc-uid-data"}, "status": {"phase": "Bound"}});
    s.on_claim(Change::Apply(claim("data", bound)), now);
    let pv = serde_json::json!({"metadata": {"name": "pvc-uid-data"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}});
    s.on_volume(Change::Apply(VolumeData::from_volume(&serde_json::from_value(pv).unwrap())), now);
    // (n2 has room for four of them.)
    for i in 0..4 {
        s.on_pod(Change::Apply(with_claims(&format!("p{i}"), &["data"])), now);
        schedule_next(&mut s).await;
    }
    let bindings: Vec<_> = api.recorded().into_iter().filter(|r| r.path.ends_with("/binding")).collect();
    assert_eq!(bindings.len(), 4);
    assert!(bindings.iter().all(|b| b.body.contains("\"n2\"")), "{bindings:#?}");
    assert!(!api.recorded().iter().any(|r| r.path.contains("persistentvolumeclaims")), "a bound claim is left alone");
}

#[tokio::test]
async fn missing_claims_make_pods_unschedulable_with_upstreams_message() {
    let api = FakeApi::start(ok_writes).await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[]), std_node("n2", &[])]).await;
    s.on_pod(Change::Apply(with_claims("db-0", &["data"])), Instant::now());
    schedule_next(&mut s).await;
    assert_eq!(s.queue.unschedulable_len(), 1);
    let msg = "0/2 nodes are available: persistentvolumeclaim \"data\" not found. \
               preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    let ev =
        api.wait_for("FailedScheduling", |r| r.path.contains("/events") && r.body.contains("FailedScheduling")).await;
    let ev: serde_json::Value = serde_json::from_str(&ev.body).unwrap();
    assert_eq!(ev["note"], msg);
    // The claim appears: a cluster event, so the pod is retried (after its initial backoff).
    let t = Instant::now() + Duration::from_secs(2);
    s.on_claim(Change::Apply(claim("data", serde_json::json!({}))), t);
    assert_eq!(s.queue.active_len(), 1);
    // Being deleted is as bad as missing.
    s.on_claim(
        Change::Apply(claim("data", serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}))),
        t,
    );
    let popped = s.queue.pop(t).unwrap();
    s.schedule_one(popped, t);
    api.wait_for("is being deleted", |r| r.body.contains("persistentvolumeclaim \\\"data\\\" is being deleted")).await;
}

#[tokio::test]
async fn pods_with_claims_wait_quietly_for_the_volume_watches() {
    let api = FakeApi::start(ok_writes).await;
    let now = Instant::now();
    let mut s = Scheduler::new(api.client(), SchedulerConfig::default());
    s.on_namespace(Change::Init);
    s.on_namespace(Change::InitDone);
    s.on_pod(Change::Init, now);
    s.on_pod(Change::InitDone, now);
    s.on_node(Change::Init, now);
    s.on_node(Change::InitApply(node_data(&std_node("n1", &[]))), now);
    s.on_node(Change::InitDone, now);
    s.on_pod(Change::Apply(with_claims("db-0", &["data"])), now);
    s.on_pod(Change::Apply(pending("plain", "1")), now);
    // Storage classes never list (an API server without storage.k8s.io): pods without
    // claims are placed all the same, pods with claims wait without a report.
    s.on_claim(Change::Init, now);
    s.on_claim(Change::InitApply(claim("data", serde_json::json!({}))), now);
    s.on_claim(Change::InitDone, now);
    s.on_volume(Change::Init, now);
    s.on_volume(Change::InitDone, now);
    schedule_next(&mut s).await;
    schedule_next(&mut s).await;
    assert_eq!(s.queue.unschedulable_len(), 1);
    assert!(s.snapshot.is_assumed("d/plain") || s.snapshot.pod("d/plain").is_some());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!api.recorded().iter().any(|r| r.body.contains("db-0")), "{:#?}", api.recorded());
    // Classes listed: the waiting pod is retried and placed.
    let t = Instant::now() + Duration::from_secs(2);
    s.on_class(Change::Init, t);
    s.on_class(Change::InitApply(local_path_class()), t);
    s.on_class(Change::InitDone, t);
    assert_eq!(s.queue.active_len(), 1);
    let popped = s.queue.pop(t).unwrap();
    s.schedule_one(popped, t);
    let joined = s.binds.join_next_with_id().await.unwrap();
    s.on_bind_joined(joined, t);
    api.wait_for("binding", |r| r.path == "/api/v1/namespaces/d/pods/db-0/binding").await;
}

#[tokio::test]
async fn a_failed_node_selection_is_forgotten_and_the_pod_retried() {
    let api = FakeApi::start(|r| {
        if r.path.ends_with("/persistentvolumeclaims/data") {
            Reply::Json(
                500,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":500,"message":"boom"}"#.into(),
            )
        } else {
            ok_writes(r)
        }
    })
    .await;
    let mut s = synced_scheduler(&api, &[std_node("n1", &[])]).await;
    s.on_claim(Change::Apply(claim("data", serde_json::json!({}))), Instant::now());
    s.on_pod(Change::Apply(with_claims("db-0", &["data"])), Instant::now());
    schedule_next(&mut s).await;
    assert_eq!(s.snapshot.volumes.claim("d/data").unwrap().selected_node, None);
    assert!(s.snapshot.pod("d/db-0").is_none());
    assert_eq!(s.queue.unschedulable_len(), 1);
    assert!(!api.recorded().iter().any(|r| r.path.ends_with("/binding")), "the pod is not bound");
    api.wait_for("binding error event", |r| {
        r.body.contains("binding rejected") && r.body.contains("persistentvolumeclaim")
    })
    .await;
}
