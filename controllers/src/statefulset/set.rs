//! A StatefulSet as the plan needs it: its spec with the API's defaults filled in (so a
//! set written by another server, or before defaulting, reads the same) and the status it
//! shows now.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};

use crate::pods;

pub const API_VERSION: &str = "apps/v1";
pub const KIND: &str = "StatefulSet";

/// `persistentVolumeClaimRetentionPolicy`: whether claims go with the set (`whenDeleted`)
/// and with a scaled-down pod (`whenScaled`). Anything but `Delete` is `Retain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub delete_when_deleted: bool,
    pub delete_when_scaled: bool,
}

impl Retention {
    pub fn retain_all(&self) -> bool {
        !self.delete_when_deleted && !self.delete_when_scaled
    }
}

/// The status fields the controller writes, as the set shows them now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub observed_generation: Option<i64>,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub current_replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
    pub current_revision: String,
    pub update_revision: String,
    pub collision_count: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct Set {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub deleting: bool,
    pub annotations: BTreeMap<String, String>,
    pub replicas: i32,
    /// `spec.ordinals.start`.
    pub start: i32,
    /// `None`: selects nothing (a missing, empty or invalid selector).
    pub selector: Option<Selector>,
    /// `spec.selector.matchLabels` (claims made from templates carry them).
    pub match_labels: BTreeMap<String, String>,
    pub template: PodTemplateSpec,
    pub service_name: String,
    /// `podManagementPolicy: Parallel` (else OrderedReady).
    pub parallel: bool,
    /// `updateStrategy.type: OnDelete` (else RollingUpdate).
    pub on_delete: bool,
    /// `updateStrategy.rollingUpdate.partition`; `None` when `rollingUpdate` is absent.
    pub partition: Option<i32>,
    pub max_unavailable: Option<IntOrString>,
    pub min_ready_seconds: i32,
    pub revision_history_limit: i32,
    pub retention: Retention,
    pub claim_templates: Vec<PersistentVolumeClaim>,
    pub shown: Status,
}

impl Set {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn selects_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    pub fn selects(&self, pod: &Pod) -> bool {
        self.selects_labels(&pods::labels(&pod.metadata))
    }

    /// The last ordinal in range (inclusive; below `start` when there are no replicas).
    pub fn end(&self) -> i32 {
        self.start + self.replicas - 1
    }

    pub fn in_range(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal <= self.end()
    }

    pub fn from_api(sts: &StatefulSet) -> Set {
        let meta = &sts.metadata;
        let spec = sts.spec.clone().unwrap_or_default();
        let status = sts.status.clone().unwrap_or_default();
        let sel = &spec.selector;
        let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let on_delete = strategy.type_.as_deref() == Some("OnDelete");
        let rolling = strategy.rolling_update.clone();
        let policy = spec.persistent_volume_claim_retention_policy.clone().unwrap_or_default();
        Set {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation,
            deleting: meta.deletion_timestamp.is_some(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            replicas: spec.replicas.unwrap_or(1).max(0),
            start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0),
            selector: if empty { None } else { Selector::try_from(sel.clone()).ok() },
            match_labels: sel.match_labels.clone().unwrap_or_default(),
            template: spec.template.clone(),
            service_name: spec.service_name.clone().unwrap_or_default(),
            parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
            on_delete,
            // The API defaults `rollingUpdate.partition` to 0 for RollingUpdate.
            partition: match &rolling {
                Some(r) => Some(r.partition.unwrap_or(0).max(0)),
                None if !on_delete && strategy.type_.is_none() => Some(0),
                None => None,
            },
            max_unavailable: rolling.and_then(|r| r.max_unavailable),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0).max(0),
            revision_history_limit: spec.revision_history_limit.unwrap_or(10),
            retention: Retention {
                delete_when_deleted: policy.when_deleted.as_deref() == Some("Delete"),
                delete_when_scaled: policy.when_scaled.as_deref() == Some("Delete"),
            },
            claim_templates: spec.volume_claim_templates.clone().unwrap_or_default(),
            shown: Status {
                observed_generation: status.observed_generation,
                replicas: status.replicas,
                ready_replicas: status.ready_replicas.unwrap_or(0),
                current_replicas: status.current_replicas.unwrap_or(0),
                updated_replicas: status.updated_replicas.unwrap_or(0),
                available_replicas: status.available_replicas.unwrap_or(0),
                current_revision: status.current_revision.clone().unwrap_or_default(),
                update_revision: status.update_revision.clone().unwrap_or_default(),
                collision_count: status.collision_count,
            },
        }
    }
}
