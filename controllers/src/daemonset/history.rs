//! A DaemonSet's template history as ControllerRevisions (upstream `daemon/update.go`),
//! pure: the revision of a template (data `{"spec":{"template":{…,"$patch":"replace"}}}`,
//! the strategic merge patch `kubectl rollout undo` applies), its
//! `controller-revision-hash`, which revisions are current and old, and which old ones to
//! prune beyond `revisionHistoryLimit`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};

use crate::pods;

/// `apps.DefaultDaemonSetUniqueLabelKey` (= `ControllerRevisionHashLabelKey`).
pub const HASH_LABEL: &str = "controller-revision-hash";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `controller.ComputeHash(template, collisionCount)`: FNV-32a of the template (its
/// canonical JSON here, upstream hashes its Go dump), then the collision count, spelled
/// with `rand.SafeEncodeString`.
pub fn compute_hash(ds: &DaemonSet, collision_count: Option<i32>) -> String {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let json = serde_json::to_vec(&template).unwrap_or_default();
    let mut h = fnv32a(&json, 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32a(&(c as u32).to_le_bytes(), h);
    }
    h.to_string().bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// `getPatch`: the revision data that restores this DaemonSet's template.
pub fn patch(ds: &DaemonSet) -> Value {
    let mut template =
        ds.spec.as_ref().map(|s| serde_json::to_value(&s.template).unwrap_or(Value::Null)).unwrap_or(Value::Null);
    if !template.is_object() {
        template = json!({});
    }
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// `Match`: whether a revision holds this DaemonSet's current template.
pub fn matches(ds: &DaemonSet, cr: &ControllerRevision) -> bool {
    cr.data.as_ref().is_some_and(|d| d.0 == patch(ds))
}

/// The revision `snapshot` creates: named `<ds>-<hash>`, labelled like the template plus
/// the hash, with the DaemonSet's annotations, controlled by it.
pub fn snapshot(ds: &DaemonSet, revision: i64, hash: &str) -> ControllerRevision {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> =
        ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(HASH_LABEL.to_string(), hash.to_string());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![pods::controller_ref(
                "apps/v1",
                "DaemonSet",
                &name,
                ds.metadata.uid.as_deref().unwrap_or(""),
            )]),
            ..Default::default()
        },
        data: Some(RawExtension(patch(ds))),
        revision,
    }
}

/// The DaemonSet's revisions, sorted: those holding its template and the others.
#[derive(Debug, Default)]
pub struct Split {
    pub current: Vec<Arc<ControllerRevision>>,
    pub old: Vec<Arc<ControllerRevision>>,
}

pub fn split(ds: &DaemonSet, revisions: &[Arc<ControllerRevision>]) -> Split {
    let (current, old) = revisions.iter().cloned().partition(|r| matches(ds, r));
    Split { current, old }
}

/// `maxRevision`.
pub fn max_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0).max(0)
}

/// `dedupCurHistories`: of several current revisions keep the highest (the last of equals).
pub fn keep_current(current: &[Arc<ControllerRevision>]) -> Option<Arc<ControllerRevision>> {
    let mut keep: Option<&Arc<ControllerRevision>> = None;
    for c in current {
        if keep.is_none_or(|k| c.revision >= k.revision) {
            keep = Some(c);
        }
    }
    keep.cloned()
}

/// The hash label of a revision (upstream labels one without it with its name).
pub fn hash_of(cr: &ControllerRevision) -> String {
    cr.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL).cloned())
        .unwrap_or_else(|| cr.metadata.name.clone().unwrap_or_default())
}

/// `cleanupHistory`: the old revisions to delete, oldest first, so that at most `limit`
/// remain, never one whose hash a pod still carries.
pub fn to_prune(old: &[Arc<ControllerRevision>], limit: i32, live_hashes: &HashSet<String>) -> Vec<String> {
    let mut kill = old.len() as i64 - i64::from(limit.max(0));
    if kill <= 0 {
        return vec![];
    }
    let mut sorted: Vec<&Arc<ControllerRevision>> = old.iter().collect();
    sorted.sort_by_key(|r| r.revision);
    let mut out = Vec::new();
    for r in sorted {
        if kill <= 0 {
            break;
        }
        if live_hashes.contains(&hash_of(r)) {
            continue;
        }
        out.push(r.metadata.name.clone().unwrap_or_default());
        kill -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(image: &str) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u1", "annotations": {"a": "b"}},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn rev(name: &str, revision: i64, hash: Option<&str>) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: hash.map(|h| BTreeMap::from([(HASH_LABEL.to_string(), h.to_string())])),
                ..Default::default()
            },
            data: None,
            revision,
        })
    }

    #[test]
    fn hash_is_stable_and_changes_with_template_and_collisions() {
        let a = compute_hash(&ds("v1"), None);
        assert_eq!(a, compute_hash(&ds("v1"), None));
        assert!(!a.is_empty() && a.len() <= 10 && a.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_ne!(a, compute_hash(&ds("v2"), None));
        assert_ne!(a, compute_hash(&ds("v1"), Some(1)));
    }

    #[test]
    fn snapshot_holds_a_replace_patch_of_the_template() {
        let d = ds("v1");
        let cr = snapshot(&d, 3, "abc");
        assert_eq!(cr.metadata.name.as_deref(), Some("agent-abc"));
        assert_eq!(cr.revision, 3);
        let labels = cr.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("abc"));
        assert_eq!(cr.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let data = &cr.data.as_ref().unwrap().0;
        assert_eq!(data["spec"]["template"]["$patch"], json!("replace"));
        assert_eq!(data["spec"]["template"]["spec"]["containers"][0]["image"], json!("v1"));
        assert!(matches(&d, &cr));
        assert!(!matches(&ds("v2"), &cr));
        let s = split(&ds("v2"), &[Arc::new(cr.clone())]);
        assert!(s.current.is_empty() && s.old.len() == 1);
    }

    #[test]
    fn keeps_the_highest_current_and_prunes_oldest_unused() {
        let k = keep_current(&[rev("a", 2, None), rev("b", 5, None), rev("c", 5, None)]).unwrap();
        assert_eq!(k.metadata.name.as_deref(), Some("c"));
        assert_eq!(max_revision(&[rev("a", 2, None), rev("b", 7, None)]), 7);
        assert_eq!(max_revision(&[]), 0);
        let old =
            vec![rev("r3", 3, Some("h3")), rev("r1", 1, Some("h1")), rev("r2", 2, Some("h2")), rev("r4", 4, None)];
        let live = HashSet::from(["h1".to_string()]);
        // Keep 1 of 4: delete 3, oldest first, skipping r1 (a pod still runs it).
        assert_eq!(to_prune(&old, 1, &live), vec!["r2", "r3", "r4"]);
        assert_eq!(to_prune(&old, 2, &live), vec!["r2", "r3"]);
        assert!(to_prune(&old, 10, &live).is_empty());
        // A revision without the label is known by its name.
        assert_eq!(
            to_prune(&old, 3, &HashSet::from(["h1".into(), "h2".into(), "h3".into(), "r4".into()])),
            Vec::<String>::new()
        );
    }
}
