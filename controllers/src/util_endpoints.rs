//! What the endpoints and endpointslice controllers share: which pods a Service selects,
//! which of them count and how (readiness, ports, hostname), and the pod watch as a trigger
//! of the Services a pod was or is selected by (k8s.io/endpointslice/util).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use k8s_openapi::{
    api::core::v1::{Pod, Service, ServicePort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
    ResourceExt,
};

use crate::util_runtime::{trigger_with, Events, Trigger};

/// The selector a Service's endpoints come from: `None` for Services that get no endpoints
/// from the controllers (no or empty selector, or `type: ExternalName`).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether every `key=value` of `selector` is among `labels`.
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pods of `svc`'s namespace its selector matches (none for a Service without one).
pub fn selected_pods(pods: &Store<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = service_selector(svc) else { return vec![] };
    let ns = svc.namespace().unwrap_or_default();
    let mut out =
        pods.state_filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && selector_matches(selector, p.labels()));
    out.sort_by_key(|p| p.name_any());
    out
}

/// `Succeeded` or `Failed`: its containers are done for good.
pub fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else { return vec![] };
    let ips: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).filter(|ip| !ip.is_empty()).collect();
    if !ips.is_empty() {
        return ips;
    }
    status.pod_ip.as_deref().filter(|ip| !ip.is_empty()).into_iter().collect()
}

/// `ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless `include_terminating`)
/// not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if is_pod_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// `ShouldSetHostname`: the pod has a hostname and its subdomain is this Service.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("");
    !hostname.is_empty() && subdomain == svc.name_any() && svc.namespace() == pod.namespace()
}

/// `spec.clusterIP` is an address (not empty, not `None`): the Service is not headless.
pub fn is_service_ip_set(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// The Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether an address is IPv6 (by its syntax; unparseable strings count as IPv4).
pub fn is_ipv6(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6())
}

/// A port's protocol, defaulted like the API server does.
pub fn protocol(p: Option<&str>) -> &str {
    p.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// `FindPort`: the pod's port for a Service port — the number itself, or the named
/// container port of the same protocol (containers, then sidecar init containers).
pub fn find_port(pod: &Pod, svc_port: &ServicePort) -> Option<i32> {
    let name = match &svc_port.target_port {
        None => return Some(svc_port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(s)) => s.as_str(),
    };
    let proto = protocol(svc_port.protocol.as_deref());
    let spec = pod.spec.as_ref()?;
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && protocol(p.protocol.as_deref()) == proto)
        .map(|p| p.container_port)
}

/// The Services of the pod's namespace whose selector matches the pod's labels.
pub fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace();
    let mut out: Vec<ObjectRef<Service>> = services
        .state()
        .iter()
        .filter(|s| s.namespace() == ns)
        .filter(|s| service_selector(s).is_some_and(|sel| selector_matches(sel, pod.labels())))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The pod watch as a trigger of Services: each pod event reconciles the Services that select
/// the pod now and those that selected it before (a relabelled pod leaves one); a relist
/// reconciles every Service (a pod deleted while the watch was down sends no event).
pub fn pod_trigger(events: Events<Pod>, services: Store<Service>) -> Trigger<Service> {
    let memberships = Mutex::new(HashMap::<ObjectRef<Pod>, Vec<ObjectRef<Service>>>::new());
    trigger_with(events, move |ev| {
        let (pod, deleted) = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
            watcher::Event::Delete(p) => (p, true),
            watcher::Event::InitDone => {
                return services.state().iter().map(|s| ObjectRef::from_obj(s.as_ref())).collect();
            }
            watcher::Event::Init => return vec![],
        };
        let now = services_selecting(&services, &pod);
        let key = ObjectRef::from_obj(&pod);
        let mut map = memberships.lock().unwrap_or_else(|e| e.into_inner());
        let before = if deleted || now.is_empty() { map.remove(&key) } else { map.insert(key, now.clone()) };
        let mut all = now;
        for s in before.into_iter().flatten() {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        all
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec};
    use kube::api::ObjectMeta;

    pub fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    pub fn service(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels(selector)),
                ports: Some(ports),
                cluster_ip: Some("10.96.0.10".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub fn svc_port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: target,
            ..Default::default()
        }
    }

    pub fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
                pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn selector_rules() {
        let mut svc = service("s", &[("app", "web")], vec![]);
        assert!(service_selector(&svc).is_some());
        svc.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(service_selector(&svc).is_none(), "empty selector selects nothing");
        svc.spec.as_mut().unwrap().selector = None;
        assert!(service_selector(&svc).is_none());
        let mut ext = service("e", &[("app", "web")], vec![]);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(service_selector(&ext).is_none());
        assert!(selector_matches(&labels(&[("a", "1")]), &labels(&[("a", "1"), ("b", "2")])));
        assert!(!selector_matches(&labels(&[("a", "1")]), &labels(&[("a", "2")])));
    }

    #[test]
    fn pod_membership_rules() {
        let p = pod("p", "10.0.0.1", true);
        assert!(should_pod_be_in_endpoints(&p, false));
        let no_ip = pod("p", "", true);
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        let mut done = pod("p", "10.0.0.1", true);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_pod_be_in_endpoints(&done, true));
        let mut terminating = pod("p", "10.0.0.1", true);
        terminating.metadata.deletion_timestamp = Some(crate::util_api::now());
        assert!(!should_pod_be_in_endpoints(&terminating, false));
        assert!(should_pod_be_in_endpoints(&terminating, true));
        let mut only_pod_ip = pod("p", "10.0.0.1", true);
        only_pod_ip.status.as_mut().unwrap().pod_ips = None;
        assert_eq!(pod_ips(&only_pod_ip), vec!["10.0.0.1"]);
    }

    #[test]
    fn finds_numbered_and_named_ports() {
        let p = pod("p", "10.0.0.1", true);
        assert_eq!(find_port(&p, &svc_port("a", 80, None)), Some(80));
        assert_eq!(find_port(&p, &svc_port("a", 80, Some(IntOrString::Int(9090)))), Some(9090));
        assert_eq!(find_port(&p, &svc_port("a", 80, Some(IntOrString::String("http".into())))), Some(8080));
        assert_eq!(find_port(&p, &svc_port("a", 80, Some(IntOrString::String("nope".into())))), None);
        let mut udp = svc_port("a", 80, Some(IntOrString::String("http".into())));
        udp.protocol = Some("UDP".into());
        assert_eq!(find_port(&p, &udp), None, "a named port must match the protocol too");
    }

    #[test]
    fn hostname_only_for_the_subdomain_service() {
        let svc = service("web", &[("app", "web")], vec![]);
        let mut p = pod("p", "10.0.0.1", true);
        assert!(!should_set_hostname(&p, &svc));
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("h".into());
        spec.subdomain = Some("web".into());
        assert!(should_set_hostname(&p, &svc));
        p.spec.as_mut().unwrap().subdomain = Some("other".into());
        assert!(!should_set_hostname(&p, &svc));
    }

    #[test]
    fn headless_and_families() {
        let mut svc = service("s", &[], vec![]);
        assert!(is_service_ip_set(&svc) && !is_headless(&svc));
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(!is_service_ip_set(&svc) && is_headless(&svc));
        assert!(is_ipv6("fd00::1") && !is_ipv6("10.0.0.1") && !is_ipv6("garbage"));
    }
}
