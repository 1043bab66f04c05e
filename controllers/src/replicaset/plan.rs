//! The ReplicaSet / ReplicationController decision, as pure functions: which pods it
//! owns, adopts and releases; how many to create or which to delete; its status.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::core::{Selector, SelectorExt};

use crate::pods;

/// The most pods created or deleted in one sync (upstream's `burstReplicas`).
pub const BURST: usize = 500;

/// A replica owner (a ReplicaSet or a ReplicationController), as the plan needs it.
#[derive(Debug, Clone)]
pub struct Owner {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub replicas: i32,
    /// `None`: selects nothing (a missing or invalid selector).
    pub selector: Option<Selector>,
    pub template: PodTemplateSpec,
    pub min_ready_seconds: i32,
    pub generation: Option<i64>,
    pub deleting: bool,
}

impl Owner {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn selects(&self, pod: &Pod) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(&pods::labels(&pod.metadata)))
    }
}

/// What the owner holds among the namespace's pods.
#[derive(Debug, Default)]
pub struct Claims {
    /// Its pods (controller reference to it) that it keeps.
    pub owned: Vec<Arc<Pod>>,
    /// Orphans it should adopt (selected, not being deleted).
    pub adopt: Vec<Arc<Pod>>,
    /// Its pods it no longer selects (released unless it is being deleted).
    pub release: Vec<Arc<Pod>>,
}

/// `ClaimPods`: sort the namespace's pods into owned, to adopt and to release.
pub fn claim(owner: &Owner, pods: &[Arc<Pod>]) -> Claims {
    let mut c = Claims::default();
    for p in pods {
        if p.metadata.namespace.as_deref() != Some(owner.namespace.as_str()) {
            continue;
        }
        match pods::controller_of(&p.metadata) {
            Some(r) if r.uid == owner.uid => {
                if owner.selects(p) || owner.deleting {
                    c.owned.push(p.clone());
                } else {
                    c.release.push(p.clone());
                }
            }
            Some(_) => {}
            None => {
                // Only active pods are claimed (upstream filters before `ClaimPods`).
                if owner.selects(p) && !owner.deleting && pods::is_active(p) {
                    c.adopt.push(p.clone());
                }
            }
        }
    }
    c
}

/// What to do about the replica count.
#[derive(Debug, PartialEq, Eq)]
pub enum Scale {
    Nothing,
    Create(usize),
    /// Pod names, in deletion order.
    Delete(Vec<String>),
}

/// `manageReplicas`: `active` are the owner's active pods; `pending_adds` pods it created
/// that the cache does not show yet; `pending_dels` names it deleted that the cache still
/// shows as running.
pub fn scale(
    owner: &Owner,
    active: &[Arc<Pod>],
    pending_adds: usize,
    pending_dels: &[String],
    all: &[Arc<Pod>],
) -> Scale {
    let counted: Vec<&Arc<Pod>> = active
        .iter()
        .filter(|p| !pending_dels.iter().any(|d| Some(d.as_str()) == p.metadata.name.as_deref()))
        .collect();
    let have = counted.len() + pending_adds;
    let want = owner.replicas.max(0) as usize;
    if have < want {
        return Scale::Create((want - have).min(BURST));
    }
    if have > want && counted.len() > 0 {
        let n = (have - want).min(counted.len()).min(BURST);
        let ranked = rank_for_deletion(&counted.iter().map(|p| (*p).clone()).collect::<Vec<_>>(), all, owner);
        return Scale::Delete(ranked.into_iter().take(n).collect());
    }
    Scale::Nothing
}

/// Pods in the order to delete them (upstream's `ActivePodsWithRanks`): unscheduled
/// first, then pending before running, not ready before ready, pods on nodes crowded with
/// this owner's pods first, ready for less time first, more restarts first, newest first.
pub fn rank_for_deletion(candidates: &[Arc<Pod>], all: &[Arc<Pod>], owner: &Owner) -> Vec<String> {
    // Related pods per node: any active pod this owner selects or controls.
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in all {
        let related = pods::controller_of(&p.metadata).is_some_and(|r| r.uid == owner.uid) || owner.selects(p);
        if related && pods::is_active(p) {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
    }
    let mut ranked: Vec<&Arc<Pod>> = candidates.iter().collect();
    let crowd = |p: &Pod| {
        let n = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        n.and_then(|n| per_node.get(n)).copied().unwrap_or(0)
    };
    ranked.sort_by(|a, b| pods::deletion_order(a, crowd(a), b, crowd(b)));
    ranked.into_iter().filter_map(|p| p.metadata.name.clone()).collect()
}

/// `slowStartBatch` sizes for `n` creations: 1, 2, 4, … (the last one what remains).
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut size, mut left) = (1usize, n);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

/// The replica counts of a ReplicaSet/RC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    /// Seconds until the next ready pod becomes available (a requeue), if any.
    pub next_available_in: Option<i64>,
}

/// `calculateStatus` over the owner's active pods.
pub fn counts(owner: &Owner, active: &[Arc<Pod>], now: Timestamp) -> Counts {
    let template_labels = owner.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let mut c = Counts { replicas: active.len() as i32, ..Default::default() };
    for p in active {
        let labels = pods::labels(&p.metadata);
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            c.fully_labeled += 1;
        }
        if pods::is_ready(p) {
            c.ready += 1;
            if pods::is_available(p, owner.min_ready_seconds, now) {
                c.available += 1;
            } else if let Some(s) = pods::until_available(p, owner.min_ready_seconds, now) {
                c.next_available_in = Some(c.next_available_in.map_or(s, |x| x.min(s)));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests;
