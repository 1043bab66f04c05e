//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): the configuration is
//! merged into the live object by [`crate::managed::apply`], which owns the fields it
//! applies; a field another manager owns and the apply would change is a 409 conflict
//! unless `force=true`. A missing object is created.

use http::{Response, StatusCode};
use serde_json::Value;

use super::Ctx;
use crate::body::{decode_object, Media};
use crate::managed::{self, Conflict};
use crate::serve::{json_response, Body};
use crate::status::{ApiError, Cause, Details};
use crate::storage::{self, Freshness};

/// Kubernetes' words for apply conflicts, grouped by manager.
fn conflict_error(ctx: &Ctx, name: &str, conflicts: &[Conflict]) -> ApiError {
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let path = managed::path_text(&c.path);
        match groups.iter_mut().find(|(m, v, _)| *m == c.manager && *v == c.api_version) {
            Some((_, _, paths)) => paths.push(path),
            None => groups.push((c.manager.clone(), c.api_version.clone(), vec![path])),
        }
    }
    let n = conflicts.len();
    let mut message = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    let parts: Vec<String> = groups
        .iter()
        .map(|(m, v, paths)| {
            if paths.len() == 1 {
                format!("conflict with \"{m}\" using {v}: {}", paths[0])
            } else {
                format!("conflicts with \"{m}\" using {v}:\n- {}", paths.join("\n- "))
            }
        })
        .collect();
    message.push_str(&parts.join("\n"));
    let mut e = ApiError::new(409, "Conflict", message);
    e.details = Some(Box::new(Details {
        name: Some(name.to_string()),
        group: Some(ctx.def.group.clone()).filter(|g| !g.is_empty()),
        kind: Some(ctx.def.plural.clone()),
        causes: conflicts
            .iter()
            .map(|c| Cause {
                reason: Some("FieldManagerConflict".into()),
                message: Some(format!("conflict with \"{}\" using {}", c.manager, c.api_version)),
                field: Some(managed::path_text(&c.path)),
            })
            .collect(),
        ..Default::default()
    }));
    e
}

pub async fn apply(ctx: &Ctx, bytes: &[u8]) -> Result<Response<Body>, ApiError> {
    let manager = ctx.query.field_manager.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
        ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![(
                "fieldManager".into(),
                "FieldValueRequired".into(),
                "Required value: is required for apply patch".into(),
            )],
        )
    })?;
    let name = ctx.name().to_string();
    let av = ctx.def.api_version();
    let mut cfg = decode_object(Media::ApplyPatch, bytes, Some((&av, &ctx.def.kind)))?;
    if !cfg.is_object() {
        return Err(ApiError::bad_request("an apply configuration must be an object"));
    }
    match crate::meta::name(&cfg) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        Some(_) => {}
        None => {
            crate::meta::metadata_mut(&mut cfg).insert("name".into(), Value::String(name.clone()));
        }
    }
    super::write::check_object(ctx, &mut cfg)?;
    crate::meta::metadata_mut(&mut cfg).remove("managedFields");
    let schema = ctx.def.custom.as_ref().map(|c| c.schema.clone());
    let lists = match &schema {
        Some(s) => managed::Lists::Schema(s),
        None => managed::Lists::Builtin,
    };
    for _ in 0..super::UPDATE_RETRIES {
        let (kv, _) = storage::get(&ctx.api.store, &ctx.key(&name), Freshness::Latest).await?;
        let Some(kv) = kv else {
            let mut obj = cfg.clone();
            let empty = serde_json::json!({});
            let created = managed::apply(&empty, &obj, &manager, &av, true, &lists)
                .map_err(|c| conflict_error(ctx, &name, &c))?;
            if let Some(m) = created.pointer("/metadata/managedFields") {
                crate::meta::metadata_mut(&mut obj).insert("managedFields".into(), m.clone());
            }
            match super::write::create_object(ctx, ctx.def.stored(obj)?).await {
                Ok((code, out)) => return Ok(json_response(code, &ctx.present(out), ctx.output)),
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        };
        let live = storage::decode(&kv)?;
        let merged = managed::apply(&ctx.def.served(live.clone()), &cfg, &manager, &av, ctx.query.force, &lists)
            .map_err(|c| conflict_error(ctx, &name, &c))?;
        let mut merged = merged;
        super::write::check_object(ctx, &mut merged)?;
        let merged = ctx.def.stored(merged)?;
        match super::write::store_update(ctx, live, kv.mod_revision, merged, false).await {
            Ok((code, out)) => return Ok(json_response(code, &ctx.present(out), ctx.output)),
            Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    let _ = StatusCode::OK;
    Err(ApiError::conflict(&ctx.def.plural, &ctx.def.group, &name))
}
