//! The pieces of an EndpointSlice: one endpoint per pod, the ports, the labels, a new slice
//! (k8s.io/endpointslice `utils.go`). Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Pod, Service},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{api::ObjectMeta, ResourceExt};

use crate::util_endpoints::{
    find_port, is_headless, is_ipv6, is_service_ip_set, pod_ips, protocol, should_set_hostname,
};

/// The Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Who manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller, as `LABEL_MANAGED_BY`'s value.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set on the slices of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The zone label of a Node.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

pub const IPV4: &str = "IPv4";
pub const IPV6: &str = "IPv6";

/// The address types a Service's slices have (`getAddressTypesForService`): its IP families,
/// else its cluster IP's family, else (headless, not yet defaulted) both.
pub fn address_types(svc: &Service) -> Vec<&'static str> {
    let spec = svc.spec.as_ref();
    let mut types: Vec<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IPV4),
            "IPv6" => Some(IPV6),
            _ => None,
        })
        .collect();
    if types.is_empty() {
        if is_service_ip_set(svc) {
            let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
            types.push(if is_ipv6(ip) { IPV6 } else { IPV4 });
        } else {
            types = vec![IPV4, IPV6];
        }
    }
    types.sort_unstable();
    types.dedup();
    types
}

/// `getEndpointPorts`: the Service's ports as this pod serves them (ports it lacks are left
/// out); none for a headless Service without ports.
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    ports
        .iter()
        .filter_map(|sp| {
            let port = find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol(sp.protocol.as_deref()).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// `podToEndpoint`: the pod's addresses of `address_type`, its conditions (serving = Ready;
/// ready = serving and not terminating, or always with `publishNotReadyAddresses`), a
/// reference to it, its node and the node's zone, and its hostname for its subdomain Service.
pub fn pod_to_endpoint(pod: &Pod, zone: Option<&str>, svc: &Service, address_type: &str) -> Endpoint {
    let serving = crate::pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let want_v6 = address_type == IPV6;
    let addresses = pod_ips(pod)
        .into_iter()
        .filter(|ip| is_ipv6(ip) == want_v6)
        .map(|ip| ip.parse::<std::net::IpAddr>().map(|a| a.to_string()).unwrap_or_else(|_| ip.to_string()))
        .collect();
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: should_set_hostname(pod, svc).then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone())).flatten(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..Default::default()
        }),
        zone: zone.filter(|z| !z.is_empty()).map(str::to_string),
        deprecated_topology: None,
        hints: None,
    }
}

/// An endpoint's identity within a Service (`hashEndpoint`): its addresses, hostname and the
/// pod it points at.
pub type EndpointKey = (Vec<String>, String, String, String);

pub fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let r = ep.target_ref.as_ref();
    (
        addresses,
        ep.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// `EndpointsEqualBeyondHash`: node, zone, conditions and target (without its
/// resourceVersion) are equal.
pub fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let cond = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut r| {
            r.resource_version = None;
            r
        })
    };
    a.node_name == b.node_name && a.zone == b.zone && cond(a) == cond(b) && target(a) == target(b)
}

/// A set of ports' identity, whatever their order.
pub type PortKey = Vec<(String, i32, String, String)>;

pub fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

fn is_reserved_label(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == LABEL_HEADLESS
}

