//! ReplicaSet and ReplicationController as one kind of replica owner.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use kube::core::Selector;
use serde_json::{json, Value};

use super::plan::{Counts, Owner};

/// What the replica controller needs of its kind.
pub trait ReplicaKind:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const API_VERSION: &'static str;
    const KIND: &'static str;
    const CONTROLLER: &'static str;
    fn owner(&self) -> Owner;
    /// The counts its status shows now (to skip writing an unchanged status).
    fn shown(&self) -> (Counts, Option<i64>, bool);
}

fn base(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    api_version: &'static str,
    kind: &'static str,
) -> Owner {
    Owner {
        api_version,
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        replicas: 1,
        selector: None,
        template: Default::default(),
        min_ready_seconds: 0,
        generation: meta.generation,
        deleting: meta.deletion_timestamp.is_some(),
    }
}

impl ReplicaKind for ReplicaSet {
    const API_VERSION: &'static str = "apps/v1";
    const KIND: &'static str = "ReplicaSet";
    const CONTROLLER: &'static str = "replicaset-controller";

    fn owner(&self) -> Owner {
        let mut o = base(&self.metadata, Self::API_VERSION, Self::KIND);
        if let Some(spec) = &self.spec {
            o.replicas = spec.replicas.unwrap_or(1);
            // An empty selector selects nothing for a ReplicaSet (validation forbids it).
            let s = &spec.selector;
            let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
            o.selector = if empty { None } else { Selector::try_from(s.clone()).ok() };
            o.template = spec.template.clone().unwrap_or_default();
            o.min_ready_seconds = spec.min_ready_seconds.unwrap_or(0);
        }
        o
    }

    fn shown(&self) -> (Counts, Option<i64>, bool) {
        let s = self.status.clone().unwrap_or_default();
        let failure =
            s.conditions.unwrap_or_default().iter().any(|c| c.type_ == "ReplicaFailure" && c.status == "True");
        (
            Counts {
                replicas: s.replicas,
                fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
                ready: s.ready_replicas.unwrap_or(0),
                available: s.available_replicas.unwrap_or(0),
                next_available_in: None,
            },
            s.observed_generation,
            failure,
        )
    }
}

impl ReplicaKind for ReplicationController {
    const API_VERSION: &'static str = "v1";
    const KIND: &'static str = "ReplicationController";
    const CONTROLLER: &'static str = "replication-controller";

    fn owner(&self) -> Owner {
        let mut o = base(&self.metadata, Self::API_VERSION, Self::KIND);
        if let Some(spec) = &self.spec {
            o.replicas = spec.replicas.unwrap_or(1);
            o.selector = spec
                .selector
                .as_ref()
                .filter(|m| !m.is_empty())
                .map(|m| Selector::from_iter(m.iter().map(|(k, v)| (k.clone(), v.clone()))));
            o.template = spec.template.clone().unwrap_or_default();
            o.min_ready_seconds = spec.min_ready_seconds.unwrap_or(0);
        }
        o
    }

    fn shown(&self) -> (Counts, Option<i64>, bool) {
        let s = self.status.clone().unwrap_or_default();
        let failure =
            s.conditions.unwrap_or_default().iter().any(|c| c.type_ == "ReplicaFailure" && c.status == "True");
        (
            Counts {
                replicas: s.replicas,
                fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
                ready: s.ready_replicas.unwrap_or(0),
                available: s.available_replicas.unwrap_or(0),
                next_available_in: None,
            },
            s.observed_generation,
            failure,
        )
    }
}

/// The status merge patch for `counts` (with a `ReplicaFailure` condition when creating
/// or deleting pods failed, cleared otherwise).
pub fn status_patch(c: &Counts, generation: Option<i64>, failure: Option<(&str, &str)>) -> Value {
    let conditions = match failure {
        Some((reason, message)) => json!([{
            "type": "ReplicaFailure", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]),
        None => Value::Null,
    };
    json!({"status": {
        "replicas": c.replicas,
        "fullyLabeledReplicas": c.fully_labeled,
        "readyReplicas": c.ready,
        "availableReplicas": c.available,
        "observedGeneration": generation,
        "conditions": conditions,
    }})
}
