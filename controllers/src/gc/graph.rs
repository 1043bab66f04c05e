//! The collector's view of the cluster: every object (by uid) with its owner references,
//! and who depends on whom. Fed by one metadata-only watch per resource type.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::discovery::ApiResource;

/// One object.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index of its resource type in [`Graph::types`].
    pub ty: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
    /// The relist generation it was last seen in (for deletions missed while a watch
    /// was down).
    pub seen: u64,
}

impl Node {
    pub fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

#[derive(Default)]
pub struct Graph {
    pub types: Vec<ApiResource>,
    pub nodes: HashMap<String, Node>,
    /// owner uid → dependent uids
    pub dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Insert or replace `uid`; returns the previous node.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Option<Node> {
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.to_string());
        }
        let old = self.nodes.insert(uid.to_string(), node);
        if let Some(old) = &old {
            let now: HashSet<String> = self.nodes[uid].owners.iter().map(|o| o.uid.clone()).collect();
            for o in old.owners.iter().filter(|o| !now.contains(&o.uid)) {
                self.unlink(&o.uid, uid);
            }
        }
        old
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    pub fn remove(&mut self, uid: &str) -> Option<Node> {
        let old = self.nodes.remove(uid)?;
        for o in &old.owners {
            self.unlink(&o.uid, uid);
        }
        Some(old)
    }

    pub fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Dependents whose reference to `owner` blocks its deletion.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<String> {
        self.dependents_of(owner)
            .into_iter()
            .filter(|d| {
                self.nodes
                    .get(d)
                    .is_some_and(|n| n.owners.iter().any(|o| o.uid == owner && o.block_owner_deletion == Some(true)))
            })
            .collect()
    }

    /// Objects of type `ty` not seen in relist `generation` (deleted while unwatched).
    pub fn unseen(&self, ty: usize, generation: u64) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.ty == ty && n.seen < generation).map(|(u, _)| u.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owners: &[(&str, bool)]) -> Node {
        Node {
            ty: 0,
            namespace: Some("ns".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|(u, block)| OwnerReference {
                    uid: u.to_string(),
                    block_owner_deletion: Some(*block),
                    ..Default::default()
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
            seen: 1,
        }
    }

    #[test]
    fn dependents_follow_owner_reference_changes() {
        let mut g = Graph::default();
        g.upsert("pod", node(&[("rs", true)]));
        g.upsert("pod2", node(&[("rs", false)]));
        assert_eq!(g.blocking_dependents("rs"), vec!["pod".to_string()]);
        let mut deps = g.dependents_of("rs");
        deps.sort();
        assert_eq!(deps, ["pod", "pod2"]);
        // pod is released from rs.
        g.upsert("pod", node(&[]));
        assert_eq!(g.dependents_of("rs"), vec!["pod2".to_string()]);
        g.remove("pod2");
        assert!(g.dependents.is_empty());
        assert_eq!(g.unseen(0, 2), vec!["pod".to_string()]);
    }
}
