//! The kubelet's Prometheus metrics, under the kubelet's own names, served at `/metrics`
//! on its HTTPS endpoint (clients with a certificate of the cluster CA, as its other
//! endpoints). One registry per process; the binary may add its own collectors to it.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    /// `kubelet_pod_start_duration_seconds`: from the kubelet first seeing a pod to the
    /// pod running (all its containers started), for pods this kubelet started.
    pub pod_start: prometheus::Histogram,
    /// `kubelet_runtime_operations_total{operation_type}`.
    pub runtime_ops: IntCounterVec,
    /// `kubelet_runtime_operations_errors_total{operation_type}`.
    pub runtime_errors: IntCounterVec,
    /// `kubelet_runtime_operations_duration_seconds{operation_type}`.
    pub runtime_duration: HistogramVec,
    /// `keelson_kubelet_events_dropped_total`: Events dropped because the queue was full.
    pub events_dropped: prometheus::IntCounter,
}

/// The process's kubelet metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        pod_start: prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
                600.0,
            ]),
        )
        .expect("literal metric options"),
        runtime_ops: IntCounterVec::new(
            Opts::new("kubelet_runtime_operations_total", "Cumulative number of runtime operations by operation type."),
            &["operation_type"],
        )
        .expect("literal metric options"),
        runtime_errors: IntCounterVec::new(
            Opts::new(
                "kubelet_runtime_operations_errors_total",
                "Cumulative number of runtime operation errors by operation type.",
            ),
            &["operation_type"],
        )
        .expect("literal metric options"),
        runtime_duration: HistogramVec::new(
            HistogramOpts::new(
                "kubelet_runtime_operations_duration_seconds",
                "Duration in seconds of runtime operations. Broken down by operation type.",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.5, 14).expect("literal buckets")),
            &["operation_type"],
        )
        .expect("literal metric options"),
        events_dropped: prometheus::IntCounter::new(
            "keelson_kubelet_events_dropped_total",
            "Events the kubelet dropped because its queue of events to write was full.",
        )
        .expect("literal metric options"),
    })
}

/// An Event dropped (see [`super::events`]).
pub fn event_dropped() {
    metrics().events_dropped.inc();
}

impl Metrics {
    /// One OCI runtime operation (`run`, `exec`, `kill`, `delete`, `list`, …).
    pub fn runtime_op(&self, operation: &str, took: Duration, ok: bool) {
        self.runtime_ops.with_label_values(&[operation]).inc();
        if !ok {
            self.runtime_errors.with_label_values(&[operation]).inc();
        }
        self.runtime_duration.with_label_values(&[operation]).observe(took.as_secs_f64());
    }
}

/// The registry `/metrics` serves: the kubelet's metrics, and whatever the binary adds.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let r = Registry::new();
        let m = metrics();
        let collectors: [Box<dyn prometheus::core::Collector>; 5] = [
            Box::new(m.pod_start.clone()),
            Box::new(m.runtime_ops.clone()),
            Box::new(m.runtime_errors.clone()),
            Box::new(m.runtime_duration.clone()),
            Box::new(m.events_dropped.clone()),
        ];
        for c in collectors {
            // Distinct literal names: registering cannot collide.
            let _ = r.register(c);
        }
        r
    })
}

/// `/metrics` in the Prometheus text format.
pub fn render() -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry().gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_operations_and_pod_starts_are_rendered() {
        let m = metrics();
        m.runtime_op("run", Duration::from_millis(30), true);
        m.runtime_op("kill", Duration::from_millis(3), false);
        m.pod_start.observe(0.4);
        let text = render().unwrap();
        assert!(text.contains("kubelet_runtime_operations_total{operation_type=\"run\"}"), "{text}");
        assert!(text.contains("kubelet_runtime_operations_errors_total{operation_type=\"kill\"} 1"), "{text}");
        assert!(text.contains("kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"run\""), "{text}");
        assert!(text.contains("kubelet_pod_start_duration_seconds_count"), "{text}");
    }
}
