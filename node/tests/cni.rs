//! The pod network against the real CNI plugins (Debian's containernetworking-plugins in
//! /usr/lib/cni) and real network namespaces. Needs root; skips itself otherwise.
//!
//! Every test works in its own bridge (`kt<pid><n>`), its own /24 (or /30) inside
//! 10.250.0.0/16, its own IPAM directory and its own namespaces (`kt<pid>-<n>-…`), all
//! removed by a guard on drop, pass or fail. Traffic stays between namespaces the test
//! made and the gateway on the bridge it made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keelson_node::kubelet::network::{
    cleanup_bridge, Cni, CniConfig, CniError, CniResult, NetNs, NetNsError, PodCniArgs,
};

const PLUGIN_DIR: &str = "/usr/lib/cni";

/// Every await in these tests is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether this machine can run these tests: root, and the plugins installed.
fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    let plugins = ["loopback", "bridge", "host-local"].iter().all(|p| Path::new(PLUGIN_DIR).join(p).exists());
    if !(root && plugins) {
        eprintln!("skipping: needs root and the CNI plugins in {PLUGIN_DIR} (root={root}, plugins={plugins})");
    }
    root && plugins
}

/// One test's private world, torn down on drop.
struct TestNet {
    idx: u32,
    bridge: String,
    subnet: String,
    netns: Vec<String>,
    dir: tempfile::TempDir,
}

impl TestNet {
    /// Test number `idx` (distinct per test in this file) with a /`prefix` subnet.
    fn new(idx: u32, prefix: u8) -> Self {
        let pid = std::process::id();
        // 10.250.100.0 – 10.250.249.0: five subnets per process, spread by pid so that
        // two runs on one host are unlikely to share one.
        let octet = 100 + (pid % 30) * 5 + idx;
        assert!(idx < 5 && octet < 250);
        let bridge = format!("kt{pid}{idx}");
        assert!(bridge.len() <= 15);
        TestNet {
            idx,
            bridge,
            subnet: format!("10.250.{octet}.0/{prefix}"),
            netns: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn config(&self) -> CniConfig {
        CniConfig {
            plugin_dirs: vec![PLUGIN_DIR.into()],
            bridge: self.bridge.clone(),
            pod_cidr: self.subnet.clone(),
            ipam_data_dir: self.ipam_dir(),
            mtu: None,
            network_name: "keelson".into(),
        }
    }

    fn cni(&self) -> Cni {
        Cni::new(self.config())
    }

    /// The namespace name `kt<pid>-<idx>-<suffix>`, registered for cleanup.
    fn netns_name(&mut self, suffix: &str) -> String {
        let name = format!("kt{}-{}-{suffix}", std::process::id(), self.idx);
        self.netns.push(name.clone());
        name
    }

    fn must_create_netns(&mut self, suffix: &str) -> NetNs {
        let name = self.netns_name(suffix);
        NetNs::create(&name).unwrap_or_else(|e| panic!("creating netns {name}: {e}"))
    }

    /// host-local's record of `ip`.
    fn lease_file(&self, ip: &str) -> PathBuf {
        self.ipam_dir().join("keelson").join(ip)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Plain `ip`, not the code under test, so a bug there cannot leak state.
        for ns in &self.netns {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip").args(["netns", "delete", ns]).status();
            }
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip").args(["link", "delete", "dev", &self.bridge]).status();
        }
    }
}

fn pod(name: &str) -> PodCniArgs {
    PodCniArgs { namespace: "default".into(), name: name.into(), uid: format!("uid-{name}") }
}

async fn must<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, fut).await.unwrap_or_else(|_| panic!("{what} hung for {STEP_TIMEOUT:?}"))
}

async fn must_add(cni: &Cni, id: &str, ns: &NetNs, name: &str) -> CniResult {
    must(&format!("ADD {id}"), cni.add(id, ns.path(), "eth0", &pod(name)))
        .await
        .unwrap_or_else(|e| panic!("ADD {id}: {e}"))
}

