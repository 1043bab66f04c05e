//! The replica calculator for resource metrics (upstream
//! `pkg/controller/podautoscaler/replica_calculator.go`: `GetResourceReplicas`,
//! `GetRawResourceReplicas` / `calcPlainMetricReplicas`, `groupPods`, `calculateRequests`,
//! and `metrics.GetResourceUtilizationRatio` / `GetMetricUsageRatio`). Pure: the caller lists
//! the pods the target's selector matches and the samples from the resource metrics API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use keelson_scheduler::quantity::milli_value;
use thiserror::Error;

use super::types::PodSample;

/// The calculator's tunables (kube-controller-manager's `--horizontal-pod-autoscaler-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalcConfig {
    /// How far the usage ratio may stray from 1.0 before the replica count changes.
    pub tolerance: f64,
    /// After a pod starts, CPU samples are trusted only once the pod is ready and one full
    /// sample window has passed since its readiness last changed.
    pub cpu_initialization_period: Duration,
    /// A pod that turned unready within this long of starting has never been ready; its CPU
    /// samples are ignored.
    pub delay_of_initial_readiness_status: Duration,
}

impl Default for CalcConfig {
    /// Upstream's defaults: 0.1, 5 minutes, 30 seconds.
    fn default() -> Self {
        CalcConfig {
            tolerance: 0.1,
            cpu_initialization_period: Duration::from_secs(300),
            delay_of_initial_readiness_status: Duration::from_secs(30),
        }
    }
}

/// The outcome of [`resource_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceReplicas {
    /// The proposed replica count.
    pub replicas: i32,
    /// The current utilization in percent of the requests (over the pods counted ready).
    pub utilization: i32,
    /// The current average usage per pod, in thousandths.
    pub raw_average_value: i64,
    /// The oldest sample's timestamp.
    pub timestamp: Timestamp,
}

/// The outcome of [`raw_resource_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawReplicas {
    /// The proposed replica count.
    pub replicas: i32,
    /// The current average usage per pod, in thousandths.
    pub average_value_milli: i64,
    /// The oldest sample's timestamp.
    pub timestamp: Timestamp,
}

/// Why no replica count could be computed (upstream's messages).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CalcError {
    /// The resource metrics API returned nothing usable for the resource.
    #[error("unable to get metrics for resource {0}: no metrics returned from resource metrics API")]
    NoMetrics(String),
    /// The selector matched no pods.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// Every sample belonged to an unready, pending, terminated or deleted pod.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    /// A container lacks a request for the resource.
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// The resource name.
        resource: String,
        /// The container name.
        container: String,
        /// The pod name.
        pod: String,
    },
    /// The named container does not exist in a pod.
    #[error("container {container} not found in Pod {pod}")]
    ContainerNotFound {
        /// The container name.
        container: String,
        /// The pod name.
        pod: String,
    },
    /// No sample belonged to a pod with a (non-zero) request.
    #[error("no metrics returned matched known pods")]
    NoMatchingPods,
}

