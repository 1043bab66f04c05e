//! Placing a pod: decide, assume it onto the node, bind in the background; and what to do
//! when a binding finishes.

use std::{sync::Arc, time::Instant};

use tokio::task::JoinError;
use tracing::Instrument;

use super::{BindOutcome, Scheduler, ASSUME_TTL};
use crate::{binder::BindError, metrics::metrics, plugins::volume_binding, pod_info::PodInfo, queue::Popped, trace};

impl Scheduler {
    pub(super) fn schedule_one(&mut self, popped: Popped, now: Instant) {
        let pod = popped.info;
        let started = Instant::now();
        if !pod.claims.is_empty() && self.waits_for_volume_watches(now) {
            self.queue.unschedulable(&pod.key, now);
            return;
        }
        // The decision and its binding: a span in the trace of the pod's last write.
        let span = tracing::info_span!(
            target: trace::TARGET,
            "scheduler.schedule",
            otel.name = "schedule pod",
            k8s.namespace.name = %pod.namespace,
            k8s.pod.name = %pod.name,
            k8s.pod.uid = %pod.uid,
            k8s.node.name = tracing::field::Empty,
            scheduler.attempts = popped.attempts,
            scheduler.result = tracing::field::Empty,
        );
        self.cfg.write_traces.tie(&span, Some(&pod.resource_version));
        match self.algorithm.schedule(&pod, &self.snapshot) {
            Ok(placement) => {
                span.record("k8s.node.name", placement.node.as_str());
                tracing::debug!(
                    pod = %pod.key,
                    node = %placement.node,
                    attempts = popped.attempts,
                    evaluated = placement.evaluated,
                    feasible = placement.feasible,
                    micros = started.elapsed().as_micros() as u64,
                    "pod placed; binding"
                );
                self.snapshot.assume(&pod, &placement.node);
                // VolumeBinding's Reserve: the chosen node for the pod's unbound claims.
                let claims = match volume_binding::pre_filter(&pod, &self.snapshot.volumes) {
                    Ok(Some(state)) => volume_binding::claims_to_select(&state, &placement.node),
                    _ => Vec::new(),
                };
                for c in &claims {
                    self.snapshot.volumes.assume_selected_node(c, &placement.node);
                }
                self.spawn_bind(pod, placement.node, claims, span, started);
            }
            Err(fit) => {
                let message = fit.message();
                self.stats.unschedulable += 1;
                span.record("scheduler.result", "unschedulable");
                metrics().attempt("unschedulable", &self.cfg.scheduler_name, started.elapsed().as_secs_f64());
                tracing::debug!(pod = %pod.key, attempts = popped.attempts, %message, "pod unschedulable");
                self.queue.unschedulable(&pod.key, now);
                // Its condition write joins the trace: the pod's next attempt continues it.
                let _in = span.enter();
                self.reporter.failed(&pod, "Unschedulable", &message);
            }
        }
    }

    fn spawn_bind(
        &mut self,
        pod: Arc<PodInfo>,
        node: String,
        claims: Vec<String>,
        span: tracing::Span,
        started: Instant,
    ) {
        let client = self.client.clone();
        let (p, n, cs) = (pod.clone(), node.clone(), claims.clone());
        let profile = self.cfg.scheduler_name.clone();
        let handle = self.binds.spawn(
            async move {
                // VolumeBinding's PreBind: the claims name the node before the pod does.
                let mut result = Ok(());
                for key in &cs {
                    let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
                    result = crate::binder::select_node(client.clone(), &p.namespace, name, &n).await;
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_ok() {
                    // The kubelet continues this trace from the pod's annotation.
                    let tp = trace::traceparent(&tracing::Span::current());
                    result = crate::binder::bind(client, &p.namespace, &p.name, &p.uid, &n, tp.as_deref()).await;
                }
                let outcome = match &result {
                    Ok(()) => "scheduled",
                    // A pod bound or deleted meanwhile is not the scheduler's error.
                    Err(BindError::Conflict(_) | BindError::NotFound(_)) => "conflict",
                    Err(_) => "error",
                };
                tracing::Span::current().record("scheduler.result", outcome);
                if outcome != "conflict" {
                    metrics().attempt(outcome, &profile, started.elapsed().as_secs_f64());
                }
                BindOutcome { pod: p, node: n, claims: cs, result, span: tracing::Span::current() }
            }
            .instrument(span),
        );
        self.bind_tasks.insert(handle.id(), (pod, node, claims));
    }

    pub(super) fn on_bind_joined(&mut self, joined: Result<(tokio::task::Id, BindOutcome), JoinError>, now: Instant) {
        let outcome = match joined {
            Ok((id, outcome)) => {
                self.bind_tasks.remove(&id);
                outcome
            }
            Err(e) => {
                let Some((pod, node, claims)) = self.bind_tasks.remove(&e.id()) else { return };
                let result = Err(BindError::Other(format!("binding task failed: {e}")));
                BindOutcome { pod, node, claims, result, span: tracing::Span::none() }
            }
        };
        self.on_bound(outcome, now);
    }

    fn on_bound(&mut self, BindOutcome { pod, node, claims, result, span }: BindOutcome, now: Instant) {
        let key = &pod.key;
        // The reports (event, condition) are the decision's: in its span.
        let _in = span.enter();
        if result.is_err() {
            for c in &claims {
                self.snapshot.volumes.forget_selected_node(c, &node);
            }
        }
        // The queue entry may by now belong to a pod of the same name.
        let ours = self.queue.get(key).is_some_and(|p| p.uid == pod.uid);
        match result {
            Ok(()) => {
                self.stats.scheduled += 1;
                self.snapshot.finish_binding(key, &pod.uid, now + ASSUME_TTL);
                if ours {
                    self.queue.remove(key);
                }
                self.reporter.scheduled(&pod, &node);
            }
            Err(e @ (BindError::Conflict(_) | BindError::NotFound(_))) => {
                tracing::debug!(pod = %key, %node, error = %e, "binding refused; dropping the pod");
                if self.snapshot.forget(key, &pod.uid) {
                    self.queue.cluster_event(now);
                }
                if ours {
                    self.queue.remove(key);
                    self.reporter.forget(key);
                }
            }
            Err(e) => {
                self.stats.bind_failures += 1;
                tracing::warn!(pod = %key, %node, error = %e, "binding failed; retrying");
                if self.snapshot.forget(key, &pod.uid) {
                    self.queue.cluster_event(now);
                }
                if ours && self.queue.is_in_flight(key) {
                    self.queue.unschedulable(key, now);
                    self.reporter.failed(&pod, "SchedulerError", &format!("binding rejected: {e}"));
                }
            }
        }
    }
}
