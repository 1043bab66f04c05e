//! `pod-template-hash`: the label that ties a Deployment's ReplicaSet to one template.
//! Upstream hashes the template with FNV-32a (plus the collision count) and spells the
//! number with `rand.SafeEncodeString`; keelson hashes the template's canonical JSON the
//! same way (the value differs from upstream's byte-for-byte, the shape does not).

use k8s_openapi::api::core::v1::PodTemplateSpec;

pub const LABEL: &str = "pod-template-hash";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `ComputeHash(template, collisionCount)`.
pub fn compute(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(&json, 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32a(&(c as u32).to_le_bytes(), h);
    }
    h.to_string().bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// A template without its `pod-template-hash` label (for `EqualIgnoreHash`).
pub fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
    }
    t
}

/// `EqualIgnoreHash`.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn t(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap()
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_template_and_collisions() {
        let a = compute(&t("nginx:1"), None);
        assert_eq!(a, compute(&t("nginx:1"), None));
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)) && !a.is_empty() && a.len() <= 10);
        assert_ne!(a, compute(&t("nginx:2"), None));
        assert_ne!(a, compute(&t("nginx:1"), Some(1)));
    }

    #[test]
    fn equality_ignores_only_the_hash_label() {
        let mut with = t("nginx:1");
        with.metadata = Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".into(), "web".into()), (LABEL.into(), "abc".into())])),
            ..Default::default()
        });
        assert!(equal_ignore_hash(&with, &t("nginx:1")));
        assert!(!equal_ignore_hash(&with, &t("nginx:2")));
    }
}
