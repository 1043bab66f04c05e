//! The real node end to end, as root: one master, `keelson agent --node-name` running pods
//! in runc containers on a CNI bridge, a busybox image built by umoci and served by
//! Debian's docker-registry on loopback. Everything the test makes (the bridge, network
//! namespaces, runc state, mounts, processes) is removed by its guard, failed or not;
//! traffic goes only to loopback and to pod addresses inside namespaces the agent made
//! for this test. Master and agent export traces to a receiver in the test: a pod's trace
//! runs from its create through the scheduler's bind into the agent's start of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::registry::Registry;
use common::sim::{self, kubelet_cert, must_kubectl};
use common::telemetry::{client_context, descends, parse_prometheus, post_traced, tree, Collector};
use common::{eventually_or, keelson_bin, Cluster};
use k8s_openapi::api::core::v1::Pod;
use keelson_node::kubelet::network::NetNs;
use keelson_node::kubelet::runtime::rootfs;
use kube::api::{Api, DeleteParams};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// A real agent and everything it may leave behind.
struct Node {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    netns_prefix: String,
    kubeconfig: PathBuf,
    /// `--server`: a dead API address first, so every start exercises failover.
    servers: String,
    registry: String,
    /// The kubelet endpoint: port, serving certificate and key, client CA.
    endpoint: [String; 4],
    /// The OTLP receiver the agent exports spans to.
    otlp: String,
}

impl Node {
    fn root(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn start(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("agent.log")).expect("log");
        let child = tokio::process::Command::new(keelson_bin())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--server", &self.servers])
            .args(["--node-name", &self.name, "--bridge", &self.bridge, "--netns-prefix", &self.netns_prefix])
            .args(["--proxy-table", &self.bridge])
            .args(["--insecure-registry", &self.registry, "--restart-backoff", "1s", "--lease-renew-interval", "1s"])
            .args(["--port", &self.endpoint[0], "--tls-cert-file", &self.endpoint[1]])
            .args(["--tls-private-key-file", &self.endpoint[2], "--client-ca-file", &self.endpoint[3]])
            .args(["--otlp-endpoint", &self.otlp])
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .arg("--root-dir")
            .arg(self.root())
            .env("KEELSON_LOG", std::env::var("KEELSON_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keelson agent");
        self.child = Some(child);
    }

    /// Kill the agent at once (SIGKILL by its PID): its pods keep running.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        format!("\n--- agent log (last 60 lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    fn netns(&self) -> Vec<String> {
        NetNs::list_with_prefix(&self.netns_prefix)
    }

    /// What the node still holds for pods: pod directories (uids), containers and
    /// network namespaces.
    fn held(&self) -> Vec<String> {
        let dirs = std::fs::read_dir(self.root().join("pods")).into_iter().flatten().flatten();
        let mut held: Vec<String> = dirs.map(|e| format!("pods/{}", e.file_name().to_string_lossy())).collect();
        held.extend(self.runc_ids());
        held.extend(self.netns());
        held
    }

    fn runc_ids(&self) -> Vec<String> {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.root().join("runtime"))
            .args(["list", "-q"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        for id in self.runc_ids() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(self.root().join("runtime"))
                .args(["delete", "--force", &id])
                .output();
        }
        for ns in self.netns() {
            let _ = NetNs::delete_by_name(&ns);
        }
        // Mounts under our directory, deepest first.
        for m in rootfs::mounts_under(self.dir.path()) {
            let _ = rootfs::unmount(&m);
        }
        let _ = std::process::Command::new("ip").args(["link", "delete", &self.bridge]).stderr(Stdio::null()).output();
        // The service proxy's table is named after the bridge.
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.bridge])
            .stderr(Stdio::null())
            .output();
    }
}

fn pod_yaml(name: &str, image: &str, restart: &str, command: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {image}
    command: [sh, -c, {command:?}]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: greeting, key: text}}}}}}
"
    )
}

