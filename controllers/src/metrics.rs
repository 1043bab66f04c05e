//! The controllers' Prometheus metrics, under the names controller-runtime gives them
//! (what operator dashboards chart). They live for the process — a master leads many
//! terms and each term's controllers add to the same series — and the binary registers
//! them on the master's `/metrics`.

use std::{sync::OnceLock, time::Duration};

use kube::runtime::controller::Action;
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

pub struct Metrics {
    /// `controller_runtime_reconcile_total{controller, result}`: success, requeue_after, error.
    pub total: IntCounterVec,
    /// `controller_runtime_reconcile_errors_total{controller}`.
    pub errors: IntCounterVec,
    /// `controller_runtime_reconcile_time_seconds{controller}`.
    pub time: HistogramVec,
}

/// The process's controller metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        total: IntCounterVec::new(
            Opts::new("controller_runtime_reconcile_total", "Total number of reconciliations per controller"),
            &["controller", "result"],
        )
        .expect("literal metric options"),
        errors: IntCounterVec::new(
            Opts::new(
                "controller_runtime_reconcile_errors_total",
                "Total number of reconciliation errors per controller",
            ),
            &["controller"],
        )
        .expect("literal metric options"),
        time: HistogramVec::new(
            HistogramOpts::new(
                "controller_runtime_reconcile_time_seconds",
                "Length of time per reconciliation per controller",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).expect("literal buckets")),
            &["controller"],
        )
        .expect("literal metric options"),
    })
}

impl Metrics {
    /// One finished reconcile of `controller`.
    pub fn reconciled<E>(&self, controller: &str, result: &Result<Action, E>, took: Duration) {
        let outcome = match result {
            Ok(a) if *a == Action::await_change() => "success",
            Ok(_) => "requeue_after",
            Err(_) => "error",
        };
        self.total.with_label_values(&[controller, outcome]).inc();
        if result.is_err() {
            self.errors.with_label_values(&[controller]).inc();
        }
        self.time.with_label_values(&[controller]).observe(took.as_secs_f64());
    }
}

/// The collectors, for a registry.
pub fn collectors() -> Vec<Box<dyn Collector>> {
    let m = metrics();
    vec![Box::new(m.total.clone()), Box::new(m.errors.clone()), Box::new(m.time.clone())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_result() {
        let m = metrics();
        let c = "metrics-test";
        m.reconciled::<()>(c, &Ok(Action::await_change()), Duration::from_millis(2));
        m.reconciled::<()>(c, &Ok(Action::requeue(Duration::from_secs(1))), Duration::from_millis(2));
        m.reconciled::<()>(c, &Err(()), Duration::from_millis(2));
        m.reconciled::<()>(c, &Err(()), Duration::from_millis(2));
        assert_eq!(m.total.with_label_values(&[c, "success"]).get(), 1);
        assert_eq!(m.total.with_label_values(&[c, "requeue_after"]).get(), 1);
        assert_eq!(m.total.with_label_values(&[c, "error"]).get(), 2);
        assert_eq!(m.errors.with_label_values(&[c]).get(), 2);
        assert_eq!(m.time.with_label_values(&[c]).get_sample_count(), 4);
    }
}
