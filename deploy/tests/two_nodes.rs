//! Two real nodes as two hosts, as root: three network namespaces made by this test — a
//! master host `M` (one `keelson server`, Debian's docker-registry) and node hosts `A` and
//! `B` (each one `keelson agent` with its kubelet, service proxy and DNS) — on one L2
//! segment (a bridge in `M`), with routes between the nodes' pod CIDRs. A pod on A reaches,
//! by DNS name, a Service whose only endpoint is a pod on B. Every address used lives
//! inside these namespaces; the guard kills the processes, removes the containers and
//! deletes the namespaces (and with them every interface and nft table) and unmounts the
//! containers' root filesystems, failed or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::registry::Registry;
use common::{eventually_or, keelson_bin};
use keelson_node::kubelet::network::NetNs;

const WAIT: Duration = Duration::from_secs(120);
const LAN: &str = "10.199.0";

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    ip(&all);
}

/// The test's hosts and what runs in them; dropped → all gone.
struct Hosts {
    tag: u32,
    dir: tempfile::TempDir,
    children: Vec<tokio::process::Child>,
    roots: Vec<PathBuf>,
}

impl Hosts {
    fn ns(&self, host: &str) -> String {
        format!("k2{host}{}", self.tag)
    }

    fn pod_prefix(&self, host: &str) -> String {
        format!("k2p{host}{}-", self.tag)
    }

    /// M with a bridge `lan` (LAN.1/24); A and B with `eth0` (LAN.2, LAN.3) on it.
    fn wire(&self) {
        let m = self.ns("m");
        for h in ["m", "a", "b"] {
            ip(&["netns", "add", &self.ns(h)]);
            in_ns(&self.ns(h), &["ip", "link", "set", "lo", "up"]);
        }
        in_ns(&m, &["ip", "link", "add", "lan", "type", "bridge"]);
        in_ns(&m, &["ip", "addr", "add", &format!("{LAN}.1/24"), "dev", "lan"]);
        in_ns(&m, &["ip", "link", "set", "lan", "up"]);
        for (h, n) in [("a", 2), ("b", 3)] {
            let ns = self.ns(h);
            let peer = format!("v{h}{}", self.tag);
            ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &peer, "netns", &m]);
            in_ns(&m, &["ip", "link", "set", &peer, "master", "lan", "up"]);
            in_ns(&ns, &["ip", "addr", "add", &format!("{LAN}.{n}/24"), "dev", "eth0"]);
            in_ns(&ns, &["ip", "link", "set", "eth0", "up"]);
            in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
    }

    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!("\n--- {name} log (last 40 lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    fn logs(&self) -> String {
        ["m", "a", "b"].iter().map(|h| self.log(h)).collect()
    }

    /// `keelson ARGS` inside host `h`'s namespace, logging to `<h>.log`.
    fn spawn(&mut self, h: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{h}.log"))).expect("log");
        // nsenter --net, not `ip netns exec`: that remounts /sys, hiding the cgroup
        // mounts runc needs.
        let child = tokio::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(h)))
            .arg("--")
            .arg(keelson_bin())
            .args(args)
            .env("KEELSON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keelson");
        self.children.push(child);
    }

    /// kubectl inside M against the master.
    async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns("m"), "kubectl", "--kubeconfig"])
            .arg(kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn must(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(kubeconfig, args).await;
        assert!(ok, "kubectl {args:?} failed: {err}{}", self.logs());
        out
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            common::kill_and_reap(c);
        }
        for root in &self.roots {
            let runtime = root.join("runtime");
            let out = std::process::Command::new("runc").arg("--root").arg(&runtime).args(["list", "-q"]).output();
            let ids: Vec<String> = out
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
                .unwrap_or_default();
            for id in ids {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&runtime)
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
        for h in ["a", "b"] {
            for ns in NetNs::list_with_prefix(&self.pod_prefix(h)) {
                let _ = NetNs::delete_by_name(&ns);
            }
        }
        for h in ["m", "a", "b"] {
            let _ = NetNs::delete_by_name(&self.ns(h));
        }
        // The agents' container root filesystems, deepest first.
        for m in keelson_node::kubelet::runtime::rootfs::mounts_under(self.dir.path()) {
            let _ = keelson_node::kubelet::runtime::rootfs::unmount(&m);
        }
    }
}

