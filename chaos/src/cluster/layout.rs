//! Where each master lives: its address and ports, and in `netns` mode the names of its
//! namespace, the host end of its veth and the cluster's bridge. Pure (the one exception,
//! [`used_routes`], reads `ip -4 route` for [`choose_subnet`]).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ClusterError;

/// Raft and forwarded requests between masters.
pub const PEER_PORT: u16 = 2380;
/// The etcd v3 gRPC endpoint (plaintext).
pub const ETCD_PORT: u16 = 2379;
/// The Kubernetes API (HTTPS).
pub const API_PORT: u16 = 6443;
/// Master `i` (0-based) is host `.{HOST_BASE + 1 + i}` of the cluster's /24.
pub const HOST_BASE: u8 = 10;
/// At most this many masters (names and addresses stay short and simple).
pub const MAX_MASTERS: usize = 9;
/// Linux interface names are at most 15 bytes; the longest we derive is `<prefix>-br`.
pub const MAX_PREFIX_LEN: usize = 12;

/// How the masters are networked, resolved (what `cluster.json` records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Net {
    /// A namespace per master on a bridge in the root namespace: `subnet` is the /24
    /// (`.1` is the bridge, `.11`… the masters); `prefix` names the namespaces
    /// (`<prefix>-m1`), the host ends of the veths (`<prefix>-m1`) and the bridge
    /// (`<prefix>-br`).
    Netns { subnet: Ipv4Addr, prefix: String },
    /// Every master on its own loopback address `127.a.b.(11+i)` (the /24 `subnet`).
    Loopback { subnet: Ipv4Addr },
}

impl Net {
    pub fn subnet(&self) -> Ipv4Addr {
        match self {
            Net::Netns { subnet, .. } | Net::Loopback { subnet } => *subnet,
        }
    }

    /// Master `i`'s (0-based) address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        host(self.subnet(), HOST_BASE + 1 + i as u8)
    }

    pub fn is_netns(&self) -> bool {
        matches!(self, Net::Netns { .. })
    }

    /// Master `i`'s namespace (`netns` mode).
    pub fn netns(&self, i: usize) -> Option<String> {
        match self {
            Net::Netns { prefix, .. } => Some(format!("{prefix}-{}", master_name(i))),
            Net::Loopback { .. } => None,
        }
    }

    /// The host end of master `i`'s veth (`netns` mode).
    pub fn veth(&self, i: usize) -> Option<String> {
        self.netns(i)
    }

    /// The bridge and its address (`netns` mode).
    pub fn bridge(&self) -> Option<(String, Ipv4Addr)> {
        match self {
            Net::Netns { subnet, prefix } => Some((format!("{prefix}-br"), host(*subnet, 1))),
            Net::Loopback { .. } => None,
        }
    }
}

/// `m1`, `m2`, … for 0, 1, …
pub fn master_name(i: usize) -> String {
    format!("m{}", i + 1)
}

/// Host `n` of the /24 `subnet`.
pub fn host(subnet: Ipv4Addr, n: u8) -> Ipv4Addr {
    let o = subnet.octets();
    Ipv4Addr::new(o[0], o[1], o[2], n)
}

/// The /24 network `ip` is in (its last octet zeroed).
pub fn network_of(ip: Ipv4Addr) -> Ipv4Addr {
    host(ip, 0)
}

/// `m1=IP1:2380,m2=IP2:2380,…` for `keelson server --initial-cluster`.
pub fn initial_cluster(net: &Net, masters: usize) -> String {
    (0..masters).map(|i| format!("{}={}:{PEER_PORT}", master_name(i), net.ip(i))).collect::<Vec<_>>().join(",")
}

/// A stable 32-bit hash (FNV-1a) — the default prefix and subnet derive from the data
/// directory, so they don't change between Rust versions.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The default name prefix for a cluster in `dir`: `kc` and 6 hex digits of its path.
pub fn default_prefix(dir: &Path) -> String {
    format!("kc{:06x}", fnv1a(dir.as_os_str().as_encoded_bytes()) & 0xff_ffff)
}

