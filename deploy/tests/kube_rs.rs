//! kube-rs against `keelson up`: a watcher-fed reflector sees every change, in order, and
//! ends with the store's state; `Api::patch` with server-side apply owns fields, conflicts
//! with another manager, and wins when forced; patches that race each other (and the
//! controllers) all land unless they pin a resourceVersion.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{within, Up};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{reflector, WatchStreamExt};
use kube::{Client, Config};

const WAIT: Duration = Duration::from_secs(60);

async fn client(up: &Up) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&up.kubeconfig).expect("read the kubeconfig");
    let cfg =
        Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("kube config");
    Client::try_from(cfg).expect("kube client")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"suite": "kube-rs"}},
        "data": {"v": value},
    }))
    .expect("configmap")
}

fn rv(c: &ConfigMap) -> i64 {
    c.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).expect("a numeric resourceVersion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_sees_every_change_in_order() {
    let up = Up::start().await;
    let client = client(&up).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, bool)>>> = Default::default();
    let log = seen.clone();
    let cfg = watcher::Config::default().labels("suite=kube-rs");
    let stream = reflector(writer, watcher::watcher(api.clone(), cfg)).touched_objects();
    let task = tokio::spawn({
        let log = log.clone();
        let api = api.clone();
        async move {
            // `touched_objects` flattens applies; deletes are seen through the raw events.
            let mut raw = watcher::watcher(api, watcher::Config::default().labels("suite=kube-rs")).boxed();
            let mut stream = stream.boxed();
            loop {
                tokio::select! {
                    Some(ev) = raw.next() => {
                        if let Ok(Event::Delete(o)) = ev {
                            log.lock().unwrap().push((o.metadata.name.clone().unwrap_or_default(), rv(&o), true));
                        }
                    }
                    Some(o) = stream.next() => {
                        if let Ok(o) = o {
                            log.lock().unwrap().push((o.metadata.name.clone().unwrap_or_default(), rv(&o), false));
                        }
                    }
                    else => return,
                }
            }
        }
    });
    within(WAIT, "the reflector's first list", reader.wait_until_ready()).await.expect("reflector ready");

    // 30 creates, 20 replaces, 10 deletes; every write's resourceVersion is remembered.
    let mut written: Vec<(String, i64, bool)> = Vec::new();
    let mut expect: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..30 {
        let c = api.create(&PostParams::default(), &cm(&format!("c{i}"), "0")).await.expect("create");
        written.push((format!("c{i}"), rv(&c), false));
        expect.insert(format!("c{i}"), "0".into());
    }
    for i in 0..20 {
        let name = format!("c{i}");
        let mut cur = api.get(&name).await.expect("get");
        cur.data = Some(BTreeMap::from([("v".to_string(), "1".to_string())]));
        let c = api.replace(&name, &PostParams::default(), &cur).await.expect("replace");
        written.push((name.clone(), rv(&c), false));
        expect.insert(name, "1".into());
    }
    for i in 20..30 {
        let name = format!("c{i}");
        api.delete(&name, &DeleteParams::default()).await.expect("delete");
        expect.remove(&name);
    }
    let last_rv = api.list(&Default::default()).await.expect("list").metadata.resource_version.unwrap_or_default();

    // The reflector's store converges to the store's state.
    common::eventually(WAIT, "the reflector to hold the final state", || async {
        let state: BTreeMap<String, String> = reader
            .state()
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap_or_default(),
                    c.data.as_ref().and_then(|d| d.get("v").cloned()).unwrap_or_default(),
                )
            })
            .collect();
        let deletes = seen.lock().unwrap().iter().filter(|(_, _, d)| *d).count();
        (state == expect && deletes == 10).then_some(())
    })
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    // Every write was delivered, and resourceVersions only grow.
    let applied: Vec<(String, i64)> = seen.iter().filter(|(_, _, d)| !d).map(|(n, r, _)| (n.clone(), *r)).collect();
    for (name, r, _) in &written {
        assert!(applied.contains(&(name.clone(), *r)), "{name}@{r} never reached the watcher: {applied:?}");
    }
    for w in applied.windows(2) {
        assert!(w[1].1 > w[0].1, "out of order: {:?} then {:?}", w[0], w[1]);
    }
    assert!(!last_rv.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_through_kube_rs() {
    let up = Up::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&up).await, "default");
    let mine = PatchParams::apply("kube-rs-test");
    let c = api.patch("ssa", &mine, &Patch::Apply(cm("ssa", "1"))).await.expect("apply creates");
    assert_eq!(c.data.unwrap()["v"], "1");
    let managers: Vec<String> =
        c.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["kube-rs-test"]);
    // Another manager changing the same field: 409 Conflict, then forced.
    let theirs = PatchParams::apply("someone-else");
    match api.patch("ssa", &theirs, &Patch::Apply(cm("ssa", "2"))).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(s.message.contains(r#"conflict with "kube-rs-test""#), "{s:?}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let c = api.patch("ssa", &theirs.force(), &Patch::Apply(cm("ssa", "2"))).await.expect("forced apply");
    assert_eq!(c.data.unwrap()["v"], "2");
}

/// Upstream's GuaranteedUpdate re-applies a patch to the fresh object when another write got
/// in first; only a patch that names a resourceVersion gets the 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_all_land_unless_pinned() {
    let up = Up::start().await;
    let client = client(&up).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("race", "0")).await.expect("create");
    let writers = (0..4).map(|w| {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..15 {
                let key = format!("w{w}-{i}");
                let p = match i % 3 {
                    0 => Patch::Merge(serde_json::json!({"data": {key.clone(): "x"}})),
                    1 => Patch::Strategic(serde_json::json!({"data": {key.clone(): "x"}})),
                    _ => Patch::Json::<serde_json::Value>(
                        serde_json::from_value(
                            serde_json::json!([{"op": "add", "path": format!("/data/{key}"), "value": "x"}]),
                        )
                        .expect("json patch"),
                    ),
                };
                api.patch("race", &PatchParams::default(), &p).await.map_err(|e| format!("{key}: {e}"))?;
            }
            Ok::<(), String>(())
        })
    });
    for w in futures::future::join_all(writers).await {
        w.expect("writer task").expect("every unpinned patch lands");
    }
    let data = api.get("race").await.expect("get").data.unwrap_or_default();
    assert_eq!(data.len(), 61, "every key of every writer, and v: {data:?}");

    // A patch that pins a stale resourceVersion is refused and writes nothing.
    let stale = serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"stale": "x"}});
    match api.patch("race", &PatchParams::default(), &Patch::Merge(stale)).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"), "{s:?}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!api.get("race").await.expect("get").data.unwrap_or_default().contains_key("stale"));

    // Scale patches race the deployment controller's status writes and each other's labels.
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "race"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "race"}},
            "template": {"metadata": {"labels": {"app": "race"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .expect("deployment");
    deploys.create(&PostParams::default(), &d).await.expect("create deployment");
    let pp = PatchParams::default();
    for n in 1..=10 {
        let scale = Patch::Merge(serde_json::json!({"spec": {"replicas": n}}));
        let label = Patch::Merge(serde_json::json!({"metadata": {"labels": {"n": n.to_string()}}}));
        let (scaled, labelled) =
            tokio::join!(deploys.patch_scale("race", &pp, &scale), deploys.patch("race", &pp, &label));
        scaled.unwrap_or_else(|e| panic!("scale to {n}: {e}"));
        labelled.unwrap_or_else(|e| panic!("label {n}: {e}"));
    }
    let d = deploys.get("race").await.expect("get deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(10));
}
