//! What the VolumeBinding plugin needs from PersistentVolumeClaims, PersistentVolumes and
//! StorageClasses, parsed once when the watches deliver them, and the [`VolumeCache`] the
//! scheduling loop keeps of them (with the `selected-node` annotations this scheduler has
//! set but the watch has not shown yet: upstream's assume cache, reduced to what dynamic
//! provisioning needs).

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim, TopologySelectorTerm},
    storage::v1::StorageClass,
};

use crate::node_selector::Term;

/// The node a scheduler chose for a claim of a WaitForFirstConsumer class: the provisioner
/// of that node provisions it (`volume.AnnSelectedNode`).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set on a claim once its binding to a volume is complete (`volume.AnnBindCompleted`).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// The claim's class by the old annotation, which wins over `spec.storageClassName`.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner of classes without dynamic provisioning.
pub const NOT_SUPPORTED_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// A PersistentVolumeClaim, as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimData {
    /// `namespace/name`.
    pub key: String,
    pub name: String,
    pub uid: String,
    /// The class by annotation or `spec.storageClassName` (`GetPersistentVolumeClaimClass`).
    pub class: String,
    /// `spec.volumeName`.
    pub volume_name: String,
    /// Bound and the binding complete (`isPVCFullyBound`; phase Bound counts too).
    pub bound: bool,
    /// `status.phase: Lost`: its volume is gone.
    pub lost: bool,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    pub selected_node: Option<String>,
    /// The UID of its controlling owner (a generic ephemeral volume's claim is its pod's).
    pub controller_uid: Option<String>,
}

impl ClaimData {
    pub fn from_claim(c: &PersistentVolumeClaim) -> ClaimData {
        let meta = &c.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let annotations = meta.annotations.as_ref();
        let ann = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
        let spec = c.spec.as_ref();
        let volume_name = spec.and_then(|s| s.volume_name.clone()).unwrap_or_default();
        let phase = c.status.as_ref().and_then(|s| s.phase.as_deref());
        ClaimData {
            key: format!("{namespace}/{name}"),
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            class: ann(ANN_BETA_STORAGE_CLASS)
                .or_else(|| spec.and_then(|s| s.storage_class_name.clone()))
                .unwrap_or_default(),
            bound: !volume_name.is_empty() && (ann(ANN_BIND_COMPLETED).is_some() || phase == Some("Bound")),
            volume_name,
            lost: phase == Some("Lost"),
            deleting: meta.deletion_timestamp.is_some(),
            selected_node: ann(ANN_SELECTED_NODE).filter(|n| !n.is_empty()),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
        }
    }
}

/// A PersistentVolume: its name and the nodes it can be used from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeData {
    pub name: String,
    /// `spec.nodeAffinity.required`: one of these terms must match (`None`: any node).
    pub node_affinity: Option<Vec<Term>>,
}

impl VolumeData {
    pub fn from_volume(pv: &PersistentVolume) -> VolumeData {
        let required = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
        VolumeData {
            name: pv.metadata.name.clone().unwrap_or_default(),
            node_affinity: required.map(|r| r.node_selector_terms.iter().map(Term::parse).collect()),
        }
    }

    /// Whether the volume can be used from this node (`volume.CheckNodeAffinity`).
    pub fn fits(&self, node_name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.node_affinity.as_ref().is_none_or(|terms| terms.iter().any(|t| t.matches(node_name, labels)))
    }
}

/// One `allowedTopologies` term: every expression's key must have one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyTerm {
    pub expressions: Vec<(String, Vec<String>)>,
}

impl TopologyTerm {
    fn parse(t: &TopologySelectorTerm) -> TopologyTerm {
        TopologyTerm {
            expressions: t
                .match_label_expressions
                .iter()
                .flatten()
                .map(|e| (e.key.clone(), e.values.clone()))
                .collect(),
        }
    }

    fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.expressions.iter().all(|(k, vs)| labels.get(k).is_some_and(|v| vs.contains(v)))
    }
}

