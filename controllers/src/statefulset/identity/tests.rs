use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::json;

use super::*;

pub fn sts(extra: serde_json::Value) -> Set {
    let mut base = json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid", "generation": 1},
        "spec": {
            "replicas": 3,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}],
                         "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "www", "labels": {"tier": "data", "app": "other"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    });
    merge(&mut base, extra);
    Set::from_api(&serde_json::from_value::<StatefulSet>(base).unwrap())
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn set_ref() -> OwnerReference {
    pods::controller_ref("apps/v1", "StatefulSet", "web", "set-uid")
}

fn pod_ref(uid: &str) -> OwnerReference {
    pods::controller_ref("v1", "Pod", "web-1", uid)
}

#[test]
fn ordinals_parse_like_upstreams_regex() {
    assert_eq!(parent_and_ordinal("web-0"), Some(("web", Some(0))));
    assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", Some(12))));
    assert_eq!(parent_and_ordinal("web-99999999999"), Some(("web", None)));
    assert_eq!(parent_and_ordinal("web"), None);
    assert_eq!(parent_and_ordinal("web-"), None);
    assert_eq!(parent_and_ordinal("web-1a"), None);
    let p = Pod { metadata: ObjectMeta { name: Some("web-3".into()), ..Default::default() }, ..Default::default() };
    assert!(is_member("web", &p) && !is_member("we", &p));
    assert_eq!(ordinal(&p), Some(3));
}

#[test]
fn names_of_pods_and_claims() {
    assert_eq!(pod_name("web", 2), "web-2");
    assert_eq!(claim_name("www", "web", 2), "www-web-2");
}

