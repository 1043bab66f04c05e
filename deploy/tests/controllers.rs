//! The leader's controllers and scheduler end to end: three real masters, simulated nodes
//! (`keelson agent --simulate`), real kubectl. A Deployment is scheduled across nodes,
//! rolled out within its surge and unavailability budget (checked on the recorded watch
//! history), undone, scaled, healed, garbage-collected; Services get EndpointSlices that
//! follow readiness; a node that stops heartbeating is tainted and its pods move; a
//! deleted namespace is emptied.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::sim::{self, kubectl, must_kubectl, Agent, History};
use common::{eventually_or, Cluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(90);

fn deployment(name: &str, ns: &str, replicas: i32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 2, maxUnavailable: 1}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: c
        image: {image}
        ports: [{{name: http, containerPort: 80}}]
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"#
    )
}

async fn pods(client: &kube::Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

/// Wait until exactly `n` pods matching `selector` run (ready, not terminating) and
/// every other one is gone; returns them.
async fn wait_running(c: &Cluster, client: &kube::Client, ns: &str, selector: &str, n: usize, extra: &str) -> Vec<Pod> {
    let what = format!("{n} running pods {selector} in {ns} {extra}");
    eventually_or(
        WAIT,
        &what,
        || async {
            let all = pods(client, ns, selector).await;
            let ok = all.len() == n && all.iter().all(|p| sim::running(p) && sim::ready(p));
            ok.then_some(all)
        },
        || {
            let logs: String = (0..c.masters.len()).map(|i| c.log_tail(i, 15)).collect();
            format!("; masters:{logs}")
        },
    )
    .await
}

/// Every state in the recorded history keeps the rollout's budget: at most
/// `replicas + surge` pods not terminating, at least `replicas - unavailable` of them ready.
fn check_budget(history: &[BTreeMap<String, Pod>], replicas: usize, surge: usize, unavailable: usize) {
    for (i, state) in history.iter().enumerate() {
        let live: Vec<&Pod> = state.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let ready = live.iter().filter(|p| sim::ready(p)).count();
        assert!(
            live.len() <= replicas + surge,
            "state {i}: {} pods not terminating, more than {replicas}+{surge}",
            live.len()
        );
        assert!(
            ready + unavailable >= replicas,
            "state {i}: only {ready} ready pods, fewer than {replicas}-{unavailable}"
        );
    }
}

async fn rollout_status(kubeconfig: &Path, ns: &str, name: &str) {
    must_kubectl(kubeconfig, &["-n", ns, "rollout", "status", &format!("deployment/{name}"), "--timeout", "90s"], None)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_services_nodes_and_namespaces_with_three_masters() {
    let mut c = Cluster::shared_pki(3, &["--node-monitor-grace-period", "3s"]);
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    c.wait_api_settled(3).await;
    let follower = (leader + 1) % 3;
    let kubeconfig = sim::kubeconfig_of(&c.masters[follower].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    let agent = Agent::start(&kubeconfig, None, 4, &["--lease-renew-interval", "500ms", "--status-interval", "1s"]);
    let nodes: Api<Node> = Api::all(client.clone());
    eventually_or(
        WAIT,
        "4 simulated nodes Ready",
        || async {
            let l = nodes.list(&ListParams::default()).await.ok()?;
            let ready = l.items.iter().filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (ready.count() == 4).then_some(())
        },
        || format!("; agent log:\n{}", agent.log()),
    )
    .await;

    tracing::info!("--- a Deployment of 10 is scheduled across the nodes");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&deployment("web", "default", 10, "nginx:1"))).await;
    let running = wait_running(&c, &client, "default", "app=web", 10, "after apply").await;
    let used: BTreeSet<String> = running.iter().filter_map(sim::node_of).collect();
    assert!(used.len() >= 3, "10 pods on only {used:?}");
    rollout_status(&kubeconfig, "default", "web").await;

    tracing::info!("--- set image: the rollout stays within maxSurge 2 / maxUnavailable 1");
    let history = History::start(client.clone(), "default", "app=web");
    eventually_or(
        WAIT,
        "the history watch to list",
        || async { (!history.snapshot().is_empty()).then_some(()) },
        String::new,
    )
    .await;
    must_kubectl(&kubeconfig, &["set", "image", "deployment/web", "c=nginx:2"], None).await;
    rollout_status(&kubeconfig, "default", "web").await;
    let now = wait_running(&c, &client, "default", "app=web", 10, "after set image").await;
    assert!(now.iter().all(|p| sim::image_of(p).as_deref() == Some("nginx:2")));
    check_budget(&history.snapshot(), 10, 2, 1);
    // Each new replica slot got exactly one pod.
    let created_v2 = {
        let names = history.created.lock().unwrap().clone();
        let snap = history.snapshot();
        names
            .iter()
            .filter(|n| snap.iter().any(|s| s.get(*n).is_some_and(|p| sim::image_of(p).as_deref() == Some("nginx:2"))))
            .count()
    };
    assert_eq!(created_v2, 10, "pods created for the new template");
    let hist = must_kubectl(&kubeconfig, &["rollout", "history", "deployment/web"], None).await;
    assert!(hist.contains('1') && hist.contains('2'), "rollout history: {hist}");

    tracing::info!("--- rollout undo brings nginx:1 back");
    must_kubectl(&kubeconfig, &["rollout", "undo", "deployment/web"], None).await;
    rollout_status(&kubeconfig, "default", "web").await;
    let now = wait_running(&c, &client, "default", "app=web", 10, "after undo").await;
    assert!(now.iter().all(|p| sim::image_of(p).as_deref() == Some("nginx:1")));
    let d: Deployment = Api::namespaced(client.clone(), "default").get("web").await.expect("get deployment");
    assert_eq!(
        d.metadata.annotations.unwrap_or_default().get("deployment.kubernetes.io/revision").map(String::as_str),
        Some("3")
    );
    drop(history);

    tracing::info!("--- scale to 5; a deleted pod is replaced");
    must_kubectl(&kubeconfig, &["scale", "deployment/web", "--replicas", "5"], None).await;
    let five = wait_running(&c, &client, "default", "app=web", 5, "after scale").await;
    let victim = five[0].metadata.name.clone().unwrap();
    must_kubectl(&kubeconfig, &["delete", "pod", &victim, "--wait=false"], None).await;
    let healed = wait_running(&c, &client, "default", "app=web", 5, "after deleting a pod").await;
    assert!(healed.iter().all(|p| p.metadata.name.as_deref() != Some(victim.as_str())), "{victim} still there");

    tracing::info!("--- a Service's EndpointSlices follow readiness");
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n"),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints = |want_ready: usize, want_not: usize| {
        let slices = slices.clone();
        async move {
            let l = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.ok()?;
            let eps: Vec<_> = l.items.iter().flat_map(|s| s.endpoints.iter()).collect();
            let ready = eps.iter().filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true)).count();
            let port_ok =
                l.items.iter().all(|s| s.ports.as_ref().is_some_and(|p| p.iter().any(|p| p.port == Some(80))));
            (ready == want_ready && eps.len() == want_ready + want_not && port_ok).then_some(())
        }
    };
    eventually_or(WAIT, "an EndpointSlice with 5 ready endpoints on port 80", || endpoints(5, 0), String::new).await;
    let one = healed[0].metadata.name.clone().unwrap();
    must_kubectl(&kubeconfig, &["annotate", "pod", &one, "sim.keelson.dev/ready=false"], None).await;
    eventually_or(WAIT, "the not-ready pod to be a not-ready endpoint", || endpoints(4, 1), String::new).await;
    must_kubectl(&kubeconfig, &["annotate", "pod", &one, "sim.keelson.dev/ready-"], None).await;
    eventually_or(WAIT, "all 5 endpoints ready again", || endpoints(5, 0), String::new).await;

    tracing::info!("--- a node that stops heartbeating is tainted and its pods move");
    let busy = healed.iter().filter_map(sim::node_of).next().expect("a node with pods");
    must_kubectl(&kubeconfig, &["annotate", "node", &busy, "sim.keelson.dev/heartbeat=stopped"], None).await;
    eventually_or(
        WAIT,
        "the silent node to be tainted unreachable",
        || async {
            let n = nodes.get(&busy).await.ok()?;
            let tainted = n
                .spec
                .as_ref()?
                .taints
                .as_ref()?
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
            let unknown =
                n.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "Unknown");
            (tainted && unknown).then_some(())
        },
        String::new,
    )
    .await;
    eventually_or(
        WAIT,
        "5 running pods, none on the silent node",
        || async {
            let all = pods(&client, "default", "app=web").await;
            let live: Vec<_> = all.iter().filter(|p| sim::running(p) && sim::ready(p)).collect();
            (live.len() == 5 && live.iter().all(|p| sim::node_of(p).as_deref() != Some(busy.as_str()))).then_some(())
        },
        String::new,
    )
    .await;
    must_kubectl(&kubeconfig, &["annotate", "node", &busy, "sim.keelson.dev/heartbeat-"], None).await;
    eventually_or(
        WAIT,
        "the node to be Ready and untainted again",
        || async {
            let n = nodes.get(&busy).await.ok()?;
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
            let ready =
                n.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (!tainted && ready).then_some(())
        },
        String::new,
    )
    .await;

    tracing::info!("--- deleting the Deployment garbage-collects its ReplicaSets and pods");
    must_kubectl(&kubeconfig, &["delete", "deployment", "web"], None).await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "the Deployment's ReplicaSets and pods to be gone",
        || async {
            let r = rss.list(&ListParams::default().labels("app=web")).await.ok()?;
            let p = pods(&client, "default", "app=web").await;
            (r.items.is_empty() && p.is_empty()).then_some(())
        },
        String::new,
    )
    .await;

    tracing::info!("--- deleting a namespace empties it, then it goes");
    must_kubectl(&kubeconfig, &["create", "namespace", "doomed"], None).await;
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&deployment("db", "doomed", 2, "redis:7"))).await;
    wait_running(&c, &client, "doomed", "app=db", 2, "in the namespace to delete").await;
    let (ok, _, err) = kubectl(&kubeconfig, &["delete", "namespace", "doomed", "--timeout", "90s"], None).await;
    assert!(ok, "namespace deletion: {err}");
    let (ok, _, err) = kubectl(&kubeconfig, &["get", "namespace", "doomed"], None).await;
    assert!(!ok && err.contains("NotFound"), "namespace still there: {err}");
    assert!(pods(&client, "doomed", "app=db").await.is_empty());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_controllers_runs_the_loops_as_an_ordinary_client() {
    // A master that runs no controllers itself: nothing happens to a Deployment until
    // `keelson controllers --kubeconfig` runs them from outside.
    let mut c = Cluster::shared_pki(1, &["--no-controllers"]);
    c.spawn_all();
    c.wait_leader(&[0]).await;
    c.wait_api_settled(1).await;
    let kubeconfig = sim::kubeconfig_of(&c.masters[0].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    let _agent = Agent::start(&kubeconfig, None, 2, &["--lease-renew-interval", "1s"]);
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&deployment("ext", "default", 3, "nginx:1"))).await;
    // The master's own leader loop is off.
    assert!(
        !c.log_text(0).contains("controllers and scheduler started"),
        "a master with --no-controllers led its controllers"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("controllers.log")).expect("log");
    let _ctl = tokio::process::Command::new(common::keelson_bin())
        .args(["controllers", "--kubeconfig"])
        .arg(&kubeconfig)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn keelson controllers");
    let running = wait_running(&c, &client, "default", "app=ext", 3, "scheduled and run by keelson controllers").await;
    assert!(running.iter().all(|p| sim::node_of(p).is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_up_runs_deployments_on_simulated_nodes() {
    // The quick start: one process, its own leader loops, and `keelson agent --simulate`.
    let up = common::Up::start().await;
    let client = sim::client(&up.kubeconfig, None).await;
    let _agent = Agent::start(&up.kubeconfig, None, 2, &["--lease-renew-interval", "1s"]);
    must_kubectl(&up.kubeconfig, &["create", "deployment", "hello", "--image=nginx:1", "--replicas=3"], None).await;
    must_kubectl(&up.kubeconfig, &["rollout", "status", "deployment/hello", "--timeout=90s"], None).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pods = api.list(&ListParams::default().labels("app=hello")).await.expect("list").items;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| sim::running(p) && sim::ready(p) && sim::node_of(p).is_some()), "{:?}", up.log());
    let (ok, out, _) = kubectl(&up.kubeconfig, &["get", "nodes"], None).await;
    assert!(ok && out.contains("sim-0") && out.contains("Ready"), "{out}");
}
