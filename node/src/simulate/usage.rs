//! What the running pods of the simulated nodes "use", for the kubelet endpoint's
//! `/metrics/resource`. Pure: every change and read takes the time it happens at.
//!
//! A pod's use comes from [`CPU_USAGE_ANNOTATION`] and [`MEMORY_USAGE_ANNOTATION`] (the
//! whole pod's, split over its containers in proportion to their requests of that
//! resource, equally when none has one); without an annotation (or with one that is not a
//! quantity) each container uses 10% of its request (1m CPU / 1Mi memory without one).
//! A node uses what its pods do plus [`NODE_BASE_NANOCORES`] and [`NODE_BASE_MEMORY`].
//!
//! CPU is reported as cumulative core-seconds: counters that grow at the current rate and
//! are advanced to "now" on every change and every read, so a new rate counts from the time
//! it is observed and the counters never go back (not even when the wall clock does) while
//! a pod keeps its uid. Counters are integers (nanocore-nanoseconds): exact, no drift.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use keelson_scheduler::quantity::{milli_value, value};

use super::pods::PodKey;

/// `sim.keelson.dev/cpu-usage: "250m"`: the CPU the whole pod uses (a quantity, in cores).
pub const CPU_USAGE_ANNOTATION: &str = "sim.keelson.dev/cpu-usage";
/// `sim.keelson.dev/memory-usage: "64Mi"`: the memory (working set) the whole pod uses.
pub const MEMORY_USAGE_ANNOTATION: &str = "sim.keelson.dev/memory-usage";

/// CPU every node uses besides its pods (50m), in nanocores.
pub const NODE_BASE_NANOCORES: u64 = 50_000_000;
/// Memory every node uses besides its pods (128Mi), in bytes.
pub const NODE_BASE_MEMORY: u64 = 128 << 20;

/// A container's use without annotation or request: 1m CPU, 1Mi memory.
const NO_REQUEST_NANOCORES: u64 = 1_000_000;
const NO_REQUEST_MEMORY: u64 = 1 << 20;
const NANOCORES_PER_MILLI: u64 = 1_000_000;
/// The most any quantity counts for (2^53: exact as an f64; sums and products stay far
/// from overflowing).
const MAX_QUANTITY: u64 = 1 << 53;
/// Counter units (nanocore-nanoseconds) in a core-second.
const UNITS_PER_CORE_SECOND: f64 = 1e18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    fn annotation(self) -> &'static str {
        match self {
            Resource::Cpu => CPU_USAGE_ANNOTATION,
            Resource::Memory => MEMORY_USAGE_ANNOTATION,
        }
    }

    /// A quantity in our unit (nanocores, bytes); `None` if it is not a non-negative quantity.
    fn parse(self, q: &str) -> Option<u64> {
        let v = match self {
            Resource::Cpu => u64::try_from(milli_value(q)?).ok()?.saturating_mul(NANOCORES_PER_MILLI),
            Resource::Memory => u64::try_from(value(q)?).ok()?,
        };
        Some(v.min(MAX_QUANTITY))
    }

    fn without_request(self) -> u64 {
        match self {
            Resource::Cpu => NO_REQUEST_NANOCORES,
            Resource::Memory => NO_REQUEST_MEMORY,
        }
    }
}

/// Status phase Running and not being deleted: its "containers" use resources.
pub fn is_running(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase == Some("Running") && pod.metadata.deletion_timestamp.is_none()
}

/// The containers that run: the regular ones, then sidecars (restartable init containers).
fn running_containers(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers.iter().chain(sidecars).collect()
}

/// A container's request of `r` (its limit when it has no request, as the API defaults it).
fn request(c: &Container, r: Resource) -> Option<u64> {
    let res = c.resources.as_ref()?;
    let q = res.requests.as_ref().and_then(|m| m.get(r.name())).or_else(|| res.limits.as_ref()?.get(r.name()))?;
    r.parse(&q.0).filter(|v| *v > 0)
}

