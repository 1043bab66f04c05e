//! create and update (including `/status`): decoding, defaulting, validation, metadata
//! rules and the CAS write.

use http::{Response, StatusCode};
use keelson_store::Txn;
use rand::Rng;
use serde_json::{json, Value};

use super::Ctx;
use crate::alloc::{Claim, Plan};
use crate::body::{decode_object, media};
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};
use crate::strategy;

/// Decode a create/update body, check its type meta against the URL, and give its
/// stored form.
pub fn decode_body(ctx: &Ctx, bytes: &[u8]) -> Result<Value, ApiError> {
    let m = media(ctx.content_type.as_deref())?;
    let av = ctx.def.api_version();
    let mut obj = decode_object(m, bytes, Some((&av, &ctx.def.kind)))?;
    check_object(ctx, &mut obj)?;
    ctx.def.stored(obj)
}

/// The body must be an object of this kind and group-version (filled in when absent), in
/// the URL's namespace, with the kind's field types.
pub fn check_object(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let def = &ctx.def;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let want_av = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        _ => {
            map.insert("apiVersion".into(), json!(want_av));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != def.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )))
        }
        _ => {
            map.insert("kind".into(), json!(def.kind));
        }
    }
    let url_ns = ctx.namespace().map(str::to_string);
    let meta = crate::meta::metadata_mut(obj);
    if let Some(url_ns) = url_ns {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if let Some(check) = def.type_check {
        let typed = check(obj).map_err(|e| match e.missing {
            Some(field) => ApiError::invalid(
                &def.kind,
                &def.group,
                crate::meta::name(obj).unwrap_or_default(),
                vec![(field, "FieldValueRequired".into(), "Required value".into())],
            ),
            None if e.path.is_empty() => {
                ApiError::bad_request(format!("error decoding {} body: {}", def.kind, e.message))
            }
            None => ApiError::bad_request(format!("error decoding {} body: {}: {}", def.kind, e.path, e.message)),
        })?;
        let mut unknown = Vec::new();
        prune_unknown(obj, &typed, "", &mut unknown);
        report_unknown(ctx, &unknown)?;
    }
    if let Some(custom) = &def.custom {
        check_custom(ctx, obj, custom)?;
    }
    Ok(())
}

/// fieldValidation: Strict refuses unknown fields, Warn (the default) warns, Ignore drops
/// them silently; they are dropped in every case.
fn report_unknown(ctx: &Ctx, unknown: &[String]) -> Result<(), ApiError> {
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match ctx.query.field_validation.as_deref() {
        Some("Strict") => Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", ")))),
        Some("Ignore") => Ok(()),
        _ => {
            if let Ok(mut w) = ctx.warnings.lock() {
                w.extend(list);
            }
            Ok(())
        }
    }
}

/// A custom resource: metadata checked as ObjectMeta, then the CRD's structural schema
/// defaults, prunes and validates the rest (→ 422 with causes).
fn check_custom(ctx: &Ctx, obj: &mut Value, custom: &crate::crd::CustomDef) -> Result<(), ApiError> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let def = &ctx.def;
    let mut unknown = Vec::new();
    if let Some(meta) = obj.get_mut("metadata") {
        let typed: ObjectMeta = serde_path_to_error::deserialize(&*meta).map_err(|e| {
            ApiError::bad_request(format!("error decoding {} body: metadata.{}: {}", def.kind, e.path(), e.inner()))
        })?;
        let typed = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
        prune_unknown(meta, &typed, "metadata", &mut unknown);
    }
    crate::crd::schema::apply_defaults(&custom.schema, obj);
    unknown.extend(crate::crd::schema::prune(&custom.schema, obj));
    report_unknown(ctx, &unknown)?;
    let errors = crate::crd::schema::validate(&custom.schema, obj);
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            &def.kind,
            &def.group,
            crate::meta::name(obj).unwrap_or_default(),
            errors.into_iter().map(|e| (e.field, e.reason.to_string(), e.message)).collect(),
        ));
    }
    Ok(())
}

