//! Admission for pods: LimitRanger (the namespace's `Container` LimitRange items default
//! each container's limits and requests, then bound them by min and max) and the pod
//! defaulting that follows it (requests default to limits). Refusals are 403 Forbidden
//! worded as Kubernetes words them.

use keelson_store::{KeyRange, RangeRequest};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::quantity::parse_milli;
use crate::status::ApiError;

fn containers(pod: &mut Value) -> Vec<&mut Map<String, Value>> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return vec![] };
    let mut out = Vec::new();
    for (k, v) in spec.iter_mut() {
        if k == "containers" || k == "initContainers" {
            if let Some(a) = v.as_array_mut() {
                out.extend(a.iter_mut().filter_map(Value::as_object_mut));
            }
        }
    }
    out
}

fn section<'a>(c: &'a mut Map<String, Value>, which: &str) -> Option<&'a mut Map<String, Value>> {
    let res = c.entry("resources").or_insert_with(|| json!({}));
    let res = res.as_object_mut()?;
    let s = res.entry(which).or_insert_with(|| json!({}));
    s.as_object_mut()
}

/// LimitRanger on a pod being created; `Ok` leaves it defaulted.
pub async fn limit_ranger(ctx: &Ctx, pod: &mut Value) -> Result<(), ApiError> {
    let (Some(ns), Some(def)) = (ctx.namespace(), ctx.api.registry.find("", "v1", "limitranges")) else {
        return Ok(());
    };
    let r = ctx
        .api
        .store
        .range(RangeRequest {
            serializable: true,
            ..RangeRequest::new(KeyRange::prefix(format!("{}{ns}/", def.key_prefix)))
        })
        .await?;
    let items: Vec<Value> = r
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .flat_map(|lr| lr.pointer("/spec/limits").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("Container"))
        .collect();
    for item in &items {
        for c in containers(pod) {
            for (which, from) in [("limits", "default"), ("requests", "defaultRequest")] {
                let Some(defaults) = item.get(from).and_then(Value::as_object) else { continue };
                if let Some(sec) = section(c, which) {
                    for (res, q) in defaults {
                        sec.entry(res.clone()).or_insert_with(|| q.clone());
                    }
                }
            }
        }
    }
    // Pod defaulting: a container's requests default to its limits.
    for c in containers(pod) {
        let limits =
            c.get("resources").and_then(|r| r.get("limits")).and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(req) = section(c, "requests") {
            for (res, q) in limits {
                req.entry(res).or_insert(q);
            }
        }
        if let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) {
            res.retain(|_, v| v.as_object().is_none_or(|m| !m.is_empty()));
        }
    }
    let mut errors = Vec::new();
    for item in &items {
        for c in containers(pod) {
            // Quantities are compared exactly and printed as written.
            let get = |which: &str, res: &str| -> Option<(i128, String)> {
                let q = c.get("resources")?.get(which)?.get(res)?.as_str()?;
                Some((parse_milli(q)?, q.to_string()))
            };
            for (res, max) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                let Some((max_v, max_s)) = max.as_str().and_then(|q| Some((parse_milli(q)?, q))) else { continue };
                match get("limits", res) {
                    None => {
                        errors.push(format!("maximum {res} usage per Container is {max_s}.  No limit is specified"))
                    }
                    Some((l, ls)) if l > max_v => {
                        errors.push(format!("maximum {res} usage per Container is {max_s}, but limit is {ls}"))
                    }
                    _ => {}
                }
            }
            for (res, min) in item.get("min").and_then(Value::as_object).into_iter().flatten() {
                let Some((min_v, min_s)) = min.as_str().and_then(|q| Some((parse_milli(q)?, q))) else { continue };
                match get("requests", res) {
                    None => {
                        errors.push(format!("minimum {res} usage per Container is {min_s}.  No request is specified"))
                    }
                    Some((r, rs)) if r < min_v => {
                        errors.push(format!("minimum {res} usage per Container is {min_s}, but request is {rs}"))
                    }
                    _ => {}
                }
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let name = crate::meta::name(pod).unwrap_or_default();
    let what = if errors.len() == 1 { errors.remove(0) } else { format!("[{}]", errors.join(", ")) };
    Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: {what}")))
}
