//! `serviceaccounts/<name>/token`: the TokenRequest API.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::Ctx;
use crate::serve::{json_response, Body};
use crate::status::ApiError;
use crate::storage;
use crate::tokens::{self, Claims, KubeClaims, Ref};

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        vec![(field.into(), "FieldValueInvalid".into(), message)],
    )
}

/// The uid of a live object (the ServiceAccount, or the Pod/Secret a token is bound to).
async fn uid_of(ctx: &Ctx, plural: &str, ns: &str, name: &str) -> Result<Option<String>, ApiError> {
    Ok(storage::get_core(&ctx.api, plural, ns, name).await?.as_ref().and_then(storage::live_uid))
}

pub async fn create(ctx: &Ctx, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let keys = ctx
        .api
        .tokens
        .clone()
        .ok_or_else(|| ApiError::unavailable("this API server has no service-account signing key"))?;
    let m = crate::body::media(ctx.content_type.as_deref())?;
    let req = crate::body::decode_object(m, body, Some(("authentication.k8s.io/v1", "TokenRequest")))?;
    if req.get("kind").and_then(Value::as_str).is_some_and(|k| k != "TokenRequest") {
        return Err(ApiError::bad_request("the body must be a TokenRequest"));
    }
    let ns = ctx.namespace().unwrap_or_default().to_string();
    let sa = ctx.name().to_string();
    let sa_uid = uid_of(ctx, "serviceaccounts", &ns, &sa)
        .await?
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", &sa))?;
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => tokens::DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < tokens::MIN_EXPIRATION {
        return Err(invalid(
            &sa,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            &sa,
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(tokens::ISSUER.to_string());
    }
    let (mut pod, mut secret) = (None, None);
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = bound.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::invalid(
                    "TokenRequest",
                    "authentication.k8s.io",
                    &sa,
                    vec![(
                        "spec.boundObjectRef.kind".into(),
                        "FieldValueNotSupported".into(),
                        format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
                    )],
                ))
            }
        };
        let uid = uid_of(ctx, plural, &ns, &name).await?.ok_or_else(|| ApiError::not_found(plural, "", &name))?;
        if let Some(want) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(plural, "", &name));
            }
        }
        let r = Some(Ref { name, uid });
        if plural == "pods" {
            pod = r;
        } else {
            secret = r;
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        iss: tokens::ISSUER.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        sub: format!("system:serviceaccount:{ns}:{sa}"),
        kube: KubeClaims { namespace: ns.clone(), serviceaccount: Ref { name: sa.clone(), uid: sa_uid }, pod, secret },
    };
    let token = tokens::issue(&keys, &claims).map_err(|e| ApiError::internal(e.to_string()))?;
    let exp = jiff::Timestamp::from_second(claims.exp).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out_spec = spec;
    if let Some(s) = out_spec.as_object_mut() {
        s.insert("audiences".into(), json!(audiences));
        s.insert("expirationSeconds".into(), json!(expiration));
        s.entry("boundObjectRef").or_insert(Value::Null);
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": crate::meta::now_rfc3339()},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
    });
    Ok(json_response(StatusCode::CREATED, &out, ctx.output))
}