/// A pod created with a client's `traceparent`, left to the scheduler: one trace holds its
/// create and scheduling on the master and the agent's start of it (CNI ADD, the image,
/// the runtime's `run`, the status write back on the master). The kubelet's `/metrics`
/// then parses and counts the start.
async fn traced_start(c: &Cluster, node: &Node, collector: &Collector, pods: &Api<Pod>, image: &str) {
    let (trace, client_span, traceparent) = client_context();
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "traced"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": image, "command": ["sleep", "3600"]}]}
    })
    .to_string();
    let (code, body) =
        post_traced(&c.pki(), &c.masters[0].api_addr, &traceparent, &doc, "/api/v1/namespaces/default/pods").await;
    assert_eq!(code, 201, "{body}");
    wait_pod(pods, "traced", node, "Running", |s| s["phase"] == "Running").await;
    let spans = eventually_or(
        WAIT,
        "the pod's trace to reach its start on the node and its status write",
        || {
            let spans = collector.trace(&trace);
            let start = spans.iter().find(|s| s.name == "start pod").cloned();
            let done = start.is_some_and(|st| {
                ["CNI ADD", "image pull", "runc run"]
                    .iter()
                    .all(|n| spans.iter().any(|s| &s.name == n && s.parent == st.id))
                    && spans.iter().any(|s| s.name == "PATCH pods/status" && descends(&spans, s, &st.id))
            });
            futures::future::ready(done.then_some(spans))
        },
        || format!("spans so far:\n{}{}", tree(&collector.trace(&trace), &client_span, 0), node.log()),
    )
    .await;
    eprintln!("a pod's trace from its create to its start:\n{}", tree(&spans, &client_span, 0));
    let master = &c.masters[0].name;
    let schedule = spans
        .iter()
        .find(|s| s.name == "schedule pod" && &s.instance == master)
        .unwrap_or_else(|| panic!("no scheduling span on the master: {spans:#?}"));
    let start = spans.iter().find(|s| s.name == "start pod").expect("the start span");
    assert_eq!(start.instance, node.name, "the start span is the agent's");
    assert_eq!(start.parent, schedule.id, "the node's start continues the scheduler's bind: {spans:#?}");
    let run = spans.iter().find(|s| s.name == "runc run").expect("the runtime's run");
    assert_eq!(run.attr("container.runtime.name"), "runc", "{run:?}");

    // The kubelet's /metrics, with the admin certificate (signed by the cluster CA).
    let pki = c.pki();
    let url = format!("https://127.0.0.1:{}/metrics", node.endpoint[0]);
    let mut curl = common::curl_cmd(&pki, true, 15);
    let out = curl.arg(&url).output().await.expect("curl the kubelet's /metrics");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let m = parse_prometheus(&text).await;
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no {k} in the kubelet's /metrics:\n{text}"));
    assert!(get("kubelet_pod_start_duration_seconds_count") >= 1.0, "{text}");
    assert!(get(r#"kubelet_runtime_operations_total{"operation_type": "run"}"#) >= 1.0, "{text}");
    assert!(get(r#"keelson_trace_spans_dropped_total{"reason": "queue_full"}"#) >= 0.0);
}

/// A container's preStop hook runs when its pod is deleted, before SIGTERM: the hook and
/// the container's TERM trap append to one file on a hostPath, in that order.
async fn pre_stop_runs_before_sigterm(node: &Node, pods: &Api<Pod>, kubeconfig: &Path, image: &str) {
    let host_dir = node.dir.path().join("hooked");
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: {image}
    command: [sh, -c, \"trap 'echo term >> /host/log; exit 0' TERM; echo up >> /host/log; while true; do sleep 0.2; done\"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, 'echo poststart >> /host/log']}}
      preStop:
        exec: {{command: [sh, -c, 'echo prestop >> /host/log']}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes: [{{name: host, hostPath: {{path: {dir}, type: DirectoryOrCreate}}}}]
",
        node = node.name,
        dir = host_dir.display()
    );
    must_kubectl(kubeconfig, &["apply", "-f", "-"], Some(&yaml)).await;
    wait_pod(pods, "hooked", node, "Running", |s| s["phase"] == "Running").await;
    let log = host_dir.join("log");
    eventually_or(
        WAIT,
        "the hooked container to start",
        || async { std::fs::read_to_string(&log).ok().filter(|l| l.contains("up")) },
        || node.log(),
    )
    .await;
    pods.delete("hooked", &DeleteParams::default()).await.expect("delete the hooked pod");
    eventually_or(
        WAIT,
        "the hooked pod to be gone",
        || async { pods.get_opt("hooked").await.ok()?.is_none().then_some(()) },
        || node.log(),
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // postStart runs beside the container's command (either may write first).
    let (started, stopped) = text.split_at(text.find("prestop").unwrap_or(text.len()));
    let mut started: Vec<&str> = started.lines().collect();
    started.sort_unstable();
    assert_eq!(started, ["poststart", "up"], "{text}{}", node.log());
    assert_eq!(stopped, "prestop\nterm\n", "the preStop hook runs before SIGTERM{}", node.log());

    // A failing postStart hook kills its container, which restarts with back-off, saying why.
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'sleep 3600']
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, 'exit 4']}}
",
        node = node.name
    );
    must_kubectl(kubeconfig, &["apply", "-f", "-"], Some(&yaml)).await;
    let s = wait_pod(pods, "badhook", node, "restarted after failed postStart hooks", |s| {
        container(s)["restartCount"].as_i64() >= Some(1)
            && container(s)["state"]["waiting"]["reason"]
                .as_str()
                .is_some_and(|r| r == "PostStartHookError" || r == "CrashLoopBackOff")
    })
    .await;
    assert_eq!(container(&s)["lastState"]["terminated"]["exitCode"], 137, "{s}");
    assert_eq!(s["phase"], "Running", "{s}");
    let s = wait_pod(pods, "badhook", node, "saying why its container is not running", |s| {
        container(s)["state"]["waiting"]["reason"] == "PostStartHookError"
    })
    .await;
    let message = container(&s)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("exited with 4"), "{s}");
    describes(kubeconfig, node, "badhook", &["FailedPostStartHook", "PostStartHook failed"]).await;
    pods.delete("badhook", &DeleteParams::default()).await.expect("delete the badhook pod");
}

