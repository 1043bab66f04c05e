//! A pod's sandbox: its network namespace wired by CNI (one address for all its
//! containers), and the `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` they share.
//! Recorded in the pod's directory, so a restarted kubelet finds (and can undo) it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::kubelet::network::{Cni, NetNs, PodCniArgs};

const RECORD: &str = "sandbox.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sandbox {
    /// The id CNI knows the sandbox by (`k-<pod uid>`).
    pub id: String,
    pub netns: String,
    pub netns_path: PathBuf,
    pub ip: Option<String>,
}

pub fn sandbox_id(uid: &str) -> String {
    format!("k-{uid}")
}

pub fn load(pod_dir: &Path) -> Option<Sandbox> {
    serde_json::from_slice(&std::fs::read(pod_dir.join(RECORD)).ok()?).ok()
}

fn save(pod_dir: &Path, s: &Sandbox) -> std::io::Result<()> {
    let tmp = pod_dir.join("sandbox.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(s).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, pod_dir.join(RECORD))
}

/// The pod's hostname: `spec.hostname`, else its name (at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let spec_host = pod.spec.as_ref().and_then(|s| s.hostname.clone());
    let name = spec_host.or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
}

/// Where ClusterFirst pods resolve names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub servers: Vec<IpAddr>,
    /// `cluster.local`.
    pub domain: String,
}

