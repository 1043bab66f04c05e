//! The service proxy against the real kernel: nft, network namespaces, a bridge, veths and
//! busybox httpd backends. Needs root (skips itself otherwise) and nft (fails without it).
//!
//! Each test builds its own world, all named `kp<pid>-<n>-…` and removed by a guard on
//! drop, pass or fail (processes first, then namespaces):
//!
//! ```text
//!  netns kp<pid>-<n>-host  ("the node": the proxy programs its table here)
//!    br0   10.213.7.1/24   the pod bridge's gateway
//!          10.213.9.1/32   the node's own address (NodePorts); default route
//!    v<i>  veth ports of br0
//!  netns kp<pid>-<n>-<pod> eth0 10.213.7.<11+i>/24, default via 10.213.7.1
//! ```
//!
//! Traffic never leaves these namespaces. Services are in-memory k8s-openapi objects fed
//! to [`Proxier::sync`], the same path `run` takes, which one test drives from a fake API
//! server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keelson_node::proxy::{cleanup, Proxier, ProxyConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "10.213.7.1";
const NODE_IP: &str = "10.213.9.1";
const TABLE: &str = "keelson-services";
/// A table of someone else's, created by each test in the host namespace.
const OTHER: &str = "someone-else";
const HTTP_PORT: i32 = 8080;

// ---------------------------------------------------------------------------------------------
// The world

fn is_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if !root {
        eprintln!("skipping: the proxy tests need root");
    } else {
        let nft = Command::new("nft").arg("--version").output();
        assert!(nft.is_ok_and(|o| o.status.success()), "nft is missing: install Debian's `nftables`");
    }
    root
}

