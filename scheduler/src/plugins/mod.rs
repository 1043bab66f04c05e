//! The filter and score plugins: pure functions over a pod, a node and (for the plugins
//! that look across nodes) state computed once per pod from the snapshot.

pub mod balanced_allocation;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod taint_toleration;
pub mod topology;
pub mod topology_spread;
pub mod volume_binding;
