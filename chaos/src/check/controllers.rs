//! One acting leader, seen through the controllers: a ReplicaSet of one replica must never
//! own two live pods at once. The controllers run only on the Raft leader and their
//! writes are fenced to the term they started in; a deposed leader's controller still
//! acting (or a new one acting on a stale cache) fills the slot twice.

use std::collections::{BTreeMap, BTreeSet};

use super::{Verdict, Violations};
use crate::history::History;

pub fn check(history: &History) -> Verdict {
    let log = &history.controllers;
    let replicas: BTreeMap<&str, i32> = log.created.iter().map(|(n, r, _)| (n.as_str(), *r)).collect();
    let mut live: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut v = Violations::new();
    let mut flagged: BTreeSet<&str> = BTreeSet::new();
    for e in &log.pods {
        if e.owner.is_empty() {
            continue;
        }
        let set = live.entry(e.owner.as_str()).or_default();
        if e.live {
            set.insert(e.pod.as_str());
        } else {
            set.remove(e.pod.as_str());
        }
        let want = replicas.get(e.owner.as_str()).copied().unwrap_or(1).max(0) as usize;
        if set.len() > want && flagged.insert(e.owner.as_str()) {
            v.push(format!(
                "ReplicaSet {} (replicas {want}) owned {} live pods at revision {} ({:.3}s): {}",
                e.owner,
                set.len(),
                e.revision,
                e.at.mono as f64 / 1e9,
                set.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let pods =
        log.pods.iter().filter(|e| e.live && !e.owner.is_empty()).map(|e| e.pod.as_str()).collect::<BTreeSet<_>>();
    let ok = format!(
        "{} probe ReplicaSets, {} pods made for them: no replica slot filled twice",
        log.created.len(),
        pods.len()
    );
    v.verdict("one-acting-leader", log.pods.len(), ok)
}

/// One acting scheduler: a pod, once bound to a node, is never seen on another (a
/// deposed leader's scheduler binding a pod the new one already placed would show here).
pub fn check_binding(history: &History) -> Verdict {
    let mut bound: BTreeMap<&str, &str> = BTreeMap::new();
    let mut v = Violations::new();
    let mut flagged: BTreeSet<&str> = BTreeSet::new();
    for e in &history.controllers.pods {
        if e.node.is_empty() {
            continue;
        }
        let first = *bound.entry(e.pod.as_str()).or_insert(e.node.as_str());
        if first != e.node && flagged.insert(e.pod.as_str()) {
            v.push(format!(
                "pod {} bound to {first}, then seen on {} at revision {} ({:.3}s)",
                e.pod,
                e.node,
                e.revision,
                e.at.mono as f64 / 1e9
            ));
        }
    }
    let ok = format!("{} pods bound, each to one node only", bound.len());
    v.verdict("one-node-per-pod", bound.len(), ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ControllerLog, PodEvent, Stamp};

    fn pod(at: u64, pod: &str, owner: &str, live: bool) -> PodEvent {
        on(at, pod, owner, live, "")
    }

    fn on(at: u64, pod: &str, owner: &str, live: bool, node: &str) -> PodEvent {
        PodEvent {
            at: Stamp { mono: at, wall_ms: 0 },
            revision: at as i64,
            pod: pod.into(),
            owner: owner.into(),
            live,
            node: node.into(),
        }
    }

    #[test]
    fn a_pod_bound_once_is_fine() {
        let h = history(vec![on(1, "a", "rs", true, ""), on(2, "a", "rs", true, "n1"), on(3, "a", "rs", false, "n1")]);
        let v = check_binding(&h);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 1);
    }

    #[test]
    fn a_pod_on_two_nodes_fails() {
        let h = history(vec![on(1, "a", "rs", true, "n1"), on(2, "b", "rs", true, "n2"), on(3, "a", "rs", true, "n2")]);
        let v = check_binding(&h);
        assert!(!v.ok);
        assert!(v.violations[0].contains("pod a bound to n1, then seen on n2"), "{:?}", v.violations);
    }

    fn history(pods: Vec<PodEvent>) -> History {
        History {
            controllers: ControllerLog { created: vec![("rs".into(), 1, Stamp::default())], pods },
            ..Default::default()
        }
    }

    #[test]
    fn a_replacement_after_deletion_is_fine() {
        let h = history(vec![
            pod(1, "a", "rs", true),
            pod(2, "a", "rs", true),
            pod(3, "a", "rs", false),
            pod(4, "b", "rs", true),
        ]);
        assert!(check(&h).ok, "{:?}", check(&h));
    }

    #[test]
    fn two_live_pods_for_one_slot_fail() {
        let h = history(vec![pod(1, "a", "rs", true), pod(2, "b", "rs", true)]);
        let v = check(&h);
        assert!(!v.ok);
        assert!(v.summary.contains("owned 2 live pods"), "{}", v.summary);
    }
}