/// A StorageClass: who provisions its volumes, when, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassData {
    pub name: String,
    pub provisioner: String,
    /// `volumeBindingMode: WaitForFirstConsumer` (otherwise Immediate).
    pub wait_for_first_consumer: bool,
    pub allowed_topologies: Vec<TopologyTerm>,
}

impl ClassData {
    pub fn from_class(sc: &StorageClass) -> ClassData {
        ClassData {
            name: sc.metadata.name.clone().unwrap_or_default(),
            provisioner: sc.provisioner.clone(),
            wait_for_first_consumer: sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"),
            allowed_topologies: sc.allowed_topologies.iter().flatten().map(TopologyTerm::parse).collect(),
        }
    }

    /// Whether its volumes can be provisioned for a node with these labels
    /// (`MatchTopologySelectorTerms`: no terms match every node).
    pub fn allows(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.allowed_topologies.is_empty() || self.allowed_topologies.iter().any(|t| t.matches(labels))
    }

    /// Whether it provisions volumes at all.
    pub fn provisions(&self) -> bool {
        !self.provisioner.is_empty() && self.provisioner != NOT_SUPPORTED_PROVISIONER
    }
}

/// The claims, volumes and classes the watches delivered.
#[derive(Debug, Default)]
pub struct VolumeCache {
    claims: HashMap<String, Arc<ClaimData>>,
    volumes: HashMap<String, Arc<VolumeData>>,
    classes: HashMap<String, Arc<ClassData>>,
    /// Claim key → the node this scheduler selected for it (its annotation update may not
    /// have been seen yet), so that pods sharing the claim follow it.
    assumed_nodes: HashMap<String, String>,
}

impl VolumeCache {
    pub fn new() -> VolumeCache {
        VolumeCache::default()
    }

    /// A claim, with the node this scheduler selected for it if the watch does not show it yet.
    pub fn claim(&self, key: &str) -> Option<Arc<ClaimData>> {
        let c = self.claims.get(key)?;
        match self.assumed_nodes.get(key) {
            Some(n) if !c.bound && c.selected_node.as_ref() != Some(n) => {
                Some(Arc::new(ClaimData { selected_node: Some(n.clone()), ..(**c).clone() }))
            }
            _ => Some(c.clone()),
        }
    }

    pub fn volume(&self, name: &str) -> Option<&Arc<VolumeData>> {
        self.volumes.get(name)
    }

    pub fn class(&self, name: &str) -> Option<&Arc<ClassData>> {
        self.classes.get(name)
    }

    /// Add or update a claim. Returns whether anything changed.
    pub fn upsert_claim(&mut self, c: ClaimData) -> bool {
        if let Some(n) = self.assumed_nodes.get(&c.key) {
            // The watch caught up with our annotation (or the claim moved on).
            if c.bound || c.selected_node.as_ref() == Some(n) {
                self.assumed_nodes.remove(&c.key);
            }
        }
        if self.claims.get(&c.key).is_some_and(|old| **old == c) {
            return false;
        }
        self.claims.insert(c.key.clone(), Arc::new(c));
        true
    }

    pub fn remove_claim(&mut self, key: &str) -> bool {
        self.assumed_nodes.remove(key);
        self.claims.remove(key).is_some()
    }

    pub fn upsert_volume(&mut self, v: VolumeData) -> bool {
        if self.volumes.get(&v.name).is_some_and(|old| **old == v) {
            return false;
        }
        self.volumes.insert(v.name.clone(), Arc::new(v));
        true
    }

    pub fn remove_volume(&mut self, name: &str) -> bool {
        self.volumes.remove(name).is_some()
    }

    pub fn upsert_class(&mut self, c: ClassData) -> bool {
        if self.classes.get(&c.name).is_some_and(|old| **old == c) {
            return false;
        }
        self.classes.insert(c.name.clone(), Arc::new(c));
        true
    }

    pub fn remove_class(&mut self, name: &str) -> bool {
        self.classes.remove(name).is_some()
    }

    pub fn claim_keys(&self) -> Vec<String> {
        self.claims.keys().cloned().collect()
    }

    pub fn volume_names(&self) -> Vec<String> {
        self.volumes.keys().cloned().collect()
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.keys().cloned().collect()
    }

