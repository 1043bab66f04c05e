//! Real nodes (`keelson cluster up --agents N`, `netns` network only): node I is a
//! `keelson agent --node-name nI` in its own namespace `<prefix>-nI`, wired to the
//! cluster's bridge at `.{NODE_BASE + I}` like a second host, with a kubelet serving
//! certificate from the cluster CA (the masters verify it when they proxy logs and exec).
//! Once every node is Ready with a podCIDR, every node and the host route each node's pod
//! CIDR via its address, so pods reach pods on other nodes and the host reaches them all.
//!
//! The agents leave their pods running when they stop (as kubelets do); teardown removes
//! what they hold: containers (`runc delete --force` in their state directory), the pods'
//! network namespaces and the mounts under each node's directory.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use super::layout::{host, Net};
use super::netns::{self, ip};
use super::process::Proc;
use super::ClusterError;

/// Node `i` (0-based) is host `.{NODE_BASE + 1 + i}` of the cluster's /24.
pub const NODE_BASE: u8 = 100;
/// At most this many nodes (`<prefix>-n9` is the longest interface name that fits).
pub const MAX_NODES: usize = 9;
/// The kubelet endpoint's port on each node's address.
pub const KUBELET_PORT: u16 = 10250;

/// One real node, as `cluster.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The Node's name (`n1`, `n2`, …).
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its namespace, also the host end of its veth.
    pub netns: String,
    /// `--root-dir` (pods, images, runtime state) and its kubelet certificate.
    pub root_dir: PathBuf,
    pub log: PathBuf,
    pub pid: Option<u32>,
}

impl NodeState {
    /// The prefix of its pods' network namespaces (global names: unique per node).
    pub fn pod_netns_prefix(&self) -> String {
        format!("{}-", self.netns.replace('-', ""))
    }

    fn runtime_root(&self) -> PathBuf {
        self.root_dir.join("runtime")
    }
}

/// The nodes of a cluster in `dir` on `net`.
pub fn plan(net: &Net, dir: &Path, n: usize) -> Result<Vec<NodeState>, ClusterError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let Net::Netns { subnet, prefix } = net else {
        return Err(ClusterError::Spec(
            "--agents needs the netns network (root, iproute2, nsenter): each node is its own host there".into(),
        ));
    };
    if n > MAX_NODES {
        return Err(ClusterError::Spec(format!("--agents {n}: from 1 to {MAX_NODES}")));
    }
    Ok((0..n)
        .map(|i| {
            let name = format!("n{}", i + 1);
            NodeState {
                ip: host(*subnet, NODE_BASE + 1 + i as u8),
                netns: format!("{prefix}-{name}"),
                root_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                pid: None,
                name,
            }
        })
        .collect())
}

/// Each node's namespace on the bridge `(name, address)`; on failure what was made goes.
pub fn create(nodes: &[NodeState], bridge: (&str, Ipv4Addr)) -> Result<(), ClusterError> {
    let res = (|| {
        for n in nodes {
            if netns::netns_exists(&n.netns) || netns::link_exists(&n.netns) {
                return Err(ClusterError::Network(format!(
                    "{} already exists: another cluster uses this prefix",
                    n.netns
                )));
            }
            ip(&["netns", "add", &n.netns])?;
            ip(&["link", "add", &n.netns, "type", "veth", "peer", "name", "eth0", "netns", &n.netns])?;
            ip(&["link", "set", &n.netns, "master", bridge.0, "up"])?;
            ip(&["-n", &n.netns, "link", "set", "lo", "up"])?;
            ip(&["-n", &n.netns, "addr", "add", &format!("{}/24", n.ip), "dev", "eth0"])?;
            ip(&["-n", &n.netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &n.netns, "route", "add", "default", "via", &bridge.1.to_string()])?;
        }
        Ok(())
    })();
    if res.is_err() {
        delete(nodes);
    }
    res
}

/// Delete the nodes' namespaces (their veths go with them); what could not be deleted.
pub fn delete(nodes: &[NodeState]) -> Vec<String> {
    let mut failed = Vec::new();
    for n in nodes {
        if netns::netns_exists(&n.netns) {
            if let Err(e) = ip(&["netns", "delete", &n.netns]) {
                failed.push(e.to_string());
            }
        }
        if netns::link_exists(&n.netns) {
            if let Err(e) = ip(&["link", "delete", &n.netns]) {
                if netns::link_exists(&n.netns) {
                    failed.push(e.to_string());
                }
            }
        }
    }
    failed
}

