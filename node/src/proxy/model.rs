//! Services and EndpointSlices → the service table: one [`ServicePort`] per (Service, port)
//! with the endpoints traffic may go to. Pure; no I/O.
//!
//! What is taken, as kube-proxy takes it:
//! - Services with an IPv4 cluster IP, of type ClusterIP, NodePort or LoadBalancer.
//!   Headless ones (`clusterIP: None`), ExternalName ones and those with no IPv4 cluster IP
//!   are skipped. NodePort and LoadBalancer Services also answer on their `nodePort`s.
//! - Ports of protocol TCP, UDP or SCTP (default TCP).
//! - Endpoints from the IPv4 EndpointSlices labelled `kubernetes.io/service-name` in the
//!   Service's namespace; a Service port takes the slice port of the same name (unset and
//!   empty are the same) and protocol, whose `port` is the resolved targetPort. An endpoint
//!   is its first address.
//! - Which endpoints: the ready ones (`ready` unset counts as ready); if none is ready, the
//!   ones both serving and terminating (a rolling update's last pods); else none, and the
//!   ruleset rejects the port's traffic.
//! - `sessionAffinity: ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`
//!   (default [`DEFAULT_AFFINITY_TIMEOUT`]).
//!
//! Traffic policies (`internalTrafficPolicy`/`externalTrafficPolicy: Local`), externalIPs
//! and load-balancer ingress IPs are not implemented: every endpoint serves every client.
//! Anything malformed is skipped with a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::warn;

/// kube-proxy's (and the API's) default ClientIP affinity timeout: 3 hours.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The API's upper bound for `timeoutSeconds`.
const MAX_AFFINITY_TIMEOUT: u32 = 86400;
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling (`TCP`, …); unset is TCP; anything else is `None`.
    pub fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nft's name (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft())
    }
}

/// Where traffic is sent: a pod's address and the resolved target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// One port of one Service, with the endpoints chosen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name (`""` when unset).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Set for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Sorted, no duplicates; empty: traffic is rejected.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/name/proto/port`: unique in a table, and what the nft objects are named after.
    pub fn id(&self) -> String {
        format!("{}/{}/{}/{}", self.namespace, self.name, self.protocol, self.port)
    }
}

/// Every Service port the proxy programs, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    pub ports: Vec<ServicePort>,
}

impl ServiceTable {
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> ServiceTable {
        // (namespace, service name) → its IPv4 slices.
        let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_deref(),
                slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str),
            ) else {
                continue;
            };
            by_service.entry((ns, svc)).or_default().push(slice);
        }

        let mut ports = Vec::new();
        for svc in services {
            let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else {
                continue;
            };
            if !valid_name(ns) || !valid_name(name) {
                warn!(namespace = ns, name, "proxy: skipping a Service with an invalid name");
                continue;
            }
            let slices = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
            service_ports(ns, name, svc, slices, &mut ports);
        }
        ports.sort_by(|a, b| {
            (&a.namespace, &a.name, a.protocol, a.port).cmp(&(&b.namespace, &b.name, b.protocol, b.port))
        });

        // The API allocator makes these unique; a duplicate would make the whole nft
        // transaction fail, so the first one wins and the other is skipped.
        let mut seen = BTreeSet::new();
        let mut seen_node_ports = BTreeSet::new();
        ports.retain_mut(|p| {
            if !seen.insert((p.cluster_ip, p.protocol, p.port)) {
                warn!(service = %p.id(), cluster_ip = %p.cluster_ip, "proxy: duplicate cluster IP and port; skipped");
                return false;
            }
            if let Some(np) = p.node_port {
                if !seen_node_ports.insert((p.protocol, np)) {
                    warn!(service = %p.id(), node_port = np, "proxy: duplicate node port; not programmed");
                    p.node_port = None;
                }
            }
            true
        });
        ServiceTable { ports }
    }

    pub fn endpoint_count(&self) -> usize {
        self.ports.iter().map(|p| p.endpoints.len()).sum()
    }
}