    /// Remember that this scheduler selected `node` for the claim (`AssumePodVolumes`).
    pub fn assume_selected_node(&mut self, key: &str, node: &str) {
        self.assumed_nodes.insert(key.to_string(), node.to_string());
    }

    /// Forget a selection that was not made after all (`RevertAssumedPodVolumes`).
    pub fn forget_selected_node(&mut self, key: &str, node: &str) {
        if self.assumed_nodes.get(key).is_some_and(|n| n == node) {
            self.assumed_nodes.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::labels;
    use k8s_openapi::{
        api::core::v1::{PersistentVolumeClaimSpec, PersistentVolumeClaimStatus},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    fn claim(ann: &[(&str, &str)], class: Option<&str>, volume: Option<&str>, phase: Option<&str>) -> ClaimData {
        ClaimData::from_claim(&PersistentVolumeClaim {
            metadata: ObjectMeta {
                namespace: Some("d".into()),
                name: Some("data".into()),
                annotations: Some(labels(ann)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(str::to_string),
                volume_name: volume.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus { phase: phase.map(str::to_string), ..Default::default() }),
        })
    }

    #[test]
    fn claims_parse_like_upstream_helpers() {
        let c = claim(&[], Some("fast"), None, Some("Pending"));
        assert_eq!((c.key.as_str(), c.class.as_str(), c.bound), ("d/data", "fast", false));
        // The beta annotation wins over the field.
        assert_eq!(claim(&[(ANN_BETA_STORAGE_CLASS, "old")], Some("fast"), None, None).class, "old");
        // Bound: a volume name and a completed binding (or phase Bound).
        assert!(!claim(&[], None, Some("pv1"), None).bound);
        assert!(claim(&[(ANN_BIND_COMPLETED, "yes")], None, Some("pv1"), None).bound);
        assert!(claim(&[], None, Some("pv1"), Some("Bound")).bound);
        assert!(claim(&[], None, Some("pv1"), Some("Lost")).lost);
        assert_eq!(claim(&[(ANN_SELECTED_NODE, "n1")], None, None, None).selected_node.as_deref(), Some("n1"));
        assert_eq!(claim(&[(ANN_SELECTED_NODE, "")], None, None, None).selected_node, None);
    }

    #[test]
    fn assumed_selections_show_until_the_watch_catches_up() {
        let mut cache = VolumeCache::new();
        cache.upsert_claim(claim(&[], Some("c"), None, None));
        cache.assume_selected_node("d/data", "n1");
        assert_eq!(cache.claim("d/data").unwrap().selected_node.as_deref(), Some("n1"));
        // A status-only update does not drop the assumption.
        cache.upsert_claim(claim(&[], Some("c"), None, Some("Pending")));
        assert_eq!(cache.claim("d/data").unwrap().selected_node.as_deref(), Some("n1"));
        // The watch shows the annotation: the API's version is used again.
        cache.upsert_claim(claim(&[(ANN_SELECTED_NODE, "n1")], Some("c"), None, None));
        assert!(cache.assumed_nodes.is_empty());
        cache.assume_selected_node("d/data", "n2");
        cache.forget_selected_node("d/data", "n2");
        assert_eq!(cache.claim("d/data").unwrap().selected_node.as_deref(), Some("n1"));
        assert!(cache.remove_claim("d/data") && cache.claim("d/data").is_none());
    }

    #[test]
    fn class_topologies_and_provisioners() {
        let mut c = ClassData { name: "c".into(), provisioner: "p".into(), ..Default::default() };
        assert!(c.allows(&labels(&[])) && c.provisions());
        c.allowed_topologies = vec![TopologyTerm { expressions: vec![("zone".into(), vec!["a".into(), "b".into()])] }];
        assert!(c.allows(&labels(&[("zone", "b")])));
        assert!(!c.allows(&labels(&[("zone", "c")])) && !c.allows(&labels(&[])));
        c.provisioner = NOT_SUPPORTED_PROVISIONER.into();
        assert!(!c.provisions());
    }
}