/// `kubectl top` on a real node: a pod spinning under a 250m CPU limit is seen using CPU
/// (at most its limit, with slack for a short window) and memory, read from its cgroup by
/// the kubelet and scraped by the master; the node's own usage comes from `/proc`.
async fn top_reads_cgroups(node: &Node, pods: &Api<Pod>, kubeconfig: &Path, image: &str) {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: burn}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: {image}
    command: [sh, -c, 'while true; do :; done']
    resources: {{limits: {{cpu: 250m, memory: 64Mi}}}}
",
        node = node.name
    );
    must_kubectl(kubeconfig, &["apply", "-f", "-"], Some(&yaml)).await;
    wait_pod(pods, "burn", node, "Running", |s| s["phase"] == "Running").await;
    let last = std::sync::Mutex::new(String::new());
    let (cpu, memory) = eventually_or(
        WAIT,
        "the resource metrics API to show the spinning pod using CPU",
        || async {
            let (ok, out, err) = sim::kubectl(
                kubeconfig,
                &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn"],
                None,
            )
            .await;
            *last.lock().unwrap() = format!("{out}{err}");
            let v: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let c = &v["containers"][0];
            (c["name"] == "spin").then_some(())?;
            let cpu = keelson_node::kubelet::pod::spec::millis(
                &k8s_openapi::apimachinery::pkg::api::resource::Quantity(c["usage"]["cpu"].as_str()?.to_string()),
            )?;
            let memory = keelson_node::kubelet::pod::spec::bytes(
                &k8s_openapi::apimachinery::pkg::api::resource::Quantity(c["usage"]["memory"].as_str()?.to_string()),
            )?;
            (cpu >= 50).then_some((cpu, memory))
        },
        || format!("\nlast answer: {}{}", last.lock().unwrap(), node.log()),
    )
    .await;
    assert!(cpu <= 600, "a 250m limit, yet {cpu}m used");
    assert!(memory > 0 && memory < 64 << 20, "{memory} bytes");
    let top = must_kubectl(kubeconfig, &["top", "pod", "burn", "--no-headers"], None).await;
    assert!(top.starts_with("burn ") && top.contains('m') && top.contains("Mi"), "{top}");
    let top = must_kubectl(kubeconfig, &["top", "node", &node.name, "--no-headers"], None).await;
    let fields: Vec<&str> = top.split_whitespace().collect();
    assert!(
        fields.len() == 5 && fields[0] == node.name && fields[1].ends_with('m') && fields[3].ends_with("Mi"),
        "{top}"
    );
    pods.delete("burn", &DeleteParams::default()).await.expect("delete the spinning pod");
}

