//! The controller probe: every so often a ReplicaSet of one replica is created (and an
//! old one deleted), while a watcher records every pod in the namespace with its owner.
//! The controllers run only on the Raft leader, so after a leader fault the first pod made
//! for a ReplicaSet created after the fault says when the controllers act again; and a
//! ReplicaSet ever owning two live pods means two leaders acted at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::Api;
use tokio_util::sync::CancellationToken;

use super::{Endpoints, OP_TIMEOUT};
use crate::history::{Clock, ControllerLog, PodEvent};

/// How many probe ReplicaSets exist at once (older ones are deleted).
const KEEP: usize = 4;
/// How long one create may take before the creator moves to the next master.
const CREATE_TIMEOUT: Duration = Duration::from_secs(1);

fn replica_set(name: &str) -> ReplicaSet {
    let labels = BTreeMap::from([("probe".to_string(), name.to_string())]);
    ReplicaSet {
        metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        spec: Some(ReplicaSetSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("registry.invalid/probe:1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates a ReplicaSet every `every`, on any master that answers.
pub async fn creator(
    namespace: String,
    endpoints: Arc<Endpoints>,
    clock: Clock,
    every: Duration,
    log: Arc<Mutex<ControllerLog>>,
    cancel: CancellationToken,
) {
    let mut n = 0usize;
    let mut made: Vec<String> = Vec::new();
    let mut failed = false;
    loop {
        // After a failure, the next master at once: the first ReplicaSet after a fault
        // should not wait on a dead or paused master.
        let pause = if failed { Duration::from_millis(20) } else { every };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let master = n % endpoints.len();
        let api: Api<ReplicaSet> = Api::namespaced(endpoints.kube[master].clone(), &namespace);
        let name = format!("probe-{n}");
        n += 1;
        let made_it =
            tokio::time::timeout(CREATE_TIMEOUT, api.create(&PostParams::default(), &replica_set(&name))).await;
        failed = !matches!(made_it, Ok(Ok(_)));
        if !failed {
            if let Ok(mut l) = log.lock() {
                l.created.push((name.clone(), 1, clock.now()));
            }
            made.push(name);
        }
        if made.len() > KEEP {
            let old = made.remove(0);
            // Foreground-free delete: the garbage collector removes its pod.
            let _ = tokio::time::timeout(OP_TIMEOUT, api.delete(&old, &DeleteParams::background())).await;
        }
    }
}

fn pod_event(p: &Pod, clock: &Clock, deleted: bool) -> PodEvent {
    let owner = p
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.kind == "ReplicaSet"))
        .map(|r| r.name.clone())
        .unwrap_or_default();
    PodEvent {
        at: clock.now(),
        revision: p.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        pod: p.metadata.name.clone().unwrap_or_default(),
        owner,
        live: !deleted && p.metadata.deletion_timestamp.is_none(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
    }
}

/// Watches the namespace's pods (list, then watch; resume, relist after 410).
pub async fn pod_watcher(
    namespace: String,
    endpoints: Arc<Endpoints>,
    clock: Clock,
    log: Arc<Mutex<ControllerLog>>,
    cancel: CancellationToken,
) {
    let record = |e: PodEvent| {
        if let Ok(mut l) = log.lock() {
            l.pods.push(e);
        }
    };
    let mut cursor: Option<String> = None;
    let mut round = 0usize;
    while !cancel.is_cancelled() {
        round += 1;
        let api: Api<Pod> = Api::namespaced(endpoints.kube[round % endpoints.len()].clone(), &namespace);
        let from = match cursor.clone() {
            Some(c) => c,
            None => match tokio::time::timeout(OP_TIMEOUT, api.list(&ListParams::default())).await {
                Ok(Ok(list)) => {
                    for p in &list.items {
                        record(pod_event(p, &clock, false));
                    }
                    list.metadata.resource_version.unwrap_or_default()
                }
                _ => {
                    pause(&cancel).await;
                    continue;
                }
            },
        };
        cursor = Some(from.clone());
        let stream = match tokio::time::timeout(OP_TIMEOUT, api.watch(&WatchParams::default().timeout(15), &from)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(kube::Error::Api(s))) if s.code == 410 => {
                cursor = None;
                continue;
            }
            _ => {
                pause(&cancel).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                    cursor = p.metadata.resource_version.clone();
                    record(pod_event(&p, &clock, false));
                }
                Some(Ok(WatchEvent::Deleted(p))) => {
                    cursor = p.metadata.resource_version.clone();
                    record(pod_event(&p, &clock, true));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => cursor = Some(b.metadata.resource_version),
                Some(Ok(WatchEvent::Error(e))) => {
                    if e.code == 410 {
                        cursor = None;
                    }
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
    }
}

async fn pause(cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}