/// A kubelet serving certificate for `ip`, signed by the cluster CA.
fn kubelet_cert(pki: &Path, dir: &Path, name: &str, ip: &str) -> (String, String) {
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt"), &ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(vec![ip.to_string()]).expect("params").signed_by(&key, &issuer).expect("sign");
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c.display().to_string(), k.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_one_node_reaches_a_service_on_the_other_by_name() {
    let tag = std::process::id() % 100_000;
    let mut hosts = Hosts { tag, dir: tempfile::tempdir().expect("tempdir"), children: Vec::new(), roots: Vec::new() };
    hosts.wire();
    let m = hosts.ns("m");
    let registry = Registry::start_at(Some(&m), &format!("{LAN}.1:5000")).await;
    let image = registry.push_busybox("keelson/busybox:two").await;

    // The master, on M's LAN address.
    let data = hosts.dir.path().join("m");
    let api = format!("{LAN}.1:6443");
    hosts.spawn(
        "m",
        &[
            "server",
            "--name",
            "m1",
            "--data-dir",
            &data.display().to_string(),
            "--api-addr",
            &api,
            "--peer-addr",
            "127.0.0.1:2380",
            "--etcd-addr",
            "127.0.0.1:2379",
            "--cluster-cidr",
            "10.198.0.0/16",
        ],
    );
    let kubeconfig = data.join("admin.kubeconfig");
    eventually_or(
        WAIT,
        "the master to answer",
        || async {
            (kubeconfig.exists() && hosts.kubectl(&kubeconfig, &["get", "ns", "default"]).await.0).then_some(())
        },
        || hosts.logs(),
    )
    .await;

    // Two nodes, each in its own host.
    let pki = data.join("pki");
    let ca = pki.join("ca.crt").display().to_string();
    for (h, n) in [("a", 2), ("b", 3)] {
        let node_ip = format!("{LAN}.{n}");
        let (cert, key) = kubelet_cert(&pki, hosts.dir.path(), h, &node_ip);
        let root = hosts.dir.path().join(format!("root-{h}"));
        hosts.roots.push(root.clone());
        let prefix = hosts.pod_prefix(h);
        hosts.spawn(
            h,
            &[
                "agent",
                "--kubeconfig",
                &kubeconfig.display().to_string(),
                "--node-name",
                &format!("node-{h}"),
                "--node-ip",
                &node_ip,
                "--root-dir",
                &root.display().to_string(),
                "--netns-prefix",
                &prefix,
                "--insecure-registry",
                &registry.addr,
                "--port",
                "10250",
                "--tls-cert-file",
                &cert,
                "--tls-private-key-file",
                &key,
                "--client-ca-file",
                &ca,
                "--lease-renew-interval",
                "1s",
            ],
        );
    }
    // Both Ready with podCIDRs; then each host routes the other's pod CIDR.
    let cidrs = eventually_or(
        WAIT,
        "both nodes Ready with podCIDRs",
        || async {
            let jsonpath = r#"{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#;
            let (ok, out, _) =
                hosts.kubectl(&kubeconfig, &["get", "nodes", "-o", &format!("jsonpath={jsonpath}")]).await;
            let rows: Vec<Vec<String>> =
                out.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect();
            let ready = ok && rows.len() == 2 && rows.iter().all(|r| r.len() == 3 && r[2] == "True");
            ready.then(|| rows.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect::<Vec<_>>())
        },
        || hosts.logs(),
    )
    .await;
    let cidr_of = |n: &str| cidrs.iter().find(|(name, _)| name == n).map(|(_, c)| c.clone()).expect("cidr");
    in_ns(&hosts.ns("a"), &["ip", "route", "add", &cidr_of("node-b"), "via", &format!("{LAN}.3")]);
    in_ns(&hosts.ns("b"), &["ip", "route", "add", &cidr_of("node-a"), "via", &format!("{LAN}.2")]);

    // The server on B behind a Service; the client on A asks for it by name. (busybox's
    // own `nslookup` resolves: the static glibc busybox cannot use NSS in a bare image;
    // Debian's busybox 1.35 wget crashes on `-T`, hence `timeout`.)
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: echo, labels: {{app: echo}}}}
spec:
  nodeName: node-b
  containers:
  - name: web
    image: {image}
    command: [sh, -c, 'mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www']
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
"
    );
    let file = hosts.dir.path().join("echo.yaml");
    std::fs::write(&file, manifest).expect("manifest");
    hosts.must(&kubeconfig, &["apply", "-f", &file.display().to_string()]).await;
    hosts.must(&kubeconfig, &["wait", "--for=condition=Ready", "pod/echo", "--timeout=120s"]).await;
    let client = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: node-a
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command:
    - sh
    - -c
    - |
      for i in $(seq 1 20); do
        ip=$(nslookup echo.default.svc.cluster.local | awk '/^Address: /{{print $2}}' | head -1)
        [ -n "$ip" ] && timeout 5 wget -qO- http://$ip/ && exit 0
        sleep 1
      done
      cat /etc/resolv.conf; nslookup echo.default.svc.cluster.local; exit 1
"#
    );
    let file = hosts.dir.path().join("client.yaml");
    std::fs::write(&file, client).expect("manifest");
    hosts.must(&kubeconfig, &["apply", "-f", &file.display().to_string()]).await;
    let phase = eventually_or(
        WAIT,
        "the client pod to finish",
        || async {
            let (_, out, _) =
                hosts.kubectl(&kubeconfig, &["get", "pod", "client", "-o", "jsonpath={.status.phase}"]).await;
            matches!(out.as_str(), "Succeeded" | "Failed").then_some(out)
        },
        || hosts.logs(),
    )
    .await;
    let out = hosts.must(&kubeconfig, &["logs", "client"]).await;
    assert_eq!(phase, "Succeeded", "the client failed; it printed:\n{out}{}", hosts.logs());
    assert_eq!(out, "hello from echo\n");
    drop(registry);
}
