//! PATCH: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge patch with
//! Kubernetes' merge keys and directives; server-side apply is in `apply.rs`.

use http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::Ctx;
use crate::body::{media, Media};
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// The merge key of a list field in strategic merge patch (`patchMergeKey` tags of the
/// Kubernetes types); lists not named here are replaced whole.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "secrets"
        | "readinessGates"
        | "hostAliases"
        | "schedulingGates" => {
            if field == "hostAliases" {
                "ip"
            } else if field == "readinessGates" {
                "conditionType"
            } else {
                "name"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "tolerations" | "topologySpreadConstraints" => return None,
        "addresses" => "type",
        "taints" => "key",
        _ => return None,
    })
}

/// Service ports merge on `port`, container ports on `containerPort`.
pub(crate) fn merge_key_at(path: &[String], field: &str) -> Option<&'static str> {
    if field == "ports" && path.last().map(String::as_str) == Some("spec") && path.len() == 1 {
        return Some("port");
    }
    merge_key(field)
}

/// Apply a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    merge_map(target, patch, &mut Vec::new())
}

fn merge_map(target: &mut Value, patch: &Value, path: &mut Vec<String>) -> Result<(), ApiError> {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return Ok(());
    }
    if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Null;
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tm = target.as_object_mut().ok_or_else(|| ApiError::internal("patch target is not an object"))?;
    // `$retainKeys`: drop every key not listed (before merging the rest).
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in pm {
        if k == "$retainKeys" || k == "$patch" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (tm.get_mut(field), pv.as_array()) {
                items.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match (tm.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => {
                path.push(k.clone());
                merge_map(tv, pv, path)?;
                path.pop();
                if tv.is_null() {
                    tm.remove(k);
                }
            }
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                if let Some(key) = merge_key_at(path, k) {
                    path.push(k.clone());
                    merge_list(tl, pl, key, path)?;
                    path.pop();
                } else {
                    tm.insert(k.clone(), strip_directives(pv));
                }
            }
            _ => {
                tm.insert(k.clone(), strip_directives(pv));
            }
        }
    }
    Ok(())
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], key: &str, path: &mut Vec<String>) -> Result<(), ApiError> {
    for item in patch {
        let Some(kv) = item.get(key) else {
            if item.get("$patch").and_then(Value::as_str) == Some("replace") {
                target.clear();
                continue;
            }
            target.push(strip_directives(item));
            continue;
        };
        let pos = target.iter().position(|t| t.get(key) == Some(kv));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                target.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => merge_map(&mut target[i], item, path)?,
            None => target.push(strip_directives(item)),
        }
    }
    Ok(())
}

/// A patch value inserted as new content, without `$` directives.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Apply a patch of the given media type to `obj`.
pub fn apply_patch(kind: Media, obj: &mut Value, bytes: &[u8]) -> Result<(), ApiError> {
    match kind {
        Media::JsonPatch => {
            let p: json_patch::Patch = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json_patch::patch(obj, &p)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))
        }
        Media::MergePatch => {
            let p: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding merge patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(obj, &p);
            Ok(())
        }
        Media::StrategicMergePatch => {
            let p: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding strategic merge patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
            }
            strategic_merge(obj, &p)
        }
        Media::ApplyPatch => Err(ApiError::unsupported_media_type(
            "application/apply-patch+yaml is only served on the resource itself (server-side apply)",
        )),
        other => Err(ApiError::unsupported_media_type(&format!("{other:?} is not a patch type"))),
    }
}

/// Whether the patch itself sets `metadata.resourceVersion` (a precondition): only then is a
/// conflict the client's to resolve; otherwise the patch is re-applied to the fresh object,
/// as the apiserver's GuaranteedUpdate does.
pub(crate) fn pins_resource_version(kind: Media, bytes: &[u8]) -> bool {
    let Ok(p) = serde_json::from_slice::<Value>(bytes) else { return false };
    match kind {
        Media::JsonPatch => p.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                    && matches!(op.get("op").and_then(Value::as_str), Some("add" | "replace" | "test"))
            })
        }),
        _ => p.pointer("/metadata/resourceVersion").is_some_and(|v| !v.is_null()),
    }
}

