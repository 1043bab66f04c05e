//! The [`Snapshot`]: every node with the aggregates of its pods, kept incrementally from
//! the watches plus the pods this scheduler has assumed onto nodes while their bindings are
//! in flight. The scheduling loop owns it and applies every event between two scheduling
//! decisions, so a decision always sees a consistent state without copying anything.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use crate::{
    node_info::{NodeData, NodeInfo},
    pod_info::PodInfo,
    volumes::VolumeCache,
};

/// A pod counted against a node.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub info: Arc<PodInfo>,
    slot: usize,
    /// Set while the pod is only assumed (bound by us, not yet seen bound by the watch).
    pub assumed: Option<Assumed>,
}

/// An assumption's lifetime: until the binding finishes there is no deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Assumed {
    pub deadline: Option<Instant>,
}

/// What an update did to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    Changed,
    Unchanged,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    slots: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    free: Vec<usize>,
    /// Slots holding a known node, in round-robin order.
    order: Vec<usize>,
    /// Each slot's index in `order`.
    order_pos: HashMap<usize, usize>,
    pods: HashMap<String, PodEntry>,
    /// Keys of the pods that are only assumed.
    assumed: HashSet<String>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Slots with pods that have (any) pod affinity, and with required anti-affinity.
    affinity_slots: BTreeSet<usize>,
    anti_affinity_slots: BTreeSet<usize>,
    /// The claims, volumes and classes the VolumeBinding plugin looks at.
    pub volumes: VolumeCache,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    fn slot_for(&mut self, name: &str) -> usize {
        if let Some(&s) = self.by_name.get(name) {
            return s;
        }
        let info = NodeInfo::new(name);
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s] = info;
                s
            }
            None => {
                self.slots.push(info);
                self.slots.len() - 1
            }
        };
        self.by_name.insert(name.to_string(), s);
        s
    }

    /// Free a slot that has neither a node nor pods.
    fn release_if_empty(&mut self, s: usize) {
        let info = &self.slots[s];
        if info.node.is_none() && info.pods.is_empty() {
            self.by_name.remove(&info.name);
            self.slots[s] = NodeInfo::default();
            self.free.push(s);
        }
    }

    fn refresh_affinity_sets(&mut self, s: usize) {
        let info = &self.slots[s];
        if info.pods_with_affinity > 0 {
            self.affinity_slots.insert(s);
        } else {
            self.affinity_slots.remove(&s);
        }
        if info.pods_with_required_anti_affinity > 0 {
            self.anti_affinity_slots.insert(s);
        } else {
            self.anti_affinity_slots.remove(&s);
        }
    }

    /// Add or update a node.
    pub fn upsert_node(&mut self, data: NodeData) -> NodeChange {
        let s = self.slot_for(&data.name.clone());
        let info = &mut self.slots[s];
        let change = match &info.node {
            None => NodeChange::Added,
            Some(old) if **old == data => NodeChange::Unchanged,
            Some(_) => NodeChange::Changed,
        };
        if change != NodeChange::Unchanged {
            info.node = Some(Arc::new(data));
        }
        if change == NodeChange::Added {
            self.order_pos.insert(s, self.order.len());
            self.order.push(s);
        }
        change
    }

    /// Remove a node (its pods stay counted until they are deleted). Returns whether it was known.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(&s) = self.by_name.get(name) else { return false };
        if self.slots[s].node.take().is_none() {
            return false;
        }
        if let Some(pos) = self.order_pos.remove(&s) {
            self.order.swap_remove(pos);
            if let Some(&moved) = self.order.get(pos) {
                self.order_pos.insert(moved, pos);
            }
        }
        self.release_if_empty(s);
        true
    }

    /// Names of the known nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.order.iter().map(|&s| self.slots[s].name.clone()).collect()
    }

    /// Count a bound pod against its node (replacing an earlier version or our assumption).
    /// Returns the entry it replaced.
    pub fn upsert_pod(&mut self, info: Arc<PodInfo>) -> Option<PodEntry> {
        let old = self.remove_pod(&info.key);
        self.assumed.remove(&info.key);
        let s = self.slot_for(&info.node_name.clone());
        self.slots[s].add_pod(info.clone());
        self.refresh_affinity_sets(s);
        self.pods.insert(info.key.clone(), PodEntry { info, slot: s, assumed: None });
        old
    }

    /// Stop counting a pod. Returns its entry if it was counted.
    pub fn remove_pod(&mut self, key: &str) -> Option<PodEntry> {
        let entry = self.pods.remove(key)?;
        self.assumed.remove(key);
        self.slots[entry.slot].remove_pod(&entry.info.uid);
        self.refresh_affinity_sets(entry.slot);
        self.release_if_empty(entry.slot);
        Some(entry)
    }

    /// Count `pod` against `node` now, before its binding is confirmed.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        let info = Arc::new(PodInfo { node_name: node.to_string(), ..pod.clone() });
        self.upsert_pod(info);
        if let Some(e) = self.pods.get_mut(&pod.key) {
            e.assumed = Some(Assumed::default());
            self.assumed.insert(pod.key.clone());
        }
    }

    /// The binding of an assumed pod succeeded: drop the assumption at `deadline` unless the
    /// watch confirms it first.
    pub fn finish_binding(&mut self, key: &str, uid: &str, deadline: Instant) {
        if let Some(a) = self.pods.get_mut(key).filter(|e| e.info.uid == uid).and_then(|e| e.assumed.as_mut()) {
            a.deadline = Some(deadline);
        }
    }

    /// Drop an assumption (its binding failed). Returns whether there was one.
    pub fn forget(&mut self, key: &str, uid: &str) -> bool {
        let assumed = self.pods.get(key).is_some_and(|e| e.info.uid == uid && e.assumed.is_some());
        if assumed {
            self.remove_pod(key);
        }
        assumed
    }

    /// Drop assumptions whose deadline passed. Returns how many.
    pub fn expire_assumed(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .assumed
            .iter()
            .filter(|k| self.pods.get(*k).and_then(|e| e.assumed).and_then(|a| a.deadline).is_some_and(|d| d <= now))
            .cloned()
            .collect();
        for k in &expired {
            self.remove_pod(k);
        }
        expired.len()
    }

    pub fn pod(&self, key: &str) -> Option<&PodEntry> {
        self.pods.get(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// How many pods are assumed.
    pub fn assumed_len(&self) -> usize {
        self.assumed.len()
    }

    pub fn pod_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    pub fn set_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// A namespace's labels (empty if unknown).
    pub fn namespace_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces.get(ns).unwrap_or(&EMPTY)
    }

    /// How many nodes are known.
    pub fn num_nodes(&self) -> usize {
        self.order.len()
    }

    /// The `i`th known node in round-robin order (`i < num_nodes()`).
    pub fn node_at(&self, i: usize) -> Option<&NodeInfo> {
        self.order.get(i).map(|&s| &self.slots[s])
    }

    /// A known node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&s| &self.slots[s]).filter(|n| n.node.is_some())
    }

    /// Every known node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.order.iter().map(|&s| &self.slots[s])
    }

    /// Known nodes hosting pods with pod affinity or anti-affinity of any kind.
    pub fn nodes_with_affinity_pods(&self) -> impl Iterator<Item = &NodeInfo> {
        self.affinity_slots.iter().map(|&s| &self.slots[s]).filter(|n| n.node.is_some())
    }

    /// Known nodes hosting pods with required pod anti-affinity.
    pub fn nodes_with_anti_affinity_pods(&self) -> impl Iterator<Item = &NodeInfo> {
        self.anti_affinity_slots.iter().map(|&s| &self.slots[s]).filter(|n| n.node.is_some())
    }
}

#[cfg(test)]
mod tests;