/// Wait for `kubectl describe pod <name>` to list events from the kubelet that say each
/// of `want`.
async fn describes(kubeconfig: &Path, node: &Node, name: &str, want: &[&str]) {
    let last = std::sync::Mutex::new(String::new());
    eventually_or(
        WAIT,
        &format!("kubectl describe pod {name} to list the kubelet's events {want:?}"),
        || async {
            let (ok, out, err) = sim::kubectl(kubeconfig, &["describe", "pod", name], None).await;
            *last.lock().unwrap() = format!("{out}{err}");
            let events = out.split_once("\nEvents:").map(|(_, e)| e.to_string())?;
            // Each wanted text on an event line whose source is the kubelet.
            let from_kubelet = |w: &&str| events.lines().any(|l| l.contains(w) && l.contains("kubelet"));
            (ok && want.iter().all(from_kubelet)).then_some(())
        },
        || format!("\nlast describe: {}{}", last.lock().unwrap(), node.log()),
    )
    .await;
}

fn status(p: &Pod) -> Value {
    serde_json::to_value(p.status.clone().unwrap_or_default()).unwrap_or_default()
}

async fn wait_pod(api: &Api<Pod>, name: &str, node: &Node, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let last = std::sync::Mutex::new(None::<Value>);
    eventually_or(
        WAIT,
        &format!("pod {name}: {what}"),
        || async {
            let p = api.get_opt(name).await.ok().flatten()?;
            let s = status(&p);
            *last.lock().unwrap() = Some(s.clone());
            check(&s).then_some(s)
        },
        || format!("\nlast status: {:?}{}", last.lock().unwrap(), node.log()),
    )
    .await
}