/// Write node `n`'s kubelet serving certificate (for its address), signed by the CA in
/// `pki`; returns (certificate, key) paths.
pub fn issue_cert(pki: &Path, n: &NodeState) -> Result<(PathBuf, PathBuf), ClusterError> {
    let read = |f: &str| {
        let p = pki.join(f);
        std::fs::read_to_string(&p).map_err(|e| ClusterError::io(format!("cannot read {}", p.display()), e))
    };
    let tls = |e: rcgen::Error| ClusterError::Spec(format!("the kubelet certificate for {}: {e}", n.name));
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")?).map_err(tls)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt")?, &ca_key).map_err(tls)?;
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut params = rcgen::CertificateParams::new(vec![n.ip.to_string(), n.name.clone()]).map_err(tls)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{}", n.name));
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    std::fs::create_dir_all(&n.root_dir)
        .map_err(|e| ClusterError::io(format!("cannot create {}", n.root_dir.display()), e))?;
    let (c, k) = (n.root_dir.join("kubelet.crt"), n.root_dir.join("kubelet.key"));
    std::fs::write(&c, cert.pem()).map_err(|e| ClusterError::io(format!("cannot write {}", c.display()), e))?;
    write_private(&k, &key.serialize_pem())?;
    Ok((c, k))
}

fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ClusterError::io(format!("cannot write {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| ClusterError::io(format!("cannot write {}", path.display()), e))
}

/// Node `n`'s command line: `keelson agent` inside its namespace (`nsenter --net`, which
/// keeps the host's /sys and with it the cgroup mounts), against every master.
pub fn command(
    binary: &Path,
    n: &NodeState,
    servers: &str,
    kubeconfig: &Path,
    pki: &Path,
    (cert, key): (&Path, &Path),
    extra: &[String],
) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns::netns_path(&n.netns)))
        .arg("--")
        .arg(binary)
        .arg("agent")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--server", servers, "--node-name", &n.name, "--node-ip", &n.ip.to_string()])
        .arg("--root-dir")
        .arg(&n.root_dir)
        .args(["--netns-prefix", &n.pod_netns_prefix(), "--port", &KUBELET_PORT.to_string()])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-private-key-file")
        .arg(key)
        .arg("--client-ca-file")
        .arg(pki.join("ca.crt"))
        .args(extra);
    cmd
}

/// Wait until every node is Ready with a podCIDR, then route each pod CIDR via its node
/// from every other node and from the host. `alive` is asked on every look (an agent
/// that exited fails the wait at once). What is still missing, on timeout.
pub async fn wait_and_route(
    client: &kube::Client,
    nodes: &[NodeState],
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let cidrs = loop {
        alive()?;
        let mut missing = Vec::new();
        let mut cidrs = Vec::new();
        for n in nodes {
            let got = api.get_opt(&n.name).await.ok().flatten();
            let cidr = got.as_ref().and_then(|x| x.spec.as_ref()?.pod_cidr.clone());
            let ready = got
                .as_ref()
                .and_then(|x| x.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            match (cidr, ready) {
                (Some(c), true) => cidrs.push(c),
                _ => missing.push(n.name.clone()),
            }
        }
        if missing.is_empty() {
            break cidrs;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("nodes {} Ready with a podCIDR", missing.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (n, cidr) in nodes.iter().zip(&cidrs) {
        let via = n.ip.to_string();
        ip(&["route", "replace", cidr, "via", &via]).map_err(|e| e.to_string())?;
        for other in nodes.iter().filter(|o| o.name != n.name) {
            ip(&["-n", &other.netns, "route", "replace", cidr, "via", &via]).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

impl super::Cluster {
    /// The real nodes (`--agents`).
    pub fn nodes(&self) -> &[NodeState] {
        &self.state.nodes
    }

    /// Real node `i`'s agent PID while it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.node_procs.get(i)?.as_ref().filter(|p| p.is_running()).map(|p| p.pid)
    }

    pub(super) fn running_nodes(&self) -> impl Iterator<Item = (&str, u32)> {
        self.state.nodes.iter().enumerate().filter_map(|(i, n)| Some((n.name.as_str(), self.node_pid(i)?)))
    }

    /// Start every node's agent and wait (at most `timeout`) until all are Ready and
    /// routed.
    pub(super) async fn start_nodes(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let servers = (0..self.len()).map(|i| self.api_url(i)).collect::<Vec<_>>().join(",");
        let (pki, kubeconfig) = (self.pki_dir(), self.kubeconfig_path());
        self.node_procs.resize_with(self.state.nodes.len(), || None);
        for (i, n) in self.state.nodes.clone().iter().enumerate() {
            let (cert, key) = issue_cert(&pki, n)?;
            let mut cmd =
                command(&self.state.binary, n, &servers, &kubeconfig, &pki, (&cert, &key), &self.state.agent_args);
            cmd.env("KEELSON_LOG", &self.state.log_filter);
            self.node_procs[i] = Some(Proc::spawn(cmd, &n.log, &format!("node {}", n.name), n.root_dir.clone())?);
        }
        self.save()?;
        let client = self.kube_client(0).await?;
        let (nodes, procs) = (self.state.nodes.clone(), &mut self.node_procs);
        let alive = || {
            for (n, p) in nodes.iter().zip(procs.iter_mut()) {
                if let Some(status) = p.as_mut().and_then(Proc::try_reap) {
                    return Err(format!(
                        "node {} exited ({status}); its log {}:\n{}",
                        n.name,
                        n.log.display(),
                        super::process::tail(&n.log, 20)
                    ));
                }
            }
            Ok(())
        };
        wait_and_route(&client, &self.state.nodes, timeout, alive).await.map_err(|what| {
            let logs: String = self
                .state
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "\n--- node {} ({}), last 20 lines:\n{}",
                        n.name,
                        n.log.display(),
                        super::process::tail(&n.log, 20)
                    )
                })
                .collect();
            ClusterError::Timeout { what, after: timeout, logs }
        })
    }

    /// Clean up after every node's pods and delete the nodes' namespaces (their agents
    /// stopped). What could not be removed.
    pub(super) fn remove_nodes(&self) -> Vec<String> {
        let runtime = runtime_of(&self.state.agent_args);
        let mut failed: Vec<String> = self.state.nodes.iter().flat_map(|n| clean_up(n, &runtime)).collect();
        failed.extend(delete(&self.state.nodes));
        failed
    }
}

/// Remove what node `n`'s pods hold (its agent stopped): containers, pod namespaces,
/// mounts under its directory. What could not be removed.
pub fn clean_up(n: &NodeState, runtime: &str) -> Vec<String> {
    let mut failed = Vec::new();
    let root = n.runtime_root();
    if root.exists() {
        let listed = Command::new(runtime).arg("--root").arg(&root).args(["list", "-q"]).output();
        for id in listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
            let out = Command::new(runtime).arg("--root").arg(&root).args(["delete", "--force", id]).output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                failed.push(format!("{runtime} delete --force {id} failed"));
            }
        }
    }
    let prefix = n.pod_netns_prefix();
    if let Ok(entries) = std::fs::read_dir(netns::NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                if let Err(e) = ip(&["netns", "delete", &name]) {
                    failed.push(e.to_string());
                }
            }
        }
    }
    let mut mounts = mounts_under(&n.root_dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in mounts {
        if let Err(e) = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH) {
            failed.push(format!("cannot unmount {}: {e}", m.display()));
        }
    }
    failed
}