/// A prefix must be short enough for `<prefix>-br` and `<prefix>-m9` to be interface
/// names, and made of characters `ip` takes without quoting.
pub fn check_prefix(prefix: &str) -> Result<(), ClusterError> {
    let ok_chars = prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !ok_chars || prefix.starts_with('-') {
        return Err(ClusterError::Spec(format!(
            "prefix {prefix:?}: use 1 to {MAX_PREFIX_LEN} letters, digits, '-' or '_' (interface names are at most 15 characters)"
        )));
    }
    Ok(())
}

/// An explicit subnet must be a /24 under 10.0.0.0/8 (netns) or 127.0.0.0/8 (loopback),
/// given as its network address or any address in it.
pub fn check_subnet(subnet: Ipv4Addr, netns: bool) -> Result<Ipv4Addr, ClusterError> {
    let first = subnet.octets()[0];
    let want = if netns { 10 } else { 127 };
    if first != want {
        return Err(ClusterError::Spec(format!(
            "subnet {subnet}: a {} cluster's subnet is a /24 under {want}.0.0.0/8",
            if netns { "netns" } else { "loopback" }
        )));
    }
    Ok(network_of(subnet))
}

/// Does `a/alen` overlap `b/blen`?
pub fn overlaps(a: Ipv4Addr, alen: u8, b: Ipv4Addr, blen: u8) -> bool {
    let len = alen.min(blen).min(32);
    if len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - len as u32);
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

/// The destinations in `ip -4 route show table all` output (`default` and /0 left out:
/// every address "overlaps" those).
pub fn parse_routes(text: &str) -> Vec<(Ipv4Addr, u8)> {
    let mut out = Vec::new();
    for line in text.lines() {
        for tok in line.split_whitespace() {
            // Leading route types (`local`, `broadcast`, `unicast`, …) come before the destination.
            if matches!(
                tok,
                "local"
                    | "broadcast"
                    | "unicast"
                    | "multicast"
                    | "anycast"
                    | "blackhole"
                    | "unreachable"
                    | "prohibit"
                    | "throw"
                    | "nat"
            ) {
                continue;
            }
            if tok == "default" {
                break;
            }
            let (addr, len) = match tok.split_once('/') {
                Some((a, l)) => (a, l.parse::<u8>().ok()),
                None => (tok, Some(32)),
            };
            if let (Ok(a), Some(l)) = (addr.parse::<Ipv4Addr>(), len) {
                if l > 0 && l <= 32 {
                    out.push((a, l));
                }
            }
            break;
        }
    }
    out
}

