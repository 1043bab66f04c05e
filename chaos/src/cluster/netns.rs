//! The `netns` network: a bridge in the root namespace, a namespace per master with a
//! veth on it (`eth0` inside, `<prefix>-mI` outside), `lo` up and a default route via the
//! bridge. Driven with `ip` (iproute2); processes enter a namespace with `nsenter`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use super::layout::{self, Net, API_PORT, ETCD_PORT, PEER_PORT};
use super::{ClusterError, NetworkMode};

/// Where `ip netns add` mounts its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Can this process make namespaces: root, with `ip` and `nsenter` installed?
pub fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nsenter", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(_) => return Err(format!("`{tool} {arg}` failed")),
            Err(e) => return Err(format!("{tool} is not installed ({e})")),
        }
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("the kernel has no network namespaces".into());
    }
    Ok(())
}

/// The path `nsenter --net=` takes for namespace `name`.
pub fn netns_path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

pub fn netns_exists(name: &str) -> bool {
    Path::new(&netns_path(name)).exists()
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Run `ip args…`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), ClusterError> {
    let out = Command::new("ip").args(args).output().map_err(|e| ClusterError::io("cannot run ip".into(), e))?;
    if !out.status.success() {
        return Err(ClusterError::Network(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Fail if anything this network would create already exists (another cluster with the
/// same prefix, or one not taken down).
pub fn check_free(net: &Net, masters: usize) -> Result<(), ClusterError> {
    let Some((bridge, _)) = net.bridge() else { return Ok(()) };
    let mut taken = Vec::new();
    if link_exists(&bridge) {
        taken.push(format!("interface {bridge}"));
    }
    for i in 0..masters {
        if let Some(ns) = net.netns(i) {
            if netns_exists(&ns) {
                taken.push(format!("namespace {ns}"));
            }
        }
        if let Some(v) = net.veth(i) {
            if link_exists(&v) {
                taken.push(format!("interface {v}"));
            }
        }
    }
    if taken.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::Network(format!(
            "{} already exist{}: another cluster uses this prefix (take it down with `keelson cluster down --dir …`, or choose another prefix)",
            taken.join(", "),
            if taken.len() == 1 { "s" } else { "" }
        )))
    }
}

/// Create the bridge and every master's namespace. On failure whatever was made is
/// removed again.
pub fn create(net: &Net, masters: usize) -> Result<(), ClusterError> {
    let res = create_inner(net, masters);
    if res.is_err() {
        delete(net, masters);
    }
    res
}

fn create_inner(net: &Net, masters: usize) -> Result<(), ClusterError> {
    let Some((bridge, bridge_ip)) = net.bridge() else { return Ok(()) };
    check_free(net, masters)?;
    let cidr = |ip: Ipv4Addr| format!("{ip}/24");
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["addr", "add", &cidr(bridge_ip), "dev", &bridge])?;
    ip(&["link", "set", &bridge, "up"])?;
    for i in 0..masters {
        let (Some(ns), Some(veth)) = (net.netns(i), net.veth(i)) else { continue };
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        ip(&["link", "set", &veth, "master", &bridge, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", &cidr(net.ip(i)), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &bridge_ip.to_string()])?;
    }
    Ok(())
}

/// Delete every master's namespace (their veths go with them) and the bridge; what is
/// already gone is skipped. Returns what could not be deleted.
pub fn delete(net: &Net, masters: usize) -> Vec<String> {
    let mut failed = Vec::new();
    for i in 0..masters {
        if let Some(ns) = net.netns(i) {
            if netns_exists(&ns) {
                if let Err(e) = ip(&["netns", "delete", &ns]) {
                    failed.push(e.to_string());
                }
            }
        }
        // Normally gone with the namespace (the kernel removes it a moment later, so it
        // may vanish under us); a half-made one may be left.
        if let Some(v) = net.veth(i) {
            if link_exists(&v) {
                if let Err(e) = ip(&["link", "delete", &v]) {
                    if link_exists(&v) {
                        failed.push(e.to_string());
                    }
                }
            }
        }
    }
    if let Some((bridge, _)) = net.bridge() {
        if link_exists(&bridge) {
            if let Err(e) = ip(&["link", "delete", &bridge]) {
                failed.push(e.to_string());
            }
        }
    }
    failed
}

/// The network a cluster in `dir` gets: what the spec asks, else what the cluster had
/// before (`prior`), else defaults (a free subnet, a prefix from the directory).
pub fn resolve_net(mode: &NetworkMode, dir: &Path, masters: usize, prior: Option<&Net>) -> Result<Net, ClusterError> {
    let seed = layout::fnv1a(dir.as_os_str().as_encoded_bytes());
    match mode {
        NetworkMode::Netns { subnet, prefix } => {
            if let Err(why) = available() {
                return Err(ClusterError::Unavailable(format!(
                    "the netns network needs root, iproute2 (ip) and nsenter: {why}; use the loopback network instead"
                )));
            }
            let prefix = match (prefix, prior) {
                (Some(p), _) => p.clone(),
                (None, Some(Net::Netns { prefix, .. })) => prefix.clone(),
                (None, _) => layout::default_prefix(dir),
            };
            layout::check_prefix(&prefix)?;
            let used = layout::used_routes();
            let subnet = match (subnet, prior) {
                (_, Some(Net::Loopback { .. })) => {
                    return Err(ClusterError::Spec(format!(
                        "{} holds a loopback cluster's data (its members' addresses are loopback ones): use the loopback network, or remove it (`keelson cluster down --purge`)",
                        dir.display()
                    )))
                }
                (Some(s), Some(Net::Netns { subnet: old, .. })) if layout::network_of(*s) != *old => {
                    return Err(ClusterError::Spec(format!(
                        "{} holds a cluster on {old}/24 (its members' addresses are there): use that subnet, or remove it (`keelson cluster down --purge`)",
                        dir.display()
                    )))
                }
                (Some(s), _) => layout::check_subnet(*s, true)?,
                (None, Some(Net::Netns { subnet, .. })) => *subnet,
                (None, None) => layout::choose_subnet(seed, &used).ok_or_else(|| {
                    ClusterError::Network("no free /24 in 10.128.0.0-10.199.255.0 (routes cover them all): pass a subnet".into())
                })?,
            };
            if let Some((a, l)) = used.iter().find(|(a, l)| layout::overlaps(subnet, 24, *a, *l)) {
                return Err(ClusterError::Network(format!(
                    "subnet {subnet}/24 overlaps the route to {a}/{l} on this host: choose another subnet (or take down the cluster using it)"
                )));
            }
            Ok(Net::Netns { subnet, prefix })
        }
        NetworkMode::Loopback => match prior {
            Some(Net::Loopback { subnet }) => Ok(Net::Loopback { subnet: *subnet }),
            Some(Net::Netns { .. }) => Err(ClusterError::Spec(format!(
                "{} holds a netns cluster's data (its members' addresses are on its bridge): use the netns network, or remove it (`keelson cluster down --purge`)",
                dir.display()
            ))),
            None => layout::loopback_candidates(seed)
                .find(|s| {
                    let net = Net::Loopback { subnet: *s };
                    (0..masters).all(|i| {
                        [PEER_PORT, ETCD_PORT, API_PORT].iter().all(|p| std::net::TcpListener::bind((net.ip(i), *p)).is_ok())
                    })
                })
                .map(|subnet| Net::Loopback { subnet })
                .ok_or_else(|| ClusterError::Network("no loopback /24 127.0.B.0 has its ports free".into())),
        },
    }
}
