//! What a simulated Node looks like: its object at registration, the merge patch that
//! takes over an existing one, and its status (written through `nodes/status`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

use super::SimConfig;

/// The label every simulated node carries (`type=keelson-sim`).
pub const SIM_LABEL: (&str, &str) = ("type", "keelson-sim");
/// The only address a simulated node has: nothing is ever sent anywhere else.
pub const NODE_IP: &str = "127.0.0.1";
/// The kubelet port nodes report when the sim serves no kubelet endpoint.
pub const KUBELET_PORT: i32 = 10250;
pub const KUBELET_VERSION: &str = "v1.33.0-keelson-sim";
pub const RUNTIME_VERSION: &str = "keelson-sim://0";
const EPHEMERAL_STORAGE: &str = "1Ti";

/// Taint keys the control plane manages (node lifecycle, cloud provider): a take-over
/// keeps them, since the sim does not own them.
const SYSTEM_TAINT_PREFIXES: &[&str] = &["node.kubernetes.io/", "node.cloudprovider.kubernetes.io/"];

/// The node's labels: the defaults, then `cfg.labels`, and always its hostname.
pub fn labels(cfg: &SimConfig, name: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        (SIM_LABEL.0.to_string(), SIM_LABEL.1.to_string()),
    ]);
    l.extend(cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l.insert("kubernetes.io/hostname".into(), name.to_string());
    l
}

/// The Node to create (status is written separately, through `nodes/status`).
pub fn node(cfg: &SimConfig, name: &str) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels(cfg, name)), ..Default::default() },
        spec: Some(NodeSpec { taints: (!cfg.taints.is_empty()).then(|| cfg.taints.clone()), ..Default::default() }),
        status: None,
    }
}

/// The taints a taken-over node should have: `cfg.taints`, plus the control plane's own
/// (unless `cfg.taints` has one with the same key and effect).
pub fn desired_taints(cfg: &SimConfig, existing: &[Taint]) -> Vec<Taint> {
    let mut out = cfg.taints.clone();
    for t in existing {
        let system = SYSTEM_TAINT_PREFIXES.iter().any(|p| t.key.starts_with(p));
        if system && !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t.clone());
        }
    }
    out
}

/// The merge patch that makes an existing Node ours (our labels, our taints), pinned to the
/// resourceVersion it was read at; `None` if it already is.
pub fn takeover_patch(cfg: &SimConfig, name: &str, existing: &Node) -> Option<Value> {
    let want = labels(cfg, name);
    let have = existing.metadata.labels.clone().unwrap_or_default();
    let labels_ok = want.iter().all(|(k, v)| have.get(k) == Some(v));
    let have_taints = existing.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let taints = desired_taints(cfg, &have_taints);
    if labels_ok && taints == have_taints {
        return None;
    }
    Some(json!({
        "metadata": {"resourceVersion": existing.metadata.resource_version, "labels": want},
        "spec": {"taints": taints},
    }))
}

/// `(type, status, reason, message)` of the conditions the sim reports.
const CONDITIONS: &[(&str, &str, &str, &str)] = &[
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
];

/// The node's conditions with a fresh heartbeat: ours (keeping `lastTransitionTime` when
/// the status did not change) and any others it has, untouched.
pub fn conditions(existing: &[NodeCondition], now: Timestamp) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = CONDITIONS
        .iter()
        .map(|&(type_, status, reason, message)| {
            let old = existing.iter().find(|c| c.type_ == type_);
            let since = match old {
                Some(c) if c.status == status => c.last_transition_time.clone().unwrap_or(Time(now)),
                _ => Time(now),
            };
            NodeCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(since),
            }
        })
        .collect();
    out.extend(existing.iter().filter(|c| !CONDITIONS.iter().any(|(t, ..)| *t == c.type_)).cloned());
    out
}

/// Whether the node's `Ready` condition is `True`.
pub fn is_ready(conditions: &[NodeCondition]) -> bool {
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The port of the node's kubelet endpoint: the sim's server's (all nodes share it; [`run`]
/// sets the port it bound before anything is registered), else [`KUBELET_PORT`].
///
/// [`run`]: super::run
pub fn kubelet_port(cfg: &SimConfig) -> i32 {
    cfg.kubelet_port.filter(|p| *p != 0).map_or(KUBELET_PORT, i32::from)
}

/// The node's whole status.
pub fn status(cfg: &SimConfig, name: &str, existing: &[NodeCondition], now: Timestamp) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", &cfg.cpu),
        ("memory", &cfg.memory),
        ("pods", &cfg.pods),
        ("ephemeral-storage", &EPHEMERAL_STORAGE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.trim().to_string())))
    .collect();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(existing, now)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: NODE_IP.into() },
            NodeAddress { type_: "Hostname".into(), address: name.into() },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: kubelet_port(cfg) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: labels(cfg, name).get("kubernetes.io/arch").cloned().unwrap_or_else(|| "amd64".into()),
            operating_system: "linux".into(),
            os_image: "keelson simulated node".into(),
            kernel_version: "keelson-sim".into(),
            kubelet_version: KUBELET_VERSION.into(),
            container_runtime_version: RUNTIME_VERSION.into(),
            machine_id: name.into(),
            system_uuid: name.into(),
            boot_id: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `nodes/status` merge patch carrying [`status`].
