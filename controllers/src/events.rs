//! Events a controller reports (`kubectl describe` shows them), sent in the background so
//! a slow or failing Events write never holds up a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Events being sent at once per controller; beyond that an event is dropped (counted in
/// the log), never waited for.
const IN_FLIGHT: usize = 256;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Events {
        let reporter = Reporter { controller: controller.to_string(), instance: None };
        Events {
            recorder: Recorder::new(client, reporter),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        }
    }

    fn send(&self, reference: ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(reason, "too many events in flight; dropped one");
            return;
        };
        let recorder = self.recorder.clone();
        let ev =
            Event { type_, reason: reason.to_string(), note: Some(note), action: action.to_string(), secondary: None };
        tokio::spawn(async move {
            // Bounded: a publish stuck on a deposed leader's API ends with its timeout.
            match tokio::time::timeout(std::time::Duration::from_secs(30), recorder.publish(&ev, &reference)).await {
                Ok(Err(e)) => tracing::debug!(error = %e, reason = %ev.reason, "event not recorded"),
                Err(_) => tracing::debug!(reason = %ev.reason, "event not recorded in 30 s"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }

    pub fn normal(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, EventType::Normal, reason, action, note)
    }

    pub fn warning(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, EventType::Warning, reason, action, note)
    }
}
