//! Service ClusterIPs and NodePorts, allocated uniquely across masters.
//!
//! Each allocated IP or port is a key in the store (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`, holding the owner `<ns>/<name>`), claimed in
//! the same transaction that writes the Service (compare: the key is absent) and deleted in
//! the one that deletes it — so two masters can never hand out the same address, and
//! nothing leaks when a write fails.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use crate::status::ApiError;

pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The ranges Services are given addresses from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    /// kubeadm's defaults: 10.96.0.0/12 and 30000-32767.
    fn default() -> Self {
        ServiceRanges { network: Ipv4Addr::new(10, 96, 0, 0), prefix: 12, node_ports: (30000, 32767) }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("{0:?} is not an IPv4 CIDR such as 10.96.0.0/12")]
    Cidr(String),
    #[error("{0:?} is not a port range such as 30000-32767")]
    Ports(String),
}

impl ServiceRanges {
    /// `10.96.0.0/12` (prefix 8..=30).
    pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), RangeError> {
        let bad = || RangeError::Cidr(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - len);
        Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
    }

    /// `30000-32767`.
    pub fn parse_ports(s: &str) -> Result<(u16, u16), RangeError> {
        let bad = || RangeError::Ports(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok((a, b))
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// The `kubernetes` Service's address: the first of the range.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn random_ip(&self) -> Ipv4Addr {
        // Neither the network nor the broadcast address, nor the first (the kubernetes
        // Service's).
        let off = rand::thread_rng().gen_range(2..self.size() - 1);
        Ipv4Addr::from(u32::from(self.network) + off)
    }

    fn random_port(&self) -> u16 {
        rand::thread_rng().gen_range(self.node_ports.0..=self.node_ports.1)
    }
}

/// A key to claim: the store key and whether the user chose it (a clash is then a 422,
/// not a reason to pick again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub chosen: bool,
}

/// What a Service write claims and releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub claims: Vec<Claim>,
    pub releases: Vec<String>,
}

fn ip_key(ip: &str) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: i64) -> String {
    format!("{PORT_PREFIX}{port}")
}

fn invalid(name: &str, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        vec![(field.into(), "FieldValueInvalid".into(), format!("Invalid value: {value}: {why}"))],
    )
}

fn needs_ip(spec: &Value) -> bool {
    spec.get("type").and_then(Value::as_str) != Some("ExternalName")
        && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
}

fn needs_node_ports(spec: &Value) -> bool {
    matches!(spec.get("type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

/// The addresses a Service holds.
fn held(svc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let spec = svc.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str).filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) {
        out.push(ip_key(ip));
    }
    for p in spec.get("ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
            out.push(port_key(n));
        }
    }
    out
}

/// Fill in the ClusterIP and NodePorts of a Service being created or updated (`old`),
/// and say what to claim and release. Picks are random: a clash found at write time
/// makes the caller plan again.
pub fn plan(ranges: &ServiceRanges, svc: &mut Value, old: Option<&Value>) -> Result<Plan, ApiError> {
    let name = crate::meta::name(svc).unwrap_or_default().to_string();
    let old_spec = old.and_then(|o| o.get("spec")).cloned().unwrap_or(Value::Null);
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(Plan::default()) };
    let mut claims = Vec::new();
    // ClusterIP: kept on update (immutable), chosen or allocated on create.
    let spec_v = Value::Object(spec.clone());
    if needs_ip(&spec_v) {
        let old_ip = old_spec.get("clusterIP").and_then(Value::as_str).filter(|ip| ip.parse::<Ipv4Addr>().is_ok());
        let given = spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let ip = match (given, old_ip) {
            (Some(g), Some(o)) if g != o => {
                return Err(invalid(&name, "spec.clusterIPs[0]", &json!(g), "may not change once set"));
            }
            (_, Some(o)) => o.to_string(),
            (Some(g), None) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| {
                    invalid(
                        &name,
                        "spec.clusterIPs[0]",
                        &json!(g),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                })?;
                if !ranges.contains(ip) {
                    return Err(invalid(
                        &name,
                        "spec.clusterIPs",
                        &json!([g]),
                        &format!("failed to allocate IP {g}: the provided IP ({g}) is not in the valid range. The range of valid IPs is {}/{}", ranges.network, ranges.prefix),
                    ));
                }
                claims.push(Claim { key: ip_key(&g), chosen: true });
                g
            }
            (None, None) => {
                let ip = ranges.random_ip().to_string();
                claims.push(Claim { key: ip_key(&ip), chosen: false });
                ip
            }
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    } else if spec.get("clusterIP").and_then(Value::as_str) == Some("None")
        && spec.get("selector").and_then(Value::as_object).is_some_and(|s| !s.is_empty())
    {
        // A headless Service with a selector takes the cluster's (single) family, as
        // Kubernetes defaults it on a single-stack cluster.
        spec.entry("clusterIPs").or_insert_with(|| json!(["None"]));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    }
    // NodePorts: kept when unchanged, chosen or allocated otherwise.
    if needs_node_ports(&Value::Object(spec.clone())) {
        let old_ports: Vec<Value> = old_spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut taken: Vec<i64> = Vec::new();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let Some(p) = p.as_object_mut() else { continue };
                let proto = p.get("protocol").cloned().unwrap_or(json!("TCP"));
                let given = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0);
                let had =
                    old_ports.iter().filter_map(|o| o.get("nodePort").and_then(Value::as_i64)).collect::<Vec<_>>();
                let reuse = old_ports
                    .iter()
                    .find(|o| o.get("port") == p.get("port") && o.get("protocol").unwrap_or(&json!("TCP")) == &proto)
                    .and_then(|o| o.get("nodePort").and_then(Value::as_i64));
                let n = match given {
                    Some(n) if had.contains(&n) => n,
                    Some(n) => {
                        if n < i64::from(ranges.node_ports.0) || n > i64::from(ranges.node_ports.1) {
                            return Err(invalid(
                                &name,
                                &format!("spec.ports[{i}].nodePort"),
                                &json!(n),
                                &format!(
                                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                                    ranges.node_ports.0, ranges.node_ports.1
                                ),
                            ));
                        }
                        claims.push(Claim { key: port_key(n), chosen: true });
                        n
                    }
                    None => match reuse.filter(|r| !taken.contains(r)) {
                        Some(r) => r,
                        None => {
                            let mut n = i64::from(ranges.random_port());
                            for _ in 0..16 {
                                if !taken.contains(&n) && !had.contains(&n) {
                                    break;
                                }
                                n = i64::from(ranges.random_port());
                            }
                            claims.push(Claim { key: port_key(n), chosen: false });
                            n
                        }
                    },
                };
                if taken.contains(&n) {
                    return Err(invalid(
                        &name,
                        &format!("spec.ports[{i}].nodePort"),
                        &json!(n),
                        "provided port is already allocated",
                    ));
                }
                taken.push(n);
                p.insert("nodePort".into(), json!(n));
            }
        }
    } else if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
    let now = held(svc);
    let releases = old.map(held).unwrap_or_default().into_iter().filter(|k| !now.contains(k)).collect();
    Ok(Plan { claims, releases })
}