fn container(s: &Value) -> &Value {
    &s["containerStatuses"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_runs_pods_in_runc_with_cni() {
    let registry = Registry::start().await;
    let image = registry.push_busybox("keelson/busybox:1").await;
    let collector = Collector::start().await;
    let mut c = Cluster::shared_pki(
        1,
        &["--cluster-cidr", "10.251.0.0/16", "--otlp-endpoint", &collector.endpoint, "--metric-resolution", "2s"],
    );
    c.masters[0].env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into())];
    c.spawn_all();
    c.wait_leader(&[0]).await;
    c.wait_api_settled(1).await;
    let kubeconfig = sim::kubeconfig_of(&c.masters[0].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    let tag = std::process::id() % 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = kubelet_cert(&c.pki(), dir.path());
    let ca = c.pki().join("ca.crt").display().to_string();
    let mut node = Node {
        child: None,
        dir,
        endpoint: [common::free_port().to_string(), cert, key, ca],
        name: format!("real-{tag}"),
        bridge: format!("kb{tag}"),
        netns_prefix: format!("kt{tag}-"),
        kubeconfig: kubeconfig.clone(),
        servers: format!("https://127.0.0.1:{},https://{}", common::free_port(), c.masters[0].api_addr),
        registry: registry.addr.clone(),
        otlp: collector.endpoint.clone(),
    };
    node.start();
    must_kubectl(&kubeconfig, &["create", "configmap", "greeting", "--from-literal=text=hello"], None).await;

    // The node registers, gets a podCIDR from node IPAM and says Ready.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let ready = eventually_or(
        WAIT,
        "the real node to be Ready with a podCIDR",
        || async {
            let n = nodes.get_opt(&node.name).await.ok().flatten()?;
            let cidr = n.spec.as_ref()?.pod_cidr.clone()?;
            let ready =
                n.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some((cidr, n))
        },
        || node.log(),
    )
    .await;
    assert!(ready.0.starts_with("10.251."), "{}", ready.0);
    // The first --server is dead: the agent moved on to the live one by itself.
    let full = std::fs::read_to_string(node.dir.path().join("agent.log")).unwrap_or_default();
    assert!(full.contains("API server failover"), "no failover logged{}", node.log());
    let info = ready.1.status.as_ref().and_then(|s| s.node_info.clone()).expect("nodeInfo");
    assert!(info.container_runtime_version.starts_with("runc://"), "{info:?}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let node_name = node.name.clone();
    let on_node = |yaml: String| yaml.replace("spec:\n", &format!("spec:\n  nodeName: {node_name}\n"));

    // 1. A web server: Running with an address on the bridge, serving what its env says.
    let web = pod_yaml("web", &image, "Always", "echo serving $POD_NAME; mkdir -p /www && echo $GREETING from $POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&on_node(web))).await;
    let s = wait_pod(&pods, "web", &node, "Running and ready", |s| {
        s["phase"] == "Running" && container(s)["ready"] == true && s["podIP"].is_string()
    })
    .await;
    let ip = s["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&ready.0.rsplit_once('.').unwrap().0.to_string()), "pod IP {ip} is in {}", ready.0);
    assert!(container(&s)["containerID"].as_str().unwrap().starts_with("runc://"));
    let body = eventually_or(
        Duration::from_secs(30),
        "the pod's web server to answer on its IP",
        || {
            let url = format!("http://{ip}:8080/");
            async move {
                let out =
                    tokio::process::Command::new("curl").args(["-s", "--max-time", "2", &url]).output().await.ok()?;
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
        },
        || node.log(),
    )
    .await;
    assert_eq!(body, "hello from web");
    // kubectl logs, through the API server to the node's kubelet endpoint.
    let logs = must_kubectl(&kubeconfig, &["logs", "web"], None).await;
    assert_eq!(logs, "serving web\n");
    let logs = must_kubectl(&kubeconfig, &["logs", "web", "--timestamps"], None).await;
    assert!(
        logs.split(' ').next().unwrap().parse::<jiff::Timestamp>().is_ok() && logs.ends_with(" serving web\n"),
        "{logs}"
    );

    // The kubelet's Events, as `kubectl describe` lists them.
    describes(&kubeconfig, &node, "web", &["Pulled", "Created", "Started"]).await;

    traced_start(&c, &node, &collector, &pods, &image).await;
    pre_stop_runs_before_sigterm(&node, &pods, &kubeconfig, &image).await;
    top_reads_cgroups(&node, &pods, &kubeconfig, &image).await;

    // 2. A crashing container restarts with back-off and remembers how it ended.
    let crash = pod_yaml("crash", &image, "Always", "echo about to fail; exit 3");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&on_node(crash))).await;
    let s =
        wait_pod(&pods, "crash", &node, "restarted twice", |s| container(s)["restartCount"].as_i64() >= Some(2)).await;
    assert_eq!(container(&s)["lastState"]["terminated"]["exitCode"], 3, "{s}");
    assert_eq!(container(&s)["lastState"]["terminated"]["reason"], "Error", "{s}");
    let previous = must_kubectl(&kubeconfig, &["logs", "crash", "--previous"], None).await;
    assert_eq!(previous, "about to fail\n");
    wait_pod(&pods, "crash", &node, "in CrashLoopBackOff", |s| {
        container(s)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    describes(&kubeconfig, &node, "crash", &["Back-off restarting failed container main"]).await;

    // 3. Run-to-completion pods end Succeeded or Failed with their exit codes.
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&on_node(pod_yaml("ok", &image, "Never", "exit 0")))).await;
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&on_node(pod_yaml("bad", &image, "Never", "exit 7")))).await;
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some(&on_node(pod_yaml("count", &image, "Never", "for i in 1 2 3; do echo line $i; sleep 0.2; done"))),
    )
    .await;
    wait_pod(&pods, "count", &node, "started", |s| matches!(s["phase"].as_str(), Some("Running" | "Succeeded"))).await;
    let followed = must_kubectl(&kubeconfig, &["logs", "-f", "count"], None).await;
    assert_eq!(followed, "line 1\nline 2\nline 3\n");
    let s = wait_pod(&pods, "ok", &node, "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert_eq!(container(&s)["state"]["terminated"]["reason"], "Completed");
    let ok_uid = pods.get("ok").await.unwrap().metadata.uid.unwrap();
    eventually_or(
        WAIT,
        "a finished pod's network namespace to be released while the pod remains",
        || async { (!node.netns().iter().any(|n| n.ends_with(&ok_uid))).then_some(()) },
        || node.log(),
    )
    .await;
    let s = wait_pod(&pods, "bad", &node, "Failed", |s| s["phase"] == "Failed").await;
    assert_eq!(container(&s)["state"]["terminated"]["exitCode"], 7);

    // Volumes: an emptyDir an init container fills, configMap and secret files, the
    // downward API, and the ServiceAccount token volume admission adds to every pod.
    must_kubectl(&kubeconfig, &["create", "secret", "generic", "pw", "--from-literal=pw=hunter2"], None).await;
    let vols = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: vols, labels: {{tier: web}}}}
