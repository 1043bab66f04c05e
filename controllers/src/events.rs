//! Events a controller reports (`kubectl describe` shows them), sent in the background so
//! a slow or failing Events write never holds up a reconcile.
//!
//! Written as events.k8s.io/v1 Events the way client-go's `tools/events` recorder writes
//! them: a repeat of the same event (same type, reason, action, object *and note*) within
//! six minutes becomes a series on the first one; a different note is a new Event.
//! (kube-runtime's `Recorder` leaves the note out of that key, so "New size: 5" would be
//! folded into an earlier "New size: 4".)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Events being sent at once per controller; beyond that an event is dropped (counted in
/// the log), never waited for.
const IN_FLIGHT: usize = 256;
/// How long a sent event is remembered for folding repeats into a series (client-go's).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// Most events remembered per controller (the oldest are forgotten first).
const MAX_REMEMBERED: usize = 4096;
/// A write of an event stuck on a deposed leader's API ends after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    note: String,
}

#[derive(Debug, Clone)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    controller: String,
    slots: Arc<tokio::sync::Semaphore>,
    sent: Arc<Mutex<HashMap<Key, Sent>>>,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Events {
        Events {
            client,
            controller: controller.to_string(),
            slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            sent: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn send(&self, reference: ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(reason, "too many events in flight; dropped one");
            return;
        };
        let key = Key {
            warning,
            reason: reason.to_string(),
            action: action.to_string(),
            regarding: (
                reference.kind.clone(),
                reference.namespace.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ),
            note: note.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(WRITE_TIMEOUT, this.publish(key, reference, note)).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "event not recorded"),
                Err(_) => tracing::debug!("event not recorded in 30 s"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }

    /// A new Event, or one more in the series of the same event sent lately.
    async fn publish(&self, key: Key, reference: ObjectReference, note: String) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let repeat = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            sent.retain(|_, s| s.at.elapsed() < SERIES_TTL);
            sent.get_mut(&key).map(|s| {
                s.count += 1;
                s.at = Instant::now();
                s.clone()
            })
        };
        if let Some(s) = repeat {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &s.namespace);
            let patch = json!({"series": EventSeries { count: s.count, last_observed_time: MicroTime(now) }});
            match api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // The first one is gone (expired): start over with a new Event.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = reference.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", reference.name.as_deref().unwrap_or(&self.controller), now.as_nanosecond());
        let ev = Event {
            metadata: ObjectMeta { namespace: Some(namespace.clone()), name: Some(name.clone()), ..Default::default() },
            action: Some(key.action.clone()),
            reason: Some(key.reason.clone()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.controller.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &ev).await?;
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.len() >= MAX_REMEMBERED {
            if let Some(oldest) = sent.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| k.clone()) {
                sent.remove(&oldest);
            }
        }
        sent.insert(key, Sent { namespace, name, count: 1, at: Instant::now() });
        Ok(())
    }

    pub fn normal(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, false, reason, action, note)
    }

    pub fn warning(&self, reference: ObjectReference, reason: &str, action: &str, note: String) {
        self.send(reference, true, reason, action, note)
    }
}
