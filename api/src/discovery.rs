//! Discovery: `/version`, legacy (`APIVersions`, `APIGroupList`, `APIResourceList`) and
//! aggregated (`APIGroupDiscoveryList`, apidiscovery.k8s.io v2 and v2beta1) documents,
//! all built from the resource table.

use serde_json::{json, Value};

use crate::resources::{Registry, ResourceDef, Storage};

/// The `/version` document: API level 1.33, so kubectl's dispatcher runs kubectl.1.33.
pub fn version() -> Value {
    json!({
        "major": crate::KUBE_MAJOR,
        "minor": crate::KUBE_MINOR,
        "emulationMajor": crate::KUBE_MAJOR,
        "emulationMinor": crate::KUBE_MINOR,
        "minCompatibilityMajor": crate::KUBE_MAJOR,
        "minCompatibilityMinor": "32",
        "gitVersion": format!("v{}.{}.0-keelson.{}", crate::KUBE_MAJOR, crate::KUBE_MINOR, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH }),
    })
}

/// Whether an Accept header asks for aggregated discovery (and which version).
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

/// `/api` (legacy).
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis` (legacy).
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> =
        reg.groups().iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_doc(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (legacy).
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg.groups().into_iter().find(|(g, _)| g == name && !g.is_empty())?;
    let mut doc = group_doc(&g, &vs);
    doc.as_object_mut()?.insert("kind".into(), json!("APIGroup"));
    doc.as_object_mut()?.insert("apiVersion".into(), json!("v1"));
    Some(doc)
}

fn storage_version_hash(d: &ResourceDef) -> String {
    use base64::Engine;
    let h = keelson_store::config::fnv64(&[&d.group, &d.version, &d.kind]);
    base64::engine::general_purpose::STANDARD.encode(&h.to_be_bytes()[..8])[..11].to_string()
}

/// `/api/v1`, `/apis/<group>/<version>` (legacy `APIResourceList`).
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.resources(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in &defs {
        let mut r = json!({
            "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced, "kind": d.kind,
            "verbs": d.verbs,
        });
        let m = r.as_object_mut()?;
        if !d.short_names.is_empty() {
            m.insert("shortNames".into(), json!(d.short_names));
        }
        if !d.categories.is_empty() {
            m.insert("categories".into(), json!(d.categories));
        }
        if d.storage == Storage::Stored {
            m.insert("storageVersionHash".into(), json!(storage_version_hash(d)));
        }
        resources.push(r);
        for s in &d.subresources {
            let mut r = json!({
                "name": format!("{}/{}", d.plural, s.name), "singularName": "", "namespaced": d.namespaced,
                "kind": s.kind.map(|k| k.2).unwrap_or(&d.kind), "verbs": s.verbs,
            });
            if let (Some((g, v, _)), Some(m)) = (s.kind, r.as_object_mut()) {
                m.insert("group".into(), json!(g));
                m.insert("version".into(), json!(v));
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn aggregated_resource(d: &ResourceDef) -> Value {
    let mut r = json!({
        "resource": d.plural,
        "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": d.verbs,
    });
    if let Some(m) = r.as_object_mut() {
        if !d.short_names.is_empty() {
            m.insert("shortNames".into(), json!(d.short_names));
        }
        if !d.categories.is_empty() {
            m.insert("categories".into(), json!(d.categories));
        }
        if !d.subresources.is_empty() {
            let subs: Vec<Value> = d
                .subresources
                .iter()
                .map(|s| {
                    let (g, v, k) = s.kind.unwrap_or((&d.group, &d.version, &d.kind));
                    json!({"subresource": s.name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs})
                })
                .collect();
            m.insert("subresources".into(), json!(subs));
        }
    }
    r
}

/// Aggregated discovery for `/api` (core only) or `/apis` (every named group).
pub fn aggregated(reg: &Registry, core: bool, version: &str) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg.resources(&g, v).iter().map(|d| aggregated_resource(d)).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents_list_the_table() {
        let reg = Registry::builtin();
        let core = resource_list(&reg, "", "v1").unwrap();
        let names: Vec<&str> =
            core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"pods/log"));
        let groups = group_list(&reg);
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "apps"));
        let agg = aggregated(&reg, false, "v2");
        assert!(agg["items"].as_array().unwrap().iter().all(|i| i["metadata"]["name"] != ""));
        assert_eq!(
            aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
            Some("v2")
        );
        assert_eq!(aggregated_version("application/json"), None);
    }
}
