//! What a request asks for, read from its method, path and query — the same split as
//! Kubernetes' `RequestInfoFactory` (`apiserver/pkg/endpoints/request/requestinfo.go`).

use crate::status::ApiError;

/// A resource request: `/api/v1/namespaces/ns/pods/web/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub legacy_watch: bool,
}

/// Where a path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health(String),
    /// `/api`
    CoreGroups,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    GroupVersion {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
    OpenApi(String),
    /// `/metrics` (Prometheus text format).
    Metrics,
    Unknown,
}

/// Namespace subresources that stay on the namespace (`/namespaces/x/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Split a request path into a route.
pub fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["version"] => Route::Version,
        ["metrics"] => Route::Metrics,
        [h] if matches!(*h, "healthz" | "livez" | "readyz") => Route::Health(h.to_string()),
        [h, _check] if matches!(*h, "healthz" | "livez" | "readyz") => Route::Health(h.to_string()),
        ["openapi", ..] => Route::OpenApi(path.to_string()),
        ["api"] => Route::CoreGroups,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::GroupVersion { group: String::new(), version: v.to_string() },
        ["apis", g, v] => Route::GroupVersion { group: g.to_string(), version: v.to_string() },
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::Unknown,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut rest = rest;
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    let Some(resource) = rest.first() else { return Route::Unknown };
    let mut p = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: resource.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
        legacy_watch,
    };
    if rest.len() > 3 {
        // Only proxy subresources take a further path; none is served yet.
        return Route::Unknown;
    }
    // `/api/v1/namespaces/x` and `/api/v1/namespaces/x/status`: the namespace is the object.
    if p.resource == "namespaces" && p.group.is_empty() {
        if let Some(ns) = p.namespace.take() {
            p.name = Some(ns);
            p.subresource = rest.get(2).map(|s| s.to_string());
        }
    }
    Route::Resource(p)
}

/// The query parameters the verbs understand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub pretty: bool,
    /// `container` of pods/log, exec and attach.
    pub container: Option<String>,
}

/// Booleans as clients send them: `true`, `True`, `1` (Python sends `True`).
fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("invalid boolean {other:?}")),
    }
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let bad = |e: String| ApiError::bad_request(format!("invalid query parameter {k}: {e}"));
            let v = v.to_string();
            match k.as_ref() {
                "labelSelector" => q.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => q.field_selector = Some(v).filter(|s| !s.is_empty()),
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| bad(format!("{v:?} is not an integer")))?;
                    q.limit = (n > 0).then_some(n);
                }
                "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
                "resourceVersion" => q.resource_version = Some(v).filter(|s| !s.is_empty()),
                "resourceVersionMatch" => q.resource_version_match = Some(v).filter(|s| !s.is_empty()),
                "watch" => q.watch = boolean(&v).map_err(bad)?,
                "allowWatchBookmarks" => q.allow_watch_bookmarks = boolean(&v).map_err(bad)?,
                "sendInitialEvents" => q.send_initial_events = Some(boolean(&v).map_err(bad)?),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(v.parse().map_err(|_| bad(format!("{v:?} is not a whole number")))?)
                }
                "dryRun" => {
                    if v != "All" {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dryRun value: {v:?}; only \"All\" is supported"
                        )));
                    }
                    q.dry_run = true
                }
                "fieldManager" => q.field_manager = Some(v),
                "container" => q.container = Some(v).filter(|s| !s.is_empty()),
                "fieldValidation" => {
                    if !matches!(v.as_str(), "Strict" | "Warn" | "Ignore" | "") {
                        return Err(ApiError::bad_request(format!(
                            "Invalid fieldValidation value {v:?}: must be one of Ignore, Warn, Strict"
                        )));
                    }
                    q.field_validation = Some(v).filter(|s| !s.is_empty())
                }
                "force" => q.force = boolean(&v).map_err(bad)?,
                "propagationPolicy" => q.propagation_policy = Some(v),
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(v.parse().map_err(|_| bad(format!("{v:?} is not an integer")))?)
                }
                "pretty" => q.pretty = boolean(&v).unwrap_or(false),
                // Parameters that change nothing here (or later issues read).
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match route(path) {
            Route::Resource(p) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths_split_like_kubernetes() {
        let p = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (p.namespace.as_deref(), p.resource.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let p = res("/api/v1/namespaces/kube-system");
        assert_eq!((p.namespace, p.resource.as_str(), p.name.as_deref()), (None, "namespaces", Some("kube-system")));
        let p = res("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (p.resource.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let p = res("/apis/apps/v1/deployments");
        assert_eq!((p.group.as_str(), p.namespace, p.name), ("apps", None, None));
        let p = res("/api/v1/watch/namespaces/default/pods");
        assert!(p.legacy_watch);
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(route("/apis/apps/v1"), Route::GroupVersion { group: "apps".into(), version: "v1".into() });
        assert_eq!(route("/nope"), Route::Unknown);
    }

    #[test]
    fn python_booleans_parse() {
        let q = Query::parse(Some("watch=True&timeoutSeconds=5&limit=0")).unwrap();
        assert!(q.watch);
        assert_eq!(q.timeout_seconds, Some(5));
        assert_eq!(q.limit, None);
        assert!(Query::parse(Some("limit=x")).is_err());
    }
}