/// Run a command; its stdout, or panic with its stderr.
fn must(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces left by an earlier run of these tests that was killed before its guard ran.
fn remove_stale() {
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("kp").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

struct Pod {
    name: String,
    netns: String,
    ip: Ipv4Addr,
}

/// A UDP echo server in a pod: answers `<pod>:<what it got>`.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct World {
    host: String,
    pods: Vec<Pod>,
    netns: Vec<String>,
    children: Vec<Child>,
    echoes: Vec<Echo>,
    dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        for echo in &mut self.echoes {
            echo.stop.store(true, Ordering::SeqCst);
            if let Some(t) = echo.thread.take() {
                let _ = t.join();
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Plain `ip`: nothing of the code under test. Pods first, the host last.
        for ns in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

impl World {
    /// World `idx` (distinct per test) with the pods `names`; every pod but `client` runs
    /// an httpd on [`HTTP_PORT`] that answers its own name.
    fn new(idx: u32, names: &[&str]) -> World {
        remove_stale();
        let host = format!("kp{}-{idx}-host", std::process::id());
        let mut w = World {
            host: host.clone(),
            pods: vec![],
            netns: vec![],
            children: vec![],
            echoes: vec![],
            dir: tempfile::tempdir().unwrap(),
        };
        must(&["ip", "netns", "add", &host]);
        w.netns.push(host.clone());
        let h = |args: &[&str]| must(&[&["ip", "-n", &host][..], args].concat());
        h(&["link", "set", "lo", "up"]);
        h(&["link", "add", "br0", "type", "bridge"]);
        h(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
        h(&["link", "set", "br0", "up"]);
        // The node's own address (what NodePorts answer on), on the bridge too: this kernel
        // may have no dummy links.
        h(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "br0"]);
        // So the node itself can reach cluster IPs (as a real node's default route lets
        // it); anything not DNATed asks ARP on the bridge, where nobody answers.
        h(&["route", "add", "default", "dev", "br0"]);
        // A plain bridge, as the proxy must assume: where br_netfilter is loaded, bridged
        // frames would pass through conntrack and hide a missing masquerade.
        must(&[
            "ip",
            "netns",
            "exec",
            &host,
            "sh",
            "-c",
            "f=/proc/sys/net/bridge/bridge-nf-call-iptables; [ ! -e $f ] || echo 0 > $f",
        ]);
        // The proxy must turn forwarding on.
        must(&["ip", "netns", "exec", &host, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
        // Someone else's table, which no sync may touch.
        must(&["ip", "netns", "exec", &host, "nft", "add", "table", "ip", OTHER]);
        must(&[
            "ip",
            "netns",
            "exec",
            &host,
            "nft",
            "add",
            "chain",
            "ip",
            OTHER,
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ]);
        must(&["ip", "netns", "exec", &host, "nft", "add", "rule", "ip", OTHER, "input", "counter"]);

        for (i, name) in names.iter().enumerate() {
            let netns = format!("kp{}-{idx}-{name}", std::process::id());
            let ip = Ipv4Addr::new(10, 213, 7, 11 + i as u8);
            must(&["ip", "netns", "add", &netns]);
            w.netns.push(netns.clone());
            let veth = format!("v{i}");
            h(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
            h(&["link", "set", &veth, "master", "br0", "up"]);
            let p = |args: &[&str]| must(&[&["ip", "-n", &netns][..], args].concat());
            p(&["link", "set", "lo", "up"]);
            p(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            p(&["link", "set", "eth0", "up"]);
            p(&["route", "add", "default", "via", GATEWAY]);
            if *name != "client" {
                let root = w.dir.path().join(name);
                std::fs::create_dir(&root).unwrap();
                std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
                let child = Command::new("ip")
                    .args(["netns", "exec", &netns, "busybox", "httpd", "-f", "-p", &HTTP_PORT.to_string(), "-h"])
                    .arg(&root)
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("busybox httpd");
                w.children.push(child);
            }
            w.pods.push(Pod { name: name.to_string(), netns, ip });
        }
        // Every httpd answers (from the node, over the bridge) before the test starts.
        for pod in w.pods.iter().filter(|p| p.name != "client") {
            let url = format!("http://{}:{HTTP_PORT}/", pod.ip);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let out = Command::new("ip")
                    .args(["netns", "exec", &host, "timeout", "2", "busybox", "wget", "-q", "-O", "-", &url])
                    .output()
                    .unwrap();
                if out.status.success() {
                    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pod.name);
                    break;
                }
                assert!(Instant::now() < deadline, "httpd in {} never answered", pod.name);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        w
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap()
    }

    fn ip(&self, name: &str) -> String {
        self.pod(name).ip.to_string()
    }

    fn cfg(&self, node_ips: &[&str]) -> ProxyConfig {
        ProxyConfig {
            node_name: "node-1".into(),
            node_ips: node_ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            table: TABLE.into(),
            netns: Some(self.host.clone()),
            resync: Duration::from_secs(60),
        }
    }

    /// `busybox wget URL` from pod `from` (`None`: from the node); the body, or wget's error.
    async fn wget(&self, from: Option<&str>, url: &str) -> Result<String, String> {
        let ns = from.map_or(self.host.as_str(), |p| self.pod(p).netns.as_str());
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status))
        }
    }

    /// Who answered `n` requests, and how often.
    async fn hits(&self, from: Option<&str>, url: &str, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let who = self.wget(from, url).await.unwrap_or_else(|e| format!("error: {e}"));
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    }

    fn nft(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip").args(["netns", "exec", &self.host, "nft"]).args(args).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn table_exists(&self, name: &str) -> bool {
        self.nft(&["list", "table", "ip", name]).is_ok()
    }

    /// Someone else's table is exactly as the test made it.
    fn other_table_intact(&self) {
        let t = self.nft(&["list", "table", "ip", OTHER]).unwrap_or_else(|e| panic!("{OTHER} is gone: {e}"));
        assert!(
            t.contains("chain input") && t.contains("type filter hook input priority filter") && t.contains("counter"),
            "{t}"
        );
    }

    fn ip_forward(&self) -> String {
        must(&["ip", "netns", "exec", &self.host, "cat", "/proc/sys/net/ipv4/ip_forward"]).trim().to_string()
    }

    /// Start a UDP echo server on `port` in pod `name`.
    fn echo(&mut self, name: &str, port: u16) {
        let (netns, who) = (self.pod(name).netns.clone(), name.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&netns);
            let sock = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let reply = format!("{who}:{}", String::from_utf8_lossy(&buf[..n]));
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("echo server bound");
        self.echoes.push(Echo { stop, thread: Some(thread) });
    }

    /// One UDP exchange from pod `from` to `to`: the answer, or the error's kind.
    async fn udp(&self, from: &str, to: SocketAddr, msg: &str) -> Result<String, std::io::ErrorKind> {
        let (netns, msg) = (self.pod(from).netns.clone(), msg.to_string());
        tokio::task::spawn_blocking(move || {
            // A thread of its own: it never comes back from the namespace.
            std::thread::spawn(move || {
                enter(&netns);
                let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                sock.connect(to).unwrap();
                sock.send(msg.as_bytes()).map_err(|e| e.kind())?;
                let mut buf = [0u8; 512];
                let n = sock.recv(&mut buf).map_err(|e| e.kind())?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .join()
            .unwrap()
        })
        .await
        .unwrap()
    }
}

/// Move this thread into network namespace `name`.
fn enter(name: &str) {
    let f = std::fs::File::open(Path::new("/run/netns").join(name)).unwrap();
    rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Objects

fn service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr})).collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name, "resourceVersion": "1"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports},
    })
}

/// `(address, ready, serving, terminating)`.
type Ep<'a> = (&'a str, bool, bool, bool);