pub fn status_patch(cfg: &SimConfig, name: &str, existing: &[NodeCondition], now: Timestamp) -> Value {
    json!({ "status": status(cfg, name, existing, now) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            labels: BTreeMap::from([("zone".into(), "a".into()), ("kubernetes.io/hostname".into(), "evil".into())]),
            taints: vec![Taint { key: "sim".into(), effect: "NoSchedule".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_new_node_has_our_labels_and_taints() {
        let n = node(&cfg(), "sim-3");
        let l = n.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "sim-3");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], "amd64");
        assert_eq!(l["type"], "keelson-sim");
        assert_eq!(l["zone"], "a");
        assert_eq!(n.spec.unwrap().taints.unwrap()[0].key, "sim");
        assert!(n.status.is_none());
        assert_eq!(node(&SimConfig::default(), "x").spec.unwrap().taints, None);
    }

    #[test]
    fn the_status_reports_capacity_readiness_and_only_loopback() {
        let s = status(&cfg(), "sim-3", &[], t(100));
        let cap = s.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "32");
        assert_eq!(cap["memory"].0, "256Gi");
        assert_eq!(cap["pods"].0, "110");
        assert!(cap.contains_key("ephemeral-storage"));
        assert_eq!(s.allocatable.unwrap(), cap);
        let conds = s.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
        assert_eq!(ready.message.as_deref(), Some("kubelet is posting ready status"));
        for p in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(conds.iter().find(|c| c.type_ == p).unwrap().status, "False");
        }
        let addrs = s.addresses.unwrap();
        assert_eq!(addrs[0].address, "127.0.0.1");
        assert_eq!((addrs[1].type_.as_str(), addrs[1].address.as_str()), ("Hostname", "sim-3"));
        assert_eq!(s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
        let info = s.node_info.unwrap();
        assert_eq!(info.kubelet_version, "v1.33.0-keelson-sim");
        assert_eq!(info.container_runtime_version, "keelson-sim://0");
        assert_eq!((info.operating_system.as_str(), info.architecture.as_str()), ("linux", "amd64"));
        let v = status_patch(&cfg(), "sim-3", &[], t(100));
        assert_eq!(v.pointer("/status/conditions/3/type"), Some(&json!("Ready")));
    }

    #[test]
    fn nodes_report_the_port_of_the_sims_kubelet_endpoint() {
        let served = SimConfig { kubelet_port: Some(41234), ..cfg() };
        let s = status(&served, "sim-3", &[], t(100));
        assert_eq!(s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 41234);
        assert_eq!(s.addresses.unwrap()[0].address, "127.0.0.1");
        assert_eq!(kubelet_port(&SimConfig { kubelet_port: Some(0), ..cfg() }), KUBELET_PORT, "not bound yet");
    }

    #[test]
    fn heartbeats_keep_transition_times_and_foreign_conditions() {
        let first = conditions(&[], t(100));
        let mut seen = first.clone();
        seen.push(NodeCondition { type_: "NetworkUnavailable".into(), status: "False".into(), ..Default::default() });
        // The node lifecycle controller marked it Unknown.
        seen[3].status = "Unknown".into();
        let next = conditions(&seen, t(200));
        assert_eq!(next[0].last_transition_time, Some(Time(t(100))), "unchanged: kept");
        assert_eq!(next[0].last_heartbeat_time, Some(Time(t(200))));
        assert_eq!(next[3].last_transition_time, Some(Time(t(200))), "Unknown → True: a transition");
        assert_eq!(next.len(), 5);
        assert_eq!(next[4].type_, "NetworkUnavailable");
        assert!(is_ready(&next) && !is_ready(&seen));
    }

    #[test]
    fn a_takeover_sets_our_labels_and_taints_but_keeps_the_control_planes() {
        let c = cfg();
        let mut existing = node(&c, "sim-0");
        existing.metadata.resource_version = Some("7".into());
        assert_eq!(takeover_patch(&c, "sim-0", &existing), None, "already ours");
        existing.metadata.labels.as_mut().unwrap().insert("extra".into(), "kept".into());
        assert_eq!(takeover_patch(&c, "sim-0", &existing), None, "other labels are fine");
        let unreachable =
            Taint { key: "node.kubernetes.io/unreachable".into(), effect: "NoExecute".into(), ..Default::default() };
        let stale = Taint { key: "old-sim".into(), effect: "NoSchedule".into(), ..Default::default() };
        existing.spec.as_mut().unwrap().taints = Some(vec![stale, unreachable.clone()]);
        existing.metadata.labels.as_mut().unwrap().remove("type");
        let p = takeover_patch(&c, "sim-0", &existing).unwrap();
        assert_eq!(p.pointer("/metadata/resourceVersion"), Some(&json!("7")));
        assert_eq!(p.pointer("/metadata/labels/type"), Some(&json!("keelson-sim")));
        let taints: Vec<Taint> = serde_json::from_value(p.pointer("/spec/taints").unwrap().clone()).unwrap();
        assert_eq!(taints, vec![c.taints[0].clone(), unreachable]);
    }
}
