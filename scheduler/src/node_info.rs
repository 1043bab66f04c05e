//! Per-node state: [`NodeData`] (what the scheduler needs from a Node object) and
//! [`NodeInfo`] (that plus the aggregates of the pods on the node, kept incrementally).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::{
    pod_info::{HostPort, PodInfo},
    quantity,
    resources::Resources,
};

/// A Node, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeData {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// `status.allocatable.pods`.
    pub allowed_pods: i64,
}

impl NodeData {
    pub fn from_node(node: &Node) -> NodeData {
        let spec = node.spec.as_ref();
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        NodeData {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: allocatable.map(Resources::from_list).unwrap_or_default(),
            allowed_pods: allocatable.and_then(|a| a.get("pods")).and_then(|q| quantity::value(&q.0)).unwrap_or(0),
        }
    }
}

/// A node and the pods assigned (or assumed) to it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods name a node the watch has not delivered (or has deleted).
    pub node: Option<Arc<NodeData>>,
    pub pods: Vec<Arc<PodInfo>>,
    /// The sum of the pods' requests.
    pub requested: Resources,
    /// The sum of the pods' cpu and memory requests with defaults for unset ones.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    /// Pods with a podAffinity or podAntiAffinity stanza.
    pub pods_with_affinity: usize,
    /// Pods with required pod anti-affinity.
    pub pods_with_required_anti_affinity: usize,
    /// Host ports in use (one entry per pod port).
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo { name: name.to_string(), ..Default::default() }
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests.requests);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_add(pod.requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_add(pod.requests.non_zero_memory);
        if pod.affinity.any {
            self.pods_with_affinity += 1;
        }
        if !pod.affinity.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Remove the pod with `uid`; returns it if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests.requests);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_sub(pod.requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_sub(pod.requests.non_zero_memory);
        if pod.affinity.any {
            self.pods_with_affinity = self.pods_with_affinity.saturating_sub(1);
        }
        if !pod.affinity.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity = self.pods_with_required_anti_affinity.saturating_sub(1);
        }
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        Some(pod)
    }

    /// The node's labels (empty while the node is unknown).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.as_deref().map(|n| &n.labels).unwrap_or(&EMPTY)
    }
}
