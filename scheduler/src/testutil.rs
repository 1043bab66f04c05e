//! Builders for pods and nodes in unit tests.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::{Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint, Toleration},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use crate::{
    node_info::{NodeData, NodeInfo},
    pod_info::PodInfo,
    snapshot::Snapshot,
};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

pub fn container(requests: &[(&str, &str)]) -> Container {
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements { requests: Some(quantities(requests)), ..Default::default() }),
        ..Default::default()
    }
}

/// A pending pod `ns/name` with one container requesting `requests`.
pub fn pod(ns: &str, name: &str, requests: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{ns}-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec { containers: vec![container(requests)], ..Default::default() }),
        status: None,
    }
}

pub fn with_labels(mut p: Pod, l: &[(&str, &str)]) -> Pod {
    p.metadata.labels = Some(labels(l));
    p
}

pub fn spec_mut(p: &mut Pod) -> &mut PodSpec {
    p.spec.get_or_insert_with(Default::default)
}

pub fn info(p: &Pod) -> PodInfo {
    PodInfo::from_pod(p)
}

/// A bound pod's info.
pub fn bound(p: Pod, node: &str) -> Arc<PodInfo> {
    let mut p = p;
    spec_mut(&mut p).node_name = Some(node.into());
    Arc::new(PodInfo::from_pod(&p))
}

/// A node with `allocatable` (add `("pods", "110")` yourself if wanted) and labels.
pub fn node(name: &str, allocatable: &[(&str, &str)], l: &[(&str, &str)]) -> Node {
    let mut all = labels(l);
    all.entry("kubernetes.io/hostname".into()).or_insert_with(|| name.to_string());
    Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(all), ..Default::default() },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus { allocatable: Some(quantities(allocatable)), ..Default::default() }),
    }
}

pub fn node_data(n: &Node) -> NodeData {
    NodeData::from_node(n)
}

/// A standard 4-cpu, 8Gi, 110-pod node.
pub fn std_node(name: &str, l: &[(&str, &str)]) -> Node {
    node(name, &[("cpu", "4"), ("memory", "8Gi"), ("pods", "110")], l)
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some(value.into()).filter(|v: &String| !v.is_empty()),
        effect: effect.into(),
        time_added: None,
    }
}

pub fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    Toleration { key: opt(key), operator: opt(op), value: opt(value), effect: opt(effect), toleration_seconds: None }
}

/// A NodeInfo for `node` holding `pods`.
pub fn node_info(n: &Node, pods: &[Arc<PodInfo>]) -> NodeInfo {
    let data = node_data(n);
    let mut ni = NodeInfo::new(&data.name);
    ni.node = Some(Arc::new(data));
    for p in pods {
        ni.add_pod(p.clone());
    }
    ni
}

/// A snapshot of `nodes` and bound `pods`.
pub fn snapshot(nodes: &[Node], pods: &[Arc<PodInfo>]) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(node_data(n));
    }
    for p in pods {
        s.upsert_pod(p.clone());
    }
    s
}
