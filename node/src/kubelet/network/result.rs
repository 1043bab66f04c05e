//! The result a CNI plugin prints on success (spec 1.0.0, "Success"), and the
//! address-with-prefix type it is made of.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address with a prefix length, as CNI writes it: `10.244.1.7/24`, `fd00::5/64`.
///
/// The address keeps its host bits (`10.244.1.7/24` is the pod's address in a /24, not a
/// network); [`IpNet::network`] masks them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address, host bits included.
    pub addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix_len: u8,
}

impl IpNet {
    /// `addr/prefix_len`, or `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }

    /// The network address: `addr` with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// The first host address (the bridge's gateway, as host-local hands it out).
    pub fn first_host(&self) -> IpAddr {
        match self.network() {
            IpAddr::V4(a) => IpAddr::V4(u32::from(a).saturating_add(1).into()),
            IpAddr::V6(a) => IpAddr::V6(u128::from(a).saturating_add(1).into()),
        }
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match IpNet::new(ip, self.prefix_len) {
            Some(other) if ip.is_ipv4() == self.addr.is_ipv4() => other.network() == self.network(),
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not an `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct IpNetParseError {
    input: String,
    reason: &'static str,
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| IpNetParseError { input: s.to_string(), reason };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| err("no '/prefix'"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("bad prefix length"));
        }
        let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        IpNet::new(addr, prefix_len).ok_or_else(|| err("prefix longer than the address"))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One interface a plugin created or configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface name (`eth0` in the pod, `keelson0` and `veth…` on the host).
    pub name: String,
    /// The hardware address, when the plugin reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The MTU, when the plugin reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for an interface inside the sandbox; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl Interface {
    /// Whether this interface lives inside the container's network namespace.
    pub fn in_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// One address a plugin (or its IPAM plugin) assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into [`CniResult::interfaces`] of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// The address with its prefix length.
    pub address: IpNet,
    /// The default gateway for this subnet, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A route the plugin installed in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination prefix (`0.0.0.0/0` for the default route).
    pub dst: IpNet,
    /// The next hop; absent means the gateway of the matching [`IpConfig`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings a plugin suggests (the kubelet writes the pod's resolv.conf itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// What the wire format looks like; [`CniResult`] adds `raw` and the derived `gateway`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

/// The result of a successful ADD: the interfaces made, the addresses assigned, the
/// routes installed — parsed from the last plugin of the chain, which by the spec carries
/// everything the earlier ones reported.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// The `cniVersion` the plugin answered with.
    pub cni_version: String,
    /// Interfaces created or configured, on the host and in the sandbox.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// The gateway of the pod's address (of [`CniResult::pod_ip`]), if the plugin set one.
    pub gateway: Option<IpAddr>,
    /// Routes installed in the sandbox.
    pub routes: Vec<Route>,
    /// DNS settings suggested.
    pub dns: Dns,
    /// The result exactly as the plugin printed it: what CHECK and DEL pass on as
    /// `prevResult`.
    pub raw: serde_json::Value,
}

impl CniResult {
    /// Parses a plugin's success output.
    pub fn from_json(raw: serde_json::Value) -> Result<Self, serde_json::Error> {
        let wire: Wire = serde_json::from_value(raw.clone())?;
        let mut result = CniResult {
            cni_version: wire.cni_version,
            interfaces: wire.interfaces,
            ips: wire.ips,
            gateway: None,
            routes: wire.routes,
            dns: wire.dns,
            raw,
        };
        result.gateway = result.pod_ip_config().and_then(|c| c.gateway);
        Ok(result)
    }

    /// The pod's IP: the first IPv4 address on an interface inside the sandbox (or, when
    /// the plugin did not say which interface, the first IPv4 address at all).
    pub fn pod_ip(&self) -> Option<IpAddr> {
        self.pod_ip_config().map(|c| c.address.addr)
    }

    /// Every address assigned inside the sandbox, IPv4 first — what a Pod's
    /// `status.podIPs` lists.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> =
            self.ips.iter().filter(|c| self.is_container_ip(c)).map(|c| c.address.addr).collect();
        ips.sort_by_key(|ip| !ip.is_ipv4());
        ips
    }

    /// The interface inside the sandbox (the pod's `eth0`), if the plugin reported it.
    pub fn container_interface(&self) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.in_sandbox())
    }

    fn pod_ip_config(&self) -> Option<&IpConfig> {
        let v4 = |c: &&IpConfig| c.address.addr.is_ipv4();
        self.ips
            .iter()
            .filter(v4)
            .find(|c| c.interface.is_some() && self.is_container_ip(c))
            .or_else(|| self.ips.iter().filter(v4).find(|c| c.interface.is_none()))
    }

    /// An address is the container's when it names a sandbox interface, or names none.
    fn is_container_ip(&self, c: &IpConfig) -> bool {
        match c.interface {
            Some(i) => self.interfaces.get(i).is_some_and(Interface::in_sandbox),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A bridge + host-local result, as containernetworking-plugins 1.1.1 prints it
    /// (and as the spec's "Success" example looks).
    fn bridge_result() -> serde_json::Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "keelson0", "mac": "7e:f4:58:fb:da:d9"},
                {"name": "veth58787906", "mac": "be:b7:3b:92:e3:13"},
                {"name": "eth0", "mac": "76:fd:84:9b:f6:ec", "sandbox": "/run/netns/kp-abc"}
            ],
            "ips": [
                {"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"},
                {"interface": 2, "address": "fd00:10:244:1::2/64", "gateway": "fd00:10:244:1::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10:244:1::1"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn parses_a_1_0_0_result() {
        let r = CniResult::from_json(bridge_result()).expect("parses");
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.container_interface().map(|i| i.name.as_str()), Some("eth0"));
        assert_eq!(r.pod_ip(), Some("10.244.1.2".parse().unwrap()));
        assert_eq!(r.gateway, Some("10.244.1.1".parse().unwrap()));
        assert_eq!(r.ips[0].address.prefix_len, 24);
        assert_eq!(r.pod_ips(), vec!["10.244.1.2".parse::<IpAddr>().unwrap(), "fd00:10:244:1::2".parse().unwrap()]);
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[0].gw, None);
        assert_eq!(r.routes[1].gw, Some("fd00:10:244:1::1".parse().unwrap()));
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(r.raw, bridge_result());
    }

    #[test]
    fn pod_ip_skips_host_side_addresses() {
        let r = CniResult::from_json(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [
                {"interface": 0, "address": "10.0.0.1/24"},
                {"interface": 1, "address": "10.0.0.9/24", "gateway": "10.0.0.1"}
            ]
        }))
        .unwrap();
        assert_eq!(r.pod_ip(), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(r.pod_ips(), vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn pod_ip_without_interface_indexes() {
        // IPAM-only results (host-local run alone) name no interface.
        let r = CniResult::from_json(json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "fd00::3/64"}, {"address": "10.1.0.3/16", "gateway": "10.1.0.1"}]
        }))
        .unwrap();
        assert_eq!(r.pod_ip(), Some("10.1.0.3".parse().unwrap()));
        assert_eq!(r.gateway, Some("10.1.0.1".parse().unwrap()));
    }

    #[test]
    fn empty_and_ipv6_only_results_have_no_pod_ip() {
        let r = CniResult::from_json(json!({"cniVersion": "1.0.0"})).unwrap();
        assert_eq!(r.pod_ip(), None);
        assert_eq!(r.gateway, None);
        let r = CniResult::from_json(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 0, "address": "fd00::3/64"}]
        }))
        .unwrap();
        assert_eq!(r.pod_ip(), None);
        // An out-of-range interface index is not the container's.
        let r = CniResult::from_json(json!({
            "ips": [{"interface": 7, "address": "10.0.0.3/24"}]
        }))
        .unwrap();
        assert_eq!(r.pod_ip(), None);
    }

    #[test]
    fn malformed_results_are_errors_not_panics() {
        for bad in [
            json!({"ips": [{"address": "10.0.0.3"}]}),
            json!({"ips": [{"address": "10.0.0.3/33"}]}),
            json!({"ips": "nope"}),
            json!([1, 2]),
            json!({"interfaces": [{"mac": "x"}]}),
        ] {
            assert!(CniResult::from_json(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipnet_parse_display_and_network() {
        let n: IpNet = "10.244.1.7/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.244.1.7/24");
        assert_eq!(n.network(), "10.244.1.0".parse::<IpAddr>().unwrap());
        assert!(n.contains("10.244.1.200".parse().unwrap()));
        assert!(!n.contains("10.244.2.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let z: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(z.contains("192.0.2.1".parse().unwrap()));
        let v6: IpNet = "fd00::5/64".parse().unwrap();
        assert_eq!(v6.network(), "fd00::".parse::<IpAddr>().unwrap());
        for bad in ["", "10.0.0.1", "10.0.0.1/", "10.0.0.1/33", "x/8", "::/129", "1.2.3.4/+8"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }
}
