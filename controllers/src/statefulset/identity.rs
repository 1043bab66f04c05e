//! A StatefulSet pod's identity (upstream `stateful_set_utils.go`): its name `<set>-<ordinal>`,
//! labels, hostname and subdomain; its claims `<template>-<set>-<ordinal>` and the volumes
//! that mount them; and the owner references the claim retention policy asks for.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::set::{self, Retention, Set};
use crate::pods;

/// `apps.StatefulSetPodNameLabel`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// `apps.PodIndexLabel`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// `apps.StatefulSetRevisionLabel`: the name of the pod's ControllerRevision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// `getParentNameAndOrdinal`: `(.*)-([0-9]+)$`. The ordinal is `None` when the digits do
/// not fit an `i32` (the parent is still given then, as upstream's).
pub fn parent_and_ordinal(pod_name: &str) -> Option<(&str, Option<i32>)> {
    let (parent, digits) = pod_name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse::<i32>().ok()))
}

/// The ordinal of a pod's name (`getOrdinal`, `None` for -1).
pub fn ordinal(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?)?.1
}

/// `isMemberOf`: the pod's name says it is the set's.
pub fn is_member(set_name: &str, pod: &Pod) -> bool {
    pod.metadata.name.as_deref().and_then(parent_and_ordinal).is_some_and(|(p, _)| p == set_name)
}

pub fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

/// `getPersistentVolumeClaimName`.
pub fn claim_name(template: &str, set_name: &str, ordinal: i32) -> String {
    format!("{template}-{set_name}-{ordinal}")
}

fn template_name(t: &PersistentVolumeClaim) -> &str {
    t.metadata.name.as_deref().unwrap_or("")
}

/// The revision a pod was made from (`getPodRevision`, empty when unlabelled).
pub fn revision(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map(String::as_str).unwrap_or("")
}

/// `identityMatches`: name, namespace and the identity labels.
pub fn identity_matches(set: &Set, pod: &Pod) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let Some((parent, Some(ord))) = parent_and_ordinal(name) else { return false };
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    parent == set.name
        && name == pod_name(&set.name, ord)
        && pod.metadata.namespace.as_deref() == Some(set.namespace.as_str())
        && label(POD_NAME_LABEL) == Some(name)
        && label(POD_INDEX_LABEL) == Some(ord.to_string().as_str())
}

/// The identity labels a member pod should carry (`updateIdentity`).
pub fn identity_labels(set: &Set, ordinal: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POD_NAME_LABEL.to_string(), pod_name(&set.name, ordinal)),
        (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
    ])
}

/// `storageMatches`: every claim template is mounted from this pod's claim.
pub fn storage_matches(set: &Set, pod: &Pod) -> bool {
    let Some(ord) = ordinal(pod) else { return false };
    let volumes = pod.spec.as_ref().map(|s| s.volumes.clone().unwrap_or_default()).unwrap_or_default();
    set.claim_templates.iter().all(|t| {
        let want = claim_name(template_name(t), &set.name, ord);
        volumes.iter().any(|v| {
            v.name == template_name(t) && v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == want)
        })
    })
}

