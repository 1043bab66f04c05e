//! The `scale` subresource: an `autoscaling/v1` Scale view of `spec.replicas` (of a custom
//! resource: of the paths its CRD names).

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

/// `/spec/replicas` from `.spec.replicas`.
fn pointer(json_path: &str) -> String {
    json_path.trim_start_matches('.').split('.').fold(String::new(), |p, k| format!("{p}/{k}"))
}

/// Where replicas live: the CRD's scale paths for a custom resource.
struct Paths {
    spec: String,
    status: String,
    selector: Option<String>,
}

fn paths(ctx: &Ctx) -> Paths {
    match ctx.def.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(s) => Paths {
            spec: pointer(&s.spec_replicas),
            status: pointer(&s.status_replicas),
            selector: s.label_selector.as_deref().map(pointer),
        },
        None => Paths { spec: "/spec/replicas".into(), status: "/status/replicas".into(), selector: None },
    }
}

fn to_scale(obj: &Value, p: &Paths) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let selector = match &p.selector {
        Some(sel) => obj.pointer(sel).and_then(Value::as_str).unwrap_or_default().to_string(),
        None => selector_string(obj),
    };
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp")},
        "spec": {"replicas": obj.pointer(&p.spec).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer(&p.status).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

/// Set the value at a JSON pointer, creating the objects on the way.
fn set_at(obj: &mut Value, pointer: &str, v: Value) {
    let mut cur = obj;
    let keys: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, k) in keys.iter().enumerate() {
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == keys.len() {
            m.insert((*k).to_string(), v);
            return;
        }
        let next = m.entry((*k).to_string()).or_insert_with(|| json!({}));
        if !next.is_object() {
            *next = json!({});
        }
        cur = next;
    }
}

pub async fn get(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(ctx.name()), Freshness::Latest).await?;
    let kv = kv.ok_or_else(|| ctx.not_found(ctx.name()))?;
    Ok(json_response(StatusCode::OK, &to_scale(&storage::decode(&kv)?, &paths(ctx)), ctx.output))
}

/// PUT or PATCH of the Scale: sets `spec.replicas` on the object (CAS on its revision).
pub async fn update(ctx: &Ctx, body: &[u8], is_patch: bool) -> Result<Response<Body>, ApiError> {
    let name = ctx.name().to_string();
    for _ in 0..super::UPDATE_RETRIES {
        let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
        let kv = kv.ok_or_else(|| ctx.not_found(&name))?;
        let old = storage::decode(&kv)?;
        let mut scale = to_scale(&old, &paths(ctx));
        if is_patch {
            crate::rest::patch::apply_patch(media(ctx.content_type.as_deref())?, &mut scale, body)?;
        } else {
            let m = media(ctx.content_type.as_deref())?;
            if !matches!(m, Media::Json | Media::Yaml | Media::Protobuf) {
                return Err(ApiError::unsupported_media_type(ctx.content_type.as_deref().unwrap_or("")));
            }
            scale = crate::body::decode_object(m, body, Some(("autoscaling/v1", "Scale")))?;
        }
        // A PUT's Scale carries the revision it read (kubectl scale --resource-version, the
        // HPA); a patch pins only when it names one itself.
        let pins = match is_patch {
            true => crate::rest::patch::pins_resource_version(media(ctx.content_type.as_deref())?, body),
            false => true,
        };
        let pinned = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| pins && !rv.is_empty())
            .map(str::to_string);
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
        set_at(&mut new, &paths(ctx).spec, json!(replicas));
        // The main resource's update rules (status kept, generation bumped).
        match super::write::store_update(ctx, old, kv.mod_revision, new, false).await {
            Ok((_, out)) => return Ok(json_response(StatusCode::OK, &to_scale(&out, &paths(ctx)), ctx.output)),
            Err(e) if e.code == 409 && pinned.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name))
}
