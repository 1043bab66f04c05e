//! The controllers move with Raft leadership: SIGKILL the leader in the middle of a
//! rollout and the new leader's controllers finish it, with exactly one pod created per
//! new replica slot (checked on the recorded watch history); a leader paused with SIGSTOP
//! that resumes after another took over gets nothing written (its writes are fenced to
//! its old term) and steps down.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::sim::{self, must_kubectl, Agent, History};
use common::{eventually_or, Cluster};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(90);

fn deployment(replicas: i32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 2, maxUnavailable: 1}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: \"{image}\"}}]}}\n"
    )
}

async fn live(client: &kube::Client) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let all = api.list(&ListParams::default().labels("app=web")).await.map(|l| l.items).unwrap_or_default();
    all.into_iter().filter(|p| sim::running(p) && sim::ready(p)).collect()
}

async fn wait_live(c: &Cluster, client: &kube::Client, n: usize, image: &str, what: &str) {
    eventually_or(
        WAIT,
        what,
        || async {
            let api: Api<Pod> = Api::namespaced(client.clone(), "default");
            let all = api.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            let ok = all.len() == n
                && all.iter().all(|p| sim::running(p) && sim::ready(p) && sim::image_of(p).as_deref() == Some(image));
            ok.then_some(())
        },
        || (0..c.masters.len()).map(|i| c.log_tail(i, 12)).collect(),
    )
    .await
}

fn signal(c: &Cluster, i: usize, sig: &str) {
    let pid = c.masters[i].child.as_ref().expect("running master").id();
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig} {pid}");
}

/// Pods created for the `image` template over the history.
fn created_with(h: &History, image: &str) -> usize {
    let names = h.created.lock().unwrap().clone();
    let snap = h.snapshot();
    names
        .iter()
        .filter(|n| snap.iter().any(|s| s.get(*n).is_some_and(|p| sim::image_of(p).as_deref() == Some(image))))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_leader_finishes_a_rollout_and_a_paused_old_leader_writes_nothing() {
    let mut c = Cluster::shared_pki(3, &[]);
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    c.wait_api_settled(3).await;
    // The agent and kubectl talk to a master that stays up.
    let stay = (leader + 1) % 3;
    let kubeconfig = sim::kubeconfig_of(&c.masters[stay].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    let mut agent = Agent::start(&kubeconfig, None, 3, &["--lease-renew-interval", "1s"]);
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&deployment(10, "nginx:1"))).await;
    wait_live(&c, &client, 10, "nginx:1", "10 nginx:1 pods").await;

    tracing::info!("--- SIGKILL the leader while the new ReplicaSet grows");
    let history = History::start(client.clone(), "default", "app=web");
    eventually_or(
        WAIT,
        "the history watch to list",
        || async { (!history.snapshot().is_empty()).then_some(()) },
        String::new,
    )
    .await;
    must_kubectl(&kubeconfig, &["set", "image", "deployment/web", "c=nginx:2"], None).await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "the new ReplicaSet to start growing",
        || async {
            let l = rss.list(&ListParams::default().labels("app=web")).await.ok()?;
            l.items
                .iter()
                .any(|r| {
                    let t = r.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref());
                    t.and_then(|s| s.containers.first()).and_then(|c| c.image.as_deref()) == Some("nginx:2")
                        && r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
                })
                .then_some(())
        },
        String::new,
    )
    .await;
    let killed_at = Instant::now();
    c.kill(leader);
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = c.wait_leader(&rest).await;
    wait_live(&c, &client, 10, "nginx:2", "the new leader to finish the rollout").await;
    tracing::info!(new_leader, elapsed = ?killed_at.elapsed(), "rollout finished after the leader was killed");
    assert_eq!(created_with(&history, "nginx:2"), 10, "one pod per new replica slot across the failover");
    for (i, state) in history.snapshot().iter().enumerate() {
        let up: Vec<&Pod> = state.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        assert!(up.len() <= 12, "state {i}: {} pods, above replicas + maxSurge", up.len());
    }
    drop(history);

    tracing::info!("--- the killed master comes back; SIGSTOP the leader right after a scale-up");
    c.spawn(leader);
    let l2 = c.wait_leader(&[0, 1, 2]).await;
    // The agent, kubectl and the test's client move to a master that stays responsive.
    let keep = (0..3).find(|i| *i != l2).expect("another master");
    let context = format!("keelson-{}", c.masters[keep].name);
    drop(agent);
    agent = Agent::start(&kubeconfig, Some(&context), 3, &["--lease-renew-interval", "1s"]);
    let client = sim::client(&kubeconfig, Some(&context)).await;
    let k = |args: &[&str]| {
        [&["--context", context.as_str()], args].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let kubectl = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            must_kubectl(&kubeconfig, &a, None).await
        }
    };
    let stepped_down_before = c.log_text(l2).matches("no longer leading").count();
    kubectl(k(&["scale", "deployment/web", "--replicas", "16"])).await;
    signal(&c, l2, "-STOP");
    let others: Vec<usize> = (0..3).filter(|i| *i != l2).collect();
    let l3 = c.wait_leader(&others).await;
    assert_ne!(l3, l2);
    wait_live(&c, &client, 16, "nginx:2", "the next leader to scale to 16").await;
    kubectl(k(&["scale", "deployment/web", "--replicas", "6"])).await;
    wait_live(&c, &client, 6, "nginx:2", "the next leader to scale down to 6").await;
    let history = History::start(client.clone(), "default", "app=web");
    eventually_or(
        WAIT,
        "the history watch to list",
        || async { (!history.snapshot().is_empty()).then_some(()) },
        String::new,
    )
    .await;
    let before: BTreeMap<String, Pod> = history.snapshot().last().cloned().unwrap_or_default();
    tracing::info!("--- SIGCONT: the old leader steps down and nothing it writes is accepted");
    signal(&c, l2, "-CONT");
    eventually_or(
        WAIT,
        "the resumed master to follow the new leader",
        || async {
            let s = c.status(l2).await?;
            let me = s.header?.member_id;
            (s.leader != 0 && s.leader != me).then_some(())
        },
        String::new,
    )
    .await;
    eventually_or(
        WAIT,
        "the resumed master to stop its term's controllers",
        || async { (c.log_text(l2).matches("no longer leading").count() > stepped_down_before).then_some(()) },
        || c.log_tail(l2, 30),
    )
    .await;
    // Whatever the resumed loops wrote from their stale caches was refused (logged as
    // "fenced write refused"); the cluster keeps exactly the 6 pods the new leader made.
    let refused = c.log_text(l2).matches("fenced write refused").count();
    tracing::info!(refused, "writes of the deposed leader refused");
    wait_live(&c, &client, 6, "nginx:2", "6 pods after the old leader resumed").await;
    let created_after: Vec<String> =
        history.created.lock().unwrap().iter().filter(|n| !before.contains_key(*n)).cloned().collect();
    assert!(created_after.is_empty(), "pods created after the old leader resumed: {created_after:?}");
    assert_eq!(live(&client).await.len(), 6);
    drop(agent);
}