/// The claims a pod of `ordinal` uses (`getPersistentVolumeClaims`), in template order:
/// each template renamed, in the set's namespace, labelled with the selector's matchLabels
/// (over the template's labels), without owners.
pub fn claims_for(set: &Set, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    set.claim_templates
        .iter()
        .map(|t| {
            let tm = &t.metadata;
            let mut labels = tm.labels.clone().unwrap_or_default();
            labels.extend(set.match_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(template_name(t), &set.name, ordinal)),
                    namespace: Some(set.namespace.clone()),
                    labels: (!labels.is_empty()).then_some(labels),
                    annotations: tm.annotations.clone(),
                    finalizers: tm.finalizers.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// `updateStorage`: the claim volumes (template order) then the pod's other volumes (a
/// volume named like a claim template is replaced by the claim).
pub fn with_storage(set: &Set, ordinal: i32, volumes: Vec<Volume>) -> Vec<Volume> {
    let names: HashSet<&str> = set.claim_templates.iter().map(template_name).collect();
    let mut out: Vec<Volume> = set
        .claim_templates
        .iter()
        .map(|t| Volume {
            name: template_name(t).to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(template_name(t), &set.name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    out.extend(volumes.into_iter().filter(|v| !names.contains(v.name.as_str())));
    out
}

/// `newStatefulSetPod` + `setPodRevision`: the pod of `ordinal` made from `template` (the
/// template of revision `revision`), controlled by the set.
pub fn new_pod(set: &Set, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let owner = pods::controller_ref(set::API_VERSION, set::KIND, &set.name, &set.uid);
    let mut pod = pods::from_template(template, &set.namespace, &set.name, owner);
    let name = pod_name(&set.name, ordinal);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(identity_labels(set, ordinal));
    labels.insert(REVISION_LABEL.to_string(), revision.to_string());
    let mut spec = pod.spec.take().unwrap_or_default();
    spec.hostname = Some(name);
    spec.subdomain = (!set.service_name.is_empty()).then(|| set.service_name.clone());
    let volumes = with_storage(set, ordinal, spec.volumes.take().unwrap_or_default());
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod.spec = Some(spec);
    pod
}

/// The owner a claim's references are checked against: the set, or one of its pods (a pod
/// not created yet has no uid).
#[derive(Debug, Clone, Copy)]
pub struct Obj<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

impl<'a> Obj<'a> {
    pub fn set(set: &'a Set) -> Obj<'a> {
        Obj { api_version: set::API_VERSION, kind: set::KIND, name: &set.name, uid: Some(&set.uid) }
    }

    pub fn pod(name: &'a str, uid: Option<&'a str>) -> Obj<'a> {
        Obj { api_version: "v1", kind: "Pod", name, uid: uid.filter(|u| !u.is_empty()) }
    }

    /// `matchesRef`: same group/version, kind and name (whatever the uid).
    fn matches(&self, r: &OwnerReference) -> bool {
        r.api_version == self.api_version && r.kind == self.kind && r.name == self.name
    }

    fn is(&self, r: &OwnerReference) -> bool {
        self.uid.is_some_and(|u| u == r.uid)
    }
}

fn is_controller(r: &OwnerReference) -> bool {
    r.controller == Some(true)
}

/// `hasStaleOwnerRef`: the first reference naming `obj` has another uid.
fn has_stale_ref(refs: &[OwnerReference], obj: Obj) -> bool {
    refs.iter().find(|r| obj.matches(r)).is_some_and(|r| Some(r.uid.as_str()) != obj.uid)
}

/// `hasUnexpectedController`: under a deleting policy, a controller that is neither the set
/// nor the pod, or a reference to either with another uid.
fn has_unexpected_controller(refs: &[OwnerReference], policy: Retention, set: Obj, pod: Obj) -> bool {
    if policy.retain_all() {
        return false;
    }
    refs.iter().any(|r| {
        if set.matches(r) {
            return !set.is(r);
        }
        if pod.matches(r) {
            return !pod.is(r);
        }
        is_controller(r)
    })
}

/// `isClaimOwnerUpToDate`: whether a claim's references already say what the policy asks:
/// none (Retain/Retain), the set (whenDeleted Delete, pod in range), the pod (whenScaled
/// Delete, pod scaled down). A claim with stale or foreign controllers is left alone.
pub fn claim_owners_up_to_date(refs: &[OwnerReference], policy: Retention, set: Obj, pod: Obj, in_range: bool) -> bool {
    if has_stale_ref(refs, set) || has_stale_ref(refs, pod) {
        return true;
    }
    let has_set = refs.iter().any(|r| set.is(r));
    let has_pod = refs.iter().any(|r| pod.is(r));
    if has_unexpected_controller(refs, policy, set, pod) {
        return !(has_set || has_pod);
    }
    // `hasNonControllerOwner`: our reference must be a controller one.
    if refs.iter().any(|r| (set.is(r) || pod.is(r)) && !is_controller(r)) {
        return false;
    }
    let (want_set, want_pod) = wanted(policy, in_range);
    has_set == want_set && has_pod == want_pod
}

/// Which of (set, pod) should own a claim under `policy`.
fn wanted(policy: Retention, in_range: bool) -> (bool, bool) {
    match (policy.delete_when_scaled, policy.delete_when_deleted) {
        (false, false) => (false, false),
        (false, true) => (true, false),
        (true, false) => (false, !in_range),
        (true, true) => (in_range, !in_range),
    }
}

/// `updateClaimOwnerRefForSetAndPod`: the claim's references with ours replaced by the
/// ones the policy asks for (none beside a foreign controller).
pub fn claim_owners(
    refs: &[OwnerReference],
    policy: Retention,
    set: Obj,
    pod: Obj,
    in_range: bool,
) -> Vec<OwnerReference> {
    let unexpected = has_unexpected_controller(refs, policy, set, pod);
    let mut out: Vec<OwnerReference> = refs.iter().filter(|r| !set.matches(r) && !pod.matches(r)).cloned().collect();
    if unexpected {
        return out;
    }
    let (want_set, want_pod) = wanted(policy, in_range);
    for (want, obj) in [(want_set, set), (want_pod, pod)] {
        if let (true, Some(uid)) = (want, obj.uid) {
            if !out.iter().any(|r| r.uid == uid) {
                out.push(pods::controller_ref(obj.api_version, obj.kind, obj.name, uid));
            }
        }
    }
    out
}

/// `PodClaimIsStale`: under whenScaled Delete, a claim of this pod still owned by an
/// earlier pod of the same name (its garbage collection is pending): wait for it.
pub fn claim_is_stale(refs: &[OwnerReference], policy: Retention, pod: Obj) -> bool {
    policy.delete_when_scaled && has_stale_ref(refs, pod)
}

#[cfg(test)]
pub(crate) mod tests;
