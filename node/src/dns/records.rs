//! The cluster's names as a plain table, built from Services, EndpointSlices and Pods
//! (the Kubernetes DNS schema, <https://github.com/kubernetes/dns/blob/master/docs/specification.md>,
//! the way CoreDNS's kubernetes plugin serves it).
//!
//! Every name is stored lower-cased and fully qualified, so a lookup lower-cases the question
//! and compares exactly. The table is immutable: a change builds a new one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::Name;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The `dns-version.<zone>` TXT: the version of the schema served (CoreDNS serves the same).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The label the EndpointSlice controller puts on every slice it owns for a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One SRV record's data (priority 0, weights that share 100 between the records of a name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: Name,
}

/// The records at one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub cname: Option<Name>,
    pub srv: Vec<Srv>,
    pub txt: Vec<String>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.cname.is_none() && self.srv.is_empty() && self.txt.is_empty()
    }

    fn push_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.a.push(v4),
            IpAddr::V6(v6) => self.aaaa.push(v6),
        }
    }

    fn tidy(&mut self) {
        self.a.sort();
        self.a.dedup();
        self.aaaa.sort();
        self.aaaa.dedup();
        self.srv.sort();
        self.srv.dedup_by(|a, b| a.port == b.port && a.target == b.target);
        let n = self.srv.len().max(1) as u16;
        for s in &mut self.srv {
            s.weight = (100 / n).max(1);
        }
    }
}

/// What a name is in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a> {
    /// A name with records.
    Node(&'a Node),
    /// `<a-b-c-d>.<ns>.pod.<zone>`: made up from the name itself (spec 2.6).
    Pod(IpAddr),
    /// The zone's apex: only SOA (and NS, which is not served) live there.
    Apex,
    /// A name that exists only because names below it do (an empty non-terminal): NODATA.
    Empty,
    /// No such name: NXDOMAIN.
    Missing,
}

/// The cluster's names under one zone (`cluster.local.`).
#[derive(Debug, Clone)]
pub struct Table {
    zone: Name,
    nodes: HashMap<Name, Node>,
    empty: HashSet<Name>,
    ptr: HashMap<IpAddr, Vec<Name>>,
    serial: u32,
}

/// `cluster.local`, `cluster.local.` or `Cluster.Local` as the lower-case, fully qualified zone.
pub fn zone_name(domain: &str) -> Result<Name, String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        return Err("the cluster domain is empty".into());
    }
    Name::from_ascii(format!("{d}."))
        .map(|n| n.to_lowercase())
        .map_err(|e| format!("cluster domain {domain:?} is not a DNS name: {e}"))
}

/// An address as one DNS label, as CoreDNS spells endpoint and pod names: `10-1-2-3`, `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The inverse of [`dashed`], for pod names; `None` for anything that is not an address.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.is_empty() || !label.contains('-') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fn ns_and_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(String, String)> {
    let ns = meta.namespace.as_deref().filter(|s| !s.is_empty())?;
    let name = meta.name.as_deref().filter(|s| !s.is_empty())?;
    Some((ns.to_ascii_lowercase(), name.to_ascii_lowercase()))
}

impl Table {
    /// A table with no objects: only the apex, `svc.<zone>`, `pod.<zone>` and `dns-version`.
    pub fn empty(zone: Name) -> Self {
        Self::build(zone, [], [], [])
    }