spec:
  nodeName: {node}
  restartPolicy: Never
  volumes:
  - {{name: data, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory}}}}
  - {{name: cfg, configMap: {{name: greeting}}}}
  - {{name: sec, secret: {{secretName: pw, items: [{{key: pw, path: sub/pw.txt}}]}}}}
  - {{name: info, downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}, {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}
  initContainers:
  - {{name: fill, image: {image}, command: [sh, -c, 'echo from-init > /data/file'], volumeMounts: [{{name: data, mountPath: /data}}]}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'cat /data/file /cfg/text /sec/sub/pw.txt /info/name /info/labels; echo; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token; grep -q \" /mem tmpfs\" /proc/mounts && echo tmpfs']
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: mem, mountPath: /mem}}
    - {{name: cfg, mountPath: /cfg, readOnly: true}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
",
        node = node.name
    );
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&vols)).await;
    wait_pod(&pods, "vols", &node, "Succeeded", |s| s["phase"] == "Succeeded").await;
    let out = must_kubectl(&kubeconfig, &["logs", "vols"], None).await;
    assert_eq!(out, "from-init\nhellohunter2volstier=\"web\"\ndefault\ntoken\ntmpfs\n", "{out}");

    // Init containers run first, to completion; a failing one fails a Never pod.
    for (name, code) in [("init-ok", 0), ("init-bad", 1)] {
        let yaml = on_node(pod_yaml(name, &image, "Never", "echo main ran")).replace(
            "  containers:\n",
            &format!("  initContainers:\n  - {{name: setup, image: {image}, command: [sh, -c, 'exit {code}']}}\n  containers:\n"),
        );
        must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&yaml)).await;
    }
    let s =
        wait_pod(&pods, "init-ok", &node, "Succeeded after its init container", |s| s["phase"] == "Succeeded").await;
    assert_eq!(s["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed", "{s}");
    let s = wait_pod(&pods, "init-bad", &node, "Failed by its init container", |s| s["phase"] == "Failed").await;
    assert_eq!(s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 1, "{s}");
    assert_eq!(container(&s)["state"]["waiting"]["reason"], "PodInitializing", "{s}");

    // 4. Bad input: a missing image and a command that does not exist say why.
    let missing = pod_yaml("missing", &format!("{}/keelson/nope:1", registry.addr), "Always", "true");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&on_node(missing))).await;
    let s = wait_pod(&pods, "missing", &node, "ImagePullBackOff", |s| {
        container(s)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    let msg = container(&s)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("keelson/nope"), "{msg}");
    let nocmd = on_node(pod_yaml("nocmd", &image, "Never", "true"))
        .replace("command: [sh, -c, \"true\"]", "command: [/no/such/binary]");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&nocmd)).await;
    let s = wait_pod(&pods, "nocmd", &node, "a StartError", |s| {
        container(s)["state"]["terminated"]["reason"] == "StartError"
    })
    .await;
    let msg = container(&s)["state"]["terminated"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("/no/such/binary"), "{msg}");

    // 5. Probes: readiness (httpGet) decides the pod's Ready condition and its Service's
    //    endpoints; a failing liveness probe (exec) restarts the container.
    let probed = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: probed}}
