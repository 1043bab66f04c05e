//! The kinds this API server serves, described once: group, version, kind, plural,
//! scope, short names, categories, subresources and where they live in the store.
//! Discovery, routing, storage and tables all read this table.

use std::any::TypeId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::{ListableResource, NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;

/// The verbs of an ordinary stored resource, in the order Kubernetes lists them.
pub const STORED_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// A subresource and its verbs (`pods/status`: get, patch, update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubresourceDef {
    pub name: &'static str,
    pub verbs: &'static [&'static str],
    /// The kind its body and reply carry (`Scale` for `scale`), `None` = the parent kind.
    pub kind: Option<(&'static str, &'static str, &'static str)>,
}

pub(crate) const STATUS: SubresourceDef =
    SubresourceDef { name: "status", verbs: &["get", "patch", "update"], kind: None };
pub(crate) const SCALE: SubresourceDef =
    SubresourceDef { name: "scale", verbs: &["get", "patch", "update"], kind: Some(("autoscaling", "v1", "Scale")) };

/// How a kind is stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Objects in the store under `key_prefix`.
    Stored,
    /// Create-only review APIs answered without storing (SelfSubjectReview, …).
    Virtual,
    /// Read-only usage from the kubelets' scrapes (`metrics.k8s.io`).
    Metrics,
}

/// One served resource.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<SubresourceDef>,
    pub verbs: Vec<&'static str>,
    /// `/registry/<resource>/`; a namespaced object is at `<prefix><ns>/<name>`.
    pub key_prefix: String,
    pub storage: Storage,
    /// Decodes a body as the kind's k8s-openapi type and encodes it back: an error names
    /// the field at fault; the result shows which fields the kind does not know.
    pub type_check: Option<TypeCheck>,
    /// The kind's OpenAPI schema (a `$ref` into the generator's definitions).
    pub schema: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
    /// What a CustomResourceDefinition says about a custom resource's version.
    pub custom: Option<Arc<crate::crd::CustomDef>>,
    /// Served from another version's storage (autoscaling/v1 HPAs are stored as v2).
    pub conversion: Option<crate::convert::Conversion>,
}

/// Decode-and-re-encode through the kind's k8s-openapi type.
pub type TypeCheck = fn(&serde_json::Value) -> Result<serde_json::Value, DecodeError>;

/// Why a body does not decode as its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where (`spec.template.spec.containers[0]`), empty at the top.
    pub path: String,
    pub message: String,
    /// A required field is absent (Kubernetes reports these as 422 Required value).
    pub missing: Option<String>,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A stored object as this version shows it.
    pub fn served(&self, mut obj: serde_json::Value) -> serde_json::Value {
        if let Some(c) = &self.conversion {
            return (c.from_storage)(obj);
        }
        if self.custom.is_some() {
            // A CRD's `None` conversion: the same object under this version's apiVersion.
            if let Some(m) = obj.as_object_mut() {
                m.insert("apiVersion".into(), serde_json::Value::String(self.api_version()));
            }
        }
        obj
    }

    /// An object of this version in its stored form.
    pub fn stored(&self, mut obj: serde_json::Value) -> Result<serde_json::Value, crate::status::ApiError> {
        if let Some(c) = &self.conversion {
            let stored = (c.to_storage)(obj).map_err(crate::status::ApiError::bad_request)?;
            if let Some(check) = c.storage_check {
                check(&stored).map_err(|e| {
                    let at = if e.path.is_empty() { String::new() } else { format!(" at {}", e.path) };
                    crate::status::ApiError::bad_request(format!(
                        "the object does not convert to its storage version{at}: {}",
                        e.message
                    ))
                })?;
            }
            return Ok(stored);
        }
        if let (Some(c), Some(m)) = (&self.custom, obj.as_object_mut()) {
            if !c.storage_version.is_empty() {
                m.insert(
                    "apiVersion".into(),
                    serde_json::Value::String(format!("{}/{}", self.group, c.storage_version)),
                );
            }
        }
        Ok(obj)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    pub fn subresource(&self, name: &str) -> Option<&SubresourceDef> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `status` is its own subresource (then updates of the main resource keep
    /// the stored status, and `/status` updates change nothing else).
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }
}