/// PATCH: read, patch, write with CAS; retried when someone else wrote in between, unless
/// the patch itself pins a resourceVersion.
pub async fn patch(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let kind = media(ctx.content_type.as_deref())?;
    if kind == Media::StrategicMergePatch && ctx.def.custom.is_some() {
        // Custom resources have no Go struct tags to merge by (Kubernetes' answer).
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json: strategic merge patch is not supported for custom resources; use a JSON merge patch or a JSON patch",
        ));
    }
    if kind == Media::ApplyPatch && !super::write::is_status(ctx) {
        return super::apply::apply(ctx, bytes).await;
    }
    let name = ctx.name().to_string();
    for _ in 0..super::UPDATE_RETRIES {
        let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
        let kv = kv.ok_or_else(|| ctx.not_found(&name))?;
        let old = storage::decode(&kv)?;
        // Patches apply to the object as the URL's version shows it.
        let mut new = ctx.def.served(old.clone());
        apply_patch(kind, &mut new, bytes)?;
        let pinned =
            crate::meta::resource_version(&new).filter(|_| pins_resource_version(kind, bytes)).map(str::to_string);
        if let Some(rv) = &pinned {
            if storage::parse_rv(rv)? != kv.mod_revision {
                return Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name));
            }
        }
        if crate::meta::name(&new) != Some(name.as_str()) {
            return Err(ApiError::bad_request("the patch changes metadata.name, which cannot be changed"));
        }
        super::write::check_object(ctx, &mut new)?;
        let new = ctx.def.stored(new)?;
        match super::write::store_update(ctx, old, kv.mod_revision, new, super::write::is_status(ctx)).await {
            Ok((code, out)) => return Ok(json_response(code, &ctx.present(out), ctx.output)),
            Err(e) if e.code == 409 && e.reason == "Conflict" && pinned.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    let _ = StatusCode::OK;
    Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_patch_naming_a_resource_version_pins_it() {
        let pins = |m, s: &str| pins_resource_version(m, s.as_bytes());
        assert!(!pins(Media::MergePatch, r#"{"data":{"a":"1"}}"#));
        assert!(!pins(Media::MergePatch, r#"{"metadata":{"resourceVersion":null}}"#));
        assert!(pins(Media::MergePatch, r#"{"metadata":{"resourceVersion":"7"}}"#));
        assert!(pins(Media::StrategicMergePatch, r#"{"metadata":{"resourceVersion":"7"},"spec":{}}"#));
        assert!(!pins(Media::JsonPatch, r#"[{"op":"add","path":"/data/a","value":"1"}]"#));
        assert!(pins(Media::JsonPatch, r#"[{"op":"test","path":"/metadata/resourceVersion","value":"7"}]"#));
        assert!(!pins(Media::JsonPatch, r#"[{"op":"remove","path":"/metadata/resourceVersion"}]"#));
        assert!(!pins(Media::MergePatch, "not json"));
    }

    #[test]
    fn strategic_merge_merges_lists_by_key_and_obeys_directives() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ], "tolerations": [{"key": "k"}]}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let patch = json!({
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "c:1"}
            ], "tolerations": [{"key": "z"}]},
            "metadata": {"labels": {"y": null, "z": "3"}}
        });
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], json!("a:2"));
        assert_eq!(pod["spec"]["containers"][0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["containers"][1]["name"], json!("c"));
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "z"}]));
        assert_eq!(pod["metadata"]["labels"], json!({"x": "1", "z": "3"}));
    }

    #[test]
    fn bad_patches_are_errors_not_panics() {
        let mut o = json!({"a": 1});
        assert_eq!(
            apply_patch(Media::JsonPatch, &mut o, b"[{\"op\":\"remove\",\"path\":\"/nope\"}]").unwrap_err().code,
            422
        );
        assert_eq!(apply_patch(Media::JsonPatch, &mut o, b"{").unwrap_err().code, 400);
        assert_eq!(apply_patch(Media::MergePatch, &mut o, b"[1]").unwrap_err().code, 400);
        apply_patch(Media::MergePatch, &mut o, br#"{"a":null,"b":2}"#).unwrap();
        assert_eq!(o, json!({"b": 2}));
    }
}