fn ready(ip: &str) -> Ep<'_> {
    (ip, true, true, false)
}

fn slice(svc: &str, eps: &[Ep], ports: &[(&str, i32, &str)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, r, s, t)| json!({"addresses": [ip], "conditions": {"ready": r, "serving": s, "terminating": t}}))
        .collect();
    let ports: Vec<Value> = ports.iter().map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr})).collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": format!("{svc}-1"), "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    })
}

fn objects(services: &[Value], slices: &[Value]) -> (Vec<Service>, Vec<EndpointSlice>) {
    (
        services.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect(),
        slices.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect(),
    )
}

async fn sync(p: &mut Proxier, services: &[Value], slices: &[Value]) {
    let (s, e) = objects(services, slices);
    p.sync(&s, &e).await.unwrap_or_else(|e| panic!("sync: {e}"));
}

const WEB_IP: &str = "10.96.0.10";
const WEB: &str = "http://10.96.0.10/";

fn web() -> Value {
    service("web", WEB_IP, &[("http", 80, "TCP")])
}

fn web_slice(eps: &[Ep]) -> Value {
    slice("web", eps, &[("http", HTTP_PORT, "TCP")])
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn cluster_ip_balances_and_follows_endpoints() {
    if !is_root() {
        return;
    }
    let w = World::new(0, &["a", "b", "client"]);
    let mut p = Proxier::new(w.cfg(&[NODE_IP]));
    let (a, b) = (w.ip("a"), w.ip("b"));
    // Another Service whose port name picks another slice port: named ports resolve.
    let mut two = service("two", "10.96.0.20", &[("metrics", 9000, "TCP"), ("http", 81, "TCP")]);
    two["spec"]["ports"][0]["targetPort"] = json!("metrics");
    let two_slice = slice("two", &[ready(&b)], &[("metrics", 9999, "TCP"), ("http", HTTP_PORT, "TCP")]);

    sync(&mut p, &[web(), two.clone()], &[web_slice(&[ready(&a), ready(&b)]), two_slice.clone()]).await;
    assert_eq!(w.ip_forward(), "1", "the proxy turns forwarding on");
    w.other_table_intact();

    let seen = w.hits(Some("client"), WEB, 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "both backends, nothing else: {seen:?}");
    // From the node itself (the output hook), and the named port `http` of `two`.
    assert!(matches!(w.wget(None, WEB).await.as_deref(), Ok("a" | "b")));
    assert_eq!(w.wget(Some("client"), "http://10.96.0.20:81/").await.as_deref(), Ok("b"));
    // Hairpin: a backend reaching its own Service lands on itself half the time.
    let from_a = w.hits(Some("a"), WEB, 16).await;
    assert!(from_a.keys().all(|k| k == "a" || k == "b"), "{from_a:?}");

    // b leaves: no new connection goes to it.
    sync(&mut p, &[web(), two.clone()], &[web_slice(&[ready(&a)]), two_slice.clone()]).await;
    w.other_table_intact();
    let seen = w.hits(Some("client"), WEB, 15).await;
    assert_eq!(seen, BTreeMap::from([("a".to_string(), 15)]));
    // b is back but not ready, a is gone: only ready ones count; none → refused.
    sync(&mut p, &[web(), two], &[web_slice(&[(&b, false, false, false)]), two_slice]).await;
    let err = w.wget(Some("client"), WEB).await.unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
    w.other_table_intact();
}

#[tokio::test]
async fn client_ip_affinity_sticks_across_syncs() {
    if !is_root() {
        return;
    }
    let w = World::new(1, &["a", "b", "client"]);
    let mut p = Proxier::new(w.cfg(&[NODE_IP]));
    let mut svc = web();
    svc["spec"]["sessionAffinity"] = json!("ClientIP");
    svc["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 300}});
    let eps = web_slice(&[ready(&w.ip("a")), ready(&w.ip("b"))]);
    sync(&mut p, std::slice::from_ref(&svc), std::slice::from_ref(&eps)).await;

    let seen = w.hits(Some("client"), WEB, 15).await;
    assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
    let (chosen, _) = seen.into_iter().next().unwrap();
    assert!(chosen == "a" || chosen == "b", "{chosen}");
    // The client is remembered in the chosen endpoint's set, with the Service's timeout.
    let sets = w.nft(&["list", "sets", "table", "ip", TABLE]).unwrap();
    assert!(sets.contains(&w.ip("client")) && sets.contains("timeout 5m"), "{sets}");

    // Every sync rewrites the table; the affinity survives it (a fresh choice would be
    // the same one 15 times with probability 2^-15).
    for _ in 0..3 {
        sync(&mut p, std::slice::from_ref(&svc), std::slice::from_ref(&eps)).await;
    }
    let seen = w.hits(Some("client"), WEB, 15).await;
    assert_eq!(seen, BTreeMap::from([(chosen.clone(), 15)]));
    w.other_table_intact();

    // Without affinity the same client is spread again.
    sync(&mut p, &[web()], &[eps]).await;
    let seen = w.hits(Some("client"), WEB, 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");
}

#[tokio::test]
async fn node_port_on_the_node_address() {
    if !is_root() {
        return;
    }
    let w = World::new(2, &["a", "client"]);
    let mut svc = web();
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    let mut lb = service("lb", "10.96.0.30", &[("", 82, "TCP")]);
    lb["spec"]["type"] = json!("LoadBalancer");
    lb["spec"]["ports"][0]["nodePort"] = json!(30082);
    let lb_slice = slice("lb", &[ready(&w.ip("a"))], &[("", HTTP_PORT, "TCP")]);
    let objs = ([svc, lb], [web_slice(&[ready(&w.ip("a"))]), lb_slice]);

    let mut p = Proxier::new(w.cfg(&[NODE_IP]));
    sync(&mut p, &objs.0, &objs.1).await;
    let node = |port: u16| format!("http://{NODE_IP}:{port}/");
    // From the node itself (output hook) and from a pod (prerouting hook).
    assert_eq!(w.wget(None, &node(30080)).await.as_deref(), Ok("a"));
    assert_eq!(w.wget(Some("client"), &node(30080)).await.as_deref(), Ok("a"));
    assert_eq!(w.wget(Some("client"), &node(30082)).await.as_deref(), Ok("a"));
    assert_eq!(w.wget(Some("client"), "http://10.96.0.30:82/").await.as_deref(), Ok("a"));
    // Only the listed node address: the gateway's is not one.
    let err = w.wget(Some("client"), &format!("http://{GATEWAY}:30080/")).await.unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
    w.other_table_intact();

    // No node address configured: every local address but loopback.
    let mut p = Proxier::new(w.cfg(&[]));
    sync(&mut p, &objs.0, &objs.1).await;
    assert_eq!(w.wget(None, &node(30080)).await.as_deref(), Ok("a"));
    assert_eq!(w.wget(Some("client"), &format!("http://{GATEWAY}:30080/")).await.as_deref(), Ok("a"));
    let err = w.wget(None, "http://127.0.0.1:30080/").await.unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
    w.other_table_intact();
}

#[tokio::test]
async fn no_ready_endpoint_is_refused_fast_and_terminating_ones_serve() {
    if !is_root() {
        return;
    }
    let mut w = World::new(3, &["a", "client"]);
    w.echo("a", 5353);
    let a = w.ip("a");
    let mut svc = web();
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    let dns = service("dns", "10.96.0.53", &[("dns", 53, "UDP")]);
    let dns_addr: SocketAddr = "10.96.0.53:53".parse().unwrap();
    let dns_slice = |eps: &[Ep]| slice("dns", eps, &[("dns", 5353, "UDP")]);
    let mut p = Proxier::new(w.cfg(&[NODE_IP]));

    // Not ready, not serving: nothing to send to.
    let down = (a.as_str(), false, false, false);
    sync(&mut p, &[svc.clone(), dns.clone()], &[web_slice(&[down]), dns_slice(&[down])]).await;
    for (from, url) in
        [(Some("client"), WEB.to_string()), (Some("client"), format!("http://{NODE_IP}:30080/")), (None, WEB.into())]
    {
        let t = Instant::now();
        let err = w.wget(from, &url).await.unwrap_err();
        assert!(err.contains("Connection refused"), "{from:?} {url}: {err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{from:?} {url}: refused only after {:?}", t.elapsed());
    }
    let t = Instant::now();
    assert_eq!(w.udp("client", dns_addr, "q").await, Err(std::io::ErrorKind::ConnectionRefused));
    assert!(t.elapsed() < Duration::from_secs(2));
    w.other_table_intact();

    // Terminating but still serving, and nothing ready: used (kube-proxy's fallback).
    let draining = (a.as_str(), false, true, true);
    sync(&mut p, &[svc, dns], &[web_slice(&[draining]), dns_slice(&[draining])]).await;
    assert_eq!(w.wget(Some("client"), WEB).await.as_deref(), Ok("a"));
    assert_eq!(w.udp("client", dns_addr, "q").await.as_deref(), Ok("a:q"));
    w.other_table_intact();
}

#[tokio::test]
async fn cleanup_deletes_only_our_table() {
    if !is_root() {
        return;
    }
    let w = World::new(4, &["a", "client"]);
    let cfg = w.cfg(&[NODE_IP]);
    // Nothing there yet: not an error.
    cleanup(&cfg).await.expect("cleanup with no table");
    let mut p = Proxier::new(cfg.clone());
    sync(&mut p, &[web()], &[web_slice(&[ready(&w.ip("a"))])]).await;
    assert!(w.table_exists(TABLE));
    assert_eq!(w.wget(Some("client"), WEB).await.as_deref(), Ok("a"));
    cleanup(&cfg).await.expect("cleanup");
    assert!(!w.table_exists(TABLE));
    w.other_table_intact();
    cleanup(&cfg).await.expect("cleanup again");
    w.other_table_intact();
}

/// Everything the rules can say, at once, through the real nft: a typo in any corner
/// fails the whole transaction. Then an affinity entry put in by hand outlives a resync.
#[tokio::test]
async fn nft_accepts_every_feature() {
    if !is_root() {
        return;
    }
    let w = World::new(5, &[]);
    let mut services = vec![];
    let mut slices = vec![];
    for i in 0..12u8 {
        let name = format!("s{i}");
        let proto = ["TCP", "UDP", "SCTP"][i as usize % 3];
        let mut s = service(&name, &format!("10.96.1.{i}"), &[("p", 80, proto), ("q", 443, proto)]);
        if i % 2 == 0 {
            s["spec"]["type"] = json!(if i % 4 == 0 { "NodePort" } else { "LoadBalancer" });
            s["spec"]["ports"][0]["nodePort"] = json!(30100 + i as i32);
            s["spec"]["ports"][1]["nodePort"] = json!(30200 + i as i32);
        }
        if i % 3 == 1 {
            s["spec"]["sessionAffinity"] = json!("ClientIP");
        }
        services.push(s);
        let eps: Vec<String> = (0..(i % 4)).map(|j| format!("10.213.8.{}", 10 + j)).collect();
        let eps: Vec<Ep> = eps.iter().map(|ip| ready(ip)).collect();
        slices.push(slice(&name, &eps, &[("p", 8080, proto), ("q", 8443, proto)]));
    }
    for node_ips in [&[NODE_IP][..], &[]] {
        let mut p = Proxier::new(w.cfg(node_ips));
        sync(&mut p, &services, &slices).await;
        let t = w.nft(&["list", "table", "ip", TABLE]).unwrap();
        assert!(t.contains("dnat to 10.213.8.12:8443"), "{t}");
        assert!(t.contains("meta l4proto sctp dnat to 10.213.8.11:8080"), "{t}");
        assert!(t.contains("10.96.1.0 . tcp . 80 : goto reject-chain"), "{t}");
        assert!(t.contains("udp . 30104 : goto reject-chain"), "{t}");
        assert!(t.contains("sctp . 30108 : goto reject-chain"), "{t}");
        w.other_table_intact();
    }

    // s1 has ClientIP affinity and one endpoint.
    let set = "affinity-default/s1/udp/80__10.213.8.10/8080";
    must(&["ip", "netns", "exec", &w.host, "nft", "add", "element", "ip", TABLE, set, "{ 10.213.7.99 timeout 2h }"]);
    let mut p = Proxier::new(w.cfg(&[NODE_IP]));
    sync(&mut p, &services, &slices).await;
    let listed = w.nft(&["list", "set", "ip", TABLE, set]).unwrap();
    assert!(listed.contains("10.213.7.99"), "the entry survived the rewrite: {listed}");
    // With the time it had left, under the Service's timeout from now on.
    assert!(listed.contains("timeout 3h") && listed.contains("expires 1h59m"), "{listed}");
}

// ---------------------------------------------------------------------------------------------
// `run` against a fake API server (list + watch of Services and EndpointSlices)

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// One watch event: its collection path, resourceVersion and JSON line.
type Event = (String, u64, String);

#[derive(Default)]
struct ApiState {
    lists: std::collections::HashMap<String, Vec<Value>>,
    log: Vec<Event>,
    rv: u64,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    tx: tokio::sync::broadcast::Sender<Event>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl FakeApi {
    fn new(lists: &[(&str, Vec<Value>)]) -> Self {
        let state =
            ApiState { lists: lists.iter().map(|(p, v)| (p.to_string(), v.clone())).collect(), log: vec![], rv: 1 };
        Self { state: Arc::new(Mutex::new(state)), tx: tokio::sync::broadcast::channel(256).0 }
    }

    fn push(&self, path: &str, kind: &str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": kind, "object": object}).to_string() + "\n";
        st.log.push((path.to_string(), rv, line.clone()));
        let _ = self.tx.send((path.to_string(), rv, line));
    }

    fn respond(&self, path: String, query: &str) -> hyper::Response<Body> {
        use http_body_util::BodyExt;
        use hyper::body::Frame;

        let json_response =
            |body: Body| hyper::Response::builder().header("content-type", "application/json").body(body).unwrap();
        if ![SERVICES, SLICES].contains(&path.as_str()) {
            let b = http_body_util::Full::new(Bytes::from_static(b"{}"));
            return hyper::Response::builder().status(404).body(b.boxed()).unwrap();
        }
        let param = |k: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('='))).map(str::to_string)
        };
        if param("watch").as_deref() != Some("true") {
            let st = self.state.lock().unwrap();
            let list = json!({
                "apiVersion": if path == SLICES { "discovery.k8s.io/v1" } else { "v1" },
                "kind": if path == SLICES { "EndpointSliceList" } else { "ServiceList" },
                "metadata": {"resourceVersion": "1"},
                "items": st.lists.get(&path).cloned().unwrap_or_default(),
            });
            return json_response(http_body_util::Full::new(Bytes::from(list.to_string())).boxed());
        }
        let from: u64 = param("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut rx = self.tx.subscribe();
        let backlog: Vec<Event> =
            self.state.lock().unwrap().log.iter().filter(|e| e.0 == path && e.1 > from).cloned().collect();
        let (ftx, frx) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut last = from;
            for (_, rv, line) in backlog {
                last = rv;
                if ftx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            while let Ok((p, rv, line)) = rx.recv().await {
                if p == path && rv > last {
                    last = rv;
                    if ftx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let frames = futures::stream::unfold(frx, |mut frx| async move {
            frx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), frx))
        });
        json_response(http_body_util::StreamBody::new(frames).boxed())
    }

    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let resp = api.respond(req.uri().path().to_string(), req.uri().query().unwrap_or(""));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        addr
    }
}

/// Request `url` from the client pod until `want` answers, for up to 15 s.
async fn eventually(w: &World, url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = w.wget(Some("client"), url).await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{url}: still {got:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_programs_what_the_api_server_holds() {
    if !is_root() {
        return;
    }
    let w = World::new(6, &["a", "b", "client"]);
    let (a, b) = (w.ip("a"), w.ip("b"));
    let api = FakeApi::new(&[(SERVICES, vec![web()]), (SLICES, vec![web_slice(&[ready(&a)])])]);
    let api_addr = api.start().await;
    let client = kube::Client::try_from(kube::Config::new(format!("http://{api_addr}").parse().unwrap())).unwrap();
    let cfg = w.cfg(&[NODE_IP]);
    let stop = CancellationToken::new();
    let running = tokio::spawn(keelson_node::proxy::run(client, cfg.clone(), stop.clone()));

    // The listed objects, then watch events: the endpoint moves, a second Service comes.
    eventually(&w, WEB, "a").await;
    assert_eq!(w.ip_forward(), "1");
    api.push(SLICES, "MODIFIED", web_slice(&[ready(&b)]));
    eventually(&w, WEB, "b").await;
    let seen = w.hits(Some("client"), WEB, 5).await;
    assert_eq!(seen, BTreeMap::from([("b".to_string(), 5)]));
    api.push(SERVICES, "ADDED", service("other", "10.96.0.77", &[("", 7777, "TCP")]));
    api.push(SLICES, "ADDED", slice("other", &[ready(&a)], &[("", HTTP_PORT, "TCP")]));
    eventually(&w, "http://10.96.0.77:7777/", "a").await;
    w.other_table_intact();

    // A Service deleted: its chains go.
    api.push(SERVICES, "DELETED", service("other", "10.96.0.77", &[("", 7777, "TCP")]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.nft(&["list", "table", "ip", TABLE]).unwrap().contains("default/other/") {
        assert!(Instant::now() < deadline, "the deleted Service is still programmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), running).await.expect("run stops").expect("no panic");
    r.expect("run ended cleanly");
    // run leaves the table (services keep working across an agent restart).
    assert!(w.table_exists(TABLE));
    assert_eq!(w.wget(Some("client"), WEB).await.as_deref(), Ok("b"));
    cleanup(&cfg).await.unwrap();
    w.other_table_intact();
}
