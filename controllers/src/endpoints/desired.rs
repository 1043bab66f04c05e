//! The Endpoints a Service should have, from the pods it selects: pure functions
//! (`syncService`'s body, `RepackSubsets` and `truncateEndpoints` upstream).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use kube::{api::ObjectMeta, ResourceExt};

use crate::util_endpoints::{
    find_port, is_headless, is_ipv6, is_service_ip_set, pod_ips, protocol, should_pod_be_in_endpoints,
    should_set_hostname,
};

/// The label marking Endpoints this controller manages (`LabelManagedBy`).
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Its value (`ControllerName`).
pub const CONTROLLER_NAME: &str = "endpoint-controller";
/// Set on the Endpoints of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Set when the addresses were cut to [`MAX_CAPACITY`].
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses one Endpoints object carries.
pub const MAX_CAPACITY: usize = 1000;

/// What to do with a Service's Endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// They are already right.
    Unchanged,
    /// There are none: create this.
    Create(Endpoints),
    /// Replace them with this (it carries the current resourceVersion).
    Update(Endpoints),
}

/// Compare the desired Endpoints of `svc` (selecting `pods`) with `current`.
pub fn plan(svc: &Service, pods: &[&Pod], current: Option<&Endpoints>) -> Plan {
    let mut subsets = desired_subsets(svc, pods);
    let truncated = truncate(&mut subsets, MAX_CAPACITY);
    if truncated {
        // Cutting may leave two subsets with the same addresses: keep the canonical form.
        subsets = repack(&subsets);
    }
    let labels = desired_labels(svc);
    if let Some(cur) = current {
        let cur_subsets = repack(cur.subsets.as_deref().unwrap_or_default());
        let cur_truncated = cur.annotations().contains_key(ANNOTATION_OVER_CAPACITY);
        if cur_subsets == subsets && cur.labels() == &labels && cur_truncated == truncated {
            return Plan::Unchanged;
        }
    }
    let mut new = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta { name: Some(svc.name_any()), namespace: svc.namespace(), ..Default::default() },
        subsets: None,
    });
    new.metadata.labels = Some(labels);
    let annotations = new.metadata.annotations.get_or_insert_with(Default::default);
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    if annotations.is_empty() {
        new.metadata.annotations = None;
    }
    new.subsets = (!subsets.is_empty()).then_some(subsets);
    match current {
        Some(_) => Plan::Update(new),
        None => Plan::Create(new),
    }
}

/// The Service's labels, plus the controller's and (for a headless Service) the headless one.
pub fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if is_service_ip_set(svc) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels
}

/// The subsets, repacked: each pod that belongs in endpoints, at each Service port it has,
/// ready or not ready (everything is "ready" with `publishNotReadyAddresses`).
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.clone().unwrap_or_default();
    let mut subsets = vec![];
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(mut addr) = pod_address(svc, pod) else { continue };
        if should_set_hostname(pod, svc) {
            addr.hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        }
        let ready = tolerate_unready || crate::pods::is_ready(pod);
        if ports.is_empty() {
            // A headless Service may have no ports; others without ports get no addresses.
            if is_headless(svc) {
                subsets.push(subset(addr, ready, None));
            }
            continue;
        }
        for sp in &ports {
            let Some(port) = find_port(pod, sp) else { continue };
            let epp = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol: Some(protocol(sp.protocol.as_deref()).to_string()),
                app_protocol: sp.app_protocol.clone(),
            };
            subsets.push(subset(addr.clone(), ready, Some(epp)));
        }
    }
    repack(&subsets)
}

fn subset(addr: EndpointAddress, ready: bool, port: Option<EndpointPort>) -> EndpointSubset {
    let (addresses, not_ready) = if ready { (Some(vec![addr]), None) } else { (None, Some(vec![addr])) };
    EndpointSubset { addresses, not_ready_addresses: not_ready, ports: port.map(|p| vec![p]) }
}

/// `podToEndpointAddressForService`: the pod's IP of the Service's family, its node and a
/// reference to it.
fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = svc.spec.as_ref();
    let want_v6 = match spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if is_service_ip_set(svc) => is_ipv6(spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("")),
        None => pod_ips(pod).first().is_some_and(|ip| is_ipv6(ip)),
    };
    let ip = pod_ips(pod).into_iter().find(|ip| is_ipv6(ip) == want_v6)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        hostname: None,
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..Default::default()
        }),
    })
}

