use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::statefulset::identity::tests::sts;

fn with_image(image: &str) -> Set {
    sts(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}))
}

fn rev(name: &str, revision: i64, data: Value) -> Arc<ControllerRevision> {
    Arc::new(ControllerRevision {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(RawExtension(data)),
        revision,
    })
}

#[test]
fn fnv32_matches_the_reference_vectors() {
    // FNV-1 32-bit test vectors (not FNV-1a).
    assert_eq!(fnv32(b"", 0x811c_9dc5), 0x811c_9dc5);
    assert_eq!(fnv32(b"a", 0x811c_9dc5), 0x050c_5d7e);
    assert_eq!(fnv32(b"foobar", 0x811c_9dc5), 0x31f0_b262);
}

#[test]
fn the_hash_names_the_revision_and_changes_with_template_and_collisions() {
    let a = with_image("nginx:1");
    let r = new_revision(&a, 1, 0);
    let h = hash(&patch(&a.template), Some(0));
    assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)) && !h.is_empty() && h.len() <= 10);
    assert_eq!(r.metadata.name, Some(format!("web-{h}")));
    assert_eq!(r.metadata.labels.as_ref().unwrap().get(HASH_LABEL), Some(&h));
    assert_eq!(r.metadata.labels.as_ref().unwrap().get("app").map(String::as_str), Some("web"));
    assert_eq!(pods::controller_of(&r.metadata).unwrap().uid, "set-uid");
    assert_eq!(r.revision, 1);
    // Stable, but not across templates or collision counts.
    assert_eq!(new_revision(&a, 7, 0).metadata.name, r.metadata.name);
    assert_ne!(new_revision(&with_image("nginx:2"), 1, 0).metadata.name, r.metadata.name);
    assert_ne!(new_revision(&a, 1, 1).metadata.name, r.metadata.name);
    assert!(equal(&new_revision(&a, 1, 0), &new_revision(&a, 2, 5)));
}

#[test]
fn the_data_is_a_replacing_template_patch_that_restores_it() {
    let a = with_image("nginx:1");
    let r = new_revision(&a, 1, 0);
    let d = &r.data.as_ref().unwrap().0;
    assert_eq!(d["spec"]["template"]["$patch"], json!("replace"));
    assert_eq!(d.as_object().unwrap().len(), 1);
    assert_eq!(template_of(&r), Some(a.template.clone()));
    assert_eq!(template_of(&rev("x", 1, json!({"spec": {}}))), None);
}

#[test]
fn revision_names_are_capped() {
    assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
}

#[test]
fn the_update_revision_is_the_newest_equal_one_or_a_rollback_or_new() {
    let a = with_image("nginx:1");
    let b = with_image("nginx:2");
    let ra = rev("web-a", 1, patch(&a.template));
    let rb = rev("web-b", 2, patch(&b.template));
    let cand = |s: &Set, sorted: &[Arc<ControllerRevision>]| new_revision(s, next_revision(sorted), 0);
    assert_eq!(choose_update(&[], &cand(&a, &[])), Update::Create);
    let sorted = vec![ra.clone(), rb.clone()];
    assert_eq!(next_revision(&sorted), 3);
    assert_eq!(choose_update(&sorted, &cand(&b, &sorted)), Update::Latest("web-b".into()));
    assert_eq!(choose_update(&sorted, &cand(&a, &sorted)), Update::Renumber("web-a".into(), 3));
    assert_eq!(choose_update(&sorted, &cand(&with_image("nginx:3"), &sorted)), Update::Create);
}

#[test]
fn revisions_sort_by_number_then_age_then_name() {
    let t = |s: i64| Some(Time(jiff::Timestamp::from_second(s).unwrap()));
    let mut a = (*rev("c", 2, json!({}))).clone();
    a.metadata.creation_timestamp = t(10);
    let mut b = (*rev("b", 2, json!({}))).clone();
    b.metadata.creation_timestamp = t(5);
    let mut v = vec![Arc::new(a), rev("z", 1, json!({})), Arc::new(b), rev("a", 3, json!({}))];
    sort(&mut v);
    let names: Vec<_> = v.iter().map(|r| r.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["z", "b", "c", "a"]);
}

#[test]
fn pruning_keeps_live_revisions_and_the_newest_history() {
    let v: Vec<_> = (1..=6).map(|i| rev(&format!("r{i}"), i, json!({}))).collect();
    let live: HashSet<String> = ["r2".to_string(), "r6".to_string()].into();
    assert_eq!(to_prune(&v, &live, 2), ["r1", "r3"]);
    assert!(to_prune(&v, &live, 4).is_empty());
    assert!(to_prune(&v, &live, -1).is_empty());
    assert_eq!(to_prune(&v, &live, 0), ["r1", "r3", "r4", "r5"]);
}
