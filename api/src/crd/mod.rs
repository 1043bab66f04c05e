//! CustomResourceDefinitions: what a CRD serves (one [`ResourceDef`] per served version),
//! its validation and defaults, its status, and the task that keeps every master's
//! registry in step with the CRDs in the store.
//!
//! keelson has no separate CRD controller: a CRD whose names are valid is accepted and
//! established when it is written (Kubernetes' `NamesAccepted` and `Established`
//! conditions are set by the API server in the same write), so a manifest holding a CRD
//! and one of its objects applies in one `kubectl apply`.

mod columns;
pub mod schema;

pub use columns::{cells as table_cells, definitions as table_columns};

use std::sync::Arc;

use keelson_store::{KeyRange, RangeRequest, WatchRequest};
use serde_json::{json, Value};

use crate::resources::{ResourceDef, Storage, SCALE, STATUS, STORED_VERBS};
use crate::serve::Api;

/// The store prefix of the CRDs themselves.
pub const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// `.spec.replicas`-style paths of a CRD's scale subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// What one served version of a CRD says about its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomDef {
    /// The CRD's name (`crontabs.stable.example.com`).
    pub crd_name: String,
    /// `openAPIV3Schema` of this version.
    pub schema: Value,
    /// `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<Value>,
    pub scale: Option<ScalePaths>,
    /// The version objects are stored as (`storage: true`); the others are served from it
    /// with the `None` conversion strategy (only `apiVersion` changes).
    pub storage_version: String,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
        let parsed = v.strip_prefix('v').and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let major: u64 = digits.parse().ok()?;
            let tail = &rest[digits.len()..];
            let (class, minor) = if tail.is_empty() {
                (0, "0")
            } else if let Some(m) = tail.strip_prefix("beta") {
                (1, m)
            } else if let Some(m) = tail.strip_prefix("alpha") {
                (2, m)
            } else {
                return None;
            };
            let minor: u64 = if minor.is_empty() { 0 } else { minor.parse().ok()? };
            Some((class, major, minor))
        });
        match parsed {
            Some((class, major, minor)) => (class, std::cmp::Reverse(major), std::cmp::Reverse(minor), String::new()),
            None => (3, std::cmp::Reverse(0), std::cmp::Reverse(0), v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

/// The resources an established CRD serves: one per served version, best version first.
pub fn defs_of(crd: &Value) -> Vec<ResourceDef> {
    let group = s(crd, "/spec/group").to_string();
    let plural = s(crd, "/spec/names/plural").to_string();
    let kind = s(crd, "/spec/names/kind").to_string();
    if group.is_empty() || plural.is_empty() || kind.is_empty() || !is_established(crd) {
        return Vec::new();
    }
    let singular = Some(s(crd, "/spec/names/singular")).filter(|x| !x.is_empty()).map(str::to_string);
    let list_kind = Some(s(crd, "/spec/names/listKind")).filter(|x| !x.is_empty()).map(str::to_string);
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or(versions.first())
        .map(|v| s(v, "/name").to_string())
        .unwrap_or_default();
    let mut out: Vec<ResourceDef> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .map(|v| {
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push(STATUS);
            }
            let scale = v.pointer("/subresources/scale").map(|sc| ScalePaths {
                spec_replicas: s(sc, "/specReplicasPath").to_string(),
                status_replicas: s(sc, "/statusReplicasPath").to_string(),
                label_selector: Some(s(sc, "/labelSelectorPath")).filter(|x| !x.is_empty()).map(str::to_string),
            });
            if scale.is_some() {
                subresources.push(SCALE);
            }
            ResourceDef {
                group: group.clone(),
                version: s(v, "/name").to_string(),
                kind: kind.clone(),
                list_kind: list_kind.clone().unwrap_or_else(|| format!("{kind}List")),
                plural: plural.clone(),
                singular: singular.clone().unwrap_or_else(|| kind.to_ascii_lowercase()),
                namespaced: s(crd, "/spec/scope") != "Cluster",
                short_names: strings(crd, "/spec/names/shortNames"),
                categories: strings(crd, "/spec/names/categories"),
                subresources,
                verbs: STORED_VERBS.to_vec(),
                key_prefix: format!("/registry/{group}/{plural}/"),
                storage: Storage::Stored,
                type_check: None,
                schema: None,
                conversion: None,
                custom: Some(Arc::new(CustomDef {
                    crd_name: crate::meta::name(crd).unwrap_or_default().to_string(),
                    schema: v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                    printer_columns: v
                        .get("additionalPrinterColumns")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    scale,
                    storage_version: storage_version.clone(),
                })),
            }
        })
        .collect();
    out.sort_by(|a, b| version_order(&a.version, &b.version));
    out
}

fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| {
        c.iter().any(|c| c.get("type") == Some(&json!("Established")) && c.get("status") == Some(&json!("True")))
    })
}