/// An address's identity across subsets: IP and the UID it points at.
type AddrKey = (String, String);
/// A port's identity: name, number, protocol, app protocol (number -1: "no ports").
type PortKey = (Option<String>, i32, Option<String>, Option<String>);

/// `RepackSubsets`: the canonical layout of a set of subsets — addresses deduplicated by
/// IP+UID (not ready wins over ready), one subset per distinct set of addresses with all
/// the ports they share, everything sorted. Equal contents give equal output.
pub fn repack(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut all: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    for s in subsets {
        let ports: Vec<PortKey> = match s.ports.as_deref() {
            Some(ps) if !ps.is_empty() => {
                ps.iter().map(|p| (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone())).collect()
            }
            _ => vec![(None, -1, None, None)],
        };
        let addrs = s.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = s.not_ready_addresses.iter().flatten().map(|a| (a, false));
        for (addr, ready) in addrs.chain(not_ready) {
            let key = (addr.ip.clone(), addr.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default());
            all.entry(key.clone()).or_insert_with(|| {
                let mut a = addr.clone();
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
                a
            });
            for port in &ports {
                let entry = by_port.entry(port.clone()).or_default().entry(key.clone()).or_insert(ready);
                *entry = *entry && ready;
            }
        }
    }
    let mut by_addrs: BTreeMap<BTreeMap<AddrKey, bool>, Vec<PortKey>> = BTreeMap::new();
    for (port, addrs) in by_port {
        let ports = by_addrs.entry(addrs).or_default();
        if port.1 > 0 {
            ports.push(port);
        }
    }
    by_addrs
        .into_iter()
        .filter_map(|(addrs, ports)| {
            let pick = |want: bool| -> Option<Vec<EndpointAddress>> {
                let v: Vec<EndpointAddress> =
                    addrs.iter().filter(|(_, r)| **r == want).filter_map(|(k, _)| all.get(k).cloned()).collect();
                (!v.is_empty()).then_some(v)
            };
            let (ready, not_ready) = (pick(true), pick(false));
            if ready.is_none() && not_ready.is_none() {
                return None;
            }
            let ports: Vec<EndpointPort> = ports
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| EndpointPort { name, port, protocol, app_protocol })
                .collect();
            Some(EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: (!ports.is_empty()).then_some(ports),
            })
        })
        .collect()
}

