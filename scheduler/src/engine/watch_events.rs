//! Applying watch events to the snapshot and the queue. A relist (`Init` … `InitDone`)
//! ends by deleting whatever it did not list.

use std::{collections::HashSet, sync::Arc, time::Instant};

use super::{NamespaceLabels, Relist, Scheduler};
use crate::{informer::Change, node_info::NodeData, pod_info::PodInfo, snapshot::NodeChange};

/// The relist bookkeeping common to all resources: returns the object to apply, if any,
/// and whether a relist just finished.
pub(super) fn relist_step<T>(
    relist: &mut Relist,
    change: Change<T>,
    key: impl Fn(&T) -> String,
) -> (Option<(T, bool)>, bool) {
    match change {
        Change::Init => {
            relist.seen = Some(HashSet::new());
            (None, false)
        }
        Change::InitApply(o) => {
            if let Some(seen) = relist.seen.as_mut() {
                seen.insert(key(&o));
            }
            (Some((o, false)), false)
        }
        Change::InitDone => (None, true),
        Change::Apply(o) => (Some((o, false)), false),
        Change::Delete(o) => (Some((o, true)), false),
    }
}

/// The keys in `known` a finished relist did not see.
fn stale(relist: &mut Relist, known: impl IntoIterator<Item = String>) -> Vec<String> {
    relist.synced = true;
    let Some(seen) = relist.seen.take() else { return Vec::new() };
    known.into_iter().filter(|k| !seen.contains(k)).collect()
}

impl Scheduler {
    pub(super) fn on_node(&mut self, change: Change<NodeData>, now: Instant) {
        let (obj, done) = relist_step(&mut self.nodes_relist, change, |n: &NodeData| n.name.clone());
        match obj {
            Some((node, true)) => {
                self.snapshot.remove_node(&node.name);
            }
            Some((node, false)) => {
                if self.snapshot.upsert_node(node) != NodeChange::Unchanged {
                    self.queue.cluster_event(now);
                }
            }
            None => {}
        }
        if done {
            for name in stale(&mut self.nodes_relist, self.snapshot.node_names()) {
                self.snapshot.remove_node(&name);
            }
            tracing::debug!(nodes = self.snapshot.num_nodes(), "nodes listed");
        }
    }

    pub(super) fn on_namespace(&mut self, change: Change<NamespaceLabels>) {
        let (obj, done) = relist_step(&mut self.namespaces_relist, change, |(n, _): &NamespaceLabels| n.clone());
        match obj {
            Some(((name, _), true)) => self.snapshot.remove_namespace(&name),
            Some(((name, labels), false)) => self.snapshot.set_namespace(&name, labels),
            None => {}
        }
        if done {
            for name in stale(&mut self.namespaces_relist, self.snapshot.namespace_names()) {
                self.snapshot.remove_namespace(&name);
            }
        }
    }

    pub(super) fn on_pod(&mut self, change: Change<Arc<PodInfo>>, now: Instant) {
        let (obj, done) = relist_step(&mut self.pods_relist, change, |p: &Arc<PodInfo>| p.key.clone());
        match obj {
            Some((pod, true)) => self.pod_gone(&pod.key, now),
            Some((pod, false)) => self.pod_applied(pod, now),
            None => {}
        }
        if done {
            let mut known = self.snapshot.pod_keys();
            known.extend(self.queue.keys());
            known.sort();
            known.dedup();
            for key in stale(&mut self.pods_relist, known) {
                self.pod_gone(&key, now);
            }
            tracing::debug!(pending = self.queue.active_len(), "pods listed");
        }
    }

    /// A pod was deleted (or not relisted): stop counting and queueing it.
    fn pod_gone(&mut self, key: &str, now: Instant) {
        if self.snapshot.remove_pod(key).is_some() {
            self.queue.cluster_event(now);
        }
        self.queue.remove(key);
        self.reporter.forget(key);
    }

    fn pod_applied(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        // Same name, another pod: the one we knew is gone.
        let replaced = self.snapshot.pod(&key).is_some_and(|e| e.info.uid != pod.uid)
            || self.queue.get(&key).is_some_and(|p| p.uid != pod.uid);
        if replaced {
            self.pod_gone(&key, now);
        }
        if !pod.node_name.is_empty() {
            self.pod_bound(pod, now);
            return;
        }
        if self.snapshot.is_assumed(&key) {
            // Our binding is in flight and this is an older version: keep the assumption,
            // refresh what the queue knows.
            if self.queue.contains(&key) {
                self.queue.add_or_update(pod, now);
            }
            return;
        }
        if pod.wants_scheduling(&self.cfg.scheduler_name) {
            self.queue.add_or_update(pod, now);
        } else if self.queue.remove(&key) {
            self.reporter.forget(&key);
        }
    }

    /// A pod with `spec.nodeName`: count it (unless finished), confirming an assumption.
    fn pod_bound(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        if self.queue.remove(&key) {
            self.reporter.forget(&key);
        }
        if pod.terminal {
            if self.snapshot.remove_pod(&key).is_some() {
                self.queue.cluster_event(now);
            }
            return;
        }
        let node = pod.node_name.clone();
        if let Some(old) = self.snapshot.upsert_pod(pod) {
            if old.info.node_name != node {
                // Assumed onto one node, bound to another: the first got room back.
                self.queue.cluster_event(now);
            }
        }
    }
}
