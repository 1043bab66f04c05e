//! `keelson cluster up --masters 3 --agents 2` as root: three masters and two real nodes,
//! each a process in its own network namespace on the cluster's bridge. A pod on node n1
//! fetches, by DNS name, a Service whose only endpoint is a pod on n2 (across the routes
//! `cluster up` added between the nodes' pod CIDRs), through `kubectl exec` (the masters
//! reach the kubelets with the certificates `cluster up` issued). `cluster down` leaves no
//! process, container, namespace or mount behind. Bad input is refused before anything
//! starts. A guard takes the cluster down whether the test passes or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::registry::Registry;
use common::sim::{kubectl, must_kubectl};
use common::{eventually_or, free_port, keelson_bin, run};
use keelson_chaos::cluster::{layout, netns};
use keelson_node::kubelet::runtime::rootfs::mounts_under;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// Takes the cluster in `dir` down when dropped; failing that, kills what it recorded and
/// deletes its namespaces.
struct Guard {
    dir: PathBuf,
    prefix: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let down = Command::new(keelson_bin()).args(["cluster", "down", "--dir"]).arg(&self.dir).output();
        if down.as_ref().is_ok_and(|o| o.status.success()) {
            return;
        }
        eprintln!("guard: `keelson cluster down` failed ({down:?}); cleaning up by hand");
        let state = cluster_json(&self.dir);
        let procs =
            state["masters"].as_array().into_iter().flatten().chain(state["nodes"].as_array().into_iter().flatten());
        for pid in procs.filter_map(|m| m["pid"].as_u64()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy()) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        for n in ["n1", "n2"] {
            let root = self.dir.join(n).join("runtime");
            let ids = Command::new("runc").arg("--root").arg(&root).args(["list", "-q"]).output();
            for id in ids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
                let _ = Command::new("runc").arg("--root").arg(&root).args(["delete", "--force", id]).status();
            }
        }
        let flat = self.prefix.replace('-', "");
        for ns in std::fs::read_dir(netns::NETNS_DIR).into_iter().flatten().flatten() {
            let name = ns.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{}-", self.prefix)) || name.starts_with(&flat) {
                let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
        let _ = Command::new("ip").args(["link", "delete", &format!("{}-br", self.prefix)]).status();
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount").args(["-l"]).arg(&m).status();
        }
    }
}

fn cluster_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap_or_default()).unwrap_or(Value::Null)
}

fn keelson(args: &[&str], dir: &Path) -> (bool, String, String) {
    run(Command::new(keelson_bin()).args(args).arg("--dir").arg(dir))
}