    /// The table for these objects. Objects the schema cannot name (labels over 63 bytes,
    /// unparsable addresses) are skipped, never an error.
    pub fn build<'a>(
        zone: Name,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Self {
        let zone = zone.to_lowercase();
        let mut b = Builder { zone: zone.clone(), nodes: HashMap::new(), ptr: HashMap::new() };

        // Slices by the Service they belong to.
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(ns) = slice.metadata.namespace.as_deref() else { continue };
            let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
            by_service.entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase())).or_default().push(slice);
        }

        for svc in services {
            let Some((ns, name)) = ns_and_name(&svc.metadata) else { continue };
            let slices = by_service.get(&(ns.clone(), name.clone())).map(Vec::as_slice).unwrap_or(&[]);
            b.service(&ns, &name, svc, slices);
        }

        if let Some(version) = b.name(&["dns-version"]) {
            b.node(version).txt.push(SCHEMA_VERSION.to_string());
        }

        // Pods: PTR `a-b-c-d.<ns>.pod.<zone>` for addresses that no Service names.
        for pod in pods {
            let Some((ns, _)) = ns_and_name(&pod.metadata) else { continue };
            if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
                continue;
            }
            let Some(status) = pod.status.as_ref() else { continue };
            if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
                continue;
            }
            let mut ips: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
            if ips.is_empty() {
                ips.extend(status.pod_ip.as_deref());
            }
            for ip in ips.into_iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                if b.ptr.get(&ip).is_some_and(|v| !v.is_empty()) {
                    continue;
                }
                if let Some(n) = b.name(&[&dashed(ip), &ns, "pod"]) {
                    b.ptr.entry(ip).or_default().push(n);
                }
            }
        }
        let Builder { nodes, mut ptr, .. } = b;
        let mut nodes: HashMap<Name, Node> = nodes.into_iter().filter(|(_, n)| !n.is_empty()).collect();
        for n in nodes.values_mut() {
            n.tidy();
        }
        for v in ptr.values_mut() {
            v.sort();
            v.dedup();
        }

        // Every name between a record's owner and the zone exists (empty non-terminals), and so
        // do `svc.<zone>` and `pod.<zone>` even when nothing is below them.
        let mut empty = HashSet::new();
        let zone_labels = zone.num_labels();
        for name in nodes.keys() {
            let mut n = name.base_name();
            while n.num_labels() > zone_labels {
                if !nodes.contains_key(&n) {
                    empty.insert(n.clone());
                }
                n = n.base_name();
            }
        }
        for l in ["svc", "pod"] {
            if let Ok(n) = Name::from_labels([l]).and_then(|n| n.append_domain(&zone)) {
                empty.insert(n);
            }
        }
        Self { zone, nodes, empty, ptr, serial: 1 }
    }

    /// The zone this table answers for (lower-case, fully qualified).
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// Whether `name` is the zone or below it (any case).
    pub fn in_zone(&self, name: &Name) -> bool {
        self.zone.zone_of(&name.to_lowercase())
    }

    /// What `name` (any case) is in this zone.
    pub fn find(&self, name: &Name) -> Found<'_> {
        let name = name.to_lowercase();
        if !self.zone.zone_of(&name) {
            return Found::Missing;
        }
        if name == self.zone {
            return Found::Apex;
        }
        if let Some(n) = self.nodes.get(&name) {
            return Found::Node(n);
        }
        if self.empty.contains(&name) {
            return Found::Empty;
        }
        // Below `pod.<zone>`: `<ns>.pod.<zone>` is an empty non-terminal for any namespace and
        // `<a-b-c-d>.<ns>.pod.<zone>` holds that address (kube-dns's deprecated, still required,
        // pod records: any address, whether or not a pod has it).
        let below = name.num_labels() - self.zone.num_labels();
        let label = |i: usize| name.iter().nth(i).map(|l| String::from_utf8_lossy(l).into_owned());
        let pod_at = (below as usize).checked_sub(1).and_then(label);
        if pod_at.as_deref() == Some("pod") {
            match below {
                2 => return Found::Empty,
                3 => {
                    if let Some(ip) = label(0).as_deref().and_then(undashed) {
                        return Found::Pod(ip);
                    }
                }
                _ => {}
            }
        }
        Found::Missing
    }

    /// The names an address points back to (PTR): Services' cluster IPs, endpoints of Services,
    /// then pods (`a-b-c-d.<ns>.pod.<zone>`) whose address no Service names.
    pub fn ptr(&self, ip: IpAddr) -> &[Name] {
        self.ptr.get(&ip).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The SOA serial: the holder stamps each new table (CoreDNS uses the time of the last change).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn with_serial(mut self, serial: u32) -> Self {
        self.serial = serial;
        self
    }

    /// The number of names with records (for logs).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

struct Builder {
    zone: Name,
    nodes: HashMap<Name, Node>,
    ptr: HashMap<IpAddr, Vec<Name>>,
}

impl Builder {
    /// `labels` + the zone, or `None` when that is no DNS name.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .and_then(|n| n.append_domain(&self.zone))
            .ok()
            .map(|n| n.to_lowercase())
    }

    fn node(&mut self, name: Name) -> &mut Node {
        self.nodes.entry(name).or_default()
    }

    fn service(&mut self, ns: &str, name: &str, svc: &Service, slices: &[&EndpointSlice]) {
        let Some(base) = self.name(&[name, ns, "svc"]) else { return };
        let spec = svc.spec.as_ref();
        let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");

        if type_ == "ExternalName" {
            // `<svc>.<ns>.svc.<zone>. CNAME <externalName>.` (spec 2.5)
            let target = spec.and_then(|s| s.external_name.as_deref()).map(str::trim).unwrap_or("");
            let target = target.trim_end_matches('.');
            if let Ok(t) = Name::from_ascii(format!("{target}.")) {
                if !target.is_empty() {
                    self.node(base).cname = Some(t);
                }
            }
            return;
        }

        let mut cluster_ips: Vec<&str> =
            spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten().map(String::as_str).collect();
        if cluster_ips.is_empty() {
            cluster_ips.extend(spec.and_then(|s| s.cluster_ip.as_deref()));
        }
        let headless = cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("none"));
        let ips: Vec<IpAddr> = cluster_ips.iter().filter_map(|s| s.parse().ok()).collect();
        let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);

        if !headless {
            // `<svc>.<ns>.svc.<zone>. A <cluster-ip>`, an SRV per named port to that name, and
            // the PTR back (spec 2.3).
            for ip in &ips {
                self.node(base.clone()).push_ip(*ip);
                self.ptr.entry(*ip).or_default().push(base.clone());
            }
            for p in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
                let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) else { continue };
                let Ok(port) = u16::try_from(p.port) else { continue };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let Some(srv_name) = self.name(&[&format!("_{pname}"), &format!("_{proto}"), name, ns, "svc"]) else {
                    continue;
                };
                let target = base.clone();
                self.node(srv_name).srv.push(Srv { priority: 0, weight: 0, port, target });
            }
        }

        // Endpoints: for a headless Service the Service's own name holds every ready address
        // (spec 2.4); for any Service `<hostname>.<svc>.<ns>.svc.<zone>` names each ready
        // endpoint (its `hostname`, else its dashed address, as CoreDNS does).
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                let addrs: Vec<IpAddr> = ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                for ip in addrs {
                    let host = ep.hostname.as_deref().filter(|h| !h.is_empty()).map(str::to_ascii_lowercase);
                    let host = host.unwrap_or_else(|| dashed(ip));
                    let Some(host_name) = self.name(&[&host, name, ns, "svc"]) else { continue };
                    self.node(host_name.clone()).push_ip(ip);
                    if !headless {
                        continue;
                    }
                    self.node(base.clone()).push_ip(ip);
                    self.ptr.entry(ip).or_default().push(host_name.clone());
                    for p in slice.ports.iter().flatten() {
                        let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) else { continue };
                        let Some(port) = p.port.and_then(|p| u16::try_from(p).ok()) else { continue };
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                        let Some(srv_name) = self.name(&[&format!("_{pname}"), &format!("_{proto}"), name, ns, "svc"])
                        else {
                            continue;
                        };
                        let target = host_name.clone();
                        self.node(srv_name).srv.push(Srv { priority: 0, weight: 0, port, target });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Objects as the API server would hold them.
    use k8s_openapi::api::core::v1::{Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::{json, Value};

    fn ports(ports: &[(&str, i32, &str)]) -> Value {
        ports.iter().map(|(name, port, proto)| json!({"name": name, "port": port, "protocol": proto})).collect()
    }

    pub fn service(ns: &str, name: &str, cluster_ip: &str, p: &[(&str, i32, &str)]) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports(p)},
        }))
        .unwrap()
    }

    pub fn external(ns: &str, name: &str, target: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"type": "ExternalName", "externalName": target},
        }))
        .unwrap()
    }

    /// `(addresses, hostname, ready)` per endpoint.
    pub type Ep<'a> = (&'a [&'a str], Option<&'a str>, Option<bool>);

    pub fn slice(
        ns: &str,
        svc: &str,
        name: &str,
        family: &str,
        eps: &[Ep<'_>],
        p: &[(&str, i32, &str)],
    ) -> EndpointSlice {
        let endpoints: Vec<Value> = eps
            .iter()
            .map(|(addrs, host, ready)| {
                let mut e = json!({"addresses": addrs});
                if let Some(h) = host {
                    e["hostname"] = json!(h);
                }
                if let Some(r) = ready {
                    e["conditions"] = json!({"ready": r});
                }
                e
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family,
            "endpoints": endpoints,
            "ports": ports(p),
        }))
        .unwrap()
    }

    pub fn pod(ns: &str, name: &str, ip: &str, host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"containers": [], "hostNetwork": host_network},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn zone() -> Name {
        zone_name("cluster.local").unwrap()
    }

    fn node<'a>(t: &'a Table, name: &str) -> &'a Node {
        match t.find(&n(name)) {
            Found::Node(node) => node,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zone_names_are_normalised() {
        assert_eq!(zone_name("Cluster.Local.").unwrap().to_ascii(), "cluster.local.");
        assert!(zone_name("cluster.local").unwrap().is_fqdn());
        assert!(zone_name("").is_err());
        assert!(zone_name(" . ").is_err());
    }

    #[test]
    fn dashed_addresses_round_trip() {
        assert_eq!(dashed(ip("10.244.1.5")), "10-244-1-5");
        assert_eq!(dashed(ip("fd00::1")), "fd00--1");
        assert_eq!(undashed("10-244-1-5"), Some(ip("10.244.1.5")));
        assert_eq!(undashed("fd00--1"), Some(ip("fd00::1")));
        assert_eq!(undashed("web-0"), None);
        assert_eq!(undashed("10-244-1"), None);
        assert_eq!(undashed("10-244-1-256"), None);
        assert_eq!(undashed(""), None);
    }

    #[test]
    fn cluster_ip_service() {
        let svc = service("default", "web", "10.96.0.10", &[("http", 80, "TCP"), ("", 81, "TCP"), ("dns", 53, "UDP")]);
        let t = Table::build(zone(), [&svc], [], []);
        assert_eq!(node(&t, "web.default.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        let srv = &node(&t, "_http._tcp.web.default.svc.cluster.local.").srv;
        assert_eq!(srv.len(), 1);
        assert_eq!((srv[0].port, srv[0].target.to_ascii().as_str()), (80, "web.default.svc.cluster.local."));
        assert_eq!(node(&t, "_dns._udp.web.default.svc.cluster.local.").srv[0].port, 53);
        // The unnamed port has no SRV; the protocol is part of the name.
        assert_eq!(t.find(&n("_dns._tcp.web.default.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.ptr(ip("10.96.0.10")), &[n("web.default.svc.cluster.local.")]);
        // Names between the records and the zone exist, empty.
        for ent in ["_tcp.web.default.svc.cluster.local.", "default.svc.cluster.local.", "svc.cluster.local."] {
            assert_eq!(t.find(&n(ent)), Found::Empty, "{ent}");
        }
        assert_eq!(t.find(&n("cluster.local.")), Found::Apex);
        assert_eq!(t.find(&n("other.default.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("web.other.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("other.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("web.default.svc.example.com.")), Found::Missing);
        // Case does not matter.
        assert_eq!(node(&t, "WEB.Default.SVC.Cluster.LOCAL.").a.len(), 1);
    }

    #[test]
    fn dual_stack_service() {
        let mut svc = service("default", "web", "10.96.0.10", &[]);
        svc.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.10".into(), "fd00::10".into()]);
        let t = Table::build(zone(), [&svc], [], []);
        let web = node(&t, "web.default.svc.cluster.local.");
        assert_eq!(web.a, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(web.aaaa, vec!["fd00::10".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn headless_service_endpoints() {
        let svc = service("db", "pg", "None", &[("sql", 5432, "TCP")]);
        let s1 = slice(
            "db",
            "pg",
            "pg-abc",
            "IPv4",
            &[
                (&["10.244.1.5"], Some("pg-0"), Some(true)),
                (&["10.244.2.6"], None, None),
                (&["10.244.3.7"], Some("pg-2"), Some(false)),
            ],
            &[("sql", 15432, "TCP"), ("", 9, "TCP")],
        );
        // A slice of another Service, and a FQDN slice, change nothing.
        let other = slice("db", "other", "other-x", "IPv4", &[(&["10.244.9.9"], Some("o"), None)], &[]);
        let fqdn = slice("db", "pg", "pg-fqdn", "FQDN", &[(&["example.com"], None, None)], &[]);
        let t = Table::build(zone(), [&svc], [&s1, &other, &fqdn], []);

        let base = node(&t, "pg.db.svc.cluster.local.");
        assert_eq!(base.a, vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 6)], "ready endpoints only");
        assert_eq!(node(&t, "pg-0.pg.db.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 244, 1, 5)]);
        assert_eq!(node(&t, "10-244-2-6.pg.db.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 244, 2, 6)]);
        assert_eq!(t.find(&n("pg-2.pg.db.svc.cluster.local.")), Found::Missing, "not ready");
        assert_eq!(t.find(&n("o.pg.db.svc.cluster.local.")), Found::Missing);

        // One SRV per ready endpoint, on the endpoint's port, to its own name.
        let srv = &node(&t, "_sql._tcp.pg.db.svc.cluster.local.").srv;
        let got: Vec<(u16, String)> = srv.iter().map(|s| (s.port, s.target.to_ascii())).collect();
        assert_eq!(
            got,
            vec![
                (15432, "10-244-2-6.pg.db.svc.cluster.local.".to_string()),
                (15432, "pg-0.pg.db.svc.cluster.local.".to_string())
            ]
        );
        assert!(srv.iter().all(|s| s.weight == 50 && s.priority == 0));
        assert_eq!(t.ptr(ip("10.244.1.5")), &[n("pg-0.pg.db.svc.cluster.local.")]);
    }

    #[test]
    fn publish_not_ready_addresses_publishes_all() {
        let mut svc = service("db", "pg", "None", &[]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let s = slice("db", "pg", "pg-abc", "IPv4", &[(&["10.244.3.7"], Some("pg-2"), Some(false))], &[]);
        let t = Table::build(zone(), [&svc], [&s], []);
        assert_eq!(node(&t, "pg.db.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 244, 3, 7)]);
        assert_eq!(node(&t, "pg-2.pg.db.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 244, 3, 7)]);
    }

    #[test]
    fn headless_without_ready_endpoints_does_not_exist() {
        let svc = service("db", "pg", "None", &[("sql", 5432, "TCP")]);
        let s = slice(
            "db",
            "pg",
            "pg-abc",
            "IPv4",
            &[(&["10.244.3.7"], Some("pg-2"), Some(false))],
            &[("sql", 5432, "TCP")],
        );
        let t = Table::build(zone(), [&svc], [&s], []);
        assert_eq!(t.find(&n("pg.db.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("_sql._tcp.pg.db.svc.cluster.local.")), Found::Missing);
    }

    #[test]
    fn endpoints_spread_over_slices_and_duplicates() {
        let svc = service("db", "pg", "None", &[]);
        let a = slice("db", "pg", "pg-a", "IPv4", &[(&["10.244.1.5"], Some("pg-0"), None)], &[]);
        let b = slice(
            "db",
            "pg",
            "pg-b",
            "IPv4",
            &[(&["10.244.1.5"], Some("pg-0"), None), (&["10.244.1.6"], None, None)],
            &[],
        );
        let v6 = slice("db", "pg", "pg-c", "IPv6", &[(&["fd00::5"], Some("pg-0"), None)], &[]);
        let t = Table::build(zone(), [&svc], [&a, &b, &v6], []);
        let base = node(&t, "pg.db.svc.cluster.local.");
        assert_eq!(base.a.len(), 2);
        assert_eq!(base.aaaa, vec!["fd00::5".parse::<Ipv6Addr>().unwrap()]);
        let pg0 = node(&t, "pg-0.pg.db.svc.cluster.local.");
        assert_eq!((pg0.a.len(), pg0.aaaa.len()), (1, 1));
    }

    #[test]
    fn cluster_ip_service_endpoint_names() {
        // As CoreDNS: endpoints of a ClusterIP Service have names too, but the Service's
        // name holds only its cluster IP.
        let svc = service("default", "web", "10.96.0.10", &[("http", 80, "TCP")]);
        let s =
            slice("default", "web", "web-a", "IPv4", &[(&["10.244.1.5"], Some("w0"), None)], &[("http", 8080, "TCP")]);
        let t = Table::build(zone(), [&svc], [&s], []);
        assert_eq!(node(&t, "web.default.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(node(&t, "w0.web.default.svc.cluster.local.").a, vec![Ipv4Addr::new(10, 244, 1, 5)]);
        let srv = &node(&t, "_http._tcp.web.default.svc.cluster.local.").srv;
        assert_eq!((srv.len(), srv[0].port), (1, 80));
    }

    #[test]
    fn external_name_is_a_cname() {
        let svc = external("default", "ext", "Example.COM.");
        let bad = external("default", "bad", "");
        let t = Table::build(zone(), [&svc, &bad], [], []);
        assert_eq!(node(&t, "ext.default.svc.cluster.local.").cname, Some(n("example.com.")));
        assert_eq!(t.find(&n("bad.default.svc.cluster.local.")), Found::Missing);
    }

    #[test]
    fn pods() {
        let svc = service("db", "pg", "None", &[]);
        let s = slice("db", "pg", "pg-a", "IPv4", &[(&["10.244.1.5"], Some("pg-0"), None)], &[]);
        let pods = [
            pod("db", "pg-0", "10.244.1.5", false),
            pod("default", "a", "10.244.1.9", false),
            pod("kube-system", "h", "192.168.1.10", true),
        ];
        let t = Table::build(zone(), [&svc], [&s], &pods);
        // Any dashed address is a pod name (spec 2.6), v4 or v6.
        assert_eq!(t.find(&n("10-244-1-9.default.pod.cluster.local.")), Found::Pod(ip("10.244.1.9")));
        assert_eq!(t.find(&n("1-2-3-4.Any.POD.cluster.local.")), Found::Pod(ip("1.2.3.4")));
        assert_eq!(t.find(&n("fd00--1.x.pod.cluster.local.")), Found::Pod(ip("fd00::1")));
        assert_eq!(t.find(&n("default.pod.cluster.local.")), Found::Empty);
        assert_eq!(t.find(&n("pod.cluster.local.")), Found::Empty);
        assert_eq!(t.find(&n("web.default.pod.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("x.10-244-1-9.default.pod.cluster.local.")), Found::Missing);
        // PTR: the endpoint's name wins over the pod's; host-network pods get none.
        assert_eq!(t.ptr(ip("10.244.1.5")), &[n("pg-0.pg.db.svc.cluster.local.")]);
        assert_eq!(t.ptr(ip("10.244.1.9")), &[n("10-244-1-9.default.pod.cluster.local.")]);
        assert!(t.ptr(ip("192.168.1.10")).is_empty());
    }

    #[test]
    fn schema_version_and_empty_table() {
        let t = Table::empty(zone());
        assert_eq!(node(&t, "dns-version.cluster.local.").txt, vec![SCHEMA_VERSION.to_string()]);
        assert_eq!(t.find(&n("svc.cluster.local.")), Found::Empty);
        assert_eq!(t.find(&n("kubernetes.default.svc.cluster.local.")), Found::Missing);
        assert_eq!(t.find(&n("example.com.")), Found::Missing);
        assert!(t.in_zone(&n("X.Cluster.Local.")));
        assert!(!t.in_zone(&n("cluster.local.example.")));
    }

    #[test]
    fn unnameable_objects_are_skipped() {
        let long = "x".repeat(64);
        let svc = service("default", &long, "10.96.0.1", &[]);
        let bad_ip = service("default", "b", "not-an-ip", &[]);
        let ok = service("default", "ok", "10.96.0.2", &[]);
        let t = Table::build(zone(), [&svc, &bad_ip, &ok], [], []);
        assert_eq!(node(&t, "ok.default.svc.cluster.local.").a.len(), 1);
        assert_eq!(t.find(&n("b.default.svc.cluster.local.")), Found::Missing);
    }
}
