//! A pod's start, traced and timed: from the worker first seeing the pod to its phase
//! leaving Pending. The passes in between run in one `kubelet.start_pod` span — the child
//! of the scheduler's bind when the pod carries its `traceparent` (the Binding's
//! annotation) — so the sandbox's CNI ADD, the image pull, the runtime's `run` and the
//! status writes join the trace of the `kubectl` request that made the pod. The same
//! interval, for pods this kubelet started, is `kubelet_pod_start_duration_seconds`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keelson_scheduler::trace::{self, TARGET};
use tokio::time::Instant;

/// A start still not done after this ends its span (an image that never pulls).
const SPAN_LIMIT: Duration = Duration::from_secs(300);

pub struct StartTrace {
    span: Option<tracing::Span>,
    seen: Instant,
    /// This worker started a container (an adopted, already running pod is not timed).
    started_container: bool,
    done: bool,
}

impl StartTrace {
    pub fn new() -> StartTrace {
        StartTrace { span: None, seen: Instant::now(), started_container: false, done: false }
    }

    /// The span this pass of `pod` runs in while it starts; `None` once started (or for a
    /// pod already past Pending when first seen: adopted after a kubelet restart).
    pub fn span_for(&mut self, pod: &Pod) -> Option<tracing::Span> {
        if self.done {
            return None;
        }
        if self.span.is_none() {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase != "Pending" {
                self.done = true;
                return None;
            }
            let meta = &pod.metadata;
            let span = tracing::info_span!(
                target: TARGET,
                "kubelet.start_pod",
                otel.name = "start pod",
                k8s.namespace.name = meta.namespace.as_deref().unwrap_or_default(),
                k8s.pod.name = meta.name.as_deref().unwrap_or_default(),
                k8s.pod.uid = meta.uid.as_deref().unwrap_or_default(),
                k8s.node.name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default(),
            );
            let carried = meta.annotations.as_ref().and_then(|a| a.get(trace::ANN_TRACEPARENT));
            if !carried.is_some_and(|tp| trace::adopt_traceparent(&span, tp)) {
                // A trace of its own, not a child of the worker's long-lived span.
                trace::WriteTraces::default().tie(&span, None);
            }
            self.span = Some(span);
        }
        self.span.clone()
    }

    /// This worker started one of the pod's containers.
    pub fn container_started(&mut self) {
        self.started_container = true;
    }

    /// The phase a pass ended in: out of Pending, the start is done (timed, and its span
    /// ended); a start that takes too long ends its span untimed.
    pub fn observe_phase(&mut self, phase: &str) {
        if self.done {
            return;
        }
        if phase != "Pending" {
            if self.started_container {
                super::super::metrics::metrics().pod_start.observe(self.seen.elapsed().as_secs_f64());
            }
            self.finish();
        } else if self.seen.elapsed() > SPAN_LIMIT {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.span = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        if let Some(ph) = phase {
            p.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some(ph.into()), ..Default::default() });
        }
        p
    }

    #[test]
    fn a_start_is_timed_once_when_the_pod_leaves_pending() {
        let before = super::super::super::metrics::metrics().pod_start.get_sample_count();
        let mut s = StartTrace::new();
        assert!(s.span_for(&pod(None)).is_some());
        s.observe_phase("Pending");
        assert!(s.span_for(&pod(Some("Pending"))).is_some(), "still starting");
        s.container_started();
        s.observe_phase("Running");
        assert!(s.span_for(&pod(Some("Running"))).is_none(), "started: no more start span");
        s.observe_phase("Running");
        let after = super::super::super::metrics::metrics().pod_start.get_sample_count();
        assert!(after > before, "the start was timed");
    }

    #[test]
    fn an_adopted_running_pod_is_neither_traced_nor_timed() {
        let mut s = StartTrace::new();
        assert!(s.span_for(&pod(Some("Running"))).is_none());
        s.observe_phase("Running");
        assert!(s.done && !s.started_container);
    }
}