spec:
  selector: {{app: probed}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: probed, labels: {{app: probed}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'touch /tmp/alive; mkdir -p /www; echo ok > /www/ready; httpd -p 8080 -h /www; sleep 6; rm /www/ready; sleep 4; rm /tmp/alive; exec sleep 3600']
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1, failureThreshold: 1}}
    livenessProbe: {{exec: {{command: [cat, /tmp/alive]}}, periodSeconds: 1, failureThreshold: 2}}
",
        node = node.name
    );
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&probed)).await;
    let ready = |s: &Value| {
        s["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    };
    wait_pod(&pods, "probed", &node, "Ready by its readiness probe", |s| ready(s)).await;
    let endpoint_ready = |want: bool| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = sim::kubectl(
                &kubeconfig,
                &["get", "endpointslices", "-l", "kubernetes.io/service-name=probed", "-o", "json"],
                None,
            )
            .await
            .1;
            let v: Value = serde_json::from_str(&out).ok()?;
            let eps = v["items"]
                .as_array()?
                .iter()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .collect::<Vec<_>>();
            (!eps.is_empty() && eps.iter().all(|e| e["conditions"]["ready"] == want)).then_some(())
        }
    };
    eventually_or(WAIT, "the Service's endpoint to be ready", || endpoint_ready(true), || node.log()).await;
    wait_pod(&pods, "probed", &node, "not Ready once /ready is gone", |s| !ready(s) && s["phase"] == "Running").await;
    eventually_or(WAIT, "the Service's endpoint to be not ready", || endpoint_ready(false), || node.log()).await;
    let s = wait_pod(&pods, "probed", &node, "restarted by its liveness probe", |s| {
        container(s)["restartCount"].as_i64() >= Some(1)
    })
    .await;
    assert!(container(&s)["lastState"]["terminated"]["exitCode"].is_i64(), "{s}");
    wait_pod(&pods, "probed", &node, "Ready again after the restart", |s| ready(s)).await;
    must_kubectl(&kubeconfig, &["delete", "service", "probed"], None).await;

    // A container whose shim is lost (SIGKILLed: the shim is a process of this test's
    // agent) ends as far as the node can tell, and comes back as a single new instance.
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some(&on_node(pod_yaml("lost", &image, "Always", "exec sleep 3600"))),
    )
    .await;
    wait_pod(&pods, "lost", &node, "Running", |s| s["phase"] == "Running" && container(s)["ready"] == true).await;
    let lost_uid = pods.get("lost").await.unwrap().metadata.uid.unwrap();
    let shim_pid: i32 =
        std::fs::read_to_string(node.root().join(format!("pods/{lost_uid}/containers/main/0/shim.pid")))
            .expect("the shim's pid file")
            .trim()
            .parse()
            .expect("a pid");
    assert!(std::process::Command::new("kill").args(["-9", &shim_pid.to_string()]).status().unwrap().success());
    let s = wait_pod(&pods, "lost", &node, "restarted after its shim was lost", |s| {
        container(s)["restartCount"] == 1 && container(s)["state"]["running"].is_object()
    })
    .await;
    assert_eq!(container(&s)["lastState"]["terminated"]["exitCode"], 137, "{s}");
    let ids: Vec<String> = node.runc_ids().into_iter().filter(|i| i.contains(&lost_uid)).collect();
    assert_eq!(ids.len(), 1, "one instance runs: {ids:?}");

    // 6. The agent dies; a pod is deleted meanwhile; the agent comes back: the running pod
    //    was left alone, the deleted one is finished and cleaned up.
    let web_uid = pods.get("web").await.unwrap().metadata.uid.unwrap();
    node.kill().await;
    pods.delete("ok", &DeleteParams::default()).await.unwrap();
    node.start();
    wait_pod(&pods, "web", &node, "still Running with no restart", |s| {
        s["phase"] == "Running" && container(s)["restartCount"] == 0
    })
    .await;
    eventually_or(
        WAIT,
        "the deleted pod to be finished by the restarted agent",
        || async { pods.get_opt("ok").await.ok().flatten().is_none().then_some(()) },
        || node.log(),
    )
    .await;
    eventually_or(
        WAIT,
        "the deleted pod's network namespace and containers to be gone",
        || async {
            (!node.netns().iter().any(|n| n.ends_with(&ok_uid)) && !node.runc_ids().iter().any(|i| i.contains(&ok_uid)))
                .then_some(())
        },
        || node.log(),
    )
    .await;

    // 7. Pods force-deleted together (gone from the API at once) are stopped within their
    //    own grace period (5 s, not a default 30 s: `sleep` as PID 1 ignores SIGTERM, so
    //    the grace is waited out) and undone, all of them (`runc list` fails when a
    //    container goes while it lists: a clean-up that asked it left pods behind).
    let names: Vec<String> = (0..12).map(|i| format!("batch-{i}")).collect();
    let batch: Vec<String> = names.iter().map(|n| on_node(pod_yaml(n, &image, "Always", "exec sleep 3600"))).collect();
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&batch.join("---\n"))).await;
    let mut uids = Vec::new();
    for n in &names {
        wait_pod(&pods, n, &node, "Running", |s| s["phase"] == "Running").await;
        uids.push(pods.get(n).await.unwrap().metadata.uid.unwrap());
    }
    let mut force = vec!["delete", "pod", "--grace-period=0", "--force", "--wait=false"];
    force.extend(names.iter().map(String::as_str));
    must_kubectl(&kubeconfig, &force, None).await;
    eventually_or(
        Duration::from_secs(20),
        "the force-deleted pods to be stopped within their 5 s grace and undone",
        || async { (!node.held().iter().any(|h| uids.iter().any(|u| h.contains(u.as_str())))).then_some(()) },
        || format!("held {:?}{}", node.held(), node.log()),
    )
    .await;

    // 8. Deleting pods stops them gracefully and undoes everything.
    must_kubectl(&kubeconfig, &["delete", "pod", "--all", "--wait=false"], None).await;
    eventually_or(
        WAIT,
        "every pod to be gone",
        || async { pods.list(&Default::default()).await.ok().filter(|l| l.items.is_empty()).map(|_| ()) },
        || node.log(),
    )
    .await;
    eventually_or(
        WAIT,
        "no network namespace, container or pod directory left",
        || async { node.held().is_empty().then_some(()) },
        || format!("held {:?}{}", node.held(), node.log()),
    )
    .await;
    assert!(!node.netns().iter().any(|n| n.ends_with(&web_uid)));
    // Every address went back to IPAM.
    let ipam = node.root().join("ipam");
    let leased: Vec<String> = walk(&ipam)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("10.")))
        .map(|f| f.display().to_string())
        .collect();
    assert!(leased.is_empty(), "addresses still leased: {leased:?}");
    node.kill().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