fn is_crd(ctx: &Ctx) -> bool {
    ctx.def.group == "apiextensions.k8s.io" && ctx.def.kind == "CustomResourceDefinition"
}

/// After a CRD write: this master serves the change before it answers (the others follow
/// through their watch).
pub async fn crd_written(ctx: &Ctx) {
    if is_crd(ctx) {
        if let Err(e) = crate::crd::reload(&ctx.api).await {
            tracing::warn!(error = %e, "cannot reload the custom resources after a CRD write");
        }
    }
}

/// Drop (and name) every field of `input` the kind's type does not have, as Kubernetes
/// drops them when it decodes into its Go types; `typed` is the body decoded and encoded
/// back. Nulls are left alone (they decode to absent).
fn prune_unknown(input: &mut Value, typed: &Value, prefix: &str, unknown: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(m), Value::Object(t)) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match t.get(&k) {
                    Some(tv) => {
                        if let Some(v) = m.get_mut(&k) {
                            prune_unknown(v, tv, &path, unknown);
                        }
                    }
                    None if m.get(&k).is_some_and(Value::is_null) => {}
                    None => {
                        // Free-form maps (labels, data, …) come back whole, so a key absent
                        // from the typed value is a field the type lacks.
                        m.remove(&k);
                        unknown.push(path);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(t)) => {
            for (i, (v, tv)) in a.iter_mut().zip(t.iter()).enumerate() {
                prune_unknown(v, tv, &format!("{prefix}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// A CAS put of `obj` at `key` (expected mod revision `expected`, 0 = absent); Events get
/// the current event lease so the store expires them.
async fn cas_put(
    ctx: &Ctx,
    key: String,
    obj: &Value,
    expected: i64,
    plan: &Plan,
    quota: &[super::quota::QuotaWrite],
) -> Result<keelson_store::TxnResult, ApiError> {
    use keelson_store::{Compare, KeyRange, Op, PutRequest, RangeRequest};
    let mut txn = Txn::cas_put(key, storage::encode(obj)?, expected);
    let owner = format!("{}/{}", ctx.namespace().unwrap_or_default(), crate::meta::name(obj).unwrap_or_default());
    alloc_ops(&mut txn, plan, &owner);
    for q in quota {
        txn.compares.push(Compare::mod_revision(q.key.clone(), q.revision));
        txn.success.push(Op::Put(PutRequest {
            key: q.key.clone().into_bytes(),
            value: q.value.clone(),
            ..Default::default()
        }));
        txn.failure.push(Op::Range(RangeRequest::new(KeyRange::single(q.key.clone()))));
    }
    if !crate::events::expires(&ctx.def.group, &ctx.def.kind) {
        return Ok(ctx.txn(txn).await?);
    }
    let mut tries = 0;
    loop {
        let lease = ctx.api.event_leases.lease(&ctx.api.store).await?;
        if let Some(keelson_store::Op::Put(p)) = txn.success.first_mut() {
            p.lease = lease;
        }
        match ctx.txn(txn.clone()).await {
            // The cached lease ran out: take a fresh one, once.
            Err(keelson_store::StoreError::LeaseNotFound(_)) if tries == 0 => {
                tries += 1;
                ctx.api.event_leases.reset().await;
            }
            r => return Ok(r?),
        }
    }
}

/// The Service address claims (guarded: the key is absent) and releases of `plan`.
pub fn alloc_ops(txn: &mut Txn, plan: &Plan, owner: &str) {
    use keelson_store::{Compare, DeleteRequest, KeyRange, Op, PutRequest, RangeRequest};
    for c in &plan.claims {
        txn.compares.push(Compare::mod_revision(c.key.clone(), 0));
        txn.success.push(Op::Put(PutRequest {
            key: c.key.clone().into_bytes(),
            value: owner.as_bytes().to_vec(),
            ..Default::default()
        }));
        txn.failure.push(Op::Range(RangeRequest::new(KeyRange::single(c.key.clone()))));
    }
    for r in &plan.releases {
        txn.success.push(Op::Delete(DeleteRequest { range: KeyRange::single(r.clone()), prev_kv: false }));
    }
}

/// The claim someone else holds, when a transaction with `plan` failed on one.
fn clash<'a>(r: &keelson_store::TxnResult, plan: &'a Plan) -> Option<&'a Claim> {
    r.responses
        .iter()
        .skip(1)
        .zip(plan.claims.iter())
        .find(|(resp, _)| matches!(resp, keelson_store::OpResult::Range(rr) if !rr.kvs.is_empty()))
        .map(|(_, c)| c)
}

/// Server-side apply records its own managed fields.
fn is_apply(ctx: &Ctx) -> bool {
    is_apply_media(ctx.content_type.as_deref())
}

/// A server-side apply body (`application/apply-patch+yaml`).
pub(crate) fn is_apply_media(content_type: Option<&str>) -> bool {
    media(content_type).ok() == Some(crate::body::Media::ApplyPatch)
}

fn is_service(ctx: &Ctx) -> bool {
    ctx.def.group.is_empty() && ctx.def.kind == "Service"
}

/// Kubernetes' generateName suffix alphabet (no vowels, no confusable characters).
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// NamespaceLifecycle: no create in a missing or terminating namespace.
pub async fn check_namespace(ctx: &Ctx) -> Result<(), ApiError> {
    let Some(ns) = ctx.namespace() else { return Ok(()) };
    let namespaces = ctx
        .api
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    let key = storage::object_key(&namespaces, None, ns);
    // Maybe just created through another master: the leader is asked before refusing.
    let kv = storage::get_local_or_latest(&ctx.api.store, &key)
        .await?
        .ok_or_else(|| ApiError::not_found("namespaces", "", ns))?;
    let obj = storage::decode(&kv)?;
    if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        || obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        let mut e = ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            crate::status::qualified(&ctx.def.plural, &ctx.def.group),
            crate::meta::name(&obj).unwrap_or(ns)
        ));
        e.reason = "Forbidden";
        return Err(e);
    }
    Ok(())
}