fn type_check<T: DeserializeOwned + serde::Serialize>(v: &serde_json::Value) -> Result<serde_json::Value, DecodeError> {
    let t: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        let missing = message.strip_prefix("missing field `").and_then(|r| r.split('`').next()).map(|f| {
            if path.is_empty() {
                f.to_string()
            } else {
                format!("{path}.{f}")
            }
        });
        DecodeError { path, message, missing }
    })?;
    serde_json::to_value(&t).map_err(|e| DecodeError { path: String::new(), message: e.to_string(), missing: None })
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// Describe a k8s-openapi type; `extras` are what only the API server's registry knows.
fn def<T>(short_names: &[&'static str], categories: &[&'static str], subresources: &[SubresourceDef]) -> ResourceDef
where
    T: Resource + ListableResource + DeserializeOwned + serde::Serialize + schemars::JsonSchema + 'static,
    T::Scope: 'static,
{
    let plural = T::URL_PATH_SEGMENT.to_string();
    // Kubernetes' own layout: `/registry/<plural>/` for built-ins; the CRD objects (and
    // later custom resources) under their group.
    let key_prefix = if T::GROUP == "apiextensions.k8s.io" {
        format!("/registry/{}/{}/", T::GROUP, plural)
    } else {
        format!("/registry/{plural}/")
    };
    ResourceDef {
        group: T::GROUP.to_string(),
        version: T::VERSION.to_string(),
        kind: T::KIND.to_string(),
        list_kind: T::LIST_KIND.to_string(),
        singular: T::KIND.to_ascii_lowercase(),
        plural,
        namespaced: TypeId::of::<T::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        subresources: subresources.to_vec(),
        verbs: STORED_VERBS.to_vec(),
        key_prefix,
        storage: Storage::Stored,
        type_check: Some(type_check::<T>),
        schema: Some(schema_of::<T>),
        custom: None,
        conversion: None,
    }
}

/// A create-only review API (`selfsubjectreviews`, …).
fn review<T: Resource + schemars::JsonSchema + 'static>() -> ResourceDef
where
    T::Scope: 'static,
{
    ResourceDef {
        group: T::GROUP.to_string(),
        version: T::VERSION.to_string(),
        kind: T::KIND.to_string(),
        list_kind: format!("{}List", T::KIND),
        plural: T::URL_PATH_SEGMENT.to_string(),
        singular: T::KIND.to_ascii_lowercase(),
        namespaced: TypeId::of::<T::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        short_names: vec![],
        categories: vec![],
        subresources: vec![],
        verbs: vec!["create"],
        key_prefix: String::new(),
        storage: Storage::Virtual,
        type_check: None,
        schema: Some(schema_of::<T>),
        custom: None,
        conversion: None,
    }
}

