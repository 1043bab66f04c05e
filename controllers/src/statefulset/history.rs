//! A StatefulSet's template history as ControllerRevisions (upstream `controller/history`
//! and `getStatefulSetRevisions`), pure: the revision of the set's template (data
//! `{"spec":{"template":{…,"$patch":"replace"}}}`, the strategic merge patch that restores
//! it), its name `<set>-<hash>`, which revision is the update one (the newest equal one,
//! one to roll back to, or a new one), the template a revision holds, and which revisions
//! to prune beyond `revisionHistoryLimit`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};

use super::set::{self, Set};
use crate::pods;

/// `history.ControllerRevisionHashLabel`.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-32 (not 32a, as upstream's `fnv.New32`).
fn fnv32(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

/// `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// `getPatch`: the revision data that restores `template`.
pub fn patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if !t.is_object() {
        t = json!({});
    }
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// `HashControllerRevision`: FNV-32 of the data, then the collision count in decimal.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let mut h = fnv32(&bytes, 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32(c.to_string().as_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// `ControllerRevisionName`: `<prefix>-<hash>`, the prefix cut to 223 characters.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let mut p = prefix.to_string();
    if p.len() > 223 {
        let mut cut = 223;
        while !p.is_char_boundary(cut) {
            cut -= 1;
        }
        p.truncate(cut);
    }
    format!("{p}-{hash}")
}

/// `newRevision`: the revision `revision` of the set's template, named by its hash with
/// `collision_count`, labelled like the template plus the hash, annotated like the set,
/// controlled by it.
pub fn new_revision(set: &Set, revision: i64, collision_count: i32) -> ControllerRevision {
    let data = patch(&set.template);
    let h = hash(&data, Some(collision_count));
    let mut labels: BTreeMap<String, String> =
        set.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(HASH_LABEL.to_string(), h.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&set.name, &h)),
            namespace: Some(set.namespace.clone()),
            labels: Some(labels),
            annotations: (!set.annotations.is_empty()).then(|| set.annotations.clone()),
            owner_references: Some(vec![pods::controller_ref(set::API_VERSION, set::KIND, &set.name, &set.uid)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// `EqualRevision`: the same data (compared as JSON values).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// `SortControllerRevisions`: by revision, then creation time, then name.
pub fn sort(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
                ta.cmp(&tb)
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// `nextRevision` of sorted revisions.
pub fn next_revision(sorted: &[Arc<ControllerRevision>]) -> i64 {
    sorted.last().map_or(1, |r| r.revision + 1)
}

/// Which revision is the update revision.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// The newest revision holds the template already: it is the update revision.
    Latest(String),
    /// An older revision holds it (a rollback): renumber it to the given revision.
    Renumber(String, i64),
    /// None does: create the candidate.
    Create,
}

/// `getStatefulSetRevisions`' choice for `candidate` (made by [`new_revision`] with the
/// next revision number) among `sorted` revisions.
pub fn choose_update(sorted: &[Arc<ControllerRevision>], candidate: &ControllerRevision) -> Update {
    let Some(equal_last) = sorted.iter().rev().find(|r| equal(r, candidate)) else { return Update::Create };
    let name = equal_last.metadata.name.clone().unwrap_or_default();
    match sorted.last() {
        Some(last) if equal(last, equal_last) => Update::Latest(last.metadata.name.clone().unwrap_or_default()),
        _ => Update::Renumber(name, candidate.revision),
    }
}

/// `ApplyRevision`: the template a revision restores (`None` if its data holds none).
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// `truncateHistory`: the revisions to delete, oldest first: those not live (not current,
/// not update, no pod's) beyond `limit` (a negative limit keeps all).
pub fn to_prune(sorted: &[Arc<ControllerRevision>], live: &HashSet<String>, limit: i32) -> Vec<String> {
    let history: Vec<String> =
        sorted.iter().filter_map(|r| r.metadata.name.clone()).filter(|n| !live.contains(n)).collect();
    if limit < 0 || history.len() <= limit as usize {
        return Vec::new();
    }
    let n = history.len() - limit as usize;
    history.into_iter().take(n).collect()
}

#[cfg(test)]
mod tests;