/// `truncateEndpoints`: cut the subsets to at most `max` addresses, ready ones first, each
/// subset keeping its share. Returns whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset], max: usize) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let total_ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let total_not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if total_ready + total_not_ready <= max {
        return false;
    }
    let truncate_ready = total_ready > max;
    let (budget, total) = if truncate_ready { (max, total_ready) } else { (max - total_ready, total_not_ready) };
    let mut left = budget;
    for s in subsets.iter_mut() {
        let in_subset = if truncate_ready { count(&s.addresses) } else { count(&s.not_ready_addresses) };
        // Each subset's share of the budget, rounded up; the last ones may get less.
        let share = if total == 0 { 0 } else { (in_subset * budget).div_ceil(total) };
        let take = share.min(left);
        if truncate_ready {
            if let Some(a) = s.addresses.as_mut() {
                a.truncate(take);
            }
            s.not_ready_addresses = None;
            left -= count(&s.addresses);
        } else {
            if let Some(a) = s.not_ready_addresses.as_mut() {
                a.truncate(take);
            }
            left -= count(&s.not_ready_addresses);
        }
        if s.addresses.as_ref().is_some_and(Vec::is_empty) {
            s.addresses = None;
        }
        if s.not_ready_addresses.as_ref().is_some_and(Vec::is_empty) {
            s.not_ready_addresses = None;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util_endpoints::tests::{pod, service, svc_port};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    fn web() -> Service {
        service("web", &[("app", "web")], vec![svc_port("http", 80, Some(IntOrString::String("http".into())))])
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset() {
        let (a, b, c) = (pod("a", "10.0.0.1", true), pod("b", "10.0.0.2", false), pod("c", "", true));
        let subsets = desired_subsets(&web(), &[&a, &b, &c]);
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        assert_eq!(ips(&s.addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&s.not_ready_addresses), vec!["10.0.0.2"]);
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), 8080, Some("TCP")));
        let addr = &s.addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("node-1"));
        let r = addr.target_ref.as_ref().unwrap();
        assert_eq!((r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()), (Some("Pod"), Some("a"), Some("uid-a")));
    }

    #[test]
    fn publish_not_ready_addresses_makes_all_ready_and_keeps_terminating() {
        let mut svc = web();
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let mut t = pod("t", "10.0.0.3", true);
        t.metadata.deletion_timestamp = Some(crate::util_api::now());
        let b = pod("b", "10.0.0.2", false);
        let s = desired_subsets(&svc, &[&b, &t]);
        assert_eq!(ips(&s[0].addresses), vec!["10.0.0.2", "10.0.0.3"]);
        assert!(s[0].not_ready_addresses.is_none());
        // Without it, a terminating pod is left out.
        assert!(desired_subsets(&web(), &[&t]).is_empty());
    }

    #[test]
    fn pods_with_different_ports_get_different_subsets() {
        let svc = web();
        let a = pod("a", "10.0.0.1", true);
        let mut b = pod("b", "10.0.0.2", true);
        b.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 9090;
        let mut c = pod("c", "10.0.0.3", true);
        c.spec.as_mut().unwrap().containers[0].ports = None; // no "http": left out
        let subsets = desired_subsets(&svc, &[&a, &b, &c]);
        assert_eq!(subsets.len(), 2);
        let mut by_port: Vec<(i32, Vec<&str>)> =
            subsets.iter().map(|s| (s.ports.as_ref().unwrap()[0].port, ips(&s.addresses))).collect();
        by_port.sort();
        assert_eq!(by_port, vec![(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])]);
    }

    #[test]
    fn multiple_ports_merge_into_one_subset() {
        let svc = service(
            "web",
            &[("app", "web")],
            vec![svc_port("http", 80, Some(IntOrString::String("http".into()))), svc_port("metrics", 9100, None)],
        );
        let a = pod("a", "10.0.0.1", true);
        let subsets = desired_subsets(&svc, &[&a]);
        assert_eq!(subsets.len(), 1);
        let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, vec![8080, 9100]);
    }

    #[test]
    fn headless_without_ports_lists_addresses_without_ports() {
        let mut svc = service("h", &[("app", "web")], vec![]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let a = pod("a", "10.0.0.1", true);
        let s = desired_subsets(&svc, &[&a]);
        assert_eq!(s.len(), 1);
        assert!(s[0].ports.is_none());
        assert_eq!(ips(&s[0].addresses), vec!["10.0.0.1"]);
        // A Service with a cluster IP but no ports gets nothing.
        let plain = service("p", &[("app", "web")], vec![]);
        assert!(desired_subsets(&plain, &[&a]).is_empty());
    }

    #[test]
    fn hostname_set_for_subdomain_pods() {
        let svc = web();
        let mut a = pod("a", "10.0.0.1", true);
        a.spec.as_mut().unwrap().hostname = Some("a-host".into());
        a.spec.as_mut().unwrap().subdomain = Some("web".into());
        let s = desired_subsets(&svc, &[&a]);
        assert_eq!(s[0].addresses.as_ref().unwrap()[0].hostname.as_deref(), Some("a-host"));
    }

    #[test]
    fn address_family_follows_the_service() {
        let mut svc = web();
        svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        let mut a = pod("a", "10.0.0.1", true);
        a.status.as_mut().unwrap().pod_ips = Some(vec![
            k8s_openapi::api::core::v1::PodIP { ip: "10.0.0.1".into() },
            k8s_openapi::api::core::v1::PodIP { ip: "fd00::1".into() },
        ]);
        let s = desired_subsets(&svc, &[&a]);
        assert_eq!(ips(&s[0].addresses), vec!["fd00::1"]);
    }

    #[test]
    fn repack_is_canonical_and_not_ready_wins() {
        let (a, b) = (pod("a", "10.0.0.1", true), pod("b", "10.0.0.2", true));
        let one = desired_subsets(&web(), &[&a, &b]);
        let two = desired_subsets(&web(), &[&b, &a]);
        assert_eq!(one, two);
        assert_eq!(repack(&one), one, "repacking is idempotent");
        // The same address listed ready and not ready for one port ends up not ready.
        let mut split = one[0].clone();
        split.not_ready_addresses = split.addresses.clone().map(|mut v| {
            v.truncate(1);
            v
        });
        let packed = repack(&[split]);
        assert_eq!(packed.len(), 1);
        assert_eq!(ips(&packed[0].addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&packed[0].not_ready_addresses), vec!["10.0.0.1"]);
    }

    #[test]
    fn plan_creates_then_is_unchanged_then_updates() {
        let svc = web();
        let a = pod("a", "10.0.0.1", true);
        let Plan::Create(created) = plan(&svc, &[&a], None) else { panic!("expected create") };
        assert_eq!(created.metadata.name.as_deref(), Some("web"));
        assert_eq!(created.labels().get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert!(!created.labels().contains_key(LABEL_HEADLESS));
        let mut stored = created.clone();
        stored.metadata.resource_version = Some("5".into());
        assert_eq!(plan(&svc, &[&a], Some(&stored)), Plan::Unchanged);
        let b = pod("b", "10.0.0.2", true);
        let Plan::Update(updated) = plan(&svc, &[&a, &b], Some(&stored)) else { panic!("expected update") };
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(ips(&updated.subsets.as_ref().unwrap()[0].addresses), vec!["10.0.0.1", "10.0.0.2"]);
        // Labels follow the Service.
        let mut relabelled = svc.clone();
        relabelled.metadata.labels = Some(crate::util_endpoints::tests::labels(&[("tier", "front")]));
        let Plan::Update(u) = plan(&relabelled, &[&a], Some(&stored)) else { panic!("expected update") };
        assert_eq!(u.labels().get("tier").map(String::as_str), Some("front"));
    }

    #[test]
    fn plan_with_no_pods_has_no_subsets_and_headless_label() {
        let mut svc = web();
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let Plan::Create(e) = plan(&svc, &[], None) else { panic!() };
        assert!(e.subsets.is_none());
        assert_eq!(e.labels().get(LABEL_HEADLESS).map(String::as_str), Some(""));
    }

    fn addrs(prefix: &str, n: usize) -> Option<Vec<EndpointAddress>> {
        Some((0..n).map(|i| EndpointAddress { ip: format!("{prefix}{i}"), ..Default::default() }).collect())
    }

    #[test]
    fn truncation_keeps_ready_first_and_shares() {
        let mut s = vec![
            EndpointSubset { addresses: addrs("a", 600), not_ready_addresses: addrs("n", 100), ports: None },
            EndpointSubset { addresses: addrs("b", 300), not_ready_addresses: addrs("m", 100), ports: None },
        ];
        assert!(truncate(&mut s, 1000));
        let total: usize = s.iter().map(|x| ips(&x.addresses).len() + ips(&x.not_ready_addresses).len()).sum();
        assert_eq!(total, 1000);
        assert_eq!(ips(&s[0].addresses).len(), 600);
        assert_eq!(ips(&s[1].addresses).len(), 300);
        assert_eq!(ips(&s[0].not_ready_addresses).len(), 50);
        assert_eq!(ips(&s[1].not_ready_addresses).len(), 50);

        let mut big = vec![
            EndpointSubset { addresses: addrs("a", 1500), not_ready_addresses: addrs("n", 10), ports: None },
            EndpointSubset { addresses: addrs("b", 500), not_ready_addresses: None, ports: None },
        ];
        assert!(truncate(&mut big, 1000));
        assert_eq!(ips(&big[0].addresses).len(), 750);
        assert_eq!(ips(&big[1].addresses).len(), 250);
        assert!(big[0].not_ready_addresses.is_none());

        let mut small = vec![EndpointSubset { addresses: addrs("a", 3), not_ready_addresses: None, ports: None }];
        assert!(!truncate(&mut small, 1000));
    }

    #[test]
    fn plan_marks_over_capacity() {
        let svc = web();
        let pods: Vec<Pod> =
            (0..1001).map(|i| pod(&format!("p{i:04}"), &format!("10.1.{}.{}", i / 250, i % 250), true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let Plan::Create(e) = plan(&svc, &refs, None) else { panic!() };
        assert_eq!(e.annotations().get(ANNOTATION_OVER_CAPACITY).map(String::as_str), Some("truncated"));
        assert_eq!(ips(&e.subsets.as_ref().unwrap()[0].addresses).len(), MAX_CAPACITY);
        assert_eq!(plan(&svc, &refs, Some(&e)), Plan::Unchanged, "a truncated object is not rewritten every sync");
    }
}
