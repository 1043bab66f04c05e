//! `namespaces/{name}/finalize`: the namespace controller's write. Replaces
//! `spec.finalizers` only; a namespace being deleted whose finalizers are all gone is
//! deleted by this write (Kubernetes' `FinalizeREST` and `ShouldDeleteNamespaceDuringUpdate`).

use http::Response;
use serde_json::{json, Value};

use super::Ctx;
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage::{self, Freshness};

/// `PUT …/namespaces/{name}/finalize`.
pub async fn update(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let body = super::write::decode_body(ctx, bytes)?;
    let name = ctx.name().to_string();
    if let Some(n) = crate::meta::name(&body).filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let finalizers = match body.pointer("/spec/finalizers") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("spec.finalizers must be a list of strings")),
    };
    for f in &finalizers {
        let ok = f.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 316);
        if !ok {
            return Err(ApiError::invalid(
                "Namespace",
                "",
                &name,
                vec![(
                    "spec.finalizers".into(),
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {f}: a finalizer name must be a non-empty string"),
                )],
            ));
        }
    }
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
    let Some(kv) = kv else { return Err(ctx.not_found(&name)) };
    if let Some(rv) = crate::meta::resource_version(&body) {
        if storage::parse_rv(rv)? != kv.mod_revision {
            return Err(ApiError::conflict("namespaces", "", &name));
        }
    }
    let old = storage::decode(&kv)?;
    let mut new = old.clone();
    if let Some(o) = new.as_object_mut() {
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("finalizers".into(), Value::Array(finalizers));
        }
    }
    let (code, out) = super::write::store_update(ctx, old, kv.mod_revision, new, false).await?;
    Ok(json_response(code, &ctx.present(out), ctx.output))
}
