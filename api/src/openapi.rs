//! `/openapi/v3`: the root listing every group-version, and one OpenAPI 3 document per
//! group-version with its paths (each operation tagged with `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind`; PATCH takes `fieldValidation`, so kubectl leaves
//! validation to the server) and `components.schemas` generated from k8s-openapi's types
//! (so `kubectl explain` works). Built once, on first use.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::resources::{Registry, ResourceDef, Storage};

/// Every document, by its path under `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
pub struct OpenApi {
    docs: BTreeMap<String, (Vec<u8>, String)>,
    root: Vec<u8>,
    /// `/openapi/v2` as JSON and as gnostic protobuf.
    pub v2_json: Vec<u8>,
    pub v2_proto: Vec<u8>,
}

fn param(name: &str, location: &str, description: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "description": description, "required": required, "schema": {"type": if name == "limit" || name == "timeoutSeconds" || name == "gracePeriodSeconds" { "integer" } else if matches!(name, "watch" | "allowWatchBookmarks" | "force" | "sendInitialEvents") { "boolean" } else { "string" }, "uniqueItems": true}})
}

fn body(schema_ref: &str) -> Value {
    json!({"content": {"*/*": {"schema": {"$ref": schema_ref}}}, "required": true})
}

fn ok(schema_ref: &str, codes: &[&str]) -> Value {
    let mut m = Map::new();
    for c in codes {
        m.insert(c.to_string(), json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}, "application/yaml": {"schema": {"$ref": schema_ref}}}}));
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

fn op(action: &str, id: &str, d: &ResourceDef, params: Vec<Value>, request: Option<Value>, responses: Value) -> Value {
    let mut o = json!({
        "tags": [format!("{}_{}", if d.group.is_empty() { "core".to_string() } else { d.group.replace('.', "_") }, d.version)],
        "description": format!("{action} {}", d.kind),
        "operationId": id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
    });
    if let (Some(r), Some(m)) = (request, o.as_object_mut()) {
        m.insert("requestBody".into(), r);
    }
    o
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut v = vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted.", false),
        param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes.", false),
        param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict.", false),
    ];
    if patch {
        v.push(param("force", "query", "Force is going to \"force\" Apply requests.", false));
    }
    v
}

fn list_params() -> Vec<Value> {
    [
        "allowWatchBookmarks",
        "continue",
        "fieldSelector",
        "labelSelector",
        "limit",
        "resourceVersion",
        "resourceVersionMatch",
        "sendInitialEvents",
        "timeoutSeconds",
        "watch",
    ]
    .iter()
    .map(|n| param(n, "query", n, false))
    .collect()
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn paths_for(d: &ResourceDef, schema_ref: &str, paths: &mut Map<String, Value>) {
    let base =
        if d.group.is_empty() { format!("/api/{}", d.version) } else { format!("/apis/{}/{}", d.group, d.version) };
    let gv_id = format!(
        "{}{}",
        if d.group.is_empty() { "Core".to_string() } else { camel(d.group.split('.').next().unwrap_or("")) },
        camel(&d.version)
    );
    let scope = if d.namespaced { "Namespaced" } else { "" };
    let coll = if d.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", d.plural)
    } else {
        format!("{base}/{}", d.plural)
    };
    let ns_param = || param("namespace", "path", "object name and auth scope, such as for teams and projects", true);
    let name_param = || param("name", "path", &format!("name of the {}", d.kind), true);
    if d.storage == Storage::Virtual {
        let mut params = write_params(false);
        if d.namespaced {
            params.push(ns_param());
        }
        paths.insert(coll, json!({"post": op("post", &format!("create{gv_id}{scope}{}", d.kind), d, params, Some(body(schema_ref)), ok(schema_ref, &["200", "201", "202"]))}));
        return;
    }
    let list_ref = format!("#/components/schemas/{}", list_schema_name(schema_ref));
    let mut coll_params = list_params();
    let mut item_params = vec![name_param()];
    if d.namespaced {
        coll_params.push(ns_param());
        item_params.push(ns_param());
        paths.insert(
            format!("{base}/{}", d.plural),
            json!({"get": op("list", &format!("list{gv_id}{}ForAllNamespaces", d.kind), d, list_params(), None, ok(&list_ref, &["200"]))}),
        );
    }
    let mut create_params = write_params(false);
    if d.namespaced {
        create_params.push(ns_param());
    }
    paths.insert(
        coll.clone(),
        json!({
            "get": op("list", &format!("list{gv_id}{scope}{}", d.kind), d, coll_params.clone(), None, ok(&list_ref, &["200"])),
            "post": op("post", &format!("create{gv_id}{scope}{}", d.kind), d, create_params.clone(), Some(body(schema_ref)), ok(schema_ref, &["200", "201", "202"])),
            "delete": op("deletecollection", &format!("deletecollection{gv_id}{scope}{}", d.kind), d, coll_params, None, ok("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Status", &["200"])),
        }),
    );
    let mut put_params = write_params(false);
    put_params.extend(item_params.iter().cloned());
    let mut patch_params = write_params(true);
    patch_params.extend(item_params.iter().cloned());
    let patch_body = json!({"content": {
        "application/apply-patch+yaml": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
        "application/json-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
        "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
        "application/strategic-merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
    }, "required": true});
    paths.insert(
        format!("{coll}/{{name}}"),
        json!({
            "get": op("get", &format!("read{gv_id}{scope}{}", d.kind), d, item_params.clone(), None, ok(schema_ref, &["200"])),
            "put": op("put", &format!("replace{gv_id}{scope}{}", d.kind), d, put_params.clone(), Some(body(schema_ref)), ok(schema_ref, &["200", "201"])),
            "patch": op("patch", &format!("patch{gv_id}{scope}{}", d.kind), d, patch_params.clone(), Some(patch_body.clone()), ok(schema_ref, &["200", "201"])),
            "delete": op("delete", &format!("delete{gv_id}{scope}{}", d.kind), d, item_params.clone(), None, ok("#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Status", &["200", "202"])),
        }),
    );
    for sub in d.subresources.iter().filter(|s| s.name == "status" || s.name == "scale") {
        let sref = if sub.name == "scale" {
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale".to_string()
        } else {
            schema_ref.to_string()
        };
        let suffix = camel(sub.name);
        paths.insert(
            format!("{coll}/{{name}}/{}", sub.name),
            json!({
                "get": op("get", &format!("read{gv_id}{scope}{}{suffix}", d.kind), d, item_params.clone(), None, ok(&sref, &["200"])),
                "put": op("put", &format!("replace{gv_id}{scope}{}{suffix}", d.kind), d, put_params.clone(), Some(body(&sref)), ok(&sref, &["200", "201"])),
                "patch": op("patch", &format!("patch{gv_id}{scope}{}{suffix}", d.kind), d, patch_params.clone(), Some(patch_body.clone()), ok(&sref, &["200", "201"])),
            }),
        );
    }
}