fn sub(name: &'static str, verbs: &'static [&'static str]) -> SubresourceDef {
    SubresourceDef { name, verbs, kind: None }
}

/// Every served resource: the built-in kinds, then the custom resources of the
/// established CustomResourceDefinitions (replaced whole when one changes).
#[derive(Debug)]
pub struct Registry {
    builtin: Vec<Arc<ResourceDef>>,
    custom: RwLock<Arc<Vec<Arc<ResourceDef>>>>,
    /// Bumped on every change of the custom resources (OpenAPI documents are rebuilt).
    generation: AtomicU64,
}

impl Registry {
    /// The built-in kinds (Kubernetes 1.33 names, short names and categories).
    pub fn builtin() -> Registry {
        use k8s_openapi::api::{
            apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz, autoscaling::v2 as hpa,
            batch::v1 as batch, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as ev,
            policy::v1 as policy, rbac::v1 as rbac, storage::v1 as storage,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        let all: &[&str] = &["all"];
        let mut defs = vec![
            def::<core::Namespace>(&["ns"], &[], &[STATUS, sub("finalize", &["update"])]),
            def::<core::Pod>(
                &["po"],
                all,
                &[
                    STATUS,
                    sub("binding", &["create"]),
                    sub("eviction", &["create"]),
                    sub("log", &["get"]),
                    sub("exec", &["create", "get"]),
                    sub("attach", &["create", "get"]),
                    sub("portforward", &["create", "get"]),
                ],
            ),
            def::<core::Service>(&["svc"], all, &[STATUS]),
            def::<core::Endpoints>(&["ep"], &[], &[]),
            def::<core::ConfigMap>(&["cm"], &[], &[]),
            def::<core::Secret>(&[], &[], &[]),
            def::<core::ServiceAccount>(&["sa"], &[], &[sub("token", &["create"])]),
            def::<core::Node>(&["no"], &[], &[STATUS]),
            def::<core::Event>(&["ev"], &[], &[]),
            def::<core::ReplicationController>(&["rc"], all, &[SCALE, STATUS]),
            def::<core::PersistentVolume>(&["pv"], &[], &[STATUS]),
            def::<core::PersistentVolumeClaim>(&["pvc"], &[], &[STATUS]),
            def::<core::LimitRange>(&["limits"], &[], &[]),
            def::<core::ResourceQuota>(&["quota"], &[], &[STATUS]),
            def::<apps::Deployment>(&["deploy"], all, &[SCALE, STATUS]),
            def::<apps::ReplicaSet>(&["rs"], all, &[SCALE, STATUS]),
            def::<apps::StatefulSet>(&["sts"], all, &[SCALE, STATUS]),
            def::<apps::DaemonSet>(&["ds"], all, &[STATUS]),
            def::<apps::ControllerRevision>(&[], &[], &[]),
            def::<batch::Job>(&[], all, &[STATUS]),
            def::<batch::CronJob>(&["cj"], all, &[STATUS]),
            def::<coord::Lease>(&[], &[], &[]),
            def::<disc::EndpointSlice>(&[], &[], &[]),
            def::<hpa::HorizontalPodAutoscaler>(&["hpa"], all, &[STATUS]),
            def::<policy::PodDisruptionBudget>(&["pdb"], &[], &[STATUS]),
            def::<storage::StorageClass>(&["sc"], &[], &[]),
            def::<rbac::ClusterRole>(&[], &[], &[]),
            def::<rbac::ClusterRoleBinding>(&[], &[], &[]),
            def::<rbac::Role>(&[], &[], &[]),
            def::<rbac::RoleBinding>(&[], &[], &[]),
            def::<ext::CustomResourceDefinition>(&["crd", "crds"], &["api-extensions"], &[STATUS]),
            review::<authn::SelfSubjectReview>(),
            review::<authz::SelfSubjectAccessReview>(),
            review::<authz::SelfSubjectRulesReview>(),
        ];
        // events.k8s.io/v1 Events are the core Events, stored once (as core/v1).
        let mut events = def::<ev::Event>(&["ev"], &[], &[]);
        events.key_prefix = "/registry/events/".into();
        events.conversion = Some(crate::convert::Conversion {
            storage_check: Some(type_check::<core::Event>),
            ..crate::convert::EVENTS_V1
        });
        defs.push(events);
        // autoscaling/v1 HPAs are the v2 ones, stored as v2.
        let mut hpa_v1 = def::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(&["hpa"], all, &[STATUS]);
        hpa_v1.conversion = Some(crate::convert::Conversion {
            storage_check: Some(type_check::<hpa::HorizontalPodAutoscaler>),
            ..crate::convert::HPA_V1
        });
        defs.push(hpa_v1);
        defs.extend(crate::resource_metrics::defs());
        Registry {
            builtin: defs.into_iter().map(Arc::new).collect(),
            custom: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
        }
    }

    fn custom(&self) -> Arc<Vec<Arc<ResourceDef>>> {
        self.custom.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replace the custom resources (from the CRDs in the store).
    pub fn set_custom(&self, defs: Vec<ResourceDef>) {
        let defs = Arc::new(defs.into_iter().map(Arc::new).collect());
        match self.custom.write() {
            Ok(mut c) => *c = defs,
            Err(e) => *e.into_inner() = defs,
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every resource: built-in first.
    pub fn all(&self) -> Vec<Arc<ResourceDef>> {
        self.builtin.iter().chain(self.custom().iter()).cloned().collect()
    }

    /// The resource at `/apis/<group>/<version>/<plural>`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let hit = |d: &&Arc<ResourceDef>| d.group == group && d.version == version && d.plural == plural;
        self.builtin.iter().find(hit).cloned().or_else(|| self.custom().iter().find(hit).cloned())
    }

    /// Whether `group/version` is served at all.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.all().iter().any(|d| d.group == group && d.version == version)
    }

    /// Groups in serving order (core first), each with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in &self.all() {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, versions)) if !versions.contains(&d.version) => versions.push(d.version.clone()),
                Some(_) => {}
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }

    /// Resources of one group/version, in registry order.
    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.all().into_iter().filter(|d| d.group == group && d.version == version).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_knows_scope_keys_and_names() {
        let r = Registry::builtin();
        let pods = r.find("", "v1", "pods").unwrap();
        assert!(pods.namespaced);
        assert_eq!(pods.key_prefix, "/registry/pods/");
        assert_eq!(pods.list_kind, "PodList");
        let ns = r.find("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced);
        let deploy = r.find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.key_prefix, "/registry/deployments/");
        assert!(deploy.has_subresource("scale"));
        let crd = r.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").unwrap();
        assert_eq!(crd.key_prefix, "/registry/apiextensions.k8s.io/customresourcedefinitions/");
        assert_eq!(r.groups()[0].0, "");
    }
}