/// Everything a deleted Service held.
pub fn releases_of(svc: &Value) -> Vec<String> {
    held(svc)
}

/// The 422 for a chosen address someone else holds.
pub fn taken(name: &str, key: &str) -> ApiError {
    if let Some(ip) = key.strip_prefix(IP_PREFIX) {
        invalid(
            name,
            "spec.clusterIPs",
            &json!([ip]),
            &format!("failed to allocate IP {ip}: provided IP is already allocated"),
        )
    } else {
        let port = key.strip_prefix(PORT_PREFIX).unwrap_or(key);
        invalid(
            name,
            "spec.ports[0].nodePort",
            &json!(port.parse::<i64>().unwrap_or(0)),
            "provided port is already allocated",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_contain() {
        assert_eq!(ServiceRanges::parse_cidr("10.96.5.0/12").unwrap(), (Ipv4Addr::new(10, 96, 0, 0), 12));
        assert!(ServiceRanges::parse_cidr("10.96.0.0").is_err());
        assert!(ServiceRanges::parse_cidr("10.96.0.0/31").is_err());
        assert_eq!(ServiceRanges::parse_ports("30000-32767").unwrap(), (30000, 32767));
        assert!(ServiceRanges::parse_ports("5-1").is_err());
        let r = ServiceRanges::default();
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(r.first(), Ipv4Addr::new(10, 96, 0, 1));
    }

    #[test]
    fn headless_services_with_a_selector_get_the_cluster_family() {
        let r = ServiceRanges::default();
        let mut svc = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}});
        let p = plan(&r, &mut svc, None).unwrap();
        assert!(p.claims.is_empty());
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["None"]));
        let mut bare = json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "None"}});
        plan(&r, &mut bare, None).unwrap();
        assert!(bare["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn plans_allocate_keep_and_release() {
        let r = ServiceRanges::default();
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}});
        let p = plan(&r, &mut svc, None).unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(r.contains(ip) && ip != r.first());
        assert_eq!(p.claims.len(), 3);
        assert!(p.claims.contains(&Claim { key: format!("{PORT_PREFIX}30443"), chosen: true }));
        // Update to ClusterIP: node ports released, the IP kept.
        let old = svc.clone();
        let mut new = json!({"metadata": {"name": "web"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 31000}]}});
        let p = plan(&r, &mut new, Some(&old)).unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert!(p.claims.is_empty());
        assert_eq!(p.releases.len(), 2);
        // The IP may not change; headless Services get none.
        let mut moved = json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.9"}});
        assert_eq!(plan(&r, &mut moved, Some(&old)).unwrap_err().code, 422);
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        assert!(plan(&r, &mut headless, None).unwrap().claims.is_empty());
        let mut outside = json!({"metadata": {"name": "o"}, "spec": {"clusterIP": "10.0.0.10"}});
        assert_eq!(plan(&r, &mut outside, None).unwrap_err().code, 422);
    }
}
