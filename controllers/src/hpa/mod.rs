//! HorizontalPodAutoscaler: scales a target's `scale` subresource from the resource
//! metrics API (`metrics.k8s.io/v1beta1`), as Kubernetes' podautoscaler controller does.

pub mod behavior;
mod controller;
pub mod replicas;
pub mod types;

pub use controller::run;
