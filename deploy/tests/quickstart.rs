//! The README's quick start, for real, as root: `keelson up` with its in-process node
//! (runc, CNI bridge, nftables service proxy, cluster DNS), a busybox image from Debian's
//! docker-registry on loopback, and the real kubectl: create a Deployment, expose it as a
//! NodePort Service, reach it by name from another pod and by NodePort from the host,
//! scale it, read its logs, exec into it, port-forward to it, delete a pod and see it
//! replaced. The guard removes everything the node made (containers, network namespaces,
//! mounts, the bridge, the nft table), failed or not.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::registry::Registry;
use common::sim::{self, kubectl, must_kubectl};
use common::{eventually_or, Up};
use k8s_openapi::api::core::v1::{Pod, Service};
use keelson_node::kubelet::network::NetNs;
use keelson_node::kubelet::runtime::rootfs;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(120);

/// `keelson up` with its node, and what the node may leave behind: dropped → `up` killed
/// (and reaped) first, so nothing starts again, then everything it made removed.
struct Leftovers {
    up: Up,
    root: PathBuf,
    top: PathBuf,
    bridge: String,
    netns_prefix: String,
    table: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.up.child);
        let runtime = self.root.join("runtime");
        let out = std::process::Command::new("runc").arg("--root").arg(&runtime).args(["list", "-q"]).output();
        let ids: Vec<String> =
            out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default();
        for id in ids {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&runtime)
                .args(["delete", "--force", &id])
                .output();
        }
        for ns in NetNs::list_with_prefix(&self.netns_prefix) {
            let _ = NetNs::delete_by_name(&ns);
        }
        for m in rootfs::mounts_under(&self.top) {
            let _ = rootfs::unmount(&m);
        }
        let _ = std::process::Command::new("ip").args(["link", "delete", &self.bridge]).stderr(Stdio::null()).output();
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(Stdio::null())
            .output();
    }
}

fn log_tail(up: &Up) -> String {
    let text = up.log();
    let tail: Vec<&str> = text.lines().rev().take(80).collect();
    format!("\n--- keelson up log (last 80 lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
}

async fn ready_pods(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let list = api.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default();
    list.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none() && sim::ready(p)).collect()
}

