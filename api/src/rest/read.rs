//! get and list.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::serve::{json_response, Body, Output};
use crate::status::ApiError;
use crate::storage::{self, parse_rv, ContinueToken, Freshness};

/// get: `resourceVersion` unset = latest (linearizable), "0" = any, N = not older than N.
pub async fn get(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let freshness = match ctx.query.resource_version.as_deref() {
        None => Freshness::Latest,
        Some("0") => Freshness::Any,
        Some(rv) => Freshness::NotOlderThan(parse_rv(rv)?),
    };
    let (kv, _) = storage::get(&ctx.api.store, &ctx.key(ctx.name()), freshness).await?;
    let kv = kv.ok_or_else(|| ctx.not_found(ctx.name()))?;
    let obj = storage::decode(&kv)?;
    if ctx.output == Output::Table {
        let t = crate::table::table(
            &ctx.def,
            std::slice::from_ref(&obj),
            json!({"resourceVersion": kv.mod_revision.to_string()}),
            true,
        );
        return Ok(json_response(StatusCode::OK, &t, Output::Table));
    }
    Ok(json_response(StatusCode::OK, &ctx.present(obj), ctx.output))
}

/// How fresh a list must be, from `resourceVersion`, `resourceVersionMatch`, `limit` and
/// `continue`, refusing the combinations Kubernetes refuses.
pub fn list_freshness(ctx: &Ctx) -> Result<(Freshness, Option<String>), ApiError> {
    let q = &ctx.query;
    if let Some(token) = &q.continue_token {
        if q.resource_version.as_deref().is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        if q.resource_version_match.is_some() {
            return Err(ApiError::bad_request("resourceVersionMatch is forbidden when continue is provided"));
        }
        let t = ContinueToken::decode(token)?;
        if t.rv < ctx.api.store.compact_revision() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        return Ok((Freshness::Exact(t.rv), Some(t.start)));
    }
    let rv = q.resource_version.as_deref();
    let f = match (rv, q.resource_version_match.as_deref()) {
        (None, None) => Freshness::Latest,
        (None, Some(_)) => {
            return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"))
        }
        (Some("0"), None | Some("NotOlderThan")) => Freshness::Any,
        (Some("0"), Some("Exact")) => {
            return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""))
        }
        (Some(rv), None) if q.limit.is_some() => Freshness::Exact(parse_rv(rv)?),
        (Some(rv), None | Some("NotOlderThan")) => Freshness::NotOlderThan(parse_rv(rv)?),
        (Some(rv), Some("Exact")) => Freshness::Exact(parse_rv(rv)?),
        (Some(_), Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch {other:?} is not supported: use \"Exact\" or \"NotOlderThan\""
            )))
        }
    };
    Ok((f, None))
}

/// list: a consistent page at one revision.
pub async fn list(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = ctx.selectors()?;
    let (freshness, start) = list_freshness(ctx)?;
    let ns = ctx.namespace();
    let keep = |o: &Value| labels.matches(o) && fields.matches(o);
    let filtered = !labels.is_empty() || !fields.is_empty();
    let prefix = storage::list_prefix(&ctx.def, ns);
    let page = match (fields.pinned_name(), ns.or(if ctx.def.namespaced { None } else { Some("") })) {
        // `metadata.name=x` in a namespace (or on a cluster kind): read one key.
        (Some(name), Some(_)) if start.is_none() => {
            let (kv, rev) = storage::get(&ctx.api.store, &ctx.key(name), freshness).await?;
            let items: Vec<Value> = kv
                .iter()
                .map(storage::decode)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|o| keep(o))
                .collect();
            storage::Page { items, revision: rev, continue_token: None, remaining: None }
        }
        _ => {
            storage::list(&ctx.api.store, &prefix, freshness, start.as_deref(), ctx.query.limit, &keep, filtered)
                .await?
        }
    };
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(page.revision.to_string()));
    if let Some(c) = &page.continue_token {
        meta.insert("continue".into(), json!(c));
    }
    if let Some(r) = page.remaining.filter(|r| *r > 0) {
        meta.insert("remainingItemCount".into(), json!(r));
    }
    let body = match ctx.output {
        Output::Table => crate::table::table(&ctx.def, &page.items, Value::Object(meta), true),
        Output::Metadata => json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "items": page.items.into_iter().map(|o| crate::meta::partial_object_metadata(&ctx.def.served(o))).collect::<Vec<_>>(),
        }),
        _ => {
            let items: Vec<Value> = page
                .items
                .into_iter()
                .map(|o| {
                    let mut o = ctx.def.served(o);
                    if let Some(m) = o.as_object_mut() {
                        m.insert("kind".into(), json!(ctx.def.kind));
                        m.insert("apiVersion".into(), json!(ctx.def.api_version()));
                    }
                    o
                })
                .collect();
            json!({"kind": ctx.def.list_kind, "apiVersion": ctx.def.api_version(), "metadata": meta, "items": items})
        }
    };
    Ok(json_response(StatusCode::OK, &body, ctx.output))
}
