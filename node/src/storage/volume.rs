//! The provisioner's decisions, pure over the objects: what a claim needs from this node
//! (nothing, a class, a volume, the rest of its binding), the PersistentVolume it gets,
//! and what becomes of one of this node's volumes once its claim is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::PROVISIONER;

/// The node a scheduler chose for a claim of a WaitForFirstConsumer class.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Who provisioned a volume (`pv.kubernetes.io/provisioned-by`).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// A claim whose binding is complete (the PV controller's annotations).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The claim's class by the old annotation, which wins over `spec.storageClassName`.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The label every node has, naming it; a local volume's node affinity uses it.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The access modes a directory on one node can offer.
const ACCESS_MODES: [&str; 2] = ["ReadWriteOnce", "ReadWriteOncePod"];

/// The volume of a claim is named after its UID, like every dynamically provisioned one.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// `namespace/name`.
pub fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

/// The claim's class (`GetPersistentVolumeClaimClass`); `None` when it names none at all.
pub fn claim_class(claim: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS)
        .or_else(|| claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()))
}

fn claim_phase(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn volume_phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The single node a volume's affinity pins (`kubernetes.io/hostname In [node]`).
pub fn volume_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_expressions.iter().flatten()).find_map(|e| match e.values.as_deref() {
        Some([v]) if e.key == HOSTNAME_LABEL && e.operator == "In" => Some(v.as_str()),
        _ => None,
    })
}

/// Whether `pv` is a volume this provisioner made on `node`.
pub fn is_ours(pv: &PersistentVolume, node: &str) -> bool {
    annotation(&pv.metadata, ANN_PROVISIONED_BY) == Some(PROVISIONER) && volume_node(pv) == Some(node)
}

/// The host directory of a local or hostPath volume.
pub fn volume_path(pv: &PersistentVolume) -> Option<&str> {
    let spec = pv.spec.as_ref()?;
    spec.local.as_ref().map(|l| l.path.as_str()).or_else(|| spec.host_path.as_ref().map(|h| h.path.as_str()))
}

/// Why this provisioner cannot make a volume for the claim, if it cannot.
pub fn unsupported(claim: &PersistentVolumeClaim) -> Option<String> {
    let spec = claim.spec.as_ref()?;
    if let Some(m) = spec.access_modes.iter().flatten().find(|m| !ACCESS_MODES.contains(&m.as_str())) {
        return Some(format!("access mode {m} is not supported: only ReadWriteOnce and ReadWriteOncePod"));
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return Some("volumeMode Block is not supported: only Filesystem".into());
    }
    if spec.selector.is_some() {
        return Some("claim.spec.selector is not supported".into());
    }
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return Some("claim.spec.dataSource is not supported: volumes start empty".into());
    }
    if spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).is_none() {
        return Some("the claim requests no storage (spec.resources.requests.storage)".into());
    }
    None
}

/// What a claim needs from this node's provisioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAction {
    /// Nothing (another node's, another provisioner's, bound, waiting for a consumer…).
    None,
    /// It names no class: give it the default class (the PV controller's retroactive
    /// default assignment, which keelson has nobody else for).
    SetClass(String),
    /// Make its directory and volume, then bind them.
    Provision,
    /// Its volume exists: finish the binding.
    Bind,
    /// Of our class, but Immediate and placed by no one: this provisioner only makes
    /// volumes on the node a pod was scheduled to.
    NoNodeSelected,
    /// Selected for this node but impossible: why.
    Fail(String),
}

