//! The resource metrics API (`metrics.k8s.io/v1beta1`) as metrics-server serves it, and
//! the per-pod samples the replica calculator consumes (upstream
//! `pkg/controller/podautoscaler/metrics/client.go`: `getPodMetrics` / `getContainerMetrics`).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keelson_scheduler::quantity::milli_value;
use serde::{Deserialize, Deserializer, Serialize};

/// The window assumed when a `PodMetrics.window` cannot be parsed (upstream's
/// `metricServerDefaultMetricWindow`, which it uses for samples that report no window).
pub const DEFAULT_METRIC_WINDOW: Duration = Duration::from_secs(60);

/// One pod's usage sample (`metrics.k8s.io/v1beta1` `PodMetrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    /// The pod's name and namespace (metrics-server copies the pod's labels too).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// When the sample was taken (the end of its window). Missing or `null` reads as the Unix
    /// epoch, standing in for Go's zero time.
    #[serde(default = "zero_time", deserialize_with = "time_or_zero")]
    pub timestamp: Time,
    /// The interval the usage was averaged over, as a Go duration string (`"15s"`, `"15.002s"`).
    #[serde(default)]
    pub window: String,
    /// Per-container usage.
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

/// One container's usage within a [`PodMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMetrics {
    /// The container's name.
    #[serde(default)]
    pub name: String,
    /// Usage per resource name (`cpu`, `memory`, ...).
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

/// `PodMetricsList`: the answer to listing `pods` in `metrics.k8s.io/v1beta1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsList {
    /// The samples, one per pod.
    #[serde(default)]
    pub items: Vec<PodMetrics>,
}

/// One pod's usage of one resource (upstream `metrics.PodMetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSample {
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The interval the usage was averaged over.
    pub window: Duration,
    /// The usage in thousandths of the resource's unit (`Quantity.MilliValue()`).
    pub value: i64,
}

fn zero_time() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

fn time_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    Ok(Option::<Time>::deserialize(d)?.unwrap_or_else(zero_time))
}

/// The samples of `resource` per pod name, as upstream's resource metrics client builds them.
///
/// With no `container`, a pod's value is the sum over all its containers (`getPodMetrics`);
/// a pod reporting no containers, or a container without `resource`, is left out entirely.
/// With a `container`, only the first container of that name counts (`getContainerMetrics`);
/// pods without it, or where it lacks `resource`, are left out.
///
/// Where upstream would fail to decode the whole list, this is more tolerant: a usage that is
/// not a valid quantity counts as missing (the pod is left out), and a window that is not a
/// valid, non-negative Go duration is taken as [`DEFAULT_METRIC_WINDOW`]. An empty window
/// (absent from the object) is zero, like an absent `metav1.Duration`.
pub fn pod_samples(list: &PodMetricsList, resource: &str, container: Option<&str>) -> BTreeMap<String, PodSample> {
    let mut out = BTreeMap::new();
    for m in &list.items {
        let value = match container {
            Some(name) => m
                .containers
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.usage.get(resource))
                .and_then(|q| milli_value(&q.0)),
            None if m.containers.is_empty() => None,
            None => m.containers.iter().try_fold(0i64, |sum, c| {
                c.usage.get(resource).and_then(|q| milli_value(&q.0)).map(|v| sum.saturating_add(v))
            }),
        };
        let Some(value) = value else { continue };
        let window = if m.window.is_empty() {
            Duration::ZERO
        } else {
            parse_go_duration(&m.window).unwrap_or(DEFAULT_METRIC_WINDOW)
        };
        let name = m.metadata.name.clone().unwrap_or_default();
        out.insert(name, PodSample { timestamp: m.timestamp.0, window, value });
    }
    out
}

/// Parses a Go `time.Duration` string (`"15s"`, `"1m0.5s"`, `"500ms"`, `"1h2m3.5s"`, `"0"`).
/// Negative durations, unknown units and values beyond Go's range (`i64` nanoseconds) give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut rest = rest;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(f) => {
                let len = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(len)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = int_val.checked_mul(unit_nanos)?;
        // Fractional digits beyond nanosecond precision of the largest unit do not matter.
        let mut scale: u128 = 1;
        let mut frac_val: u128 = 0;
        for b in frac.bytes().take(24) {
            frac_val = frac_val * 10 + u128::from(b - b'0');
            scale *= 10;
        }
        nanos = nanos.checked_add(frac_val * unit_nanos / scale)?;
        total = total.checked_add(nanos)?;
        if total > i64::MAX as u128 {
            return None;
        }
        rest = after;
    }
    let total = u64::try_from(total).ok()?;
    Some(Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: serde_json::Value) -> PodMetricsList {
        serde_json::from_value(v).unwrap()
    }

    fn sample_list() -> PodMetricsList {
        list(serde_json::json!({
            "kind": "PodMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": [
                {"metadata": {"name": "a", "namespace": "ns"}, "timestamp": "2024-01-01T00:00:00Z", "window": "15.002s",
                 "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "10Mi"}},
                                {"name": "side", "usage": {"cpu": "1", "memory": "1Mi"}}]},
                {"metadata": {"name": "b"}, "timestamp": "2024-01-01T00:00:05Z", "window": "1m0.5s",
                 "containers": [{"name": "app", "usage": {"memory": "10Mi"}},
                                {"name": "side", "usage": {"cpu": "100m"}}]},
                {"metadata": {"name": "c"}, "timestamp": null, "window": "bogus", "containers": []},
                {"metadata": {"name": "d"}, "window": "500ms",
                 "containers": [{"name": "app", "usage": {"cpu": "2500u"}}]}
            ]
        }))
    }

    #[test]
    fn sums_containers_and_skips_incomplete_pods() {
        let s = pod_samples(&sample_list(), "cpu", None);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "d"]);
        assert_eq!(s["a"].value, 1250);
        assert_eq!(s["a"].window, Duration::from_millis(15_002));
        assert_eq!(s["a"].timestamp, "2024-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        // 2500u = 2.5m, rounded up like MilliValue.
        assert_eq!(s["d"].value, 3);
        assert_eq!(s["d"].timestamp, Timestamp::UNIX_EPOCH);
        assert_eq!(s["d"].window, Duration::from_millis(500));
    }

    #[test]
    fn single_container() {
        let s = pod_samples(&sample_list(), "cpu", Some("side"));
        assert_eq!(s.len(), 2);
        assert_eq!(s["a"].value, 1000);
        assert_eq!(s["b"].value, 100);
        assert_eq!(s["b"].window, Duration::from_millis(60_500));
        let s = pod_samples(&sample_list(), "cpu", Some("app"));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "d"]);
        let s = pod_samples(&sample_list(), "memory", Some("app"));
        assert_eq!(s["b"].value, 10 * 1024 * 1024 * 1000);
    }

    #[test]
    fn windows() {
        assert_eq!(parse_go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(parse_go_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5us"), Some(Duration::from_nanos(1500)));
        assert_eq!(parse_go_duration("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration("."), None);
        assert_eq!(parse_go_duration("99999999999h"), None);
        let c = pod_samples(
            &list(serde_json::json!({"items": [
                {"metadata": {"name": "c"}, "window": "bogus", "containers": [{"name": "x", "usage": {"cpu": "1"}}]},
                {"metadata": {"name": "e"}, "containers": [{"name": "x", "usage": {"cpu": "1"}}]}
            ]})),
            "cpu",
            None,
        );
        assert_eq!(c["c"].window, DEFAULT_METRIC_WINDOW);
        assert_eq!(c["e"].window, Duration::ZERO);
    }
}
