//! ResourceQuota admission: a create in a namespace with quotas is refused (403, in
//! Kubernetes' words) when it would take an object count or a pod's compute resources past
//! a quota's `hard`. Usage is counted from the store at admission; the quota's
//! `status.used` is rewritten in the same transaction as the create, guarded by the
//! quota's revision, so concurrent creates on any master serialise on it and none slips
//! past the limit.

use keelson_store::{KeyRange, RangeRequest};
use serde_json::{json, Value};

use super::Ctx;
use crate::quantity::parse_milli;
use crate::status::ApiError;

/// A quota rewrite to make with the create: key, its current mod revision, new value.
pub struct QuotaWrite {
    pub key: String,
    pub revision: i64,
    pub value: Vec<u8>,
}

fn terminal(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// A pod's sum over containers of `resources.<which>.<res>`, in milli-units.
fn pod_sum(pod: &Value, which: &str, res: &str) -> i128 {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("resources")?.get(which)?.get(res)?.as_str().and_then(parse_milli))
        .sum()
}

/// What one object uses of a quota key (`None`: the key does not concern it).
fn usage_of(ctx: &Ctx, key: &str, obj: &Value) -> Option<i128> {
    let d = &ctx.def;
    let is_pod = d.group.is_empty() && d.kind == "Pod";
    let count_name =
        if d.group.is_empty() { format!("count/{}", d.plural) } else { format!("count/{}.{}", d.plural, d.group) };
    if key == count_name || (d.group.is_empty() && key == d.plural) {
        return Some(if is_pod && terminal(obj) { 0 } else { 1000 });
    }
    if d.group.is_empty() && d.kind == "Service" {
        let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map(|p| p.len() as i128).unwrap_or(0);
        return match key {
            "services.nodeports" if matches!(ty, "NodePort" | "LoadBalancer") => Some(ports * 1000),
            "services.nodeports" => Some(0),
            "services.loadbalancers" => Some(if ty == "LoadBalancer" { 1000 } else { 0 }),
            _ => None,
        };
    }
    if !is_pod {
        return None;
    }
    if terminal(obj) {
        return Some(0);
    }
    let (which, res) = match key {
        "cpu" | "requests.cpu" => ("requests", "cpu"),
        "memory" | "requests.memory" => ("requests", "memory"),
        "limits.cpu" => ("limits", "cpu"),
        "limits.memory" => ("limits", "memory"),
        "ephemeral-storage" | "requests.ephemeral-storage" => ("requests", "ephemeral-storage"),
        "limits.ephemeral-storage" => ("limits", "ephemeral-storage"),
        _ => return None,
    };
    Some(pod_sum(obj, which, res))
}

fn shown(key: &str, milli: i128) -> String {
    let counted = !key.contains("cpu") && !key.contains("memory") && !key.contains("storage");
    if counted || milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Check the namespace's quotas for a new object; the rewrites to make with it.
/// `fresh`: read through the leader (a retry after the guard failed on a lagging master).
pub async fn check(ctx: &Ctx, obj: &Value, fresh: bool) -> Result<Vec<QuotaWrite>, ApiError> {
    let Some(ns) = ctx.namespace() else { return Ok(vec![]) };
    let Some(qdef) = ctx.api.registry.find("", "v1", "resourcequotas") else { return Ok(vec![]) };
    // Local reads: the quota's revision guard makes the write fail if any create counted
    // against it since, and the objects are read after the quota, so every create that
    // bumped it is in the count (Kubernetes reads both from informer caches).
    let local = |prefix: String| RangeRequest { serializable: !fresh, ..RangeRequest::new(KeyRange::prefix(prefix)) };
    let quotas = ctx.api.store.range(local(format!("{}{ns}/", qdef.key_prefix))).await?;
    if quotas.kvs.is_empty() {
        return Ok(vec![]);
    }
    let mut current: Option<Vec<Value>> = None;
    let mut writes = Vec::new();
    for kv in &quotas.kvs {
        let Ok(mut q) = serde_json::from_slice::<Value>(&kv.value) else { continue };
        let hard = q.pointer("/spec/hard").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut used = q.pointer("/status/used").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut touched = false;
        for (key, limit) in &hard {
            let Some(mine) = usage_of(ctx, key, obj) else { continue };
            let Some(limit) =
                limit.as_str().and_then(parse_milli).or_else(|| limit.as_i64().map(|n| i128::from(n) * 1000))
            else {
                continue;
            };
            if current.is_none() {
                let r = ctx.api.store.range(local(format!("{}{ns}/", ctx.def.key_prefix))).await?;
                current = Some(r.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect());
            }
            let in_use: i128 = current.iter().flatten().filter_map(|o| usage_of(ctx, key, o)).sum();
            if in_use + mine > limit {
                let qname = crate::meta::name(&q).unwrap_or_default();
                let name = crate::meta::name(obj).unwrap_or_default();
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: exceeded quota: {qname}, requested: {key}={}, used: {key}={}, limited: {key}={}",
                    crate::status::qualified(&ctx.def.plural, &ctx.def.group),
                    shown(key, mine),
                    shown(key, in_use),
                    shown(key, limit)
                )));
            }
            used.insert(key.clone(), json!(shown(key, in_use + mine)));
            touched = true;
        }
        if touched {
            if let Some(m) = q.as_object_mut() {
                let status = m.entry("status").or_insert_with(|| json!({}));
                if let Some(s) = status.as_object_mut() {
                    s.insert("hard".into(), Value::Object(hard.clone()));
                    s.insert("used".into(), Value::Object(used));
                }
            }
            crate::meta::metadata_mut(&mut q).remove("resourceVersion");
            writes.push(QuotaWrite {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                revision: kv.mod_revision,
                value: serde_json::to_vec(&q).map_err(|e| ApiError::internal(e.to_string()))?,
            });
        }
    }
    Ok(writes)
}