/// The class a claim without one gets: the newest of the default classes (by creation
/// time, then name, like `GetDefaultClass`).
pub fn default_class<'a>(classes: impl IntoIterator<Item = &'a StorageClass>) -> Option<&'a StorageClass> {
    classes
        .into_iter()
        .filter(|c| {
            ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                .iter()
                .any(|k| annotation(&c.metadata, k) == Some("true"))
        })
        .max_by(|a, b| {
            let t = |c: &StorageClass| c.metadata.creation_timestamp.clone().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

/// What `claim` needs from the provisioner of `node`. `class_of` finds a class by name,
/// `volume` is the claim's volume (`pvc-<uid>`) if it exists.
pub fn claim_action<'a>(
    claim: &PersistentVolumeClaim,
    node: &str,
    class_of: impl Fn(&str) -> Option<&'a StorageClass>,
    default: Option<&StorageClass>,
    volume: Option<&PersistentVolume>,
) -> ClaimAction {
    if claim.metadata.deletion_timestamp.is_some() || claim.metadata.uid.is_none() {
        return ClaimAction::None;
    }
    let bound_to = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or_default();
    let Some(class_name) = claim_class(claim) else {
        return match default {
            Some(d) if bound_to.is_empty() => ClaimAction::SetClass(d.metadata.name.clone().unwrap_or_default()),
            _ => ClaimAction::None,
        };
    };
    let Some(class) = class_of(class_name).filter(|c| c.provisioner == PROVISIONER) else { return ClaimAction::None };
    let ours = volume.filter(|v| is_ours(v, node));
    if !bound_to.is_empty() {
        // Bound (or being bound) by us: finish what a restart may have interrupted.
        let complete = claim_phase(claim) == Some("Bound") && annotation(&claim.metadata, ANN_BIND_COMPLETED).is_some();
        return match ours {
            Some(v) if v.metadata.name.as_deref() == Some(bound_to) && !complete => ClaimAction::Bind,
            _ => ClaimAction::None,
        };
    }
    match annotation(&claim.metadata, ANN_SELECTED_NODE).filter(|n| !n.is_empty()) {
        None if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => ClaimAction::None,
        None => ClaimAction::NoNodeSelected,
        Some(n) if n != node => ClaimAction::None,
        Some(_) => match (ours, volume) {
            (Some(_), _) => ClaimAction::Bind,
            // Its volume exists but is not this node's: leave it to its owner.
            (None, Some(_)) => ClaimAction::None,
            (None, None) => match unsupported(claim) {
                Some(why) => ClaimAction::Fail(why),
                None => ClaimAction::Provision,
            },
        },
    }
}

/// The PersistentVolume for `claim` of `class` at `path` on `node`.
pub fn new_volume(claim: &PersistentVolumeClaim, class: &StorageClass, node: &str, path: &Path) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
    let access_modes =
        spec.access_modes.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(claim)),
            annotations: Some(BTreeMap::from([(ANN_PROVISIONED_BY.to_string(), PROVISIONER.to_string())])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: storage.map(|s| BTreeMap::from([("storage".to_string(), s)])),
            access_modes: Some(access_modes),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            }),
            local: Some(LocalVolumeSource { path: path.display().to_string(), fs_type: None }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            storage_class_name: class.metadata.name.clone(),
            mount_options: class.mount_options.clone(),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The merge patch binding `claim` to `pv` (pinned to the claim's resourceVersion, so a
/// claim changed meanwhile — another node selected — is not bound behind its back).
pub fn bind_patch(claim: &PersistentVolumeClaim, pv: &str) -> Value {
    json!({
        "metadata": {
            "resourceVersion": claim.metadata.resource_version,
            "annotations": { ANN_BIND_COMPLETED: "yes", ANN_BOUND_BY_CONTROLLER: "yes" },
        },
        "spec": { "volumeName": pv },
    })
}

/// The claim's status once bound to `pv`.
pub fn bound_status(pv: &PersistentVolume) -> Value {
    let spec = pv.spec.clone().unwrap_or_default();
    json!({ "status": { "phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity } })
}

/// What becomes of one of this node's volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    None,
    /// Its claim is gone: say so (`Released`), then reclaim it.
    Release,
    /// Released under reclaim policy Delete: remove this directory, then the volume.
    Delete(PathBuf),
    /// Released, but its directory is not where this provisioner keeps volumes: left alone.
    Foreign(String),
}

/// What to do with `pv` (one of ours) given whether its claim still exists; `dir` is where
/// this node keeps its volumes.
pub fn volume_action(pv: &PersistentVolume, claim_exists: bool, dir: &Path) -> VolumeAction {
    if pv.metadata.deletion_timestamp.is_some() {
        return VolumeAction::None;
    }
    let phase = volume_phase(pv);
    if claim_exists {
        return VolumeAction::None;
    }
    if !matches!(phase, Some("Released" | "Failed")) {
        return VolumeAction::Release;
    }
    let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete");
    if phase != Some("Released") || policy != "Delete" {
        return VolumeAction::None;
    }
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let expected = dir.join(name);
    match volume_path(pv) {
        Some(p) if !name.is_empty() && !name.contains('/') && name != ".." && Path::new(p) == expected => {
            VolumeAction::Delete(expected)
        }
        p => VolumeAction::Foreign(format!(
            "volume {name} is at {:?}, not {}: its data is not removed",
            p.unwrap_or_default(),
            expected.display()
        )),
    }
}

/// Whether a volume's claim reference names this claim (namespace, name and UID).
pub fn claims(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
        r.namespace == claim.metadata.namespace && r.name == claim.metadata.name && r.uid == claim.metadata.uid
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(v: Value) -> PersistentVolumeClaim {
        let mut base = json!({
            "metadata": {"namespace": "d", "name": "data-web-0", "uid": "u1", "resourceVersion": "7"},
            "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        });
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn class(mode: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": mode,
        }))
        .unwrap()
    }

    fn selected(node: &str) -> Value {
        json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}})
    }

    fn act(c: &PersistentVolumeClaim, classes: &[StorageClass], pv: Option<&PersistentVolume>) -> ClaimAction {
        claim_action(
            c,
            "n1",
            |n| classes.iter().find(|x| x.metadata.name.as_deref() == Some(n)),
            default_class(classes),
            pv,
        )
    }

    #[test]
    fn claims_selected_for_this_node_are_provisioned_once() {
        let wffc = [class("WaitForFirstConsumer")];
        assert_eq!(act(&claim(json!({})), &wffc, None), ClaimAction::None, "no consumer yet");
        assert_eq!(act(&claim(selected("n2")), &wffc, None), ClaimAction::None, "another node's");
        let c = claim(selected("n1"));
        assert_eq!(act(&c, &wffc, None), ClaimAction::Provision);
        let pv = new_volume(&c, &wffc[0], "n1", Path::new("/v/pvc-u1"));
        assert_eq!(act(&c, &wffc, Some(&pv)), ClaimAction::Bind, "made, not bound yet");
        let elsewhere = new_volume(&c, &wffc[0], "n2", Path::new("/v/pvc-u1"));
        assert_eq!(act(&c, &wffc, Some(&elsewhere)), ClaimAction::None);
        // Bound, status not written yet (a restart in between): finish; complete: nothing.
        let half = claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1", ANN_BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": "pvc-u1"}}));
        assert_eq!(act(&half, &wffc, Some(&pv)), ClaimAction::Bind);
        let done = claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "n1", ANN_BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": "pvc-u1"}, "status": {"phase": "Bound"}}));
        assert_eq!(act(&done, &wffc, Some(&pv)), ClaimAction::None);
        // Being deleted, or of another provisioner's class: not ours to act on.
        let deleting = claim(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {ANN_SELECTED_NODE: "n1"}}}));
        assert_eq!(act(&deleting, &wffc, None), ClaimAction::None);
        let mut other = class("WaitForFirstConsumer");
        other.provisioner = "example.com/nfs".into();
        assert_eq!(act(&c, &[other], None), ClaimAction::None);
    }

    #[test]
    fn immediate_claims_nobody_placed_are_left_alone() {
        assert_eq!(act(&claim(json!({})), &[class("Immediate")], None), ClaimAction::NoNodeSelected);
        assert_eq!(act(&claim(selected("n1")), &[class("Immediate")], None), ClaimAction::Provision);
    }

    #[test]
    fn claims_without_a_class_get_the_default_one() {
        let c = claim(json!({"spec": {"storageClassName": null}}));
        assert_eq!(act(&c, &[class("WaitForFirstConsumer")], None), ClaimAction::SetClass("local-path".into()));
        let mut plain = class("WaitForFirstConsumer");
        plain.metadata.annotations = None;
        assert_eq!(act(&c, &[plain], None), ClaimAction::None, "no default class");
        // An empty class is a choice (no class), not the absence of one.
        assert_eq!(
            act(&claim(json!({"spec": {"storageClassName": ""}})), &[class("Immediate")], None),
            ClaimAction::None
        );
        // The newest default wins.
        let older: StorageClass = serde_json::from_value(json!({"metadata": {"name": "old",
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "x"}))
        .unwrap();
        let mut newer = class("Immediate");
        newer.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2024-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(default_class([&older, &newer]).and_then(|c| c.metadata.name.as_deref()), Some("local-path"));
    }

    #[test]
    fn what_cannot_be_provisioned_says_why() {
        let wffc = [class("WaitForFirstConsumer")];
        for (extra, why) in [
            (json!({"spec": {"accessModes": ["ReadWriteMany"]}}), "access mode ReadWriteMany"),
            (json!({"spec": {"volumeMode": "Block"}}), "Block"),
            (json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}}), "selector"),
            (json!({"spec": {"resources": {"requests": null}}}), "requests no storage"),
        ] {
            let mut c = claim(selected("n1"));
            let mut v = serde_json::to_value(&c).unwrap();
            merge(&mut v, extra);
            c = serde_json::from_value(v).unwrap();
            match act(&c, &wffc, None) {
                ClaimAction::Fail(m) => assert!(m.contains(why), "{m}"),
                a => panic!("{a:?}"),
            }
        }
    }

    #[test]
    fn the_volume_pins_the_node_and_references_the_claim() {
        let c = claim(json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}));
        let pv = new_volume(&c, &class("WaitForFirstConsumer"), "n1", Path::new("/var/lib/v/pvc-u1"));
        let v = serde_json::to_value(&pv).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-u1");
        assert_eq!(v["metadata"]["annotations"][ANN_PROVISIONED_BY], PROVISIONER);
        assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(v["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
        assert_eq!(v["spec"]["local"]["path"], "/var/lib/v/pvc-u1");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(v["spec"]["storageClassName"], "local-path");
        assert_eq!(
            v["spec"]["claimRef"],
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": "d", "name": "data-web-0", "uid": "u1", "resourceVersion": "7"})
        );
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
            json!({"key": HOSTNAME_LABEL, "operator": "In", "values": ["n1"]})
        );
        assert!(is_ours(&pv, "n1") && !is_ours(&pv, "n2"));
        assert!(claims(&pv, &c));
        assert!(!claims(&pv, &claim(json!({"metadata": {"uid": "u2"}}))));
        let p = bind_patch(&c, "pvc-u1");
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert_eq!(p["spec"]["volumeName"], "pvc-u1");
        let s = bound_status(&pv);
        assert_eq!(
            s["status"],
            json!({"phase": "Bound", "accessModes": ["ReadWriteOncePod"], "capacity": {"storage": "1Gi"}})
        );
    }

    #[test]
    fn volumes_whose_claim_is_gone_are_released_then_deleted_from_our_directory_only() {
        let dir = Path::new("/var/lib/v");
        let c = claim(json!({}));
        let mut pv = new_volume(&c, &class("WaitForFirstConsumer"), "n1", &dir.join("pvc-u1"));
        assert_eq!(volume_action(&pv, true, dir), VolumeAction::None);
        assert_eq!(volume_action(&pv, false, dir), VolumeAction::Release);
        pv.status = Some(serde_json::from_value(json!({"phase": "Released"})).unwrap());
        assert_eq!(volume_action(&pv, false, dir), VolumeAction::Delete(dir.join("pvc-u1")));
        // Retain keeps it Released.
        let mut kept = pv.clone();
        kept.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert_eq!(volume_action(&kept, false, dir), VolumeAction::None);
        // A path outside our directory is never removed.
        let mut moved = pv.clone();
        moved.spec.as_mut().unwrap().local.as_mut().unwrap().path = "/etc".into();
        assert!(matches!(volume_action(&moved, false, dir), VolumeAction::Foreign(_)));
        // Being deleted: nothing more to do.
        pv.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(volume_action(&pv, false, dir), VolumeAction::None);
    }
}