/// Mount points at or under `dir`, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(super::tmpfs::unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The OCI runtime an agent runs (`--runtime` among its extra arguments; runc by default).
pub fn runtime_of(extra: &[String]) -> String {
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if a == "--runtime" {
            if let Some(v) = it.next() {
                return v.clone();
            }
        }
        if let Some(v) = a.strip_prefix("--runtime=") {
            return v.to_string();
        }
    }
    "runc".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_live_on_the_bridge_after_the_masters() {
        let net = Net::Netns { subnet: Ipv4Addr::new(10, 150, 7, 0), prefix: "kct1".into() };
        let nodes = plan(&net, Path::new("/c"), 2).unwrap();
        assert_eq!(nodes[0].name, "n1");
        assert_eq!(nodes[1].ip, Ipv4Addr::new(10, 150, 7, 102));
        assert_eq!(nodes[1].netns, "kct1-n2");
        assert_eq!(nodes[1].root_dir, Path::new("/c/n2"));
        assert_eq!(nodes[1].pod_netns_prefix(), "kct1n2-");
        assert!(plan(&net, Path::new("/c"), 0).unwrap().is_empty());
        assert!(plan(&net, Path::new("/c"), 10).unwrap_err().to_string().contains("from 1 to 9"));
        let lo = Net::Loopback { subnet: Ipv4Addr::new(127, 0, 3, 0) };
        assert!(plan(&lo, Path::new("/c"), 1).unwrap_err().to_string().contains("netns network"));
    }

    #[test]
    fn the_runtime_comes_from_the_agent_arguments() {
        assert_eq!(runtime_of(&[]), "runc");
        assert_eq!(runtime_of(&["--runtime".into(), "crun".into()]), "crun");
        assert_eq!(runtime_of(&["--x".into(), "--runtime=/usr/bin/crun".into()]), "/usr/bin/crun");
    }

    #[test]
    fn certificates_name_the_node_address() {
        let d = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        std::fs::write(d.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(d.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
        let net = Net::Netns { subnet: Ipv4Addr::new(10, 150, 7, 0), prefix: "kct1".into() };
        let n = plan(&net, d.path(), 1).unwrap().remove(0);
        let (c, k) = issue_cert(d.path(), &n).unwrap();
        assert!(std::fs::read_to_string(c).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_file(d.path().join("ca.key")).unwrap();
        assert!(issue_cert(d.path(), &n).unwrap_err().to_string().contains("ca.key"));
    }
}