/// The pod's annotated use of `r`, if it has a valid one.
fn annotated(pod: &Pod, r: Resource) -> Option<u64> {
    let raw = pod.metadata.annotations.as_ref()?.get(r.annotation())?;
    let v = r.parse(raw);
    if v.is_none() {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        tracing::debug!(pod = %format_args!("{ns}/{name}"), annotation = r.annotation(), value = %raw,
            "usage annotation is not a quantity; default usage applies");
    }
    v
}

/// `total` split by `weights` (floors of the cumulative shares: the parts sum to `total`).
fn proportional(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut cum = 0u128;
    let mut prev = 0u128;
    weights
        .iter()
        .map(|w| {
            cum += u128::from(*w);
            let upto = u128::from(total).saturating_mul(cum) / sum;
            let part = upto - prev;
            prev = upto;
            u64::try_from(part).unwrap_or(u64::MAX)
        })
        .collect()
}

/// Each container's use of `r`.
fn split(pod: &Pod, containers: &[&Container], r: Resource) -> Vec<u64> {
    let requests: Vec<Option<u64>> = containers.iter().map(|c| request(c, r)).collect();
    match annotated(pod, r) {
        Some(total) if requests.iter().any(Option::is_some) => {
            proportional(total, &requests.iter().map(|q| q.unwrap_or(0)).collect::<Vec<_>>())
        }
        Some(total) => proportional(total, &vec![1; containers.len()]),
        None => requests.iter().map(|q| q.map_or(r.without_request(), |q| q / 10)).collect(),
    }
}

/// When a container started running, as the pod's status shows (else the pod's start,
/// else `now`).
fn started_at(pod: &Pod, name: &str, now: Timestamp) -> Timestamp {
    let Some(s) = pod.status.as_ref() else { return now };
    let all = s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten());
    all.filter(|c| c.name == name)
        .find_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref().map(|t| t.0))
        .or_else(|| s.start_time.as_ref().map(|t| t.0))
        .unwrap_or(now)
}

/// Nanoseconds from `from` to `to` (none if the clock went back).
fn elapsed(from: Timestamp, to: Timestamp) -> u128 {
    u128::try_from(to.duration_since(from).as_nanos()).unwrap_or(0)
}

fn core_seconds(units: u128) -> f64 {
    units as f64 / UNITS_PER_CORE_SECOND
}

#[derive(Debug, Clone, PartialEq)]
struct ContainerUsage {
    name: String,
    nanocores: u64,
    memory: u64,
    started: Timestamp,
    /// Cumulative CPU, nanocore-nanoseconds.
    cpu: u128,
}

#[derive(Debug, Clone)]
struct PodUsage {
    node: usize,
    uid: String,
    containers: Vec<ContainerUsage>,
    /// When the counters were last advanced.
    at: Timestamp,
}

impl PodUsage {
    fn nanocores(&self) -> u64 {
        self.containers.iter().fold(0u64, |s, c| s.saturating_add(c.nanocores))
    }

    fn memory(&self) -> u64 {
        self.containers.iter().fold(0u64, |s, c| s.saturating_add(c.memory))
    }

    fn advance(&mut self, now: Timestamp) {
        let dt = elapsed(self.at, now);
        for c in &mut self.containers {
            c.cpu = c.cpu.saturating_add(u128::from(c.nanocores).saturating_mul(dt));
        }
        self.at = now;
    }
}

#[derive(Debug, Clone)]
struct NodeUsage {
    /// The sums over its pods (the base is added on top).
    pods_nanocores: u64,
    pods_memory: u64,
    cpu: u128,
    at: Timestamp,
}

impl NodeUsage {
    fn advance(&mut self, now: Timestamp) {
        let rate = u128::from(self.pods_nanocores.saturating_add(NODE_BASE_NANOCORES));
        self.cpu = self.cpu.saturating_add(rate.saturating_mul(elapsed(self.at, now)));
        self.at = now;
    }
}

