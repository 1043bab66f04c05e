//! The review APIs, answered about the caller without storing anything:
//! `selfsubjectreviews` (kubectl auth whoami) and `selfsubjectaccessreviews` /
//! `selfsubjectrulesreviews` (kubectl auth can-i).

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::Ctx;
use crate::authz::{allowed, Attributes};
use crate::serve::{json_response, Body, Output};
use crate::status::ApiError;

fn user_info(ctx: &Ctx) -> Value {
    json!({"username": ctx.user.username, "groups": ctx.user.groups})
}

pub fn create(ctx: &Ctx, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let d = &ctx.def;
    let out = match d.kind.as_str() {
        // Nothing in a SelfSubjectReview's body is read, so any encoding is fine.
        "SelfSubjectReview" => json!({
            "kind": "SelfSubjectReview", "apiVersion": d.api_version(),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": user_info(ctx)},
        }),
        "SelfSubjectAccessReview" => {
            let m = crate::body::media(ctx.content_type.as_deref())?;
            let av = d.api_version();
            let v = crate::body::decode_object(m, body, Some((&av, &d.kind)))?;
            let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
            let ra = spec.get("resourceAttributes");
            let s = |k: &str| ra.and_then(|r| r.get(k)).and_then(Value::as_str).unwrap_or("");
            let attrs = Attributes {
                verb: if ra.is_some() {
                    s("verb")
                } else {
                    spec.pointer("/nonResourceAttributes/verb").and_then(Value::as_str).unwrap_or("")
                },
                group: s("group"),
                resource: s("resource"),
                subresource: Some(s("subresource")).filter(|x| !x.is_empty()),
                namespace: Some(s("namespace")).filter(|x| !x.is_empty()),
                name: Some(s("name")).filter(|x| !x.is_empty()),
            };
            let ok = allowed(&ctx.user, &attrs);
            let mut status = json!({"allowed": ok});
            if !ok {
                status["reason"] = json!("RBAC is not evaluated yet: only system:masters is allowed");
            }
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": d.api_version(), "metadata": {"creationTimestamp": null}, "spec": spec, "status": status})
        }
        "SelfSubjectRulesReview" => {
            let m = crate::body::media(ctx.content_type.as_deref())?;
            let av = d.api_version();
            let v = crate::body::decode_object(m, body, Some((&av, &d.kind)))?;
            let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
            let masters = ctx.user.in_group("system:masters");
            let rules = if masters {
                json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
            } else {
                json!([{"verbs": ["create"], "apiGroups": ["authentication.k8s.io", "authorization.k8s.io"], "resources": ["selfsubjectreviews", "selfsubjectaccessreviews", "selfsubjectrulesreviews"]}])
            };
            let non_resource = if masters { json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]) } else { json!([]) };
            json!({"kind": "SelfSubjectRulesReview", "apiVersion": d.api_version(), "metadata": {"creationTimestamp": null}, "spec": spec,
                "status": {"resourceRules": rules, "nonResourceRules": non_resource, "incomplete": false}})
        }
        other => return Err(ApiError::method_not_allowed(format!("create is not supported on {other}"))),
    };
    let output = if ctx.output == Output::Yaml { Output::Yaml } else { Output::Json };
    Ok(json_response(StatusCode::CREATED, &out, output))
}