/// The programmable ports of one Service, appended to `out`.
fn service_ports(ns: &str, name: &str, svc: &Service, slices: &[&EndpointSlice], out: &mut Vec<ServicePort>) {
    let Some(spec) = svc.spec.as_ref() else { return };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    let with_node_ports = match ty {
        "ClusterIP" => false,
        "NodePort" | "LoadBalancer" => true,
        "ExternalName" => return,
        other => {
            warn!(namespace = ns, name, r#type = other, "proxy: skipping a Service of unknown type");
            return;
        }
    };
    let Some(cluster_ip) = cluster_ipv4(spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref()) else {
        return; // headless, not allocated yet, or IPv6 only
    };
    let affinity_timeout = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            Some(match t {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT => t as u32,
                Some(t) => {
                    warn!(
                        namespace = ns,
                        name,
                        timeout = t,
                        "proxy: invalid session affinity timeout; using the default"
                    );
                    DEFAULT_AFFINITY_TIMEOUT
                }
            })
        }
        _ => None,
    };
    for sp in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
            warn!(namespace = ns, name, protocol = ?sp.protocol, "proxy: skipping a port of unsupported protocol");
            continue;
        };
        let Some(port) = port_number(sp.port) else {
            warn!(namespace = ns, name, port = sp.port, "proxy: skipping an invalid port");
            continue;
        };
        let node_port = if with_node_ports { sp.node_port.and_then(port_number) } else { None };
        let port_name = sp.name.clone().unwrap_or_default();
        out.push(ServicePort {
            namespace: ns.to_string(),
            name: name.to_string(),
            endpoints: choose_endpoints(slices, &port_name, protocol),
            port_name,
            protocol,
            cluster_ip,
            port,
            node_port,
            affinity_timeout,
        });
    }
}

/// The first IPv4 of `clusterIPs` (else `clusterIP`); `None` for headless (`None`) or unset.
fn cluster_ipv4(cluster_ip: Option<&str>, cluster_ips: Option<&[String]>) -> Option<Ipv4Addr> {
    let all = cluster_ips.into_iter().flatten().map(String::as_str).chain(cluster_ip);
    all.filter(|ip| *ip != "None" && !ip.is_empty()).find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Ready endpoints for the Service port `port_name`/`protocol`; else the serving and
/// terminating ones; sorted and deduplicated across slices.
fn choose_endpoints(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == port_name && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| p.port.and_then(port_number))
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let c = ep.conditions.clone().unwrap_or_default();
            let is_ready = c.ready != Some(false);
            // `serving` unset: the same as `ready` (the API's rule).
            let serving = c.serving.unwrap_or(is_ready);
            let endpoint = Endpoint { ip, port };
            if is_ready {
                ready.insert(endpoint);
            } else if serving && c.terminating == Some(true) {
                terminating.insert(endpoint);
            }
        }
    }
    if ready.is_empty() { terminating } else { ready }.into_iter().collect()
}

