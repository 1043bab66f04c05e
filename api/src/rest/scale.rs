//! The `scale` subresource: an `autoscaling/v1` Scale view of `spec.replicas`.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::Ctx;
use crate::body::{media, Media};
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// `app=web` from a selector (label map or LabelSelector's matchLabels).
fn selector_string(obj: &Value) -> String {
    let sel = obj.pointer("/spec/selector");
    let labels = sel.and_then(|s| s.get("matchLabels")).or(sel).and_then(Value::as_object);
    labels
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn to_scale(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector_string(obj)},
    })
}

pub async fn get(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(ctx.name()), Freshness::Latest).await?;
    let kv = kv.ok_or_else(|| ctx.not_found(ctx.name()))?;
    Ok(json_response(StatusCode::OK, &to_scale(&storage::decode(&kv)?), ctx.output))
}

/// PUT or PATCH of the Scale: sets `spec.replicas` on the object (CAS on its revision).
pub async fn update(ctx: &Ctx, body: &[u8], is_patch: bool) -> Result<Response<Body>, ApiError> {
    let name = ctx.name().to_string();
    for _ in 0..8 {
        let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
        let kv = kv.ok_or_else(|| ctx.not_found(&name))?;
        let old = storage::decode(&kv)?;
        let mut scale = to_scale(&old);
        if is_patch {
            crate::rest::patch::apply_patch(media(ctx.content_type.as_deref())?, &mut scale, body)?;
        } else {
            let m = media(ctx.content_type.as_deref())?;
            if !matches!(m, Media::Json | Media::Yaml | Media::Protobuf) {
                return Err(ApiError::unsupported_media_type(ctx.content_type.as_deref().unwrap_or("")));
            }
            scale = crate::body::decode_object(m, body, Some(("autoscaling/v1", "Scale")))?;
        }
        let pinned = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
        if let Some(rv) = &pinned {
            if storage::parse_rv(rv)? != kv.mod_revision {
                return Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name));
            }
        }
        let Some(replicas) = scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                &name,
                vec![("spec.replicas".into(), "FieldValueRequired".into(), "Required value".into())],
            ));
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                &name,
                vec![(
                    "spec.replicas".into(),
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let mut new = old.clone();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas));
        }
        // The main resource's update rules (status kept, generation bumped).
        match super::write::store_update(ctx, old, kv.mod_revision, new, false).await {
            Ok((_, out)) => return Ok(json_response(StatusCode::OK, &to_scale(&out), ctx.output)),
            Err(e) if e.code == 409 && pinned.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name))
}
