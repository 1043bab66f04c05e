//! [`PodInfo`]: everything the scheduler needs from a pod, parsed once when the watch
//! delivers it (off the scheduling loop), so filters and scores never touch raw objects.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, Pod, Toleration},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::{
    node_selector::{self, PreferredTerm, RequiredNodeAffinity},
    pod_terms::{self, PodAffinity, SpreadConstraint},
    resources::{self, PodRequests},
};

/// The scheduler a pod without `spec.schedulerName` asks for.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// A host port a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `0.0.0.0` when unset.
    pub ip: String,
    /// `TCP` when unset.
    pub protocol: String,
    pub port: i32,
}

/// A PersistentVolumeClaim one of the pod's volumes uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClaim {
    pub name: String,
    /// A generic ephemeral volume's claim (`<pod>-<volume>`, made for the pod).
    pub ephemeral: bool,
}

/// The pod's `PodScheduled` condition as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledCondition {
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// A pod, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Empty while unbound.
    pub node_name: String,
    pub scheduler_name: String,
    pub priority: i32,
    /// `preemptionPolicy: Never`.
    pub preempt_never: bool,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Succeeded or Failed: holds no resources.
    pub terminal: bool,
    /// Has scheduling gates: not to be scheduled yet.
    pub gated: bool,
    pub requests: PodRequests,
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub node_affinity: RequiredNodeAffinity,
    pub preferred_node_affinity: Vec<PreferredTerm>,
    pub affinity: PodAffinity,
    pub spread: Vec<SpreadConstraint>,
    /// The claims of its persistentVolumeClaim and ephemeral volumes.
    pub claims: Vec<PodClaim>,
    pub condition: Option<ScheduledCondition>,
    /// The pod's `resourceVersion` when seen (the write whose trace a decision continues).
    pub resource_version: String,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let pod_claims = claims(&name, pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default());
        let default_spec = Default::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let condition = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| ScheduledCondition {
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            });
        PodInfo {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string()),
            priority: spec.priority.unwrap_or(0),
            preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
            deleting: meta.deletion_timestamp.is_some(),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            gated: spec.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty()),
            requests: resources::pod_requests(spec),
            host_ports: host_ports(spec.containers.iter().chain(restartable_init_containers(spec))),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            node_affinity: RequiredNodeAffinity::from_spec(spec),
            preferred_node_affinity: node_selector::preferred_terms(spec),
            affinity: PodAffinity::from_pod(pod),
            spread: pod_terms::spread_constraints(pod),
            claims: pod_claims,
            condition,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }

    /// Whether this scheduler should place the pod (once it is not gated).
    pub fn wants_scheduling(&self, scheduler_name: &str) -> bool {
        self.node_name.is_empty() && !self.deleting && !self.terminal && self.scheduler_name == scheduler_name
    }

    /// Whether two versions differ in more than their status (an update by the pod's owner,
    /// which may make an unschedulable pod schedulable).
    pub fn differs_beyond_status(&self, other: &PodInfo) -> bool {
        let strip = |p: &PodInfo| PodInfo { condition: None, resource_version: String::new(), ..p.clone() };
        strip(self) != strip(other)
    }
}

fn claims(pod_name: &str, volumes: &[k8s_openapi::api::core::v1::Volume]) -> Vec<PodClaim> {
    volumes
        .iter()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(PodClaim { name: c.claim_name.clone(), ephemeral: false }),
            (None, Some(_)) => Some(PodClaim { name: format!("{pod_name}-{}", v.name), ephemeral: true }),
            (None, None) => None,
        })
        .collect()
}

fn restartable_init_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"))
}

fn host_ports<'a>(containers: impl Iterator<Item = &'a Container>) -> Vec<HostPort> {
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|hp| *hp > 0)?;
            Some(HostPort {
                ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".to_string()),
                protocol: p.protocol.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "TCP".to_string()),
                port,
            })
        })
        .collect()
}