/// create: 201 with the stored object.
pub async fn create(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let obj = decode_body(ctx, bytes)?;
    let (code, obj) = create_object(ctx, obj).await?;
    Ok(json_response(code, &ctx.present(obj), ctx.output))
}

/// Store a new object (used by create, and by update/apply where they may create).
pub async fn create_object(ctx: &Ctx, mut obj: Value) -> Result<(StatusCode, Value), ApiError> {
    let def = &ctx.def;
    let generate = crate::meta::str_field(&obj, "generateName").map(str::to_string).filter(|s| !s.is_empty());
    if crate::meta::name(&obj).is_none() && generate.is_none() {
        return Err(ApiError::invalid(
            &def.kind,
            &def.group,
            "",
            vec![(
                "metadata.name".into(),
                "FieldValueRequired".into(),
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    check_namespace(ctx).await?;
    crate::authz_node::check_create(&ctx.user, &def.group, &def.plural, &obj)?;
    strategy::prepare_create(def, &mut obj);
    if def.group.is_empty() && def.kind == "Pod" {
        super::admission::limit_ranger(ctx, &mut obj).await?;
        super::service_account::admit(ctx, &mut obj).await?;
    }
    if is_crd(ctx) {
        crate::crd::establish(&mut obj, None);
    }
    {
        let meta = crate::meta::metadata_mut(&mut obj);
        for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(f);
        }
    }
    crate::meta::stamp_new(&mut obj);
    if strategy::tracks_generation(&obj) && def.kind != "Pod" {
        crate::meta::metadata_mut(&mut obj).insert("generation".into(), json!(1));
    }
    if !is_apply(ctx) {
        crate::managed::record_update(None, &mut obj, &ctx.manager(), &def.api_version(), None, &ctx.lists());
    }
    let base = obj.clone();
    for attempt in 0..8 {
        let mut obj = base.clone();
        if let Some(prefix) = &generate {
            if attempt > 0 || crate::meta::name(&obj).is_none() {
                let p: String = prefix.chars().take(58).collect();
                crate::meta::metadata_mut(&mut obj).insert("name".into(), json!(format!("{p}{}", random_suffix())));
            }
        }
        // After the name is known (a Job's generated labels carry it).
        strategy::generate_job_selector(def, &mut obj);
        let plan = if is_service(ctx) { crate::alloc::plan(&ctx.api.ranges, &mut obj, None)? } else { Plan::default() };
        strategy::validate(def, &obj)?;
        let name = crate::meta::name(&obj).unwrap_or_default().to_string();
        if ctx.query.dry_run {
            return Ok((StatusCode::CREATED, obj));
        }
        let quota = super::quota::check(ctx, &obj, attempt > 0).await?;
        let key = ctx.key(&name);
        let r = cas_put(ctx, key, &obj, 0, &plan, &quota).await?;
        if r.succeeded {
            crate::meta::set_resource_version(&mut obj, r.revision);
            crd_written(ctx).await;
            if def.group.is_empty() && def.kind == "Namespace" {
                crate::bootstrap::namespace_defaults(&ctx.api, &name).await?;
            }
            return Ok((StatusCode::CREATED, obj));
        }
        if let Some(c) = clash(&r, &plan) {
            if c.chosen {
                return Err(crate::alloc::taken(&name, &c.key));
            }
            continue;
        }
        let exists = matches!(r.responses.first(), Some(keelson_store::OpResult::Range(rr)) if !rr.kvs.is_empty());
        if !exists {
            // A quota changed under us (another create in the namespace): count again.
            continue;
        }
        if generate.is_none() {
            return Err(ApiError::already_exists(&def.plural, &def.group, &name));
        }
    }
    Err(ApiError::already_exists(&def.plural, &def.group, crate::meta::name(&base).unwrap_or_default()))
}

/// Kinds whose PUT creates a missing object (Kubernetes' `AllowCreateOnUpdate`).
fn create_on_update(ctx: &Ctx) -> bool {
    matches!(
        (ctx.def.group.as_str(), ctx.def.kind.as_str()),
        ("", "Endpoints") | ("coordination.k8s.io", "Lease") | ("", "Event") | ("events.k8s.io", "Event")
    )
}

/// update (PUT): the whole object; CAS on its resourceVersion when given.
pub async fn update(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let obj = decode_body(ctx, bytes)?;
    let url_name = ctx.name().to_string();
    match crate::meta::name(&obj) {
        Some(n) if n != url_name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({url_name})"
            )))
        }
        None => return Err(ApiError::bad_request("the name of the object is required and must match the URL")),
        _ => {}
    }
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&url_name), Freshness::Latest).await?;
    let Some(kv) = kv else {
        if create_on_update(ctx) && !is_status(ctx) {
            let (code, obj) = create_object(ctx, obj).await?;
            return Ok(json_response(code, &ctx.present(obj), ctx.output));
        }
        return Err(ctx.not_found(&url_name));
    };
    if let Some(rv) = crate::meta::resource_version(&obj) {
        if storage::parse_rv(rv)? != kv.mod_revision {
            return Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &url_name));
        }
    }
    let old = storage::decode(&kv)?;
    let (code, out) = store_update(ctx, old, kv.mod_revision, obj, is_status(ctx)).await?;
    Ok(json_response(code, &ctx.present(out), ctx.output))
}