/// `GetResourceReplicas`: the replica count that brings the average utilization of
/// `resource` (a percentage of the pods' requests) to `target_utilization`.
///
/// `pods` are the pods the target's selector matches; `samples` are from
/// [`pod_samples`](super::types::pod_samples) (for `container`, if the metric is a container
/// resource metric). Pods being deleted or terminated are ignored; pending pods (and, for
/// `cpu`, pods not yet ready or still warming up) count as using nothing on a scale-up and are
/// left out otherwise; pods without a sample count as using nothing on a scale-up and their
/// full request (or the target, if above 100%) on a scale-down. A change whose direction
/// those assumptions would flip is not made.
#[allow(clippy::too_many_arguments)]
pub fn resource_replicas(
    current_replicas: i32,
    target_utilization: i32,
    resource: &str,
    container: Option<&str>,
    pods: &[Pod],
    samples: &BTreeMap<String, PodSample>,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Result<ResourceReplicas, CalcError> {
    let timestamp = oldest(resource, samples)?;
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let groups = group_pods(pods, samples, resource, cfg, now);
    let mut metrics = usable_metrics(samples, &groups);
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let requests = calculate_requests(pods, container, resource)?;
    let (usage_ratio, utilization, raw_average_value) = utilization_ratio(&metrics, &requests, target_utilization)?;
    let done = |replicas| ResourceReplicas { replicas, utilization, raw_average_value, timestamp };

    let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(cfg.tolerance, usage_ratio) {
            return Ok(done(current_replicas));
        }
        return Ok(done(ceil_i32(usage_ratio * groups.ready as f64)));
    }
    if !groups.missing.is_empty() {
        if usage_ratio < 1.0 {
            // On a scale-down, missing pods use all of their request (or the target, if higher).
            let fallback = i64::from(target_utilization.max(100));
            for pod in &groups.missing {
                let request = requests.get(pod).copied().unwrap_or(0);
                metrics.insert(pod.clone(), request.saturating_mul(fallback) / 100);
            }
        } else if usage_ratio > 1.0 {
            for pod in &groups.missing {
                metrics.insert(pod.clone(), 0);
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target_utilization)?;
    Ok(done(rebalanced(current_replicas, usage_ratio, new_ratio, metrics.len(), cfg.tolerance)))
}

/// `GetRawResourceReplicas`: the replica count that brings the average usage of `resource`
/// per pod to `target_average_value_milli` (thousandths). `container` only selects which
/// samples the caller collected (upstream ignores it past the metrics client).
#[allow(clippy::too_many_arguments)]
pub fn raw_resource_replicas(
    current_replicas: i32,
    target_average_value_milli: i64,
    resource: &str,
    container: Option<&str>,
    pods: &[Pod],
    samples: &BTreeMap<String, PodSample>,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Result<RawReplicas, CalcError> {
    let _ = container;
    let timestamp = oldest(resource, samples)?;
    let (replicas, average_value_milli) =
        plain_metric_replicas(current_replicas, target_average_value_milli, resource, pods, samples, cfg, now)?;
    Ok(RawReplicas { replicas, average_value_milli, timestamp })
}

/// `calcPlainMetricReplicas`: the replica count and current average (thousandths) for a
/// per-pod average-value target. `resource` is the resource name (`""` for a custom pods
/// metric); only `cpu` gets the CPU readiness rules.
pub fn plain_metric_replicas(
    current_replicas: i32,
    target_milli: i64,
    resource: &str,
    pods: &[Pod],
    samples: &BTreeMap<String, PodSample>,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Result<(i32, i64), CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let groups = group_pods(pods, samples, resource, cfg, now);
    let mut metrics = usable_metrics(samples, &groups);
    if metrics.is_empty() {
        return Err(CalcError::NoReadyMetrics);
    }
    let (usage_ratio, usage) = metric_usage_ratio(&metrics, target_milli);

    let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(cfg.tolerance, usage_ratio) {
            return Ok((current_replicas, usage));
        }
        return Ok((ceil_i32(usage_ratio * groups.ready as f64), usage));
    }
    if !groups.missing.is_empty() {
        // On a scale-down missing pods use exactly the target; on a scale-up, nothing.
        let fill = if usage_ratio < 1.0 {
            Some(target_milli)
        } else if usage_ratio > 1.0 {
            Some(0)
        } else {
            None
        };
        if let Some(fill) = fill {
            for pod in &groups.missing {
                metrics.insert(pod.clone(), fill);
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _) = metric_usage_ratio(&metrics, target_milli);
    Ok((rebalanced(current_replicas, usage_ratio, new_ratio, metrics.len(), cfg.tolerance), usage))
}

/// The tail shared by both calculations: keep the current count when the recomputed ratio
/// is within tolerance or the rebalancing flipped the direction of the change.
fn rebalanced(current: i32, usage_ratio: f64, new_ratio: f64, counted: usize, tolerance: f64) -> i32 {
    if within(tolerance, new_ratio) || (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return current;
    }
    let new_replicas = ceil_i32(new_ratio * counted as f64);
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return current;
    }
    new_replicas
}

/// `Tolerances.isWithin` with the same tolerance both ways.
fn within(tolerance: f64, ratio: f64) -> bool {
    (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance)
}

fn ceil_i32(x: f64) -> i32 {
    // `as` saturates (and maps NaN to 0) where Go's conversion is undefined.
    x.ceil() as i32
}

/// The oldest sample's timestamp; no samples at all is upstream's "no metrics returned".
fn oldest(resource: &str, samples: &BTreeMap<String, PodSample>) -> Result<Timestamp, CalcError> {
    samples.values().map(|s| s.timestamp).min().ok_or_else(|| CalcError::NoMetrics(resource.to_string()))
}

/// Pod names by how `groupPods` classifies them.
#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// The samples' values without those of ignored and unready pods (samples of pods the
/// selector did not match stay, as upstream's do).
fn usable_metrics(samples: &BTreeMap<String, PodSample>, groups: &Groups) -> BTreeMap<String, i64> {
    samples
        .iter()
        .filter(|(name, _)| !groups.ignored.contains(*name) && !groups.unready.contains(*name))
        .map(|(name, s)| (name.clone(), s.value))
        .collect()
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// `groupPods`.
fn group_pods(
    pods: &[Pod],
    samples: &BTreeMap<String, PodSample>,
    resource: &str,
    cfg: &CalcConfig,
    now: Timestamp,
) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" || phase == "Succeeded" {
            g.ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            g.unready.insert(name);
            continue;
        }
        let Some(sample) = samples.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let condition =
                status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            let unready = match (condition, start) {
                (Some(c), Some(start)) => {
                    // An unset transition time is Go's zero time: long ago.
                    let changed = c.last_transition_time.as_ref().map_or(Timestamp::MIN, |t| t.0);
                    if add(start, cfg.cpu_initialization_period) > now {
                        // Still initialising: unready, or no full window since readiness changed.
                        c.status == "False" || sample.timestamp < add(changed, sample.window)
                    } else {
                        // Unready and never ready since it started.
                        c.status == "False" && add(start, cfg.delay_of_initial_readiness_status) > changed
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// `calculateRequests`: each pod's request for `resource`, in thousandths.
///
/// With a `container`, that container's request. Otherwise the pod-level request when the pod
/// sets one for `resource` (KEP-2837, as with the `PodLevelResources` gate on), else the sum
/// over its containers and restartable (sidecar) init containers.
fn calculate_requests(
    pods: &[Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, CalcError> {
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_level = match container {
            Some(_) => None,
            None => pod
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| milli_value(&q.0)),
        };
        let request = match pod_level {
            Some(v) => v,
            None => container_requests(pod, &name, container, resource)?,
        };
        requests.insert(name, request);
    }
    Ok(requests)
}

/// `calculatePodRequestsFromContainers`.
fn container_requests(pod: &Pod, pod_name: &str, container: Option<&str>, resource: &str) -> Result<i64, CalcError> {
    let spec = pod.spec.as_ref();
    let regular = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter())
        .into_iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut sum = 0i64;
    for c in regular.chain(sidecars) {
        let wanted = container.is_none_or(|name| name == c.name);
        if wanted {
            let request = request_of(c, resource).ok_or_else(|| CalcError::MissingRequest {
                resource: resource.to_string(),
                container: c.name.clone(),
                pod: pod_name.to_string(),
            })?;
            sum = sum.saturating_add(request);
            if container.is_some() {
                return Ok(sum);
            }
        }
    }
    match container {
        Some(name) => Err(CalcError::ContainerNotFound { container: name.to_string(), pod: pod_name.to_string() }),
        None => Ok(sum),
    }
}

fn request_of(c: &Container, resource: &str) -> Option<i64> {
    let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
    milli_value(&q.0)
}

/// `GetResourceUtilizationRatio`: (usage ratio, utilization %, average usage) over the samples
/// of pods with a request.
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target_utilization: i32,
) -> Result<(f64, i32, i64), CalcError> {
    let (mut metrics_total, mut requests_total, mut entries) = (0i64, 0i64, 0i64);
    for (pod, value) in metrics {
        // Samples of pods without a request are extraneous.
        let Some(request) = requests.get(pod) else { continue };
        metrics_total = metrics_total.saturating_add(*value);
        requests_total = requests_total.saturating_add(*request);
        entries += 1;
    }
    if requests_total == 0 || entries == 0 {
        return Err(CalcError::NoMatchingPods);
    }
    let utilization = metrics_total.saturating_mul(100).checked_div(requests_total).unwrap_or(i64::MAX);
    let utilization = utilization.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    let ratio = f64::from(utilization) / f64::from(target_utilization);
    Ok((ratio, utilization, metrics_total / entries))
}

/// `GetMetricUsageRatio`: (usage ratio, average usage). `metrics` is non-empty.
fn metric_usage_ratio(metrics: &BTreeMap<String, i64>, target: i64) -> (f64, i64) {
    let total = metrics.values().fold(0i64, |sum, v| sum.saturating_add(*v));
    let count = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
    let usage = total / count;
    (usage as f64 / target as f64, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::types::{pod_samples, PodMetricsList};
    use serde_json::json;

    const LONG_AGO: i64 = 3600;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now().checked_sub(jiff::SignedDuration::from_secs(secs)).unwrap()
    }

    /// Upstream's testing configuration.
    fn cfg(tolerance: f64) -> CalcConfig {
        let (init, delay) = (Duration::from_secs(120), Duration::from_secs(10));
        CalcConfig { tolerance, cpu_initialization_period: init, delay_of_initial_readiness_status: delay }
    }

    /// Upstream's `calcScenario`: pods `test-pod-<i>` with two containers each requesting
    /// `requests[i]` of CPU, running and ready for an hour unless told otherwise.
    #[derive(Clone, Default)]
    struct Scn {
        current: i32,
        requests: Vec<&'static str>,
        levels: Vec<Vec<i64>>,
        /// Per pod: `T`/`F` for the Ready condition's status.
        ready: &'static str,
        /// Per pod: `R`unning, `P`ending, `F`ailed, `S`ucceeded.
        phase: &'static str,
        started_secs_ago: Vec<i64>,
        deleted: Vec<usize>,
        container: Option<&'static str>,
        names: Vec<&'static str>,
        tolerance: f64,
    }

    /// `n` pods each requesting `request` per container; every container of pod `i` uses `levels[i]`.
    fn scn(current: i32, n: usize, request: &'static str, levels: &[i64]) -> Scn {
        let levels = levels.iter().map(|x| vec![*x, *x]).collect();
        Scn { current, requests: vec![request; n], levels, tolerance: 0.1, ..Scn::default() }
    }

    impl Scn {
        fn levels(mut self, per_container: &[&[i64]]) -> Self {
            self.levels = per_container.iter().map(|v| v.to_vec()).collect();
            self
        }
        fn requests(mut self, r: &[&'static str]) -> Self {
            self.requests = r.to_vec();
            self
        }
        fn ready(mut self, r: &'static str) -> Self {
            self.ready = r;
            self
        }
        fn phase(mut self, p: &'static str) -> Self {
            self.phase = p;
            self
        }
        fn started(mut self, secs_ago: &[i64]) -> Self {
            self.started_secs_ago = secs_ago.to_vec();
            self
        }
        fn deleted(mut self, ix: &[usize]) -> Self {
            self.deleted = ix.to_vec();
            self
        }
        fn container(mut self, c: &'static str) -> Self {
            self.container = Some(c);
            self
        }

        fn pods(&self) -> Vec<Pod> {
            let n = usize::try_from(self.current).unwrap().max(self.phase.len());
            (0..n).map(|i| self.pod(i)).collect()
        }

        fn pod(&self, i: usize) -> Pod {
            let start = ago(self.started_secs_ago.get(i).copied().unwrap_or(LONG_AGO)).to_string();
            let res = self.requests.get(i).map_or(json!({}), |q| json!({"requests": {"cpu": q}}));
            let phase = match self.phase.as_bytes().get(i) {
                Some(b'P') => "Pending",
                Some(b'F') => "Failed",
                Some(b'S') => "Succeeded",
                _ => "Running",
            };
            let ready = if self.ready.as_bytes().get(i) == Some(&b'F') { "False" } else { "True" };
            let mut pod = json!({
                "metadata": {"name": format!("test-pod-{i}"), "namespace": "ns"},
                "spec": {"containers": [{"name": "container1", "resources": res}, {"name": "container2", "resources": res}]},
                "status": {"phase": phase, "startTime": start,
                    "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": start}]}
            });
            if self.deleted.contains(&i) {
                pod["metadata"]["deletionTimestamp"] = json!(now().to_string());
            }
            serde_json::from_value(pod).unwrap()
        }

        fn samples(&self, resource: &str) -> BTreeMap<String, PodSample> {
            let item = |(i, lv): (usize, &Vec<i64>)| {
                let name = self.names.get(i).map_or(format!("test-pod-{i}"), |n| n.to_string());
                let containers: Vec<_> = (lv.iter().enumerate())
                    .map(|(j, v)| json!({"name": format!("container{}", j + 1), "usage": {resource: format!("{v}m")}}))
                    .collect();
                json!({"metadata": {"name": name}, "timestamp": now().to_string(), "window": "1m0s", "containers": containers})
            };
            let items: Vec<_> = self.levels.iter().enumerate().map(item).collect();
            let list: PodMetricsList = serde_json::from_value(json!({ "items": items })).unwrap();
            pod_samples(&list, resource, self.container)
        }

        fn resource(&self, target: i32) -> Result<ResourceReplicas, CalcError> {
            let (pods, samples) = (self.pods(), self.samples("cpu"));
            resource_replicas(self.current, target, "cpu", self.container, &pods, &samples, &cfg(self.tolerance), now())
        }

        fn raw(&self, resource: &str, target: i64) -> Result<RawReplicas, CalcError> {
            let (pods, samples) = (self.pods(), self.samples(resource));
            raw_resource_replicas(self.current, target, resource, None, &pods, &samples, &cfg(self.tolerance), now())
        }
    }

    #[track_caller]
    fn check(name: &str, s: Scn, target: i32, (replicas, utilization, raw): (i32, i32, i64)) {
        let got = s.resource(target).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((got.replicas, got.utilization, got.raw_average_value), (replicas, utilization, raw), "{name}");
        assert_eq!(got.timestamp, now(), "{name}");
    }

    /// Upstream `TestReplicaCalcResourceScale`.
    #[test]
    fn resource_scale() {
        let up = || scn(3, 3, "1.0", &[300, 500, 700]);
        check("scale up", up(), 30, (5, 50, 1000));
        let per_container: &[&[i64]] = &[&[1000, 300], &[1000, 500], &[1000, 700]];
        check("scale up: container", up().levels(per_container).container("container2"), 30, (5, 50, 500));
        check("scale up: unready pod scales less", up().ready("FTT"), 30, (4, 60, 1200));
        let hot: &[&[i64]] = &[&[0, 300], &[0, 500], &[0, 700]];
        let hot_container = up().levels(hot).container("container2").started(&[0, 180, 180]);
        check("scale up: hot-CPU container scales less", hot_container, 30, (4, 60, 600));
        check("scale up: hot-CPU pod scales less", up().started(&[0, 180, 180]), 30, (4, 60, 1200));
        let no_scale = || scn(3, 3, "1.0", &[400, 500, 700]).ready("TFF");
        check("no scale: unready pods ignored", no_scale(), 30, (3, 40, 800));
        check("no scale: hot-CPU pods ignored", no_scale().started(&[180, 0, 0]), 30, (3, 40, 800));
        let failed = scn(2, 4, "1.0", &[500, 700]).ready("TTFF").phase("RRFF");
        check("scale up: failed pods ignored", failed, 30, (4, 60, 1200));
        let succeeded: &[&[i64]] = &[&[1000, 500], &[9000, 700], &[1000], &[9000]];
        let succeeded = scn(2, 4, "1.0", &[]).levels(succeeded).container("container2").ready("TTFF").phase("RRSS");
        check("scale up: succeeded pods missing the container metric ignored", succeeded, 30, (4, 60, 600));
        let deleted = scn(2, 4, "1.0", &[500, 700]).ready("TTFF").phase("RRRR").deleted(&[2, 3]);
        check("scale up: pods being deleted are ignored", deleted, 30, (4, 60, 1200));

        let down = || scn(5, 5, "1.0", &[100, 300, 500, 250, 250]);
        check("scale down", down(), 50, (3, 28, 560));
        check("scale down: exclude unready pods", down().ready("TTTFF"), 50, (2, 30, 600));
        let unscheduled = scn(5, 5, "1.0", &[100]).ready("TFFFF").phase("RPPPP");
        check("scale down: exclude unscheduled pods", unscheduled, 50, (1, 10, 200));
        let hot: &[&[i64]] = &[&[1000, 100], &[1000, 300], &[1000, 500], &[1000, 1000], &[1000, 1000]];
        let hot = down().levels(hot).container("container2").started(&[180, 180, 180, 0, 0]);
        check("scale down: container metric ignores hot-CPU pods", hot, 50, (2, 30, 300));
        let running: &[&[i64]] = &[&[1000, 100], &[1000, 300], &[1000, 500], &[1000, 250], &[1000, 250]];
        let deleting = scn(5, 7, "1.0", &[]).levels(running).container("container2").ready("TTTTTFF").phase("RRRRRRR");
        check("scale down: still-running pods being deleted are ignored", deleting.deleted(&[5, 6]), 50, (3, 28, 280));
    }

    /// Upstream `TestReplicaCalcResourceTolerance` and `TestReplicaCalcResourceMissingMetrics`.
    #[test]
    fn resource_tolerance_and_missing_metrics() {
        let mixed = &["0.9", "1.0", "1.1"];
        check("within default tolerance", scn(3, 0, "", &[1010, 1030, 1020]).requests(mixed), 100, (3, 102, 2040));
        let zero = Scn { tolerance: 0.0, ..scn(3, 0, "", &[909, 1010, 1111]).requests(mixed) };
        check("outside 0% tolerance", zero, 100, (4, 101, 2020));
        let superfluous = scn(4, 4, "1.0", &[4000, 9500, 3000, 7000, 3200, 2000]);
        check("superfluous metrics counted", superfluous, 100, (24, 587, 11750));
        check("some pods missing metrics scales down", scn(4, 4, "1.0", &[400, 95]), 100, (3, 24, 495));
        check("no change: metric above target", scn(2, 2, "1.0", &[1900]), 100, (2, 190, 3800));
        check("no change: metric below target", scn(2, 2, "1.0", &[600]), 100, (2, 60, 1200));
        check("no change: unready pod metric missing", scn(3, 3, "1.0", &[100, 450]).ready("FTT"), 50, (3, 45, 900));
        check("scale up: unready pod metric missing", scn(3, 3, "1.0", &[100, 2000]).ready("FTT"), 50, (4, 200, 4000));
        let down = scn(4, 4, "1.0", &[100, 100, 100]).ready("FTTT");
        check("scale down: unready pod metric missing", down, 50, (3, 10, 200));
        let over = scn(4, 0, "", &[200, 100, 100]).requests(&["1.0", "1.0", "2.0", "2.0"]).ready("FTTT");
        check("scale down: target over 100", over, 300, (2, 6, 200));
        let surge = scn(2, 3, "1.0", &[100, 100]).phase("RRR");
        check("rolling update with maxSurge: extra pod missing metric", surge, 50, (2, 10, 200));
    }

    /// Upstream `TestReplicaCalcComputedToleranceAlgImplementation`: a target just past the
    /// tolerance scales 10 pods down to 9; one just inside it does not.
    #[test]
    fn computed_tolerance() {
        let requests = &["400m", "200m", "310m", "290m", "302m", "298m", "301m", "299m", "300m", "300m"];
        let s = scn(10, 0, "", &[150; 10]).requests(requests);
        check("just outside tolerance", s.clone(), 56, (9, 50, 300));
        check("just inside tolerance", s, 55, (10, 50, 300));
    }

    #[test]
    fn resource_errors() {
        let disjoint = Scn { names: vec!["an-older-pod-name"], ..scn(1, 1, "1.0", &[100]) };
        assert_eq!(disjoint.resource(100), Err(CalcError::NoMatchingPods));
        let err = scn(4, 3, "1.0", &[]).resource(100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
        );
        let err = scn(1, 0, "", &[200]).resource(100).unwrap_err();
        assert_eq!(err.to_string(), "missing request for cpu in container container1 of Pod test-pod-0");
        assert_eq!(scn(0, 0, "", &[200]).resource(100), Err(CalcError::NoPods));
        let err = scn(2, 2, "1.0", &[200, 200]).phase("PP").resource(100).unwrap_err();
        assert_eq!(err.to_string(), "did not receive metrics for targeted pods (pods might be unready)");
        let c3 = scn(1, 1, "1.0", &[]).levels(&[&[1, 1, 100]]).container("container3");
        assert_eq!(c3.resource(100).unwrap_err().to_string(), "container container3 not found in Pod test-pod-0");
    }

    /// Upstream `TestReplicaCalcPodMetric` through the raw (average value) path: readiness only
    /// matters for CPU.
    #[test]
    fn raw_average_value() {
        let one = |current: i32, v: &[i64]| {
            let per_pod: Vec<&[i64]> = v.iter().map(std::slice::from_ref).collect();
            scn(current, 0, "", &[]).levels(&per_pod)
        };
        #[track_caller]
        fn raw(name: &str, s: Scn, resource: &str, target: i64, expected: (i32, i64)) {
            let got = s.raw(resource, target).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((got.replicas, got.average_value_milli), expected, "{name}");
            assert_eq!(got.timestamp, now(), "{name}");
        }
        raw("scale up", one(3, &[20000, 10000, 30000]), "memory", 15000, (4, 20000));
        let hot = one(3, &[50000, 10000, 30000]).ready("TTF").started(&[180, 180, 0]);
        raw("unready pod counts for non-CPU", hot.clone(), "memory", 15000, (6, 30000));
        raw("unready hot-CPU pod scales less for CPU", hot, "cpu", 15000, (4, 30000));
        let hot = one(3, &[50000, 15000, 30000]).ready("FTF").started(&[0, 180, 0]);
        raw("unready hot-CPU pods avoid scale-down", hot, "memory", 15000, (7, 31666));
        raw("scale down", one(5, &[12000; 5]), "memory", 20000, (3, 12000));
        raw("within default tolerance", one(3, &[20000, 21000, 21000]), "memory", 20000, (3, 20666));
        raw("no change: missing metrics", one(5, &[20000, 19000, 21000]), "memory", 20000, (5, 20000));
        let surge = one(2, &[10000, 10000]).phase("RRR");
        raw("rolling update with maxSurge: extra pod missing metric", surge, "memory", 17000, (2, 10000));
        assert_eq!(one(0, &[1]).raw("memory", 1), Err(CalcError::NoPods));
        assert_eq!(one(1, &[]).raw("memory", 1), Err(CalcError::NoMetrics("memory".into())));
    }

    #[test]
    fn requests_include_sidecars_and_pod_level() {
        let pod = |spec| -> Pod { serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap() };
        let sidecar = pod(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [{"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                               {"name": "init"}]
        }));
        let pods = [sidecar];
        assert_eq!(calculate_requests(&pods, None, "cpu").unwrap()["p"], 150);
        assert_eq!(calculate_requests(&pods, Some("side"), "cpu").unwrap()["p"], 50);
        assert!(matches!(calculate_requests(&pods, None, "memory"), Err(CalcError::MissingRequest { .. })));
        let pods = [pod(json!({"resources": {"requests": {"cpu": "1"}}, "containers": [{"name": "app"}]}))];
        assert_eq!(calculate_requests(&pods, None, "cpu").unwrap()["p"], 1000);
        assert!(matches!(calculate_requests(&pods, Some("app"), "cpu"), Err(CalcError::MissingRequest { .. })));
    }

    /// Upstream `TestGroupPods`, the CPU readiness corner cases.
    #[test]
    fn group_pods_cpu_readiness() {
        let sample = PodSample { timestamp: now(), window: Duration::from_secs(60), value: 1 };
        let samples: BTreeMap<_, _> = ["a", "b", "c", "d", "e"].iter().map(|n| (n.to_string(), sample)).collect();
        let pod = |name: &str, status| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap()
        };
        let ready = |status: &str, changed_secs_ago| json!([{"type": "Ready", "status": status, "lastTransitionTime": ago(changed_secs_ago).to_string()}]);
        let (long_ago, recent) = (ago(LONG_AGO).to_string(), ago(100).to_string());
        let pods = [
            // No Ready condition; no start time.
            pod("a", json!({"phase": "Running", "startTime": long_ago})),
            pod("b", json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})),
            // Unready, but it was ready once (turned unready long after starting).
            pod("c", json!({"phase": "Running", "startTime": long_ago, "conditions": ready("False", 60)})),
            // Initialising and ready: a full window since it turned ready, or not.
            pod("d", json!({"phase": "Running", "startTime": recent, "conditions": ready("True", 90)})),
            pod("e", json!({"phase": "Running", "startTime": recent, "conditions": ready("True", 30)})),
            // No sample; being deleted.
            pod("f", json!({"phase": "Running"})),
            serde_json::from_value(json!({"metadata": {"name": "g", "deletionTimestamp": now().to_string()}})).unwrap(),
        ];
        let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        let g = group_pods(&pods, &samples, "cpu", &cfg(0.1), now());
        assert_eq!(
            (g.ready, names(&g.unready), names(&g.missing), names(&g.ignored)),
            (2, "a,b,e".into(), "f".into(), "g".into())
        );
        let g = group_pods(&pods, &samples, "memory", &cfg(0.1), now());
        assert_eq!((g.ready, g.unready.len()), (5, 0));
    }
}
