//! The scheduler's Prometheus metrics, named as kube-scheduler names them. They live for
//! the process (a master leads many terms; each term's scheduler adds to the same series)
//! and are registered on the master's `/metrics` by the binary.

use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

pub struct Metrics {
    /// `scheduler_schedule_attempts_total{result, profile}`: scheduled, unschedulable, error.
    pub attempts: IntCounterVec,
    /// `scheduler_scheduling_attempt_duration_seconds{result, profile}`: the algorithm and
    /// the binding.
    pub attempt_duration: HistogramVec,
    /// `scheduler_pending_pods{queue}`: active, backoff.
    pub pending: IntGaugeVec,
}

/// The process's scheduler metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        attempts: IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            ),
            &["result", "profile"],
        )
        .expect("literal metric options"),
        attempt_duration: HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).expect("literal buckets")),
            &["result", "profile"],
        )
        .expect("literal metric options"),
        pending: IntGaugeVec::new(
            Opts::new("scheduler_pending_pods", "Number of pending pods, by the queue type: 'active' means number of pods in activeQ; 'backoff' means number of pods waiting out a backoff."),
            &["queue"],
        )
        .expect("literal metric options"),
    })
}

impl Metrics {
    /// One finished attempt.
    pub fn attempt(&self, result: &str, profile: &str, seconds: f64) {
        self.attempts.with_label_values(&[result, profile]).inc();
        self.attempt_duration.with_label_values(&[result, profile]).observe(seconds);
    }
}

/// The collectors, for a registry.
pub fn collectors() -> Vec<Box<dyn Collector>> {
    let m = metrics();
    vec![Box::new(m.attempts.clone()), Box::new(m.attempt_duration.clone()), Box::new(m.pending.clone())]
}