/// A read of everything: nodes by index, pods by namespace and name.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub nodes: Vec<NodeSample>,
    pub pods: Vec<PodSample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSample {
    pub node: usize,
    pub cpu_core_seconds: f64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub cpu_core_seconds: f64,
    pub memory_bytes: u64,
    pub containers: Vec<ContainerSample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    pub cpu_core_seconds: f64,
    pub memory_bytes: u64,
    pub started: Timestamp,
}

/// The running pods of the simulated nodes and what they (and the nodes) use.
#[derive(Debug)]
pub struct UsageTable {
    nodes: Vec<NodeUsage>,
    pods: HashMap<PodKey, PodUsage>,
}

impl UsageTable {
    /// `nodes` nodes with no pods yet, their counters starting at `now`.
    pub fn new(nodes: usize, now: Timestamp) -> UsageTable {
        let idle = NodeUsage { pods_nanocores: 0, pods_memory: 0, cpu: 0, at: now };
        UsageTable { nodes: vec![idle; nodes], pods: HashMap::new() }
    }

    /// Pods tracked.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Take in pod `key` (bound to node `node`) as seen at `now`: track it while it runs
    /// (with its usage as of now), drop it otherwise. A new uid under the same key is a new
    /// pod: its counters start at zero.
    pub fn observe(&mut self, key: &PodKey, node: usize, pod: &Pod, now: Timestamp) {
        if node >= self.nodes.len() || !is_running(pod) {
            self.remove(key, now);
            return;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let containers = running_containers(pod);
        let cpu = split(pod, &containers, Resource::Cpu);
        let memory = split(pod, &containers, Resource::Memory);
        let old = match self.pods.get_mut(key) {
            Some(p) if p.uid == uid && p.node == node => {
                p.advance(now);
                Some(std::mem::take(&mut p.containers))
            }
            _ => {
                self.remove(key, now);
                None
            }
        };
        let counter = |name: &str| old.iter().flatten().find(|c| c.name == name).map_or(0, |c| c.cpu);
        let containers = containers
            .iter()
            .zip(cpu.into_iter().zip(memory))
            .map(|(c, (nanocores, memory))| ContainerUsage {
                name: c.name.clone(),
                nanocores,
                memory,
                started: started_at(pod, &c.name, now),
                cpu: counter(&c.name),
            })
            .collect();
        let new = PodUsage { node, uid: uid.to_string(), containers, at: now };
        let (old_cpu, old_memory) = match old {
            Some(old) => {
                let o = PodUsage { containers: old, ..new.clone() };
                (o.nanocores(), o.memory())
            }
            None => (0, 0),
        };
        let n = &mut self.nodes[node];
        n.advance(now);
        n.pods_nanocores = n.pods_nanocores.saturating_sub(old_cpu).saturating_add(new.nanocores());
        n.pods_memory = n.pods_memory.saturating_sub(old_memory).saturating_add(new.memory());
        self.pods.insert(key.clone(), new);
    }

    /// Pod `key` stopped running or is gone.
    pub fn remove(&mut self, key: &PodKey, now: Timestamp) {
        let Some(p) = self.pods.remove(key) else { return };
        if let Some(n) = self.nodes.get_mut(p.node) {
            n.advance(now);
            n.pods_nanocores = n.pods_nanocores.saturating_sub(p.nanocores());
            n.pods_memory = n.pods_memory.saturating_sub(p.memory());
        }
    }

    /// Keep only the pods in `keep` (after a relist: the others are gone).
    pub fn retain(&mut self, keep: &HashSet<PodKey>, now: Timestamp) {
        let gone: Vec<PodKey> = self.pods.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for k in &gone {
            self.remove(k, now);
        }
    }

    /// Everything as of `now` (advancing every counter to it).
    pub fn sample(&mut self, now: Timestamp) -> Sample {
        let nodes = self
            .nodes
            .iter_mut()
            .enumerate()
            .map(|(node, n)| {
                n.advance(now);
                NodeSample {
                    node,
                    cpu_core_seconds: core_seconds(n.cpu),
                    memory_bytes: n.pods_memory.saturating_add(NODE_BASE_MEMORY),
                }
            })
            .collect();
        let mut pods: Vec<PodSample> = self
            .pods
            .iter_mut()
            .map(|(k, p)| {
                p.advance(now);
                let total = p.containers.iter().fold(0u128, |s, c| s.saturating_add(c.cpu));
                PodSample {
                    namespace: k.namespace.clone(),
                    name: k.name.clone(),
                    cpu_core_seconds: core_seconds(total),
                    memory_bytes: p.memory(),
                    containers: p
                        .containers
                        .iter()
                        .map(|c| ContainerSample {
                            name: c.name.clone(),
                            cpu_core_seconds: core_seconds(c.cpu),
                            memory_bytes: c.memory,
                            started: c.started,
                        })
                        .collect(),
                }
            })
            .collect();
        pods.sort_unstable_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Sample { nodes, pods }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    const MI: u64 = 1 << 20;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn key(name: &str) -> PodKey {
        PodKey { namespace: "ns".into(), name: name.into() }
    }

    /// A container requesting `cpu` and `memory` (absent when empty).
    fn c(name: &str, cpu: &str, memory: &str) -> Container {
        let requests: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect();
        let resources =
            (!requests.is_empty()).then(|| ResourceRequirements { requests: Some(requests), ..Default::default() });
        Container { name: name.into(), resources, ..Default::default() }
    }

    /// A running pod (started at 100 s) with `containers` and `annotations`.
    fn pod(uid: &str, containers: Vec<Container>, annotations: &[(&str, &str)]) -> Pod {
        let statuses = containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(Time(t(100))) }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some("sim-0".into()), containers, ..Default::default() }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                start_time: Some(Time(t(90))),
                container_statuses: Some(statuses),
                ..Default::default()
            }),
        }
    }

    fn rates(u: &UsageTable, name: &str) -> Vec<(u64, u64)> {
        u.pods[&key(name)].containers.iter().map(|c| (c.nanocores, c.memory)).collect()
    }

    fn node_of(s: &Sample, i: usize) -> &NodeSample {
        &s.nodes[i]
    }

    #[test]
    fn annotated_usage_is_split_by_requests() {
        let mut u = UsageTable::new(2, t(0));
        let containers = vec![c("a", "100m", "64Mi"), c("b", "300m", "192Mi"), c("c", "", "")];
        let p = pod("u1", containers, &[(CPU_USAGE_ANNOTATION, "1"), (MEMORY_USAGE_ANNOTATION, "64Mi")]);
        u.observe(&key("p"), 1, &p, t(0));
        assert_eq!(rates(&u, "p"), vec![(250_000_000, 16 * MI), (750_000_000, 48 * MI), (0, 0)]);
        // Parts always sum to the whole.
        let odd = pod("u2", vec![c("a", "1", ""), c("b", "1", ""), c("c", "1", "")], &[(CPU_USAGE_ANNOTATION, "1m")]);
        u.observe(&key("odd"), 0, &odd, t(0));
        assert_eq!(rates(&u, "odd").iter().map(|r| r.0).sum::<u64>(), 1_000_000);
        // Memory has no annotation: 10% of a request, 1Mi without one.
        assert_eq!(rates(&u, "odd").iter().map(|r| r.1).collect::<Vec<_>>(), vec![MI, MI, MI]);
    }

    #[test]
    fn annotated_usage_is_split_equally_without_requests() {
        let mut u = UsageTable::new(1, t(0));
        let p = pod("u1", vec![c("a", "", ""), c("b", "", "")], &[(CPU_USAGE_ANNOTATION, "500m")]);
        u.observe(&key("p"), 0, &p, t(0));
        assert_eq!(rates(&u, "p"), vec![(250_000_000, MI), (250_000_000, MI)]);
    }

    #[test]
    fn without_annotations_containers_use_a_tenth_of_their_requests() {
        let mut u = UsageTable::new(1, t(0));
        let mut limits_only = c("l", "", "");
        limits_only.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("cpu".to_string(), Quantity("2".into()))])),
            ..Default::default()
        });
        let p = pod("u1", vec![c("a", "200m", "1Gi"), c("b", "", ""), limits_only], &[]);
        u.observe(&key("p"), 0, &p, t(0));
        assert_eq!(rates(&u, "p"), vec![(20_000_000, 1024 * MI / 10), (1_000_000, MI), (200_000_000, MI)]);
        // Invalid annotations are ignored.
        let bad =
            pod("u2", vec![c("a", "200m", "")], &[(CPU_USAGE_ANNOTATION, "lots"), (MEMORY_USAGE_ANNOTATION, "-1Mi")]);
        u.observe(&key("bad"), 0, &bad, t(0));
        assert_eq!(rates(&u, "bad"), vec![(20_000_000, MI)]);
    }

    #[test]
    fn sidecars_count_and_start_times_come_from_the_status() {
        let mut u = UsageTable::new(1, t(0));
        let mut p = pod("u1", vec![c("a", "", "")], &[(CPU_USAGE_ANNOTATION, "2")]);
        let sidecar = Container { restart_policy: Some("Always".into()), ..c("side", "", "") };
        p.spec.as_mut().unwrap().init_containers = Some(vec![c("init", "", ""), sidecar]);
        u.observe(&key("p"), 0, &p, t(200));
        let s = u.sample(t(200));
        let names: Vec<_> = s.pods[0].containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "side"]);
        assert_eq!(s.pods[0].containers[0].started, t(100));
        assert_eq!(s.pods[0].containers[1].started, t(90), "no status of its own: the pod's start");
        assert_eq!(rates(&u, "p"), vec![(1_000_000_000, MI), (1_000_000_000, MI)]);
    }

    #[test]
    fn counters_grow_at_the_current_rate_and_never_go_back() {
        let mut u = UsageTable::new(2, t(0));
        let k = key("p");
        let mut p = pod("u1", vec![c("a", "1", ""), c("b", "1", "")], &[(CPU_USAGE_ANNOTATION, "1")]);
        u.observe(&k, 1, &p, t(10));
        let s = u.sample(t(20));
        assert_eq!(s.pods[0].cpu_core_seconds, 10.0);
        assert_eq!(s.pods[0].containers[0].cpu_core_seconds, 5.0);
        assert_eq!(node_of(&s, 1).cpu_core_seconds, 20.0 * 0.05 + 10.0);
        assert_eq!(node_of(&s, 0).cpu_core_seconds, 20.0 * 0.05);
        assert_eq!(node_of(&s, 1).memory_bytes, NODE_BASE_MEMORY + 2 * MI);
        // The annotation changes at 30: the old rate until then, the new one after.
        p.metadata.annotations.as_mut().unwrap().insert(CPU_USAGE_ANNOTATION.into(), "100m".into());
        u.observe(&k, 1, &p, t(30));
        let s = u.sample(t(40));
        assert_eq!(s.pods[0].cpu_core_seconds, 21.0);
        assert!((node_of(&s, 1).cpu_core_seconds - (40.0 * 0.05 + 21.0)).abs() < 1e-9);
        // Seen again unchanged: nothing resets.
        u.observe(&k, 1, &p, t(40));
        assert_eq!(u.sample(t(40)).pods[0].cpu_core_seconds, 21.0);
        // The clock goes back: the counters stand still, then grow again.
        let back = u.sample(t(35));
        assert_eq!(back.pods[0].cpu_core_seconds, 21.0);
        assert_eq!(u.sample(t(45)).pods[0].cpu_core_seconds, 22.0);
        // Removing the pod leaves the node's counter where it was, growing at the base rate.
        let before = node_of(&u.sample(t(50)), 1).cpu_core_seconds;
        u.remove(&k, t(50));
        let s = u.sample(t(60));
        assert!(s.pods.is_empty());
        assert!((node_of(&s, 1).cpu_core_seconds - (before + 0.5)).abs() < 1e-9);
        assert_eq!(node_of(&s, 1).memory_bytes, NODE_BASE_MEMORY);
    }

    #[test]
    fn a_pod_that_stops_running_or_is_replaced_starts_over() {
        let mut u = UsageTable::new(1, t(0));
        let k = key("p");
        let p = pod("u1", vec![c("a", "", "")], &[(CPU_USAGE_ANNOTATION, "1")]);
        u.observe(&k, 0, &p, t(0));
        assert_eq!(u.sample(t(10)).pods[0].cpu_core_seconds, 10.0);
        // Another pod of the same name: a new counter.
        let q = pod("u2", vec![c("a", "", "")], &[(CPU_USAGE_ANNOTATION, "1")]);
        u.observe(&k, 0, &q, t(10));
        assert_eq!(u.sample(t(12)).pods[0].cpu_core_seconds, 2.0);
        // Being deleted, finished or not (yet) running: not tracked.
        let mut deleting = q.clone();
        deleting.metadata.deletion_timestamp = Some(Time(t(12)));
        u.observe(&k, 0, &deleting, t(12));
        assert!(u.pods.is_empty());
        for phase in ["Pending", "Succeeded", "Failed"] {
            let mut other = q.clone();
            other.status.as_mut().unwrap().phase = Some(phase.into());
            u.observe(&k, 0, &other, t(12));
            assert!(u.pods.is_empty(), "{phase}");
        }
        u.observe(&k, 0, &Pod { status: None, ..q.clone() }, t(12));
        assert!(u.pods.is_empty());
        // An unknown node index is ignored.
        u.observe(&k, 5, &q, t(12));
        assert!(u.pods.is_empty());
        let s = u.sample(t(20));
        assert_eq!(s.nodes.len(), 1);
        assert!((s.nodes[0].cpu_core_seconds - (20.0 * 0.05 + 12.0)).abs() < 1e-9);
    }

    #[test]
    fn retain_drops_pods_a_relist_did_not_show() {
        let mut u = UsageTable::new(1, t(0));
        for name in ["a", "b", "c"] {
            let mut p = pod(name, vec![c("x", "", "64Mi")], &[]);
            p.metadata.name = Some(name.into());
            u.observe(&key(name), 0, &p, t(0));
        }
        assert_eq!(u.sample(t(0)).nodes[0].memory_bytes, NODE_BASE_MEMORY + 3 * (64 * MI / 10));
        u.retain(&HashSet::from([key("b")]), t(1));
        let s = u.sample(t(1));
        assert_eq!(s.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(s.nodes[0].memory_bytes, NODE_BASE_MEMORY + 64 * MI / 10);
    }

    #[test]
    fn samples_are_sorted_and_pods_sum_their_containers() {
        let mut u = UsageTable::new(1, t(0));
        for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y")] {
            let k = PodKey { namespace: ns.into(), name: name.into() };
            let p = pod(name, vec![c("c1", "", ""), c("c2", "", "")], &[(MEMORY_USAGE_ANNOTATION, "3")]);
            u.observe(&k, 0, &p, t(0));
        }
        let s = u.sample(t(1));
        let order: Vec<_> = s.pods.iter().map(|p| (p.namespace.as_str(), p.name.as_str())).collect();
        assert_eq!(order, [("a", "y"), ("a", "z"), ("b", "x")]);
        assert_eq!(s.pods[0].memory_bytes, 3);
        assert_eq!(s.pods[0].containers.iter().map(|c| c.memory_bytes).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.pods[0].cpu_core_seconds, 0.002);
    }

    #[test]
    fn huge_quantities_do_not_overflow() {
        let mut u = UsageTable::new(1, t(0));
        let p = pod("u", vec![c("a", "1e30", "1e30"), c("b", "1e30", "")], &[(CPU_USAGE_ANNOTATION, "9e30")]);
        u.observe(&key("p"), 0, &p, Timestamp::MIN);
        let s = u.sample(Timestamp::MAX);
        assert!(s.pods[0].cpu_core_seconds.is_finite() && s.nodes[0].cpu_core_seconds > 0.0);
    }
}