/// `ip ARGS…` (or any command), which must succeed; its stdout.
fn must_run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping_from(ns: &str, ip: &str) {
    // iputils ping may be missing; busybox-static's applet is always there.
    let ping = if Command::new("sh").args(["-c", "command -v ping"]).output().is_ok_and(|o| o.status.success()) {
        vec!["ping"]
    } else {
        vec!["busybox", "ping"]
    };
    let mut args = vec!["netns", "exec", ns];
    args.extend(ping);
    args.extend(["-c1", "-W2", ip]);
    must_run("ip", &args);
}

#[tokio::test]
async fn two_pods_get_distinct_addresses_and_reach_each_other() {
    if !can_run() {
        return;
    }
    let mut net = TestNet::new(0, 24);
    let cni = net.cni();
    cni.verify_plugins().expect("plugins installed");

    eprintln!("--- ADD two pods");
    let a = net.must_create_netns("a");
    let b = net.must_create_netns("b");
    let ra = must_add(&cni, "ctr-a", &a, "a").await;
    let rb = must_add(&cni, "ctr-b", &b, "b").await;
    let subnet: keelson_node::kubelet::network::IpNet = net.subnet.parse().unwrap();
    let (ip_a, ip_b) = (ra.pod_ip().expect("pod A has an IPv4"), rb.pod_ip().expect("pod B has an IPv4"));
    assert!(subnet.contains(ip_a) && subnet.contains(ip_b), "{ip_a} {ip_b} in {subnet}");
    assert_ne!(ip_a, ip_b);
    let gw = ra.gateway.expect("a gateway");
    assert_eq!(rb.gateway, Some(gw));
    assert!(subnet.contains(gw));
    assert_eq!(ra.container_interface().map(|i| i.name.as_str()), Some("eth0"));
    assert_eq!(ra.container_interface().and_then(|i| i.sandbox.as_deref()), a.path().to_str());
    assert_eq!(ra.cni_version, "1.0.0");

    eprintln!("--- the namespaces are wired");
    let addr = must_run("ip", &["-n", a.name(), "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {ip_a}/24")), "{addr}");
    let routes = must_run("ip", &["-n", a.name(), "route"]);
    assert!(routes.contains(&format!("default via {gw} dev eth0")), "{routes}");
    let lo = must_run("ip", &["-n", a.name(), "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "lo is not up: {lo}");
    // The host side: the bridge holds the gateway, the veth is a hairpin port.
    let br = must_run("ip", &["-4", "addr", "show", "dev", &net.bridge]);
    assert!(br.contains(&format!("inet {gw}/24")), "{br}");
    let host_veth = ra.interfaces.iter().find(|i| !i.in_sandbox() && i.name != net.bridge).expect("host veth reported");
    let hairpin = std::fs::read_to_string(format!("/sys/class/net/{}/brport/hairpin_mode", host_veth.name)).unwrap();
    assert_eq!(hairpin.trim(), "1");
    assert!(net.lease_file(&ip_a.to_string()).exists());

    eprintln!("--- A reaches B and the gateway");
    ping_from(a.name(), &ip_b.to_string());
    ping_from(b.name(), &ip_a.to_string());
    ping_from(a.name(), &gw.to_string());

    eprintln!("--- teardown");
    must("DEL a", cni.del("ctr-a", Some(a.path()), "eth0")).await.expect("DEL a");
    must("DEL b", cni.del("ctr-b", Some(b.path()), "eth0")).await.expect("DEL b");
    assert!(!net.lease_file(&ip_a.to_string()).exists());
    a.delete().expect("delete netns a");
    b.delete().expect("delete netns b");
    assert!(cleanup_bridge(&net.bridge).expect("cleanup_bridge"));
    assert!(!Path::new("/sys/class/net").join(&net.bridge).exists());
    assert!(!cleanup_bridge(&net.bridge).expect("cleanup_bridge again"));
}

#[tokio::test]
async fn del_releases_the_address_and_is_idempotent() {
    if !can_run() {
        return;
    }
    // A /30 holds one pod address next to the gateway: reuse is observable.
    let mut net = TestNet::new(1, 30);
    let cni = net.cni();
    let a = net.must_create_netns("a");
    let b = net.must_create_netns("b");

    eprintln!("--- A takes the only address; B finds none");
    let ra = must_add(&cni, "ctr-a", &a, "a").await;
    let ip = ra.pod_ip().expect("pod IP").to_string();
    let lease = net.lease_file(&ip);
    let recorded = std::fs::read_to_string(&lease).expect("host-local lease file");
    assert!(recorded.starts_with("ctr-a"), "{recorded:?}");
    let err = must("ADD b", cni.add("ctr-b", b.path(), "eth0", &pod("b"))).await.expect_err("range exhausted");
    assert!(matches!(&err, CniError::Plugin { plugin, .. } if plugin == "bridge"), "{err}");
    assert!(err.to_string().contains("no IP addresses available"), "{err}");
    // The failed ADD was rolled back in B (no eth0 left) and did not touch A.
    assert!(Command::new("ip")
        .args(["-n", b.name(), "link", "show", "eth0"])
        .output()
        .is_ok_and(|o| !o.status.success()));
    assert!(lease.exists(), "B's rollback released A's address");

    eprintln!("--- DEL A (its namespace already gone) frees the address for B");
    let a_path = a.path().to_path_buf();
    a.delete().expect("delete netns a");
    assert!(!a_path.exists());
    must("DEL a", cni.del("ctr-a", Some(&a_path), "eth0")).await.expect("DEL after the netns is gone");
    assert!(!lease.exists(), "DEL left the lease");
    must("DEL a again", cni.del("ctr-a", None, "eth0")).await.expect("second DEL");
    must("DEL never added", cni.del("ctr-never", None, "eth0")).await.expect("DEL of an unknown container");
    let rb = must_add(&cni, "ctr-b", &b, "b").await;
    assert_eq!(rb.pod_ip().map(|i| i.to_string()).as_deref(), Some(ip.as_str()));

    eprintln!("--- DEL twice with the namespace present");
    must("DEL b", cni.del("ctr-b", Some(b.path()), "eth0")).await.expect("DEL b");
    must("DEL b again", cni.del("ctr-b", Some(b.path()), "eth0")).await.expect("DEL b again");
    assert!(!net.lease_file(&ip).exists());
    let eth0 = Command::new("ip").args(["-n", b.name(), "link", "show", "eth0"]).output().unwrap();
    assert!(!eth0.status.success(), "DEL left eth0 in the namespace");
}

#[tokio::test]
async fn plugin_errors_are_surfaced() {
    if !can_run() {
        return;
    }
    let mut net = TestNet::new(2, 24);
    let ns = net.must_create_netns("a");

    eprintln!("--- no plugins at all");
    let empty = net.dir.path().join("no-plugins");
    let mut cfg = net.config();
    cfg.plugin_dirs = vec![empty.clone()];
    let err = must("ADD", Cni::new(cfg.clone()).add("ctr-a", ns.path(), "eth0", &pod("a"))).await.unwrap_err();
    assert!(matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "loopback"), "{err}");
    assert!(err.to_string().contains(empty.to_str().unwrap()), "{err}");

    eprintln!("--- loopback only: the error names bridge");
    let some = net.dir.path().join("some-plugins");
    std::fs::create_dir(&some).unwrap();
    std::os::unix::fs::symlink(Path::new(PLUGIN_DIR).join("loopback"), some.join("loopback")).unwrap();
    cfg.plugin_dirs = vec![empty.clone(), some.clone()];
    let err = must("ADD", Cni::new(cfg).add("ctr-a", ns.path(), "eth0", &pod("a"))).await.unwrap_err();
    assert!(matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "bridge"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"bridge\"") && msg.contains(some.to_str().unwrap()), "{msg}");

    eprintln!("--- a subnet host-local refuses");
    let mut cfg = net.config();
    cfg.pod_cidr = cfg.pod_cidr.replace(".0/24", ".5/24");
    let err = must("ADD", Cni::new(cfg).add("ctr-a", ns.path(), "eth0", &pod("a"))).await.unwrap_err();
    match &err {
        CniError::Plugin { plugin, code, msg, .. } => {
            assert_eq!(plugin, "bridge");
            assert_eq!(*code, Some(999));
            assert!(msg.contains("host bits set"), "{msg}");
        }
        other => panic!("expected a plugin error, got {other}"),
    }
    assert!(err.to_string().starts_with("CNI plugin bridge ADD failed (code 999): "), "{err}");
    // The bridge plugin made the veth before IPAM failed; the rollback removed it.
    let eth0 = Command::new("ip").args(["-n", ns.name(), "link", "show", "eth0"]).output().unwrap();
    assert!(!eth0.status.success(), "failed ADD left eth0 behind");

    eprintln!("--- a namespace that does not exist");
    let gone = Path::new("/run/netns").join(format!("kt{}-2-never", std::process::id()));
    let err = must("ADD", net.cni().add("ctr-b", &gone, "eth0", &pod("b"))).await.unwrap_err();
    assert!(matches!(err, CniError::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn check_follows_the_sandbox_state() {
    if !can_run() {
        return;
    }
    let mut net = TestNet::new(3, 24);
    let cni = net.cni();
    let ns = net.must_create_netns("a");
    let r = must_add(&cni, "ctr-a", &ns, "a").await;
    must("CHECK", cni.check("ctr-a", ns.path(), "eth0", &pod("a"), &r)).await.expect("CHECK after ADD");

    must_run("ip", &["-n", ns.name(), "link", "set", "lo", "down"]);
    let err = must("CHECK", cni.check("ctr-a", ns.path(), "eth0", &pod("a"), &r)).await.unwrap_err();
    assert!(matches!(&err, CniError::Plugin { plugin, .. } if plugin == "loopback"), "{err}");

    must_run("ip", &["-n", ns.name(), "link", "set", "lo", "up"]);
    must_run("ip", &["-n", ns.name(), "addr", "flush", "dev", "eth0"]);
    let err = must("CHECK", cni.check("ctr-a", ns.path(), "eth0", &pod("a"), &r)).await.unwrap_err();
    assert!(matches!(&err, CniError::Plugin { plugin, .. } if plugin == "bridge"), "{err}");
    must("DEL", cni.del("ctr-a", Some(ns.path()), "eth0")).await.expect("DEL");
}

#[test]
fn netns_round_trip() {
    if !can_run() {
        return;
    }
    let mut net = TestNet::new(4, 24);
    let prefix = format!("kt{}-4-", std::process::id());
    let a = net.must_create_netns("a");
    let b = net.must_create_netns("b");
    assert_eq!(a.path(), Path::new("/run/netns").join(a.name()));
    assert_eq!(NetNs::list_with_prefix(&prefix), vec![format!("{prefix}a"), format!("{prefix}b")]);
    assert_eq!(NetNs::open_existing(a.name()).expect("open a"), a);
    assert!(matches!(NetNs::create(a.name()), Err(NetNsError::AlreadyExists { .. })));
    // The namespace is real: ip sees it, with only lo in it.
    let links = must_run("ip", &["-n", a.name(), "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");

    let a_name = a.name().to_string();
    a.delete().expect("delete a");
    assert_eq!(NetNs::list_with_prefix(&prefix), vec![format!("{prefix}b")]);
    assert!(matches!(NetNs::open_existing(&a_name), Err(NetNsError::NotFound { .. })));
    NetNs::delete_by_name(&a_name).expect("deleting a missing netns is Ok");

    // A stale file with nothing mounted on it (a crash mid-create) is not a namespace,
    // and create replaces it.
    let c = net.netns_name("c");
    std::fs::write(Path::new("/run/netns").join(&c), "").unwrap();
    assert!(matches!(NetNs::open_existing(&c), Err(NetNsError::NotANamespace { .. })));
    let c = NetNs::create(&c).expect("create over a stale file");
    NetNs::open_existing(c.name()).expect("now a namespace");

    b.delete().expect("delete b");
    c.delete().expect("delete c");
    assert!(NetNs::list_with_prefix(&prefix).is_empty());
    assert!(NetNs::list_with_prefix("kt-no-such-prefix-").is_empty());
}
