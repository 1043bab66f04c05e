//! The Node authorizer (Kubernetes' `Node` authorization mode with the `system:node`
//! role's reads and NodeRestriction's limits, in one place): a kubelet (`system:node:<n>`
//! in `system:nodes`) may
//! - read nodes, services, endpoints and endpointslices, and list/watch pods;
//! - create, update and patch its own Node (and `nodes/status`), and its own Lease in
//!   `kube-node-lease`;
//! - get, delete and update the status of pods bound to it (`spec.nodeName`), and get
//!   the Secrets, ConfigMaps, PersistentVolumeClaims and ServiceAccounts (tokens) those
//!   pods use, and the PersistentVolumes those claims are bound to;
//! - write Events.
//!
//! Facts about pods are read from the store, so the decision follows the bindings.

use serde_json::Value;

use crate::authn::UserInfo;
use crate::authz::Attributes;
use crate::serve::Api;
use crate::storage::{self, Freshness};

/// The node a kubelet's identity names.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.in_group("system:nodes") {
        return None;
    }
    user.username.strip_prefix("system:node:").filter(|n| !n.is_empty())
}

const READ: &[&str] = &["get", "list", "watch"];

/// Whether the kubelet of `node` may do `a`.
pub(crate) async fn allowed(api: &Api, node: &str, a: &Attributes<'_>) -> bool {
    let own = a.name == Some(node);
    match (a.group, a.resource, a.subresource) {
        ("", "nodes", None) if READ.contains(&a.verb) => true,
        ("", "nodes", None | Some("status")) => {
            matches!(a.verb, "create" | "update" | "patch") && (own || a.verb == "create" && a.name.is_none())
        }
        ("coordination.k8s.io", "leases", None) => {
            a.namespace == Some("kube-node-lease")
                && (own || a.verb == "create" && a.name.is_none())
                && matches!(a.verb, "get" | "create" | "update" | "patch" | "delete")
        }
        ("", "services" | "endpoints", None) | ("discovery.k8s.io", "endpointslices", None) => READ.contains(&a.verb),
        ("", "events", None) | ("events.k8s.io", "events", None) => matches!(a.verb, "create" | "update" | "patch"),
        ("", "pods", None) if matches!(a.verb, "list" | "watch") => true,
        ("", "pods", None) if matches!(a.verb, "get" | "delete") => pod_on_node(api, a, node).await,
        ("", "pods", Some("status")) if matches!(a.verb, "get" | "update" | "patch") => pod_on_node(api, a, node).await,
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", None) if a.verb == "get" => {
            used_by_pod_on_node(api, a, node).await
        }
        ("", "serviceaccounts", Some("token")) if a.verb == "create" => used_by_pod_on_node(api, a, node).await,
        ("", "persistentvolumes", None) if a.verb == "get" => volume_of_pod_on_node(api, a, node).await,
        _ => false,
    }
}

/// NodeRestriction on creates: the URL of a create names no object, so the Node or Lease
/// a kubelet creates must be its own by the body's name.
pub fn check_create(user: &UserInfo, group: &str, resource: &str, obj: &Value) -> Result<(), crate::status::ApiError> {
    let Some(node) = node_name(user) else { return Ok(()) };
    if user.in_group("system:masters")
        || !matches!((group, resource), ("", "nodes") | ("coordination.k8s.io", "leases"))
    {
        return Ok(());
    }
    let name = crate::meta::name(obj).unwrap_or_default();
    if name == node {
        return Ok(());
    }
    Err(crate::status::ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: node \"{node}\" is not allowed to modify {resource} other than its own",
        crate::status::qualified(resource, group)
    )))
}

async fn pod_on_node(api: &Api, a: &Attributes<'_>, node: &str) -> bool {
    let (Some(ns), Some(name)) = (a.namespace, a.name) else { return false };
    let Some(def) = api.registry.find("", "v1", "pods") else { return false };
    let Ok((Some(kv), _)) =
        storage::get(&api.store, &storage::object_key(&def, Some(ns), name), Freshness::Latest).await
    else {
        return false;
    };
    storage::decode(&kv).ok().and_then(|p| p.pointer("/spec/nodeName").and_then(Value::as_str).map(|n| n == node))
        == Some(true)
}

/// A stored object (`None` if it does not exist or cannot be read).
async fn stored(api: &Api, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
    let def = api.registry.find("", "v1", resource)?;
    let (kv, _) =
        storage::get(&api.store, &storage::object_key(&def, namespace, name), Freshness::Latest).await.ok()?;
    storage::decode(&kv?).ok()
}

/// The claim (namespace, name) a PersistentVolume is bound to, when that claim names the
/// volume back (the binding the Node authorizer's graph follows: pod → claim → volume).
pub fn bound_claim<'a>(pv: &'a Value, claim: Option<&Value>) -> Option<(&'a str, &'a str)> {
    let ns = pv.pointer("/spec/claimRef/namespace").and_then(Value::as_str)?;
    let name = pv.pointer("/spec/claimRef/name").and_then(Value::as_str)?;
    let pv_name = pv.pointer("/metadata/name").and_then(Value::as_str)?;
    (claim?.pointer("/spec/volumeName").and_then(Value::as_str) == Some(pv_name)).then_some((ns, name))
}

