//! Kubernetes `Status` errors. Every failure leaves the server as one of these, with the
//! fields in the order Go emits them (`kind, apiVersion, metadata, status, message,
//! reason, details, code`) — clients compare the text.

use serde::Serialize;

/// One cause inside `details.causes` (422 Invalid, 409 apply conflicts, …).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i64>,
}

/// An API error: HTTP code, Kubernetes reason and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel in every `Result` of the request path.
    pub details: Option<Box<Details>>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
    code: u16,
}

/// The group-qualified resource as Kubernetes prints it: `deployments.apps`, `pods`.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Option<Box<Details>> {
    Some(Box::new(Details {
        name: (!name.is_empty()).then(|| name.to_string()),
        group: (!group.is_empty()).then(|| group.to_string()),
        kind: (!kind.is_empty()).then(|| kind.to_string()),
        ..Default::default()
    }))
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// `pods "web" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource, group)));
        e.details = details(name, group, resource);
        e
    }

    /// A path that names no resource: 404 with the path.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        let mut e =
            Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource, group)));
        e.details = details(name, group, resource);
        e
    }

    /// The optimistic-concurrency conflict, worded exactly as Kubernetes words it.
    pub fn conflict(resource: &str, group: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(resource, group)
            ),
        );
        e.details = details(name, group, resource);
        e
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<(String, String, String)>) -> Self {
        let summary: Vec<String> = causes.iter().map(|(field, _, msg)| format!("{field}: {msg}")).collect();
        let what = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let message = if summary.len() == 1 {
            format!("{what} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!("{what} \"{name}\" is invalid: [{}]", summary.join(", "))
        };
        let mut d = details(name, group, kind).unwrap_or_default();
        d.causes = causes
            .into_iter()
            .map(|(field, reason, message)| Cause { reason: Some(reason), message: Some(message), field: Some(field) })
            .collect();
        ApiError { code: 422, reason: "Invalid", message, details: Some(d) }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The Status object as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        };
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\"}".to_vec())
    }

    /// The Status object as a JSON value (for watch ERROR events).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.to_json()).unwrap_or(serde_json::Value::Null)
    }
}

/// Map a store failure to the Status Kubernetes would return for the same etcd error.
impl From<keelson_store::StoreError> for ApiError {
    fn from(e: keelson_store::StoreError) -> Self {
        use keelson_store::StoreError as E;
        match e {
            E::Compacted { compact_revision } => {
                ApiError::gone(format!("too old resource version (compacted at {compact_revision})"))
            }
            E::RequestTooLarge { size, limit } => {
                ApiError::too_large(format!("etcdserver: request is too large ({size} bytes > {limit} bytes)"))
            }
            E::NoLeader | E::NotLeader { .. } => {
                let mut err = ApiError::unavailable(format!("the store has no leader right now: {e}"));
                err.details = Some(Box::new(Details { retry_after_seconds: Some(1), ..Default::default() }));
                err
            }
            // A deposed leader's controller: nothing was written; it stops on its own.
            E::TermMismatch { .. } => {
                ApiError::new(409, "Conflict", format!("{e}: this master is no longer the leader that issued it"))
            }
            other => ApiError::internal(format!("store: {other}")),
        }
    }
}

/// `Status` Success, as some deletes return it.
pub fn success(name: &str, group: &str, kind: &str) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    details.insert("name".into(), name.into());
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    details.insert("kind".into(), kind.into());
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_in_go_order() {
        let e = ApiError::conflict("configmaps", "", "c");
        let text = String::from_utf8(e.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{"name":"c","kind":"configmaps"},"code":409}"#
        );
    }
}