/// Every IPv4 route destination on this host (all tables).
pub fn used_routes() -> Vec<(Ipv4Addr, u8)> {
    match std::process::Command::new("ip").args(["-4", "route", "show", "table", "all"]).output() {
        Ok(o) if o.status.success() => parse_routes(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// Is the /24 `subnet` free of every route in `used`?
pub fn subnet_free(subnet: Ipv4Addr, used: &[(Ipv4Addr, u8)]) -> bool {
    !used.iter().any(|(a, l)| overlaps(subnet, 24, *a, *l))
}

/// A free /24 `10.X.Y.0` for a netns cluster, starting from one derived from `seed` (the
/// data directory's hash) and walking on: X in 128..=199 (clear of Kubernetes' usual
/// 10.96.0.0/12 services and 10.244.0.0/16 pods), Y any.
pub fn choose_subnet(seed: u32, used: &[(Ipv4Addr, u8)]) -> Option<Ipv4Addr> {
    const XS: u32 = 72; // 128..=199
    let total = XS * 256;
    let start = seed % total;
    (0..total)
        .map(|k| (start + k) % total)
        .map(|n| Ipv4Addr::new(10, (128 + n / 256) as u8, (n % 256) as u8, 0))
        .find(|s| subnet_free(*s, used))
}

/// The loopback /24 candidates for a cluster, `127.0.B.0` with B from `seed`, walking on
/// (B from 1 to 254; the caller takes the first whose addresses it can bind).
pub fn loopback_candidates(seed: u32) -> impl Iterator<Item = Ipv4Addr> {
    let start = seed % 254;
    (0..254u32).map(move |k| Ipv4Addr::new(127, 0, (1 + (start + k) % 254) as u8, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        let net = Net::Netns { subnet: Ipv4Addr::new(10, 150, 7, 0), prefix: "kcabc123".into() };
        assert_eq!(net.ip(0), Ipv4Addr::new(10, 150, 7, 11));
        assert_eq!(net.ip(4), Ipv4Addr::new(10, 150, 7, 15));
        assert_eq!(net.netns(2).as_deref(), Some("kcabc123-m3"));
        assert_eq!(net.bridge(), Some(("kcabc123-br".to_string(), Ipv4Addr::new(10, 150, 7, 1))));
        assert_eq!(initial_cluster(&net, 3), "m1=10.150.7.11:2380,m2=10.150.7.12:2380,m3=10.150.7.13:2380");
        let lo = Net::Loopback { subnet: Ipv4Addr::new(127, 0, 9, 0) };
        assert_eq!(lo.ip(1), Ipv4Addr::new(127, 0, 9, 12));
        assert_eq!(lo.netns(0), None);
        assert_eq!(lo.bridge(), None);
    }

    #[test]
    fn prefixes_fit_interface_names() {
        let p = default_prefix(Path::new("/tmp/some/cluster"));
        check_prefix(&p).unwrap();
        assert_eq!(p, default_prefix(Path::new("/tmp/some/cluster")), "stable");
        assert_ne!(p, default_prefix(Path::new("/tmp/other")));
        let long = "a".repeat(MAX_PREFIX_LEN);
        check_prefix(&long).unwrap();
        assert!(format!("{long}-br").len() <= 15 && format!("{long}-m9").len() <= 15);
        assert!(check_prefix(&"a".repeat(MAX_PREFIX_LEN + 1)).is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("").is_err());
    }

    #[test]
    fn subnets() {
        assert_eq!(check_subnet(Ipv4Addr::new(10, 1, 2, 3), true).unwrap(), Ipv4Addr::new(10, 1, 2, 0));
        assert!(check_subnet(Ipv4Addr::new(192, 168, 1, 0), true).is_err());
        assert!(check_subnet(Ipv4Addr::new(10, 1, 2, 0), false).is_err());
        assert!(overlaps(Ipv4Addr::new(10, 150, 7, 0), 24, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(overlaps(Ipv4Addr::new(10, 150, 7, 0), 24, Ipv4Addr::new(10, 150, 7, 33), 32));
        assert!(!overlaps(Ipv4Addr::new(10, 150, 7, 0), 24, Ipv4Addr::new(10, 150, 8, 0), 24));

        let routes = parse_routes(
            "default via 192.0.2.1 dev eth0\n\
             10.150.7.0/24 dev kcx-br proto kernel scope link src 10.150.7.1\n\
             local 10.150.7.1 dev kcx-br table local proto kernel scope host src 10.150.7.1\n\
             broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1\n",
        );
        assert_eq!(
            routes,
            vec![
                (Ipv4Addr::new(10, 150, 7, 0), 24),
                (Ipv4Addr::new(10, 150, 7, 1), 32),
                (Ipv4Addr::new(127, 255, 255, 255), 32)
            ]
        );
        // The seed's own /24 is taken: the next one is chosen.
        let seed = (150 - 128) * 256 + 7;
        assert_eq!(choose_subnet(seed, &routes), Some(Ipv4Addr::new(10, 150, 8, 0)));
        assert_eq!(choose_subnet(seed, &[]), Some(Ipv4Addr::new(10, 150, 7, 0)));
        assert_eq!(choose_subnet(seed, &[(Ipv4Addr::new(10, 0, 0, 0), 8)]), None);
        let lo: Vec<_> = loopback_candidates(0).take(2).collect();
        assert_eq!(lo, vec![Ipv4Addr::new(127, 0, 1, 0), Ipv4Addr::new(127, 0, 2, 0)]);
        assert_eq!(loopback_candidates(7).count(), 254);
    }
}
