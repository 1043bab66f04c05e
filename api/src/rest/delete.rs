//! delete and deletecollection: preconditions, finalizers, propagation policy, graceful
//! pod deletion.

use http::{Response, StatusCode};
use keelson_store::Txn;
use serde_json::{json, Value};

use super::Ctx;
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// The parts of `DeleteOptions` that change what happens.
#[derive(Debug, Default)]
struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    propagation: Option<String>,
    grace: Option<i64>,
    dry_run: bool,
}

fn options(ctx: &Ctx, bytes: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        propagation: ctx.query.propagation_policy.clone(),
        grace: ctx.query.grace_period_seconds,
        dry_run: ctx.query.dry_run,
        ..Default::default()
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(o);
    }
    let m = crate::body::media(ctx.content_type.as_deref())?;
    let v = crate::body::decode_object(m, bytes, Some(("meta.k8s.io/v1", "DeleteOptions")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
    }
    o.uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
    o.resource_version = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
        o.propagation = Some(p.to_string());
    }
    if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
        o.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
    }
    if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
        o.grace = Some(g);
    }
    if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
        o.dry_run |= d.iter().any(|x| x == "All");
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                vec![(
                    "propagationPolicy".into(),
                    "FieldValueNotSupported".into(),
                    format!("Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
                )],
            ));
        }
    }
    Ok(o)
}

/// Delete one object. Returns its last state when it is gone, or its state while it is
/// being deleted (finalizers, grace period) — Kubernetes answers 200 with either.
async fn delete_one(ctx: &Ctx, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let def = &ctx.def;
    let key = ctx.key(name);
    for _ in 0..super::UPDATE_RETRIES {
        let (kv, _) = storage::get(&ctx.api.store, &key, Freshness::Latest).await?;
        let kv = kv.ok_or_else(|| ctx.not_found(name))?;
        let mut obj = storage::decode(&kv)?;
        if let Some(uid) = &opts.uid {
            let actual = crate::meta::str_field(&obj, "uid").unwrap_or("");
            if uid != actual {
                let mut e = ApiError::conflict(&def.plural, &def.group, name);
                e.message = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}");
                return Err(e);
            }
        }
        if let Some(rv) = &opts.resource_version {
            if storage::parse_rv(rv)? != kv.mod_revision {
                let mut e = ApiError::conflict(&def.plural, &def.group, name);
                e.message = format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                );
                return Err(e);
            }
        }
        let mut finalizers = crate::meta::finalizers(&obj);
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
            _ => {}
        }
        let is_ns = def.group.is_empty() && def.kind == "Namespace";
        let ns_finalizers =
            is_ns && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        let graceful_pod = def.group.is_empty()
            && def.kind == "Pod"
            && obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
            && opts
                .grace
                .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                .unwrap_or(30)
                > 0
            && obj.pointer("/metadata/deletionTimestamp").is_none();
        if !finalizers.is_empty() || ns_finalizers || graceful_pod {
            let already = obj.pointer("/metadata/deletionTimestamp").is_some();
            let before = obj.clone();
            {
                let meta = crate::meta::metadata_mut(&mut obj);
                if !already {
                    let grace = if graceful_pod {
                        opts.grace
                            .or_else(|| before.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                            .unwrap_or(30)
                    } else {
                        0
                    };
                    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    meta.insert("deletionTimestamp".into(), json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if !finalizers.is_empty() {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
                meta.remove("resourceVersion");
            }
            if is_ns {
                if let Some(m) = obj.as_object_mut() {
                    m.insert("status".into(), json!({"phase": "Terminating"}));
                }
            }
            if obj == before || opts.dry_run {
                return Ok(obj);
            }
            let r = ctx.txn(Txn::cas_put(key.clone(), storage::encode(&obj)?, kv.mod_revision)).await?;
            if r.succeeded {
                crate::meta::set_resource_version(&mut obj, r.revision);
                return Ok(obj);
            }
            continue;
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let r = ctx.txn(delete_txn(ctx, &obj, key.clone(), kv.mod_revision)).await?;
        if r.succeeded {
            crate::rest::write::crd_written(ctx).await;
            return Ok(obj);
        }
    }
    Err(ApiError::conflict(&def.plural, &def.group, name))
}

/// The transaction removing an object at `key` (CAS on `rev`). A CRD takes its custom
/// resources with it in the same revision (Kubernetes' `customresourcecleanup` finalizer,
/// done at once).
pub fn delete_txn(ctx: &Ctx, obj: &Value, key: String, rev: i64) -> Txn {
    let mut txn = Txn::cas_delete(key, rev);
    if ctx.def.group.is_empty() && ctx.def.kind == "Service" {
        let plan = crate::alloc::Plan { claims: vec![], releases: crate::alloc::releases_of(obj) };
        crate::rest::write::alloc_ops(&mut txn, &plan, "");
    }
    if ctx.def.group == "apiextensions.k8s.io" && ctx.def.kind == "CustomResourceDefinition" {
        let group = obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
        let plural = obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default();
        if !group.is_empty() && !plural.is_empty() {
            let range = keelson_store::KeyRange::prefix(format!("/registry/{group}/{plural}/"));
            txn.success.push(keelson_store::Op::Delete(keelson_store::DeleteRequest { range, prev_kv: false }));
        }
    }
    txn
}

/// delete: 200 with the object (its last state, or its state while being deleted).
pub async fn delete(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let opts = options(ctx, bytes)?;
    let obj = delete_one(ctx, ctx.name(), &opts).await?;
    Ok(json_response(StatusCode::OK, &ctx.present(obj), ctx.output))
}

/// deletecollection: delete every selected object; reply with the list of them.
pub async fn delete_collection(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let opts = options(ctx, bytes)?;
    let (labels, fields) = ctx.selectors()?;
    let keep = |o: &Value| labels.matches(o) && fields.matches(o);
    let prefix = storage::list_prefix(&ctx.def, ctx.namespace());
    let page = storage::list(&ctx.api.store, &prefix, Freshness::Latest, None, None, &keep, true).await?;
    let mut items = Vec::new();
    for obj in page.items {
        let name = crate::meta::name(&obj).unwrap_or_default().to_string();
        match delete_one(ctx, &name, &opts).await {
            Ok(o) => items.push(ctx.def.served(o)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "kind": ctx.def.list_kind, "apiVersion": ctx.def.api_version(),
        "metadata": {"resourceVersion": ctx.api.store.revision().to_string()}, "items": items,
    });
    Ok(json_response(StatusCode::OK, &body, ctx.output))
}