/// `kubectl run` a one-shot busybox pod and return what it printed.
async fn run_once(up: &Up, image: &str, name: &str, script: &str) -> String {
    let kc = &up.kubeconfig;
    must_kubectl(
        kc,
        &["run", name, "--image", image, "--restart", "Never", "--command", "--", "sh", "-c", script],
        None,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(sim::client(kc, None).await, "default");
    let phase = eventually_or(
        WAIT,
        &format!("pod {name} to finish"),
        || async {
            let p = pods.get_opt(name).await.ok().flatten()?;
            let phase = p.status.and_then(|s| s.phase)?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        },
        || log_tail(up),
    )
    .await;
    let out = must_kubectl(kc, &["logs", name], None).await;
    assert_eq!(phase, "Succeeded", "pod {name} failed; it printed:\n{out}{}", log_tail(up));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_for_real() {
    let registry = Registry::start().await;
    let image = registry.push_busybox("keelson/busybox:qs").await;
    let tag = std::process::id() % 100_000;
    let (bridge, netns_prefix, node) = (format!("kq{tag}"), format!("kq{tag}-"), format!("qs-{tag}"));
    let up = Up::start_with_node(&[
        "--node-name",
        &node,
        "--bridge",
        &bridge,
        "--netns-prefix",
        &netns_prefix,
        "--proxy-table",
        &bridge,
        "--insecure-registry",
        &registry.addr,
        "--restart-backoff",
        "1s",
        "--cluster-cidr",
        "10.243.0.0/16",
    ])
    .await;
    let guard = Leftovers {
        root: up.dir.path().join("data").join("agent"),
        top: up.dir.path().to_path_buf(),
        bridge: bridge.clone(),
        netns_prefix,
        table: bridge.clone(),
        up,
    };
    let up = &guard.up;
    let kc = up.kubeconfig.clone();
    let client = sim::client(&kc, None).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    eventually_or(
        WAIT,
        "the in-process node to be Ready",
        || async {
            let n = nodes.get_opt(&node).await.ok().flatten()?;
            let ready = n.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        },
        || log_tail(&up),
    )
    .await;

    // kubectl create deployment + expose, as the README says.
    let serve = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www";
    must_kubectl(&kc, &["create", "deployment", "hello", "--image", &image, "--", "sh", "-c", serve], None).await;
    must_kubectl(
        &kc,
        &["expose", "deployment", "hello", "--port", "80", "--target-port", "8080", "--type", "NodePort"],
        None,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "the hello pod to be ready",
        || async { (ready_pods(&pods, "app=hello").await.len() == 1).then_some(()) },
        || log_tail(&up),
    )
    .await;
    let svc: Service = Api::namespaced(client.clone(), "default").get("hello").await.expect("service");
    let spec = svc.spec.expect("service spec");
    let cluster_ip = spec.cluster_ip.clone().expect("clusterIP");
    let node_port = spec.ports.as_ref().and_then(|p| p[0].node_port).expect("nodePort");

    // From another pod: by DNS name (cluster DNS, the pod's search path) and by ClusterIP
    // (the proxy). busybox's own `nslookup` resolves: the static glibc busybox cannot use
    // NSS in a bare image, so its wget takes addresses only (and crashes on `-T` in
    // Debian's busybox 1.35, hence `timeout`).
    // The proxy follows EndpointSlices a moment after the pod is ready: a few tries.
    let retrying = |cmd: String| format!("for i in $(seq 1 15); do {cmd} && exit 0; sleep 1; done; exit 1");
    let fetch = |name: &str| {
        retrying(format!(
            "ip=$(nslookup {name} | awk '/^Address: /{{print $2}}' | head -1); timeout 5 wget -qO- http://$ip/"
        ))
    };
    // The pod's log holds every try: the answer is its last line (earlier tries may have
    // been refused while the proxy caught up).
    let answered = |out: &str| out.trim_end().lines().last().is_some_and(|l| l.starts_with("hello from hello-"));
    let by_name = run_once(&up, &image, "by-name", &fetch("hello.default.svc.cluster.local")).await;
    assert!(answered(&by_name), "{by_name}");
    let short = run_once(&up, &image, "by-short-name", &fetch("hello")).await;
    assert!(answered(&short), "{short}");
    let by_ip = run_once(&up, &image, "by-ip", &retrying(format!("timeout 5 wget -qO- http://{cluster_ip}/"))).await;
    assert!(answered(&by_ip), "{by_ip}");

    // From the host: the NodePort on the node's address.
    let url = format!("http://127.0.0.1:{node_port}/");
    let body = eventually_or(
        Duration::from_secs(30),
        "the NodePort to answer from the host",
        || {
            let url = url.clone();
            async move {
                let out =
                    tokio::process::Command::new("curl").args(["-s", "--max-time", "2", &url]).output().await.ok()?;
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            }
        },
        || log_tail(&up),
    )
    .await;
    assert!(body.starts_with("hello from hello-"), "{body}");

    // Scale to 3: every replica serves, and the Service reaches them all.
    must_kubectl(&kc, &["scale", "deployment", "hello", "--replicas", "3"], None).await;
    let three = eventually_or(
        WAIT,
        "3 ready hello pods",
        || async {
            let p = ready_pods(&pods, "app=hello").await;
            (p.len() == 3).then_some(p)
        },
        || log_tail(&up),
    )
    .await;
    let names: std::collections::BTreeSet<String> = three.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let seen = run_once(
        &up,
        &image,
        "spread",
        &format!("for i in $(seq 1 30); do timeout 5 wget -qO- http://{cluster_ip}/; done | sort -u"),
    )
    .await;
    let answered: std::collections::BTreeSet<String> =
        seen.lines().filter_map(|l| l.strip_prefix("hello from ")).map(str::to_string).collect();
    assert!(answered.len() >= 2 && answered.is_subset(&names), "answers {answered:?} from pods {names:?}");

    // kubectl logs and exec.
    let logs = must_kubectl(&kc, &["logs", "deployment/hello"], None).await;
    assert_eq!(logs, "serving\n");
    let first = names.iter().next().expect("a pod").clone();
    let (ok, out, err) = kubectl(&kc, &["exec", &first, "--", "sh", "-c", "cat /www/index.html; exit 3"], None).await;
    assert!(!ok && out == format!("hello from {first}\n"), "exec: {out:?} {err:?}");
    assert!(err.contains("exit code 3"), "{err}");

    // kubectl port-forward to a pod, fetched from 127.0.0.1.
    let local = common::free_port();
    let mut pf = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["port-forward", &format!("pod/{first}"), &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl port-forward");
    let forwarded = eventually_or(
        Duration::from_secs(30),
        "kubectl port-forward to answer",
        || async move {
            let url = format!("http://127.0.0.1:{local}/");
            let out = tokio::process::Command::new("curl").args(["-s", "--max-time", "2", &url]).output().await.ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
        || log_tail(&up),
    )
    .await;
    assert_eq!(forwarded, format!("hello from {first}\n"));
    let _ = pf.start_kill();
    let _ = pf.wait().await;

    // Delete a pod: the ReplicaSet replaces it and the node runs the replacement.
    must_kubectl(&kc, &["delete", "pod", &first, "--wait=false"], None).await;
    eventually_or(
        WAIT,
        "a replacement for the deleted pod",
        || async {
            let p = ready_pods(&pods, "app=hello").await;
            let now: std::collections::BTreeSet<String> = p.iter().filter_map(|p| p.metadata.name.clone()).collect();
            (now.len() == 3 && !now.contains(&first)).then_some(())
        },
        || log_tail(&up),
    )
    .await;
}