/// Whether this request writes the `status` subresource.
pub fn is_status(ctx: &Ctx) -> bool {
    ctx.path.subresource.as_deref() == Some("status")
}

/// Apply the update rules to `new` against `old` (at `old_rev`) and write it with CAS;
/// `status_only`: the `/status` rules (only status changes) instead of the main resource's.
/// A conflict here means someone wrote in between: 409.
pub async fn store_update(
    ctx: &Ctx,
    old: Value,
    old_rev: i64,
    mut new: Value,
    status_only: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let def = &ctx.def;
    let name = crate::meta::name(&old).unwrap_or_default().to_string();
    if status_only {
        // `/status`: only status changes (plus nothing else of the body).
        let mut merged = old.clone();
        if let (Some(m), Some(s)) = (merged.as_object_mut(), new.get("status")) {
            m.insert("status".into(), s.clone());
        }
        new = merged;
    } else if def.has_status() {
        if let Some(m) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => m.insert("status".into(), s.clone()),
                None => m.remove("status"),
            };
        }
    }
    {
        let old_meta = crate::meta::metadata(&old).cloned().unwrap_or_default();
        let meta = crate::meta::metadata_mut(&mut new);
        for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        meta.remove("resourceVersion");
        if let Some(ns) = old_meta.get("namespace") {
            meta.insert("namespace".into(), ns.clone());
        }
    }
    // A namespace's `spec.finalizers` change only through `/finalize`: any other write
    // keeps the old list exactly (absent stays absent, an empty list stays empty).
    if def.group.is_empty() && def.kind == "Namespace" && ctx.path.subresource.as_deref() != Some("finalize") {
        let old_f = old.pointer("/spec/finalizers").cloned();
        if let Some(o) = new.as_object_mut() {
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                match old_f {
                    Some(f) => spec.insert("finalizers".into(), f),
                    None => spec.remove("finalizers"),
                };
            }
        }
    }
    strategy::apply_defaults(def, &mut new);
    // A Service keeps, claims and releases its addresses in the same write.
    let plan = if is_service(ctx) && !status_only {
        crate::alloc::plan(&ctx.api.ranges, &mut new, Some(&old))?
    } else {
        Plan::default()
    };
    if is_crd(ctx) && !status_only {
        crate::crd::establish(&mut new, Some(&old));
    }
    strategy::validate(def, &new)?;
    strategy::validate_update(def, &new, &old)?;
    if !is_apply(ctx) {
        let sub = status_only.then_some("status");
        crate::managed::record_update(Some(&old), &mut new, &ctx.manager(), &def.api_version(), sub, &ctx.lists());
    }
    if strategy::tracks_generation(&new) && def.kind != "Pod" && new.get("spec") != old.get("spec") {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        crate::meta::metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    let mut old_cmp = old.clone();
    crate::meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
    if new == old_cmp {
        // Nothing changed: no write, the same resourceVersion.
        return Ok((StatusCode::OK, old));
    }
    if ctx.query.dry_run {
        crate::meta::set_resource_version(&mut new, old_rev);
        return Ok((StatusCode::OK, new));
    }
    let key = ctx.key(&name);
    // An object being deleted goes away when its last finalizer is removed (a namespace's
    // `spec.finalizers` too).
    let spec_finalizers = def.group.is_empty()
        && def.kind == "Namespace"
        && new.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if new.pointer("/metadata/deletionTimestamp").is_some()
        && crate::meta::finalizers(&new).is_empty()
        && !spec_finalizers
    {
        let r = ctx.txn(crate::rest::delete::delete_txn(ctx, &new, key, old_rev)).await?;
        if !r.succeeded {
            return Err(ApiError::conflict(&def.plural, &def.group, &name));
        }
        crate::meta::set_resource_version(&mut new, r.revision);
        crd_written(ctx).await;
        return Ok((StatusCode::OK, new));
    }
    let r = cas_put(ctx, key, &new, old_rev, &plan, &[]).await?;
    if !r.succeeded {
        return Err(match clash(&r, &plan) {
            Some(c) if c.chosen => crate::alloc::taken(&name, &c.key),
            // A randomly picked node port someone took meanwhile: a conflict, which the
            // patch and scale loops retry with a new pick.
            _ => ApiError::conflict(&def.plural, &def.group, &name),
        });
    }
    crate::meta::set_resource_version(&mut new, r.revision);
    crd_written(ctx).await;
    Ok((StatusCode::OK, new))
}