/// A DNS label or subdomain, as the API server enforces for namespaces and Service names:
/// the nft objects are named after them.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub fn service(v: Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    pub fn slice(v: Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    /// A ClusterIP Service `ns/name` with `(name, port, protocol)` ports.
    pub fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> Value {
        let ports: Vec<Value> = ports.iter().map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr})).collect();
        json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports},
        })
    }

    /// `(address, ready, serving, terminating)`.
    pub type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    /// An IPv4 slice of `svc` with these endpoints.
    pub fn eps(ns: &str, svc: &str, suffix: &str, endpoints: &[Ep], ports: &[(&str, i32, &str)]) -> Value {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, r, s, t)| json!({"addresses": [ip], "conditions": {"ready": r, "serving": s, "terminating": t}}))
            .collect();
        let ports: Vec<Value> = ports.iter().map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr})).collect();
        json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-{suffix}"), "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        })
    }

    fn ready(ip: &str) -> Ep<'_> {
        (ip, Some(true), Some(true), Some(false))
    }

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port }
    }

    fn table(services: &[Value], slices: &[Value]) -> ServiceTable {
        let s: Vec<Service> = services.iter().cloned().map(service).collect();
        let e: Vec<EndpointSlice> = slices.iter().cloned().map(slice).collect();
        ServiceTable::build(&s, &e)
    }

    #[test]
    fn named_ports_take_their_slice_port() {
        let t = table(
            &[svc("ns", "web", "10.96.0.10", &[("http", 80, "TCP"), ("metrics", 9090, "TCP"), ("dns", 53, "UDP")])],
            &[
                eps(
                    "ns",
                    "web",
                    "a",
                    &[ready("10.1.0.1"), ready("10.1.0.2")],
                    &[("http", 8080, "TCP"), ("metrics", 9100, "TCP")],
                ),
                // A second slice, another targetPort for `http` (a rollout changing it).
                eps("ns", "web", "b", &[ready("10.1.0.3")], &[("http", 8081, "TCP"), ("dns", 5353, "UDP")]),
                // Other namespace, same service name: not ours.
                eps("other", "web", "a", &[ready("10.9.0.1")], &[("http", 1, "TCP")]),
            ],
        );
        assert_eq!(t.ports.len(), 3);
        let by = |port: u16| t.ports.iter().find(|p| p.port == port).unwrap();
        assert_eq!(by(80).endpoints, vec![ep("10.1.0.1", 8080), ep("10.1.0.2", 8080), ep("10.1.0.3", 8081)]);
        assert_eq!(by(9090).endpoints, vec![ep("10.1.0.1", 9100), ep("10.1.0.2", 9100)]);
        assert_eq!(by(53).endpoints, vec![ep("10.1.0.3", 5353)]);
        assert_eq!(by(53).protocol, Protocol::Udp);
        assert_eq!(by(80).id(), "ns/web/tcp/80");
    }

    #[test]
    fn unnamed_port_and_protocol_must_match() {
        let t = table(
            &[svc("ns", "one", "10.96.0.11", &[("", 53, "UDP")])],
            &[eps("ns", "one", "a", &[ready("10.1.0.1")], &[("", 5353, "TCP")])],
        );
        assert_eq!(t.ports[0].endpoints, vec![]);
        let t = table(
            &[svc("ns", "one", "10.96.0.11", &[("", 53, "UDP")])],
            &[eps("ns", "one", "a", &[ready("10.1.0.1")], &[("", 5353, "UDP")])],
        );
        assert_eq!(t.ports[0].endpoints, vec![ep("10.1.0.1", 5353)]);
    }

    #[test]
    fn ready_else_serving_terminating_else_none() {
        let ports = &[("", 80, "TCP")];
        let s = [svc("ns", "s", "10.96.0.12", ports)];
        let t = table(
            &s,
            &[eps(
                "ns",
                "s",
                "a",
                &[
                    ("10.1.0.1", Some(true), None, None),
                    ("10.1.0.2", None, None, None), // unset ready: ready
                    ("10.1.0.3", Some(false), Some(true), Some(true)),
                    ("10.1.0.4", Some(false), Some(false), Some(false)),
                ],
                ports,
            )],
        );
        assert_eq!(t.ports[0].endpoints, vec![ep("10.1.0.1", 80), ep("10.1.0.2", 80)]);
        let t = table(
            &s,
            &[eps(
                "ns",
                "s",
                "a",
                &[
                    ("10.1.0.3", Some(false), Some(true), Some(true)),
                    ("10.1.0.4", Some(false), Some(false), Some(true)),
                    ("10.1.0.5", Some(false), Some(true), Some(false)),
                ],
                ports,
            )],
        );
        assert_eq!(t.ports[0].endpoints, vec![ep("10.1.0.3", 80)]);
        let t = table(&s, &[eps("ns", "s", "a", &[("10.1.0.4", Some(false), None, None)], ports)]);
        assert_eq!(t.ports[0].endpoints, vec![]);
        let t = table(&s, &[]);
        assert_eq!(t.ports.len(), 1);
        assert_eq!(t.ports[0].endpoints, vec![]);
    }

    #[test]
    fn skips_headless_external_ipv6_and_junk() {
        let mut headless = svc("ns", "h", "None", &[("", 80, "TCP")]);
        headless["spec"]["clusterIPs"] = json!(["None"]);
        let external = json!({"metadata": {"namespace": "ns", "name": "x"},
                              "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let v6 = svc("ns", "v6", "fd00::10", &[("", 80, "TCP")]);
        let mut dual = svc("ns", "dual", "fd00::11", &[("", 80, "TCP"), ("bad", 0, "TCP"), ("icmp", 7, "ICMP")]);
        dual["spec"]["clusterIPs"] = json!(["fd00::11", "10.96.0.13"]);
        let unallocated = json!({"metadata": {"namespace": "ns", "name": "u"}, "spec": {"ports": [{"port": 80}]}});
        let nameless = json!({"metadata": {"namespace": "ns"}, "spec": {"clusterIP": "10.96.0.14"}});
        let weird = svc("ns", "a b;c", "10.96.0.15", &[("", 80, "TCP")]);
        let t = table(&[headless, external, v6, dual, unallocated, nameless, weird], &[]);
        assert_eq!(t.ports.len(), 1, "{t:?}");
        assert_eq!(t.ports[0].name, "dual");
        assert_eq!(t.ports[0].cluster_ip, "10.96.0.13".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn node_ports_and_affinity() {
        let mut np = svc("ns", "np", "10.96.0.20", &[("a", 80, "TCP"), ("b", 81, "UDP")]);
        np["spec"]["type"] = json!("NodePort");
        np["spec"]["ports"][0]["nodePort"] = json!(30080);
        np["spec"]["ports"][1]["nodePort"] = json!(30081);
        np["spec"]["sessionAffinity"] = json!("ClientIP");
        let mut lb = svc("ns", "lb", "10.96.0.21", &[("", 80, "TCP")]);
        lb["spec"]["type"] = json!("LoadBalancer");
        lb["spec"]["ports"][0]["nodePort"] = json!(30090);
        lb["spec"]["sessionAffinity"] = json!("ClientIP");
        lb["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        // A ClusterIP Service carrying a stale nodePort: not a NodePort.
        let mut cip = svc("ns", "cip", "10.96.0.22", &[("", 80, "TCP")]);
        cip["spec"]["ports"][0]["nodePort"] = json!(30095);
        // A second Service claiming 30080/TCP: loses it, keeps its cluster IP.
        let mut dup = svc("ns", "zz", "10.96.0.23", &[("", 80, "TCP")]);
        dup["spec"]["type"] = json!("NodePort");
        dup["spec"]["ports"][0]["nodePort"] = json!(30080);
        let t = table(&[np, lb, cip, dup], &[]);
        let get = |name: &str, port: u16| t.ports.iter().find(|p| p.name == name && p.port == port).unwrap();
        assert_eq!(get("np", 80).node_port, Some(30080));
        assert_eq!(get("np", 81).node_port, Some(30081));
        assert_eq!(get("np", 80).affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(get("lb", 80).node_port, Some(30090));
        assert_eq!(get("lb", 80).affinity_timeout, Some(60));
        assert_eq!(get("cip", 80).node_port, None);
        assert_eq!(get("cip", 80).affinity_timeout, None);
        assert_eq!(get("zz", 80).node_port, None);
    }

    #[test]
    fn order_is_stable() {
        let a = svc("b", "x", "10.96.0.31", &[("", 81, "TCP"), ("", 80, "TCP")]);
        let b = svc("a", "y", "10.96.0.30", &[("", 80, "TCP")]);
        let t1 = table(&[a.clone(), b.clone()], &[]);
        let t2 = table(&[b, a], &[]);
        assert_eq!(t1, t2);
        let ids: Vec<String> = t1.ports.iter().map(ServicePort::id).collect();
        assert_eq!(ids, ["a/y/tcp/80", "b/x/tcp/80", "b/x/tcp/81"]);
    }
}