#[test]
fn spec_defaults_fill_in() {
    let s = sts(json!({}));
    assert_eq!((s.replicas, s.start, s.parallel, s.on_delete, s.partition), (3, 0, false, false, Some(0)));
    assert_eq!(s.revision_history_limit, 10);
    assert!(s.retention.retain_all());
    let s = sts(json!({"spec": {"updateStrategy": {"type": "OnDelete"}, "podManagementPolicy": "Parallel",
        "ordinals": {"start": 5}, "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}}));
    assert_eq!((s.start, s.parallel, s.on_delete, s.partition), (5, true, true, None));
    assert!(s.retention.delete_when_scaled && !s.retention.delete_when_deleted);
    assert!(s.in_range(5) && s.in_range(7) && !s.in_range(8) && !s.in_range(4));
    let empty = sts(json!({"spec": {"selector": {"matchLabels": null}}}));
    assert!(empty.selector.is_none());
}

#[test]
fn a_new_pod_has_its_identity_revision_and_claims() {
    let s = sts(json!({}));
    let p = new_pod(&s, &s.template, "web-abc", 1);
    assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
    assert_eq!(p.metadata.generate_name, None);
    assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
    let l = p.metadata.labels.clone().unwrap();
    assert_eq!(l.get("app").map(String::as_str), Some("web"));
    assert_eq!(l.get(POD_NAME_LABEL).map(String::as_str), Some("web-1"));
    assert_eq!(l.get(POD_INDEX_LABEL).map(String::as_str), Some("1"));
    assert_eq!(l.get(REVISION_LABEL).map(String::as_str), Some("web-abc"));
    assert_eq!(revision(&p), "web-abc");
    let spec = p.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let vols = spec.volumes.unwrap();
    assert_eq!(vols.len(), 2, "the template's www volume is replaced by the claim");
    assert_eq!(vols[0].name, "www");
    assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-1");
    assert_eq!(vols[1].name, "cfg");
    let owner = pods::controller_of(&p.metadata).unwrap();
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("StatefulSet", "set-uid"));
    assert!(identity_matches(&s, &p) && storage_matches(&s, &p));
}

#[test]
fn identity_and_storage_mismatches_are_seen() {
    let s = sts(json!({}));
    let mut p = new_pod(&s, &s.template, "r", 0);
    p.metadata.labels.as_mut().unwrap().remove(POD_INDEX_LABEL);
    assert!(!identity_matches(&s, &p));
    p.metadata.labels.as_mut().unwrap().extend(identity_labels(&s, 0));
    assert!(identity_matches(&s, &p));
    p.spec = Some(PodSpec::default());
    assert!(!storage_matches(&s, &p));
    p.metadata.namespace = Some("other".into());
    assert!(!identity_matches(&s, &p));
}

#[test]
fn claims_carry_the_selector_labels() {
    let s = sts(json!({}));
    let c = claims_for(&s, 4);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].metadata.name.as_deref(), Some("www-web-4"));
    assert_eq!(c[0].metadata.namespace.as_deref(), Some("ns"));
    let l = c[0].metadata.labels.clone().unwrap();
    assert_eq!(l.get("app").map(String::as_str), Some("web"), "matchLabels win over the template's");
    assert_eq!(l.get("tier").map(String::as_str), Some("data"));
    assert!(c[0].spec.is_some() && c[0].metadata.owner_references.is_none());
}

fn policy(scaled: bool, deleted: bool) -> Retention {
    Retention { delete_when_scaled: scaled, delete_when_deleted: deleted }
}

#[test]
fn retention_policy_decides_claim_owners() {
    let s = sts(json!({}));
    let (so, po) = (Obj::set(&s), Obj::pod("web-1", Some("pod-uid")));
    let uids = |refs: &[OwnerReference]| refs.iter().map(|r| r.uid.clone()).collect::<Vec<_>>();
    let cases = [
        // (whenScaled Delete, whenDeleted Delete, in range) -> owners
        (false, false, true, vec![]),
        (false, false, false, vec![]),
        (false, true, true, vec!["set-uid"]),
        (false, true, false, vec!["set-uid"]),
        (true, false, true, vec![]),
        (true, false, false, vec!["pod-uid"]),
        (true, true, true, vec!["set-uid"]),
        (true, true, false, vec!["pod-uid"]),
    ];
    for (scaled, deleted, in_range, want) in cases {
        let pol = policy(scaled, deleted);
        let got = claim_owners(&[], pol, so, po, in_range);
        assert_eq!(uids(&got), want, "{scaled} {deleted} {in_range}");
        assert!(got.iter().all(|r| r.controller == Some(true)));
        assert!(claim_owners_up_to_date(&got, pol, so, po, in_range));
        // Starting from the other extreme (both refs) also lands there.
        let both = vec![set_ref(), pod_ref("pod-uid")];
        assert_eq!(uids(&claim_owners(&both, pol, so, po, in_range)), want);
        assert!(!claim_owners_up_to_date(&both, pol, so, po, in_range));
    }
}

#[test]
fn non_controller_refs_are_redone_and_foreign_owners_kept() {
    let s = sts(json!({}));
    let (so, po) = (Obj::set(&s), Obj::pod("web-1", Some("pod-uid")));
    let pol = policy(false, true);
    let mut plain = set_ref();
    plain.controller = None;
    assert!(!claim_owners_up_to_date(&[plain.clone()], pol, so, po, true));
    let fixed = claim_owners(&[plain], pol, so, po, true);
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].controller, Some(true));
    // Another (non-controller) owner stays.
    let other = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "x".into(),
        uid: "cm".into(),
        ..Default::default()
    };
    let out = claim_owners(std::slice::from_ref(&other), pol, so, po, true);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], other);
}

#[test]
fn foreign_controllers_and_stale_refs_are_left_alone() {
    let s = sts(json!({}));
    let (so, po) = (Obj::set(&s), Obj::pod("web-1", Some("pod-uid")));
    let pol = policy(true, true);
    let foreign = pods::controller_ref("apps/v1", "Other", "x", "other-uid");
    assert!(claim_owners_up_to_date(std::slice::from_ref(&foreign), pol, so, po, true));
    // With our ref beside a foreign controller: ours is dropped, nothing added.
    let out = claim_owners(&[foreign.clone(), set_ref()], pol, so, po, true);
    assert_eq!(out, vec![foreign]);
    // A ref to an earlier pod of the same name: up to date (not ours to touch)...
    let stale = pod_ref("old-uid");
    assert!(claim_owners_up_to_date(std::slice::from_ref(&stale), pol, so, po, false));
    // ...and it holds back the creation of the new pod under whenScaled Delete.
    assert!(claim_is_stale(std::slice::from_ref(&stale), pol, Obj::pod("web-1", None)));
    assert!(!claim_is_stale(&[stale], policy(false, true), Obj::pod("web-1", None)));
    assert!(!claim_is_stale(&[set_ref()], pol, Obj::pod("web-1", None)));
}
