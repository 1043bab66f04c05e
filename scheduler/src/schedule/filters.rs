//! Running the filter plugins on one node, in upstream's order; the first rejection wins.

use crate::{
    framework::FilterResult,
    node_info::{NodeData, NodeInfo},
    plugins::{
        inter_pod_affinity, node_affinity, node_name, node_ports, node_resources_fit, node_unschedulable,
        taint_toleration, topology_spread, volume_binding,
    },
    pod_info::PodInfo,
    snapshot::Snapshot,
};

/// What the cross-node filter plugins precompute once per pod.
#[derive(Debug, Default)]
pub struct CycleState {
    pub inter_pod: Option<inter_pod_affinity::FilterState>,
    pub spread: Option<topology_spread::FilterState>,
    /// The pod's claims (set by the caller after VolumeBinding's PreFilter passed).
    pub volumes: Option<volume_binding::State>,
}

impl CycleState {
    pub fn new(pod: &PodInfo, snap: &Snapshot) -> CycleState {
        CycleState {
            inter_pod: inter_pod_affinity::pre_filter(pod, snap),
            spread: topology_spread::pre_filter(pod, snap),
            volumes: None,
        }
    }
}

pub fn run_filters(pod: &PodInfo, node: &NodeData, info: &NodeInfo, state: &CycleState) -> FilterResult {
    node_unschedulable::filter(pod, node)?;
    node_name::filter(pod, node)?;
    taint_toleration::filter(pod, node)?;
    node_affinity::filter(pod, node)?;
    node_ports::filter(pod, info)?;
    node_resources_fit::filter(pod, node, info)?;
    if let Some(v) = &state.volumes {
        volume_binding::filter(v, node)?;
    }
    if let Some(s) = &state.spread {
        topology_spread::filter(pod, s, node)?;
    }
    if let Some(s) = &state.inter_pod {
        inter_pod_affinity::filter(pod, s, node)?;
    }
    Ok(())
}
