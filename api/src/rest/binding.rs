//! `pods/binding`: the scheduler's write. Sets `spec.nodeName` of an unbound pod (the
//! only way to set it after creation) and its `PodScheduled` condition, like Kubernetes'
//! `BindingREST`.

use http::{Response, StatusCode};
use keelson_store::Txn;
use serde_json::{json, Value};

use super::Ctx;
use crate::body::{decode_object, media};
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// The node a Binding names, checked against the URL.
fn target(ctx: &Ctx, binding: &Value) -> Result<String, ApiError> {
    let pod = ctx.name();
    let invalid = |field: &str, msg: String| {
        ApiError::invalid("Binding", "", pod, vec![(field.to_string(), "FieldValueInvalid".into(), msg)])
    };
    if let Some(n) = crate::meta::name(binding).filter(|n| !n.is_empty() && *n != pod) {
        return Err(invalid("metadata.name", format!("Invalid value: {n:?}: must match the pod's name {pod:?}")));
    }
    if let Some(ns) = binding.pointer("/metadata/namespace").and_then(Value::as_str) {
        if !ns.is_empty() && Some(ns) != ctx.namespace() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let kind = binding.pointer("/target/kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        return Err(invalid("target.kind", format!("Invalid value: {kind:?}: must be empty or 'Node'")));
    }
    match binding.pointer("/target/name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(ApiError::invalid(
            "Binding",
            "",
            pod,
            vec![("target.name".into(), "FieldValueRequired".into(), "Required value".into())],
        )),
    }
}

/// The pod bound to `node`, or why it cannot be (Kubernetes' `assignPod` rules and the
/// Binding's uid / resourceVersion preconditions: a pod recreated under the same name is
/// not the pod the scheduler placed).
pub(crate) fn bind(
    pod: &Value,
    node: &str,
    annotations: Option<&serde_json::Map<String, Value>>,
    uid: Option<&str>,
    resource_version: Option<&str>,
    mod_revision: i64,
) -> Result<Value, String> {
    let name = crate::meta::name(pod).unwrap_or_default();
    let have_uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    if let Some(want) = uid.filter(|u| !u.is_empty() && *u != have_uid) {
        return Err(format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have_uid}"));
    }
    if let Some(want) = resource_version.filter(|r| !r.is_empty() && *r != mod_revision.to_string()) {
        return Err(format!(
            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {mod_revision}"
        ));
    }
    if pod.pointer("/spec/schedulingGates").and_then(Value::as_array).is_some_and(|g| !g.is_empty()) {
        return Err(format!("pod {name} has non-empty .spec.schedulingGates"));
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("pod {name} is being deleted, cannot be assigned to a host"));
    }
    if let Some(current) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        return Err(format!("pod {name} is already assigned to node {current:?}"));
    }
    let mut out = pod.clone();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("nodeName".into(), json!(node));
    }
    if let Some(extra) = annotations.filter(|a| !a.is_empty()) {
        let meta = crate::meta::metadata_mut(&mut out);
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(ann) = ann.as_object_mut() {
            for (k, v) in extra {
                ann.insert(k.clone(), v.clone());
            }
        }
    }
    let status =
        out.as_object_mut().map(|o| o.entry("status").or_insert_with(|| json!({}))).and_then(Value::as_object_mut);
    if let Some(status) = status {
        let conds = status.entry("conditions").or_insert_with(|| json!([]));
        if let Some(conds) = conds.as_array_mut() {
            let now = crate::meta::now_rfc3339();
            match conds.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")) {
                Some(c) => {
                    if c.get("status").and_then(Value::as_str) != Some("True") {
                        *c = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
                    }
                }
                None => conds.push(
                    json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
                ),
            }
        }
    }
    Ok(out)
}

/// `POST …/pods/{name}/binding`.
pub async fn create(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let binding = decode_object(media(ctx.content_type.as_deref())?, bytes, Some(("v1", "Binding")))?;
    let node = target(ctx, &binding)?;
    let annotations = binding.pointer("/metadata/annotations").and_then(Value::as_object).cloned();
    let uid = binding.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
    let rv = binding.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
    let name = ctx.name().to_string();
    let key = ctx.key(&name);
    // A concurrent write to the pod (its status, a label) is not a reason to fail: retry.
    for _ in 0..super::UPDATE_RETRIES {
        let (kv, _) = storage::get(&ctx.api.store, &key, Freshness::Latest).await?;
        let Some(kv) = kv else { return Err(ctx.not_found(&name)) };
        let pod = storage::decode(&kv)?;
        let mut bound = bind(&pod, &node, annotations.as_ref(), uid.as_deref(), rv.as_deref(), kv.mod_revision)
            .map_err(|why| {
                let mut e = ApiError::conflict("pods", "", &name);
                e.message = format!("Operation cannot be fulfilled on pods/binding {name:?}: {why}");
                e
            })?;
        crate::meta::metadata_mut(&mut bound).remove("resourceVersion");
        if ctx.query.dry_run {
            break;
        }
        let r = ctx.txn(Txn::cas_put(key.clone(), storage::encode(&bound)?, kv.mod_revision)).await?;
        if r.succeeded {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            return Ok(json_response(StatusCode::CREATED, &body, crate::serve::Output::Json));
        }
    }
    if ctx.query.dry_run {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        return Ok(json_response(StatusCode::CREATED, &body, crate::serve::Output::Json));
    }
    Err(ApiError::conflict("pods", "", &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_sets_the_node_and_the_scheduled_condition_once() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
        let ann = serde_json::Map::from_iter([("a".to_string(), json!("b"))]);
        let b = bind(&pod, "n1", Some(&ann), None, None, 5).unwrap();
        assert_eq!(b["spec"]["nodeName"], "n1");
        assert_eq!(b["metadata"]["annotations"]["a"], "b");
        let conds = b["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0]["status"], "True");
        assert!(bind(&b, "n2", None, None, None, 5).unwrap_err().contains("already assigned to node \"n1\""));
        let mut gone = pod.clone();
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(bind(&gone, "n1", None, None, None, 5).unwrap_err().contains("being deleted"));
        let mut mine = pod.clone();
        mine["metadata"]["uid"] = json!("u1");
        assert!(bind(&mine, "n1", None, Some("u1"), Some("5"), 5).is_ok());
        assert!(bind(&mine, "n1", None, Some("u0"), None, 5).unwrap_err().contains("Precondition failed: UID"));
        assert!(bind(&mine, "n1", None, None, Some("4"), 5).unwrap_err().contains("ResourceVersion"));
        let mut gated = pod.clone();
        gated["spec"]["schedulingGates"] = json!([{"name": "g"}]);
        assert!(bind(&gated, "n1", None, None, None, 5).unwrap_err().contains("schedulingGates"));
    }
}
