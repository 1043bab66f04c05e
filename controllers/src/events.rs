//! Events a controller reports (`kubectl describe` shows them), sent in the background so
//! a slow or failing Events write never holds up a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Events {
        let reporter = Reporter { controller: controller.to_string(), instance: None };
        Events { recorder: Recorder::new(client, reporter) }
    }

    fn send(&self, reference: ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let recorder = self.recorder.clone();
        let ev =
            Event { type_, reason: reason.to_string(), note: Some(note), action: action.to_string(), secondary: None };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, reason = %ev.reason, "event not recorded");
            }
        });
    }

    pub fn normal(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, EventType::Normal, reason, action, note)
    }

    pub fn warning(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, EventType::Warning, reason, action, note)
    }
}