/// Whether the named PersistentVolume is bound to a claim a pod bound to `node` uses.
async fn volume_of_pod_on_node(api: &Api, a: &Attributes<'_>, node: &str) -> bool {
    let Some(name) = a.name else { return false };
    let Some(pv) = stored(api, "persistentvolumes", None, name).await else { return false };
    let (Some(ns), Some(claim_name)) = (
        pv.pointer("/spec/claimRef/namespace").and_then(Value::as_str),
        pv.pointer("/spec/claimRef/name").and_then(Value::as_str),
    ) else {
        return false;
    };
    let claim = stored(api, "persistentvolumeclaims", Some(ns), claim_name).await;
    let Some((ns, claim_name)) = bound_claim(&pv, claim.as_ref()) else { return false };
    let via = Attributes {
        verb: "get",
        group: "",
        resource: "persistentvolumeclaims",
        subresource: None,
        namespace: Some(ns),
        name: Some(claim_name),
    };
    used_by_pod_on_node(api, &via, node).await
}

/// Whether a pod bound to `node` in the namespace uses the named object.
async fn used_by_pod_on_node(api: &Api, a: &Attributes<'_>, node: &str) -> bool {
    let (Some(ns), Some(name)) = (a.namespace, a.name) else { return false };
    let Some(def) = api.registry.find("", "v1", "pods") else { return false };
    let prefix = format!("{}{ns}/", def.key_prefix);
    let Ok(r) = api
        .store
        .range(keelson_store::RangeRequest {
            serializable: true,
            ..keelson_store::RangeRequest::new(keelson_store::KeyRange::prefix(prefix))
        })
        .await
    else {
        return false;
    };
    r.kvs.iter().filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok()).any(|pod| {
        pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && references(&pod, a.resource, name)
    })
}

/// Whether a pod's spec names `name` as a `resource` (secrets, configmaps, claims, its
/// service account).
pub fn references(pod: &Value, resource: &str, name: &str) -> bool {
    let Some(spec) = pod.get("spec") else { return false };
    if resource == "serviceaccounts" {
        return spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("default") == name;
    }
    let mut found = false;
    let mut visit = |v: &Value| {
        let hit = match resource {
            "secrets" => {
                v.pointer("/secret/secretName").and_then(Value::as_str) == Some(name)
                    || v.pointer("/secretRef/name").and_then(Value::as_str) == Some(name)
                    || v.pointer("/secretKeyRef/name").and_then(Value::as_str) == Some(name)
            }
            "configmaps" => {
                v.pointer("/configMap/name").and_then(Value::as_str) == Some(name)
                    || v.pointer("/configMapRef/name").and_then(Value::as_str) == Some(name)
                    || v.pointer("/configMapKeyRef/name").and_then(Value::as_str) == Some(name)
            }
            "persistentvolumeclaims" => {
                v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) == Some(name)
            }
            _ => false,
        };
        found |= hit;
    };
    walk(spec, &mut visit, 0);
    if resource == "secrets" {
        found |= spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|s| s.get("name").and_then(Value::as_str) == Some(name)));
    }
    found
}

/// Every object in a pod spec (volumes, projected sources, env, envFrom, valueFrom …).
fn walk(v: &Value, f: &mut impl FnMut(&Value), depth: usize) {
    if depth > 32 {
        return;
    }
    match v {
        Value::Object(m) => {
            f(v);
            for x in m.values() {
                walk(x, f, depth + 1);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, f, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_identity_and_pod_references() {
        let u = UserInfo { username: "system:node:n1".into(), uid: String::new(), groups: vec!["system:nodes".into()] };
        assert_eq!(node_name(&u), Some("n1"));
        let other = UserInfo { username: "system:node:n1".into(), uid: String::new(), groups: vec![] };
        assert_eq!(node_name(&other), None);
        let pod = json!({"spec": {"nodeName": "n1", "serviceAccountName": "sa",
            "volumes": [{"name": "v", "secret": {"secretName": "s1"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "c2"}}]}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "c1"}}]}],
            "imagePullSecrets": [{"name": "pull"}]}});
        for (r, n) in [
            ("secrets", "s1"),
            ("secrets", "s2"),
            ("secrets", "pull"),
            ("configmaps", "c1"),
            ("configmaps", "c2"),
            ("persistentvolumeclaims", "data"),
            ("serviceaccounts", "sa"),
        ] {
            assert!(references(&pod, r, n), "{r}/{n}");
        }
        assert!(!references(&pod, "secrets", "other"));
        assert!(!references(&pod, "configmaps", "s1"));
    }

    #[test]
    fn volumes_are_reached_through_claims_that_name_them() {
        let pv = json!({"metadata": {"name": "pvc-1"}, "spec": {"claimRef": {"namespace": "d", "name": "data"}}});
        let claim = json!({"spec": {"volumeName": "pvc-1"}});
        assert_eq!(bound_claim(&pv, Some(&claim)), Some(("d", "data")));
        // A claim bound to another volume, or none, does not lead to this one.
        assert_eq!(bound_claim(&pv, Some(&json!({"spec": {"volumeName": "pvc-2"}}))), None);
        assert_eq!(bound_claim(&pv, Some(&json!({"spec": {}}))), None);
        assert_eq!(bound_claim(&pv, None), None);
        assert_eq!(bound_claim(&json!({"metadata": {"name": "pvc-1"}, "spec": {}}), Some(&claim)), None);
    }
}
