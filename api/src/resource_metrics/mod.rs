//! The resource metrics API, `metrics.k8s.io/v1beta1` (PodMetrics, NodeMetrics), served
//! by every master from its own scrapes of the kubelets — what metrics-server does, built
//! in. `kubectl top` and the HorizontalPodAutoscaler read it. Usage is a rate over the
//! last two scrapes, so the first figures appear one resolution after a pod starts.

mod parse;
mod rates;
pub(crate) mod scrape;
pub(crate) mod serve;

use std::sync::RwLock;

use crate::resources::{ResourceDef, Storage};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// The usage every scrape updates and every request reads.
#[derive(Debug, Default)]
pub(crate) struct ResourceMetrics {
    pub rates: RwLock<rates::Rates>,
}

/// `pods` and `nodes` of `metrics.k8s.io/v1beta1`: get and list, no watch.
pub(crate) fn defs() -> Vec<ResourceDef> {
    let def = |kind: &str, plural: &str, namespaced: bool| ResourceDef {
        group: GROUP.into(),
        version: VERSION.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: String::new(),
        namespaced,
        short_names: vec![],
        categories: vec![],
        subresources: vec![],
        verbs: vec!["get", "list"],
        key_prefix: String::new(),
        storage: Storage::Metrics,
        type_check: None,
        schema: None,
        custom: None,
        conversion: None,
    };
    vec![def("PodMetrics", "pods", true), def("NodeMetrics", "nodes", false)]
}