fn logs(dir: &Path) -> String {
    ["m1", "m2", "m3", "n1", "n2"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!("\n--- {n}.log (last 15 lines):\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_nodes_serve_a_pod_to_a_pod_across_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c");
    let tag = std::process::id() % 100_000;
    let prefix = format!("kca{tag}");
    let seed = layout::fnv1a(dir.as_os_str().as_encoded_bytes());
    let subnet = layout::choose_subnet(seed, &layout::used_routes()).expect("a free /24");
    let registry_addr = format!("{}:{}", layout::host(subnet, 1), free_port());
    let _guard = Guard { dir: dir.clone(), prefix: prefix.clone() };
    let (ok, out, err) = keelson(
        &[
            "cluster",
            "up",
            "--masters",
            "3",
            "--agents",
            "2",
            "--network",
            "netns",
            "--subnet",
            &subnet.to_string(),
            "--prefix",
            &prefix,
            "--server-arg=--cluster-cidr",
            "--server-arg=10.193.0.0/16",
            "--agent-arg=--insecure-registry",
            &format!("--agent-arg={registry_addr}"),
            "--agent-arg=--lease-renew-interval",
            "--agent-arg=1s",
        ],
        &dir,
    );
    assert!(ok, "cluster up --agents 2 failed: {err}{}", logs(&dir));
    let kubeconfig = PathBuf::from(out.trim());
    assert!(err.contains("node n1: ") && err.contains("node n2: "), "{err}");

    // Both nodes are in status, their agents running, each at its own address.
    let (ok, out, err) = keelson(&["cluster", "status", "--json"], &dir);
    assert!(ok, "{err}");
    let st: Value = serde_json::from_str(&out).expect("status --json");
    let nodes = st["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{st}");
    assert!(nodes.iter().all(|n| n["running"] == true), "{st}");
    assert_eq!(nodes[1]["ip"], layout::host(subnet, 102).to_string(), "{st}");

    // The image, served on the bridge's address (the nodes reach the host there).
    let registry = Registry::start_at(None, &registry_addr).await;
    let image = registry.push_busybox("keelson/busybox:agents").await;

    let web = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: n2
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: [sh, -c, 'mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www']
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {image}
    command: [sleep, '3600']
"
    );
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&web)).await;
    let last = std::sync::Mutex::new(String::new());
    let body = eventually_or(
        WAIT,
        "the pod on n1 to fetch the Service on n2 by name",
        || async {
            // busybox's own nslookup resolves (the static glibc busybox has no NSS in a bare
            // image, so its wget takes addresses only, and crashes on `-T`).
            let script = "ip=$(nslookup web.default.svc.cluster.local | awk '/^Address: /{print $2}' | head -1); \
                          [ -n \"$ip\" ] && timeout 5 wget -qO- http://$ip/";
            let (ok, out, err) = kubectl(&kubeconfig, &["exec", "client", "--", "sh", "-c", script], None).await;
            *last.lock().unwrap() = format!("{out}{err}");
            ok.then(|| out.trim().to_string())
        },
        || format!("\nlast try: {}{}", last.lock().unwrap(), logs(&dir)),
    )
    .await;
    assert_eq!(body, "hello from web");
    let wide = must_kubectl(&kubeconfig, &["get", "pods", "-o", "wide", "--no-headers"], None).await;
    let on = |pod: &str| wide.lines().find(|l| l.starts_with(pod)).and_then(|l| l.split_whitespace().nth(6));
    assert_eq!((on("client"), on("web")), (Some("n1"), Some("n2")), "{wide}");

    // Down: no agent, container, namespace or mount is left.
    let pids: Vec<u64> = nodes.iter().filter_map(|n| n["pid"].as_u64()).collect();
    let (ok, _, err) = keelson(&["cluster", "down"], &dir);
    assert!(ok, "cluster down failed: {err}");
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid), "agent {pid} still runs");
    }
    let flat = prefix.clone();
    let left: Vec<String> = std::fs::read_dir(netns::NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&flat))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for n in ["n1", "n2"] {
        let root = dir.join(n).join("runtime");
        let (_, out, _) = run(Command::new("runc").arg("--root").arg(&root).args(["list", "-q"]));
        assert!(out.trim().is_empty(), "containers left on {n}: {out}");
    }
    assert!(mounts_under(&dir).is_empty(), "mounts left: {:?}", mounts_under(&dir));
}

fn is_zombie(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    matches!(stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z" | "X") | None)
}

#[test]
fn real_agents_need_the_netns_network_and_at_most_nine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) =
        keelson(&["cluster", "up", "--masters", "3", "--agents", "2", "--network", "loopback"], tmp.path());
    assert!(!ok);
    assert!(err.contains("--agents needs the netns network"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing was started or written");
    let (ok, _, err) = keelson(&["cluster", "up", "--masters", "1", "--agents", "10"], tmp.path());
    assert!(!ok && err.contains("--agents 10: from 1 to 9"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing was started or written");
    let (ok, _, err) = keelson(&["cluster", "up", "--masters", "1", "--agent-arg=--x"], tmp.path());
    assert!(!ok && err.contains("--agents"), "--agent-arg without --agents: {err}");
}