/// A custom resource's schema under Kubernetes' name for it (`com.example.stable.v1.CronTab`:
/// the group reversed), with apiVersion, kind and metadata added as the CRD handler adds
/// them; returns its `$ref`.
fn custom_schema(gen: &mut schemars::SchemaGenerator, d: &ResourceDef, schema: &Value) -> String {
    let meta = gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    let mut reversed: Vec<&str> = d.group.split('.').collect();
    reversed.reverse();
    let name = format!("{}.{}.{}", reversed.join("."), d.version, d.kind);
    let mut s = schema.clone();
    if let Some(m) = s.as_object_mut() {
        m.insert("type".into(), json!("object"));
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            p.insert("metadata".into(), json!({"allOf": [meta.as_value()], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
    }
    if let Ok(schema) = schemars::Schema::try_from(s) {
        gen.definitions_mut().insert(name.clone(), schema.to_value());
    }
    format!("#/components/schemas/{name}")
}

/// `io.k8s.api.apps.v1.DeploymentList` from the kind's `$ref`.
fn list_schema_name(schema_ref: &str) -> String {
    format!("{}List", schema_ref.trim_start_matches("#/components/schemas/"))
}

fn hash(bytes: &[u8]) -> String {
    format!("{:016X}", keelson_store::config::fnv64(&[&String::from_utf8_lossy(bytes)]))
}

impl OpenApi {
    pub fn build(reg: &Registry) -> OpenApi {
        let mut docs = BTreeMap::new();
        let mut values = Vec::new();
        for (group, versions) in reg.groups() {
            for version in versions {
                let mut gen = SchemaSettings::openapi3().into_generator();
                let mut paths = Map::new();
                gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
                gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
                gen.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
                let mut gvks: Vec<(String, Value)> = Vec::new();
                for d in reg.resources(&group, &version) {
                    let schema_ref = match (d.schema, &d.custom) {
                        (Some(schema_fn), _) => {
                            let s = schema_fn(&mut gen);
                            s.as_value().get("$ref").and_then(Value::as_str).unwrap_or_default().to_string()
                        }
                        (None, Some(custom)) => custom_schema(&mut gen, &d, &custom.schema),
                        (None, None) => continue,
                    };
                    let name = schema_ref.trim_start_matches("#/components/schemas/").to_string();
                    gvks.push((name.clone(), json!([{"group": d.group, "kind": d.kind, "version": d.version}])));
                    if d.storage == Storage::Stored {
                        gvks.push((
                            format!("{name}List"),
                            json!([{"group": d.group, "kind": d.list_kind, "version": d.version}]),
                        ));
                        list_schema(&mut gen, &name, &d);
                    }
                    paths_for(&d, &schema_ref, &mut paths);
                }
                let mut schemas = gen.take_definitions(true);
                add_patch_strategies(&mut schemas);
                for (name, gvk) in gvks {
                    if let Some(Value::Object(m)) = schemas.get_mut(&name) {
                        m.insert("x-kubernetes-group-version-kind".into(), gvk);
                    }
                }
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", crate::KUBE_MAJOR, crate::KUBE_MINOR)},
                    "paths": paths,
                    "components": {"schemas": schemas},
                });
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                values.push(doc);
                let key = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
                let h = hash(&bytes);
                docs.insert(key, (bytes, h));
            }
        }
        let paths: Map<String, Value> = docs
            .iter()
            .map(|(k, (_, h))| (k.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={h}")})))
            .collect();
        let root = serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default();
        let v2 = crate::openapi_v2::document(values.iter(), &format!("v{}.{}.0", crate::KUBE_MAJOR, crate::KUBE_MINOR));
        OpenApi {
            docs,
            root,
            v2_json: serde_json::to_vec(&v2).unwrap_or_default(),
            v2_proto: crate::openapi_v2::to_proto(&v2),
        }
    }

    /// The document at `/openapi/v3[/<gv>]`, with its hash (for ETag).
    pub fn get(&self, path: &str) -> Option<(&[u8], Option<&str>)> {
        let rest = path.trim_start_matches("/openapi/v3").trim_matches('/');
        if rest.is_empty() {
            return Some((&self.root, None));
        }
        self.docs.get(rest).map(|(b, h)| (b.as_slice(), Some(h.as_str())))
    }
}

/// The strategic-merge-patch metadata of a property (its Go `patchStrategy` and
/// `patchMergeKey` tags), which k8s-openapi's schemas lack and kubectl reads to compute
/// apply patches: (strategy, merge key).
fn patch_meta(definition: &str, property: &str) -> Option<(&'static str, Option<&'static str>)> {
    let kind = definition.rsplit('.').next().unwrap_or(definition);
    Some(match (kind, property) {
        ("PodSpec", "volumes") | ("PodSpec", "resourceClaims") => ("merge,retainKeys", Some("name")),
        (
            "PodSpec",
            "containers" | "initContainers" | "ephemeralContainers" | "imagePullSecrets" | "schedulingGates",
        ) => ("merge", Some("name")),
        ("PodSpec", "hostAliases") => ("merge", Some("ip")),
        ("Container" | "EphemeralContainer", "ports") => ("merge", Some("containerPort")),
        ("Container" | "EphemeralContainer", "env") => ("merge", Some("name")),
        ("Container" | "EphemeralContainer", "volumeMounts") => ("merge", Some("mountPath")),
        ("Container" | "EphemeralContainer", "volumeDevices") => ("merge", Some("devicePath")),
        ("ServiceSpec", "ports") => ("merge", Some("port")),
        ("ObjectMeta", "finalizers") => ("merge", None),
        ("ObjectMeta", "ownerReferences") => ("merge", Some("uid")),
        ("ServiceAccount", "secrets") => ("merge", Some("name")),
        ("NodeStatus", "addresses") => ("merge", Some("type")),
        (k, "conditions") if k.ends_with("Status") => ("merge", Some("type")),
        _ => return None,
    })
}

fn add_patch_strategies(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { continue };
        for (prop, p) in props.iter_mut() {
            if let (Some((strategy, key)), Some(m)) = (patch_meta(name, prop), p.as_object_mut()) {
                m.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                if let Some(k) = key {
                    m.insert("x-kubernetes-patch-merge-key".into(), json!(k));
                }
            }
        }
    }
}

/// The `<Kind>List` schema: metadata, items of the kind.
fn list_schema(gen: &mut schemars::SchemaGenerator, kind_schema: &str, d: &ResourceDef) {
    let meta = gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    let list = json!({
        "description": format!("{} is a list of {}.", d.list_kind, d.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{kind_schema}")}, "description": format!("List of {}.", d.plural)},
            "metadata": meta.to_value(),
        },
    });
    gen.definitions_mut().insert(format!("{kind_schema}List"), list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_gvk_paths_and_schemas() {
        let api = OpenApi::build(&Registry::builtin());
        let (root, _) = api.get("/openapi/v3").unwrap();
        let root: Value = serde_json::from_slice(root).unwrap();
        assert!(root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1?hash="));
        let (doc, _) = api.get("/openapi/v3/apis/apps/v1").unwrap();
        let doc: Value = serde_json::from_slice(doc).unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        let schema = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let containers = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    }
}
