//! Resource vectors: what a pod requests and what a node offers, in the integer units the
//! scheduler compares (cpu in millicores, everything else in whole units), computed like
//! kube-scheduler's `framework.Resource` and `resource.PodRequests`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::api::resource::Quantity,
};

use crate::quantity;

/// The cpu request a container without one is counted as when spreading (100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory request a container without one is counted as when spreading (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources, hugepages and other scalar resources, by name.
    pub scalars: BTreeMap<String, i64>,
}

impl Resources {
    /// Whether nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalars.values().all(|v| *v == 0)
    }

    /// The resources of a `ResourceList` (names the scheduler does not track are ignored).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli_value(q).unwrap_or(0),
            "memory" => self.memory = quantity::value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(q).unwrap_or(0),
            n if is_scalar_resource_name(n) => {
                self.scalars.insert(n.to_string(), quantity::value(q).unwrap_or(0));
            }
            _ => {}
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_insert(0);
            *e = e.saturating_sub(*v);
            if *e == 0 {
                self.scalars.remove(k);
            }
        }
    }

    /// Raise each resource to at least `other`'s amount.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalars {
            let e = self.scalars.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalars.get(name).copied().unwrap_or(0)
    }
}

/// A pod's requests: `requests` as the fit check sees them, and `non_zero_*` with a default
/// for containers that request no cpu or memory (used to spread best-effort pods).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub requests: Resources,
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
}

/// `resource.PodRequests`: the sum of the containers, raised to any init container's needs
/// (sidecars — restartable init containers — run alongside and add up), plus the overhead.
pub fn pod_requests(spec: &PodSpec) -> PodRequests {
    let requests = sum_requests(spec, false);
    let non_zero = sum_requests(spec, true);
    PodRequests { requests, non_zero_milli_cpu: non_zero.milli_cpu, non_zero_memory: non_zero.memory }
}

fn sum_requests(spec: &PodSpec, non_missing: bool) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c, non_missing));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let reqs = container_requests(c, non_missing);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&reqs);
            sidecars.add(&reqs);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = reqs;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    total.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_list(overhead));
    }
    total
}

fn container_requests(c: &Container, non_missing: bool) -> Resources {
    let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut r = list.map(Resources::from_list).unwrap_or_default();
    if non_missing {
        let has = |name: &str| list.is_some_and(|l| l.contains_key(name));
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// `IsScalarResourceName`: extended resources, hugepages, `kubernetes.io/`-prefixed native
/// resources and attachable volumes.
pub fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.starts_with("hugepages-")
        || name.contains("kubernetes.io/")
        || name.starts_with("attachable-volumes-")
}

/// `IsExtendedResourceName`: a domain-qualified name outside `kubernetes.io/`, not a quota
/// `requests.` name.
pub fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    pub(crate) fn container(reqs: &[(&str, &str)]) -> Container {
        let requests = reqs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect();
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements { requests: Some(requests), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_sum_and_init_containers_take_the_max() {
        // Upstream's example: init 2cpu/1G and 2cpu/3G, containers 2cpu/1G and 1cpu/1G → 3cpu/3G.
        let spec = PodSpec {
            init_containers: Some(vec![
                container(&[("cpu", "2"), ("memory", "1G")]),
                container(&[("cpu", "2"), ("memory", "3G")]),
            ]),
            containers: vec![
                container(&[("cpu", "2"), ("memory", "1G")]),
                container(&[("cpu", "1"), ("memory", "1G")]),
            ],
            ..Default::default()
        };
        let r = pod_requests(&spec).requests;
        assert_eq!((r.milli_cpu, r.memory), (3000, 3_000_000_000));
    }

    #[test]
    fn overhead_and_sidecars_add() {
        let mut sidecar = container(&[("cpu", "500m")]);
        sidecar.restart_policy = Some("Always".into());
        let spec = PodSpec {
            init_containers: Some(vec![sidecar, container(&[("cpu", "1")])]),
            containers: vec![container(&[("cpu", "1"), ("example.com/gpu", "2")])],
            overhead: Some([("cpu".to_string(), Quantity("100m".into()))].into()),
            ..Default::default()
        };
        let r = pod_requests(&spec).requests;
        // containers 1 + sidecar 0.5 = 1.5; the init container needs 1 + 0.5; plus 0.1 overhead.
        assert_eq!(r.milli_cpu, 1600);
        assert_eq!(r.scalar("example.com/gpu"), 2);
    }

    #[test]
    fn non_zero_defaults_only_for_missing_requests() {
        let spec = PodSpec { containers: vec![Container::default(), container(&[("cpu", "0")])], ..Default::default() };
        let r = pod_requests(&spec);
        assert!(r.requests.is_zero());
        assert_eq!(r.non_zero_milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn scalar_names() {
        assert!(is_scalar_resource_name("nvidia.com/gpu"));
        assert!(is_scalar_resource_name("hugepages-2Mi"));
        assert!(is_scalar_resource_name("attachable-volumes-aws-ebs"));
        assert!(!is_scalar_resource_name("pods"));
        assert!(!is_extended_resource_name("kubernetes.io/foo"));
    }
}