fn unreserved(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().filter(|(k, _)| !is_reserved_label(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `setEndpointSliceLabels`: the slice's labels (the Service's, less the reserved ones, plus
/// the headless, service-name and managed-by labels), and whether the Service's own labels
/// differ from those on `slice`.
pub fn slice_labels(slice: &EndpointSlice, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let mut labels = unreserved(svc.labels());
    let changed = unreserved(slice.labels()) != labels;
    if is_service_ip_set(svc) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

/// The Service as the controlling owner of its slices.
pub fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `ownedBy`: the slice names this very Service (by UID) as an owner.
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.uid().unwrap_or_default();
    slice.owner_references().iter().any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// `newEndpointSlice`: an empty slice of `svc` for `ports` and `address_type`, to be named by
/// the server from `<service>-`.
pub fn new_slice(svc: &Service, ports: &[EndpointPort], address_type: &str) -> EndpointSlice {
    let mut slice = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            owner_references: Some(vec![owner_ref(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: vec![],
        ports: Some(ports.to_vec()),
    };
    slice.metadata.labels = Some(slice_labels(&slice, svc).0);
    slice
}

/// `placeholderSliceCompare`: the slices are the same empty placeholder (namespace, labels,
/// owners, address type, no endpoints, no ports).
pub fn same_placeholder(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let owners = |s: &EndpointSlice| {
        s.owner_references()
            .iter()
            .map(|o| {
                (
                    o.api_version.clone(),
                    o.kind.clone(),
                    o.name.clone(),
                    o.uid.clone(),
                    o.controller,
                    o.block_owner_deletion,
                )
            })
            .collect::<Vec<_>>()
    };
    a.metadata.namespace == b.metadata.namespace
        && a.labels() == b.labels()
        && owners(a) == owners(b)
        && a.address_type == b.address_type
        && a.endpoints.is_empty()
        && b.endpoints.is_empty()
        && a.ports.as_ref().is_none_or(Vec::is_empty)
        && b.ports.as_ref().is_none_or(Vec::is_empty)
}

/// Whether `svc` is headless and has no ports (its endpoints then carry none).
pub fn headless_without_ports(svc: &Service) -> bool {
    is_headless(svc) && svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util_endpoints::tests::{labels, pod, service, svc_port};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn web() -> Service {
        service("web", &[("app", "web")], vec![svc_port("http", 80, Some(IntOrString::String("http".into())))])
    }

    #[test]
    fn address_types_from_families_cluster_ip_or_both() {
        let mut svc = web();
        assert_eq!(address_types(&svc), vec![IPV4]);
        svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        assert_eq!(address_types(&svc), vec![IPV4, IPV6]);
        svc.spec.as_mut().unwrap().ip_families = None;
        svc.spec.as_mut().unwrap().cluster_ip = Some("fd00::10".into());
        assert_eq!(address_types(&svc), vec![IPV6]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(address_types(&svc), vec![IPV4, IPV6]);
    }

    #[test]
    fn endpoint_conditions_and_fields() {
        let svc = web();
        let mut p = pod("a", "10.0.0.1", true);
        let ep = pod_to_endpoint(&p, Some("z1"), &svc, IPV4);
        assert_eq!(ep.addresses, vec!["10.0.0.1"]);
        let c = ep.conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(true), Some(true), Some(false)));
        assert_eq!(ep.zone.as_deref(), Some("z1"));
        assert_eq!(ep.node_name.as_deref(), Some("node-1"));
        assert_eq!(ep.target_ref.as_ref().unwrap().uid.as_deref(), Some("uid-a"));
        assert!(pod_to_endpoint(&p, None, &svc, IPV6).addresses.is_empty());

        p.metadata.deletion_timestamp = Some(crate::util_api::now());
        let c = pod_to_endpoint(&p, None, &svc, IPV4).conditions.unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let unready = pod("b", "10.0.0.2", false);
        let c = pod_to_endpoint(&unready, None, &publish, IPV4).conditions.unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(true), Some(false), Some(false)));
    }

    #[test]
    fn ports_resolve_per_pod() {
        let svc = service(
            "web",
            &[("app", "web")],
            vec![svc_port("http", 80, Some(IntOrString::String("http".into()))), svc_port("", 81, None)],
        );
        let p = pod("a", "10.0.0.1", true);
        let ports = endpoint_ports(&svc, &p);
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), Some(8080)));
        assert_eq!((ports[1].name.as_deref(), ports[1].port), (Some(""), Some(81)));
        let mut other = ports.clone();
        other.reverse();
        assert_eq!(port_key(&ports), port_key(&other));
    }

    #[test]
    fn labels_keep_reserved_ones_ours() {
        let mut svc = web();
        svc.metadata.labels = Some(labels(&[("tier", "front"), (LABEL_MANAGED_BY, "me")]));
        let slice = new_slice(&svc, &[], IPV4);
        let l = slice.labels();
        assert_eq!(l.get("tier").map(String::as_str), Some("front"));
        assert_eq!(l.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(l.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"));
        assert!(!l.contains_key(LABEL_HEADLESS));
        assert!(!slice_labels(&slice, &svc).1, "unchanged");
        svc.metadata.labels = Some(labels(&[("tier", "back")]));
        assert!(slice_labels(&slice, &svc).1);
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        let owner = &slice.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
            ("Service", Some(true), Some(true))
        );
        assert!(owned_by(&slice, &svc));
    }

    #[test]
    fn keys_ignore_what_they_should() {
        let svc = web();
        let p = pod("a", "10.0.0.1", true);
        let a = pod_to_endpoint(&p, None, &svc, IPV4);
        let mut b = a.clone();
        b.target_ref.as_mut().unwrap().resource_version = Some("7".into());
        assert_eq!(endpoint_key(&a), endpoint_key(&b));
        assert!(endpoints_equal_beyond_key(&a, &b));
        b.zone = Some("z".into());
        assert!(!endpoints_equal_beyond_key(&a, &b));
    }
}