/// `/etc/hosts` as the kubelet writes it.
pub fn hosts_file(pod: &Pod, ip: Option<&str>, domain: &str) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_ref())
        .map(|sub| format!("{host}.{sub}.{}.svc.{domain}", pod.metadata.namespace.as_deref().unwrap_or("default")));
    if let Some(ip) = ip {
        match fqdn {
            Some(f) => s.push_str(&format!("{ip}\t{f}\t{host}\n")),
            None => s.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    for alias in pod.spec.as_ref().and_then(|s| s.host_aliases.clone()).unwrap_or_default() {
        let ip = alias.ip;
        {
            s.push_str(&format!(
                "# Entries added by HostAliases.\n{ip}\t{}\n",
                alias.hostnames.unwrap_or_default().join("\t")
            ));
        }
    }
    s
}

/// `/etc/resolv.conf` by dnsPolicy, as the kubelet writes it: ClusterFirst (and
/// ClusterFirstWithHostNet) → the cluster's DNS with `<ns>.svc.<domain> svc.<domain>
/// <domain>` ahead of the host's searches and `ndots:5` (the host's file when there is no
/// cluster DNS, or for ClusterFirst with hostNetwork); Default → the host's; None → only
/// dnsConfig, which is merged in every case.
pub fn resolv_conf(pod: &Pod, host: &str, cluster: Option<&ClusterDns>) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => cluster,
        "ClusterFirst" if !host_network => cluster,
        _ => None,
    };
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(c) = cluster {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        servers.extend(c.servers.iter().map(IpAddr::to_string));
        searches.extend([format!("{ns}.svc.{}", c.domain), format!("svc.{}", c.domain), c.domain.clone()]);
        options.push("ndots:5".to_string());
    }
    if policy != "None" {
        for line in host.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") if cluster.is_none() => servers.extend(f.map(str::to_string)),
                Some("search") => searches.extend(f.map(str::to_string)),
                Some("options") if cluster.is_none() => options.extend(f.map(str::to_string)),
                _ => {}
            }
        }
    }
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(cfg.nameservers.clone().unwrap_or_default());
        searches.extend(cfg.searches.clone().unwrap_or_default());
        for o in cfg.options.clone().unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            let opt = match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            // The pod's option replaces one of the same name (upstream's mergeDNSOptions).
            match options.iter_mut().find(|x| x.split(':').next() == Some(name.as_str())) {
                Some(x) => *x = opt,
                None => options.push(opt),
            }
        }
    }
    let mut s = String::new();
    for n in servers.iter().take(3) {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !searches.is_empty() {
        s.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// The files containers bind-mount: (host path, container path).
pub fn etc_files(pod_dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (pod_dir.join("etc-hosts"), "/etc/hosts"),
        (pod_dir.join("etc-hostname"), "/etc/hostname"),
        (pod_dir.join("resolv.conf"), "/etc/resolv.conf"),
    ]
}

/// Make the sandbox (or find the one recorded): netns, CNI ADD, the /etc files.
pub async fn ensure(
    pod: &Pod,
    pod_dir: &Path,
    cni: &Cni,
    netns_prefix: &str,
    dns: &ClusterDns,
) -> Result<Sandbox, String> {
    if let Some(s) = load(pod_dir) {
        if s.netns_path.exists() {
            return Ok(s);
        }
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    std::fs::create_dir_all(pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
    let id = sandbox_id(&uid);
    let name = format!("{netns_prefix}{uid}");
    let ns = match NetNs::open_existing(&name) {
        Ok(ns) => ns,
        // `ip netns add` waits on a process: off the async workers, which a hundred pods
        // starting at once would otherwise stall one `ip` at a time.
        Err(_) => blocking(name.clone(), |name| NetNs::create(&name))
            .await
            .map_err(|e| format!("creating network namespace {name}: {e}"))?,
    };
    let args = PodCniArgs {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
    };
    let result =
        cni.add(&id, ns.path(), "eth0", &args).await.map_err(|e| format!("failed to set up sandbox network: {e}"))?;
    let ip = result.pod_ip().map(|ip| ip.to_string());
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let write = |p: PathBuf, body: String| std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()));
    write(pod_dir.join("etc-hosts"), hosts_file(pod, ip.as_deref(), &dns.domain))?;
    write(pod_dir.join("etc-hostname"), format!("{}\n", hostname(pod)))?;
    let cluster = (!dns.servers.is_empty()).then_some(dns);
    write(pod_dir.join("resolv.conf"), resolv_conf(pod, &host_resolv, cluster))?;
    let s = Sandbox { id, netns: name, netns_path: ns.path().to_path_buf(), ip };
    save(pod_dir, &s).map_err(|e| format!("recording the sandbox: {e}"))?;
    Ok(s)
}

/// Undo a sandbox: CNI DEL (releasing the address), then the netns.
/// Without pod networking (no podCIDR yet) nothing is undone: the address could not be
/// released, so the caller keeps its record and tries again later.
pub async fn remove(s: &Sandbox, cni: Option<&Cni>) -> Result<(), String> {
    let Some(cni) = cni else {
        return Err(format!("pod networking is not ready; sandbox {} is released later", s.id));
    };
    let netns = s.netns_path.exists().then_some(s.netns_path.as_path());
    cni.del(&s.id, netns, "eth0").await.map_err(|e| format!("CNI DEL {}: {e}", s.id))?;
    if let Ok(ns) = NetNs::open_existing(&s.netns) {
        blocking(ns, NetNs::delete).await.map_err(|e| format!("deleting network namespace {}: {e}", s.netns))?;
    }
    Ok(())
}

/// Run `f(arg)` on the blocking pool (it waits on a child process).
async fn blocking<A: Send + 'static, T: Send + 'static>(
    arg: A,
    f: impl FnOnce(A) -> Result<T, crate::kubelet::network::NetNsError> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(move || f(arg)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etc_files_follow_the_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "web-0", "namespace": "ns" },
            "spec": { "containers": [], "subdomain": "web", "hostAliases": [{ "ip": "10.1.1.1", "hostnames": ["a", "b"] }],
                      "dnsConfig": { "searches": ["x.local"], "options": [{ "name": "ndots", "value": "2" }] } }
        }))
        .unwrap();
        let h = hosts_file(&pod, Some("10.244.0.9"), "cluster.local");
        assert!(h.contains("10.244.0.9\tweb-0.web.ns.svc.cluster.local\tweb-0\n"), "{h}");
        assert!(h.contains("10.1.1.1\ta\tb\n"));
        let host = "nameserver 1.1.1.1\nsearch lan\noptions edns0\n";
        // No cluster DNS: ClusterFirst falls back to the host's file.
        let r = resolv_conf(&pod, host, None);
        assert_eq!(r, "nameserver 1.1.1.1\nsearch lan x.local\noptions edns0 ndots:2\n");
        let dns = ClusterDns { servers: vec![[10, 244, 0, 1].into()], domain: "cluster.local".into() };
        let r = resolv_conf(&pod, host, Some(&dns));
        assert_eq!(
            r,
            "nameserver 10.244.0.1\nsearch ns.svc.cluster.local svc.cluster.local cluster.local lan x.local\noptions ndots:2\n"
        );
        let mut default = pod.clone();
        default.spec.as_mut().unwrap().dns_policy = Some("Default".into());
        assert!(resolv_conf(&default, host, Some(&dns)).starts_with("nameserver 1.1.1.1\nsearch lan x.local\n"));
        let mut host_net = pod.clone();
        host_net.spec.as_mut().unwrap().host_network = Some(true);
        assert!(resolv_conf(&host_net, host, Some(&dns)).starts_with("nameserver 1.1.1.1\n"));
        host_net.spec.as_mut().unwrap().dns_policy = Some("ClusterFirstWithHostNet".into());
        assert!(resolv_conf(&host_net, host, Some(&dns)).starts_with("nameserver 10.244.0.1\n"));
        let mut none = pod.clone();
        none.spec.as_mut().unwrap().dns_policy = Some("None".into());
        assert_eq!(resolv_conf(&none, "nameserver 1.1.1.1\n", Some(&dns)), "search x.local\noptions ndots:2\n");
        assert_eq!(hostname(&pod), "web-0");
    }
}
