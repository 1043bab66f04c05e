//! Kubernetes watchers: list, then watch from the list's resourceVersion with bookmarks;
//! resume from the last delivered revision when a stream ends; list again after 410 Gone.
//! Everything received is recorded for the watch checker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::Api;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use super::kube::{etcd_key, revision_of, value_of};
use super::{Endpoints, Target, OP_TIMEOUT};
use crate::history::{Clock, Delivery, Event, WatchLog};

/// One watcher; its log fills `log` until cancelled.
#[allow(clippy::too_many_arguments)]
pub async fn watcher(
    id: u32,
    target: Target,
    namespace: String,
    endpoints: Arc<Endpoints>,
    clock: Clock,
    seed: u64,
    cancel: CancellationToken,
    log: Arc<Mutex<WatchLog>>,
) {
    tracing::debug!(watcher = id, ?target, "watcher starting");
    let mut rng = StdRng::seed_from_u64(seed);
    let record = |d: Delivery| {
        if let Ok(mut l) = log.lock() {
            l.deliveries.push(d);
        }
    };
    // None: must (re)list first.
    let mut cursor: Option<i64> = None;
    while !cancel.is_cancelled() {
        let master = target.pick(&mut rng, endpoints.len());
        let api: Api<ConfigMap> = Api::namespaced(endpoints.kube[master].clone(), &namespace);
        let from = match cursor {
            Some(c) => c,
            None => match tokio::time::timeout(OP_TIMEOUT, api.list(&ListParams::default())).await {
                Ok(Ok(list)) => {
                    let rv = list.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                    record(Delivery::Relisted { at: clock.now(), revision: rv });
                    cursor = Some(rv);
                    rv
                }
                _ => {
                    backoff(&cancel).await;
                    continue;
                }
            },
        };
        // Short server-side timeouts so streams end and resume often.
        let mut wp = WatchParams::default().timeout(15);
        wp.bookmarks = true;
        let stream = match tokio::time::timeout(OP_TIMEOUT, api.watch(&wp, &from.to_string())).await {
            Ok(Ok(s)) => s,
            Ok(Err(kube::Error::Api(s))) if s.code == 410 => {
                record(Delivery::Start { at: clock.now(), from_revision: from, master: Some(master) });
                record(Delivery::Ended { at: clock.now(), error: format!("410 {}", s.message) });
                cursor = None;
                continue;
            }
            _ => {
                backoff(&cancel).await;
                continue;
            }
        };
        record(Delivery::Start { at: clock.now(), from_revision: from, master: Some(master) });
        let mut stream = std::pin::pin!(stream);
        let ended = loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => break "run ended".to_string(),
                n = stream.next() => n,
            };
            match next {
                None => break "stream closed".to_string(),
                Some(Err(e)) => break e.to_string(),
                Some(Ok(WatchEvent::Added(cm) | WatchEvent::Modified(cm))) => {
                    let ev = event(&namespace, &cm, false);
                    cursor = Some(ev.revision);
                    record(Delivery::Events { at: clock.now(), events: vec![ev] });
                }
                Some(Ok(WatchEvent::Deleted(cm))) => {
                    let ev = event(&namespace, &cm, true);
                    cursor = Some(ev.revision);
                    record(Delivery::Events { at: clock.now(), events: vec![ev] });
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    let rv = b.metadata.resource_version.parse().unwrap_or(0);
                    cursor = Some(cursor.unwrap_or(0).max(rv));
                    record(Delivery::Bookmark { at: clock.now(), revision: rv });
                }
                Some(Ok(WatchEvent::Error(e))) => {
                    if e.code == 410 {
                        cursor = None;
                    }
                    break format!("{} {}", e.code, e.message);
                }
            }
        };
        record(Delivery::Ended { at: clock.now(), error: ended });
    }
}

fn event(namespace: &str, cm: &ConfigMap, deleted: bool) -> Event {
    let name = cm.metadata.name.clone().unwrap_or_default();
    Event {
        revision: revision_of(&cm.metadata),
        key: etcd_key(namespace, &name),
        value: if deleted { None } else { value_of(cm) },
    }
}

async fn backoff(cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}
