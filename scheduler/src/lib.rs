//! keelson-scheduler: pod placement as pure filter and score functions over a snapshot.
//!
//! The scheduler runs only on the Raft leader, against the [`kube::Client`] it is given (in
//! keelson an in-process one; any Kubernetes API server works). [`run`] watches Nodes, Pods
//! and Namespaces (and PersistentVolumeClaims, PersistentVolumes and StorageClasses for
//! volume binding), keeps a [`snapshot::Snapshot`] of every node and the pods counted against
//! it incrementally, and places each pending pod of its `schedulerName`: PreFilter, Filter
//! (a round-robin window of nodes sized like kube-scheduler's `numFeasibleNodesToFind`),
//! Score with upstream's default plugins and weights, then an asynchronous binding with the
//! pod assumed onto its node meanwhile. Failures get a `FailedScheduling` event and a
//! `PodScheduled=False` condition with upstream's message, and a backoff in the
//! [`queue::SchedulingQueue`].

pub mod binder;
pub mod config;
mod engine;
pub mod error;
pub mod framework;
pub mod informer;
pub mod labels;
pub mod metrics;
pub mod node_info;
pub mod node_selector;
pub mod plugins;
pub mod pod_info;
pub mod pod_terms;
pub mod quantity;
pub mod queue;
pub mod reporter;
pub mod resources;
mod run;
pub mod schedule;
pub mod snapshot;
pub mod trace;
pub mod volumes;

#[cfg(test)]
mod testutil;

pub use config::SchedulerConfig;
pub use error::Error;
pub use run::run;