/// Kubernetes' CRD defaults: singular and listKind from the kind, conversion None.
pub fn apply_defaults(crd: &mut Value) {
    let kind = s(crd, "/spec/names/kind").to_string();
    if let Some(names) = crd.pointer_mut("/spec/names").and_then(Value::as_object_mut) {
        if names.get("singular").and_then(Value::as_str).is_none_or(str::is_empty) {
            names.insert("singular".into(), json!(kind.to_ascii_lowercase()));
        }
        if names.get("listKind").and_then(Value::as_str).is_none_or(str::is_empty) {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion").or_insert_with(|| json!({"strategy": "None"}));
    }
}

/// Accept the names and establish the CRD (what Kubernetes' naming and establishing
/// controllers do a moment after the write). `old` is the stored CRD on update.
pub fn establish(crd: &mut Value, old: Option<&Value>) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let now = crate::meta::now_rfc3339();
    let mut stored: Vec<String> = old.map(|o| strings(o, "/status/storedVersions")).unwrap_or_default();
    for v in crd.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            let name = s(v, "/name").to_string();
            if !stored.contains(&name) {
                stored.push(name);
            }
        }
    }
    let condition = |ty: &str, reason: &str, message: &str| {
        // Keep the transition time of a condition that was already true.
        let since = old
            .and_then(|o| o.pointer("/status/conditions").and_then(Value::as_array))
            .and_then(|c| c.iter().find(|c| c.get("type") == Some(&json!(ty))))
            .and_then(|c| c.get("lastTransitionTime"))
            .cloned()
            .unwrap_or_else(|| json!(now));
        json!({"type": ty, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let status = json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
    if let Some(o) = crd.as_object_mut() {
        o.insert("status".into(), status);
    }
}

type Cause = (String, String, String);

/// Kubernetes' own API groups with a dot (CRDs may not take them).
const BUILTIN_GROUPS: &[&str] = &[
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

fn required(field: &str) -> Cause {
    (field.to_string(), "FieldValueRequired".into(), "Required value".into())
}

fn invalid(field: &str, value: &str, why: &str) -> Cause {
    (field.to_string(), "FieldValueInvalid".into(), format!("Invalid value: {value:?}: {why}"))
}

/// Validation of a CRD (`pkg/apis/apiextensions/validation`), the main rules.
pub fn validate(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let group = s(crd, "/spec/group");
    let plural = s(crd, "/spec/names/plural");
    let kind = s(crd, "/spec/names/kind");
    let name = crate::meta::name(crd).unwrap_or_default();
    if group.is_empty() {
        causes.push(required("spec.group"));
    } else if !crate::strategy::is_dns1123_subdomain(group) || !group.contains('.') {
        causes.push(invalid("spec.group", group, "should be a domain with at least one dot"));
    } else if BUILTIN_GROUPS.contains(&group) {
        // Its objects would live under a built-in prefix (and deleting the CRD would take
        // them with it).
        causes.push(invalid("spec.group", group, "is served by the API server itself"));
    } else if (group == "k8s.io" || group.ends_with(".k8s.io") || group.ends_with(".kubernetes.io"))
        && crd.pointer("/metadata/annotations/api-approved.kubernetes.io").is_none()
    {
        causes.push((
            "metadata.annotations[api-approved.kubernetes.io]".into(),
            "FieldValueRequired".into(),
            "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".into(),
        ));
    }
    if plural.is_empty() {
        causes.push(required("spec.names.plural"));
    } else if !crate::strategy::is_dns1123_label(plural) {
        causes.push(invalid("spec.names.plural", plural, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
    }
    if kind.is_empty() {
        causes.push(required("spec.names.kind"));
    } else if !kind.chars().all(|c| c.is_ascii_alphanumeric()) || !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
        causes.push(invalid(
            "spec.names.kind",
            kind,
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    match s(crd, "/spec/scope") {
        "Namespaced" | "Cluster" => {}
        "" => causes.push(required("spec.scope")),
        other => causes.push((
            "spec.scope".into(),
            "FieldValueNotSupported".into(),
            format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(required("spec.versions"));
    }
    let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(invalid(
            "spec.versions",
            &storage.to_string(),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = s(v, "/name");
        let field = format!("spec.versions[{i}]");
        if !crate::strategy::is_dns1123_label(vname) {
            causes.push(invalid(
                &format!("{field}.name"),
                vname,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-'",
            ));
        }
        if seen.contains(&vname) {
            causes.push((format!("{field}.name"), "FieldValueDuplicate".into(), format!("Duplicate value: {vname:?}")));
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push(required(&format!("{field}.schema.openAPIV3Schema"))),
            Some(schema) => {
                for e in schema::check_structural(schema, &format!("{field}.schema.openAPIV3Schema")) {
                    causes.push((e.field, e.reason.to_string(), e.message));
                }
            }
        }
        if let Some(sc) = v.pointer("/subresources/scale") {
            for (p, f) in [("/specReplicasPath", "specReplicasPath"), ("/statusReplicasPath", "statusReplicasPath")] {
                let path = s(sc, p);
                let want = if f == "specReplicasPath" { ".spec." } else { ".status." };
                if !path.starts_with(want) {
                    causes.push(invalid(
                        &format!("{field}.subresources.scale.{f}"),
                        path,
                        &format!("should be a json path under {}", want.trim_end_matches('.')),
                    ));
                }
            }
        }
    }
    causes
}

/// Rebuild this master's custom resources from the CRDs in the store (a linearizable
/// read, so a CRD this master just wrote is in it).
pub(crate) async fn reload(api: &Api) -> Result<i64, keelson_store::StoreError> {
    let r = api.store.range(RangeRequest::new(KeyRange::prefix(CRD_PREFIX))).await?;
    let defs = r
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .flat_map(|crd| defs_of(&crd))
        .collect();
    api.registry.set_custom(defs);
    Ok(r.revision)
}

/// Keep the registry in step with the CRDs written through any master, until `stop`.
pub(crate) async fn sync(api: Arc<Api>) {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let rev = tokio::select! {
            _ = api.stop.cancelled() => return,
            r = reload(&api) => r,
        };
        let rev = match rev {
            Ok(rev) => {
                backoff = std::time::Duration::from_millis(100);
                rev
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the CRDs yet");
                tokio::select! {
                    _ = api.stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                continue;
            }
        };
        let mut w = api.store.watch(WatchRequest {
            range: KeyRange::prefix(CRD_PREFIX),
            start_revision: rev + 1,
            ..Default::default()
        });
        tokio::select! {
            _ = api.stop.cancelled() => return,
            _ = w.next() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_groups_are_refused() {
        let crd = |group: &str, annotated: bool| {
            let mut c = json!({"metadata": {"name": format!("things.{group}")}, "spec": {"group": group, "scope": "Cluster",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
            if annotated {
                c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "unapproved"});
            }
            validate(&c).into_iter().map(|c| c.0).collect::<Vec<_>>()
        };
        assert!(crd("example.com", false).is_empty());
        assert_eq!(crd("apiextensions.k8s.io", true), ["spec.group"]);
        assert_eq!(crd("widgets.k8s.io", false), ["metadata.annotations[api-approved.kubernetes.io]"]);
        assert!(crd("widgets.k8s.io", true).is_empty());
    }

    #[test]
    fn every_served_version_reads_and_writes_the_storage_versions_objects() {
        let crd = json!({"metadata": {"name": "things.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        let defs = defs_of(&crd);
        assert_eq!(defs.iter().map(|d| d.version.as_str()).collect::<Vec<_>>(), ["v1", "v1beta1"]);
        let beta = &defs[1];
        let stored =
            beta.stored(json!({"apiVersion": "example.com/v1beta1", "kind": "Thing", "spec": {"a": 1}})).unwrap();
        assert_eq!(stored["apiVersion"], "example.com/v1");
        assert_eq!(beta.served(stored.clone())["apiVersion"], "example.com/v1beta1");
        assert_eq!(defs[0].served(stored)["spec"]["a"], 1);
    }

    #[test]
    fn versions_sort_as_kubernetes_does() {
        let mut v = vec!["v1alpha1", "v2beta1", "foo", "v1", "v1beta2", "v2", "v1beta1", "v10"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, vec!["v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
