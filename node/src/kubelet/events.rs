//! The kubelet's Events (upstream's event recorder): what `kubectl describe pod` lists —
//! Pulling/Pulled, Created/Started, Killing, Unhealthy, BackOff, the hooks' failures.
//!
//! Recording never slows a pod: events go through a bounded queue to one writer task,
//! which writes them at most `qps` a second (bursts of `burst`; the kubelet's
//! `--event-qps` 50 and `--event-burst` 100, 0 qps for no limit); when the queue is full,
//! events are dropped (and counted), as upstream's broadcaster does. Repeats of one event
//! become a series.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Events waiting to be written, at most.
const QUEUE: usize = 1000;

/// Where the pod workers send events.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl Events {
    /// The handle and the writer for node `node` (to run as a task); the writer ends at
    /// `stop` (what is queued then is dropped).
    pub fn new(
        client: kube::Client,
        node: &str,
        (qps, burst): (f64, u32),
        stop: CancellationToken,
    ) -> (Events, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder::new(client, Reporter { controller: "kubelet".into(), instance: Some(node.into()) });
        let bucket = Bucket::new(qps, burst, Instant::now());
        (Events { tx }, write(recorder, rx, bucket, stop))
    }

    /// Events that go nowhere (tests, and nodes that record none).
    pub fn discard() -> Events {
        let (tx, _) = mpsc::channel(1);
        Events { tx }
    }

    /// Record an event about `pod`, or about its container `container` when given.
    pub fn pod(&self, pod: &Pod, container: Option<&str>, warning: bool, reason: &str, note: String) {
        let reference = reference(pod, container);
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(truncate(note)),
            action: reason.into(),
            secondary: None,
        };
        if self.tx.try_send((reference, ev)).is_err() {
            super::metrics::event_dropped();
        }
    }
}

/// The object an event is about: the pod, with `spec.containers{name}` (or
/// `spec.initContainers{name}`) for one of its containers, as upstream.
pub fn reference(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let field_path = container.map(|name| {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.name == name));
        format!("spec.{}{{{name}}}", if init { "initContainers" } else { "containers" })
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        field_path,
        ..Default::default()
    }
}

/// A note fits an Event's 1 kB.
fn truncate(mut note: String) -> String {
    const MAX: usize = 1024;
    if note.len() > MAX {
        let mut end = MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// A token bucket: [`Bucket::wait`] says how long until the next token.
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(qps: f64, burst: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket { qps: if qps.is_finite() { qps.max(0.0) } else { 0.0 }, burst, tokens: burst, at: now }
    }

    fn wait(&mut self, now: Instant) -> Duration {
        if self.qps == 0.0 {
            return Duration::ZERO;
        }
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.qps).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.qps);
            self.tokens -= 1.0;
            wait
        }
    }
}

async fn write(
    recorder: Recorder,
    mut rx: mpsc::Receiver<(ObjectReference, Event)>,
    mut bucket: Bucket,
    stop: CancellationToken,
) {
    loop {
        let (reference, ev) = tokio::select! {
            () = stop.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let wait = bucket.wait(Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::debug!(reason = %ev.reason, error = %e, "event not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_events_name_their_field_path() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "main"}]}
        }))
        .unwrap();
        assert_eq!(reference(&pod, None).field_path, None);
        assert_eq!(reference(&pod, Some("main")).field_path.as_deref(), Some("spec.containers{main}"));
        assert_eq!(reference(&pod, Some("setup")).field_path.as_deref(), Some("spec.initContainers{setup}"));
        let r = reference(&pod, Some("main"));
        assert_eq!((r.kind.as_deref(), r.namespace.as_deref(), r.uid.as_deref()), (Some("Pod"), Some("ns"), Some("u")));
    }

    #[test]
    fn notes_are_cut_to_a_kilobyte_on_a_character_boundary() {
        assert_eq!(truncate("short".into()), "short");
        let long = "é".repeat(1000);
        let cut = truncate(long);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(50.0, 100, t0);
        for _ in 0..100 {
            assert_eq!(b.wait(t0), Duration::ZERO);
        }
        let w = b.wait(t0);
        assert!(w > Duration::from_millis(15) && w <= Duration::from_millis(20), "{w:?}");
        // A second later, 50 more are allowed.
        let t1 = t0 + Duration::from_secs(1) + w;
        let free = (0..100).take_while(|_| b.wait(t1).is_zero()).count();
        assert!((49..=51).contains(&free), "{free}");
        let mut unlimited = Bucket::new(0.0, 1, t0);
        assert!((0..1000).all(|_| unlimited.wait(t0).is_zero()), "qps 0: no limit");
        let mut nan = Bucket::new(f64::NAN, 0, t0);
        assert!(nan.wait(t0).is_zero());
    }
}
