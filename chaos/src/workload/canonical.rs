//! The canonical event log: a watch on the etcd endpoint over the workload's prefixes,
//! started before the first write, resumed on another master when a stream breaks, and
//! never compacted past (the compactor reads its progress). Plus the compactor.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keelson_store::keys::prefix_end;
use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::watch_client::WatchClient;
use keelson_store::pb::etcdserverpb::watch_request::RequestUnion;
use keelson_store::pb::etcdserverpb::{CompactionRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use keelson_store::pb::mvccpb::event::EventType;
use tokio_util::sync::CancellationToken;

use super::{Endpoints, OP_TIMEOUT};
use crate::history::{Event, OpKind, Outcome};
use crate::workload::recorder::Recorder;

/// One prefix's log and how far it has got.
pub struct Canonical {
    pub prefix: String,
    pub events: Mutex<Vec<Event>>,
    /// The highest revision delivered (or reported by a progress header).
    pub progress: AtomicI64,
}

impl Canonical {
    pub fn new(prefix: &str, from: i64) -> Arc<Canonical> {
        Arc::new(Canonical {
            prefix: prefix.to_string(),
            events: Mutex::new(Vec::new()),
            progress: AtomicI64::new(from),
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// How a stored value reads in the history: a ConfigMap's `data.v`, or the raw value.
fn decode(key: &str, value: &[u8]) -> Option<String> {
    if key.starts_with("/registry/") {
        let obj: serde_json::Value = serde_json::from_slice(value).ok()?;
        return obj.get("data").and_then(|d| d.get("v")).and_then(|v| v.as_str()).map(str::to_string);
    }
    Some(String::from_utf8_lossy(value).into_owned())
}

/// Runs until cancelled, rotating masters when a stream breaks.
pub async fn watch(log: Arc<Canonical>, endpoints: Arc<Endpoints>, cancel: CancellationToken) {
    let mut master = 0usize;
    let key = log.prefix.clone().into_bytes();
    while !cancel.is_cancelled() {
        master = (master + 1) % endpoints.len();
        let from = log.progress.load(Ordering::SeqCst) + 1;
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.clone(),
                range_end: prefix_end(&key),
                start_revision: from,
                progress_notify: true,
                ..Default::default()
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        if tx.send(create).await.is_err() {
            return;
        }
        let mut client = WatchClient::new(endpoints.etcd[master].clone());
        let started =
            tokio::time::timeout(OP_TIMEOUT, client.watch(tokio_stream::wrappers::ReceiverStream::new(rx))).await;
        let mut stream = match started {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                pause(&cancel).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = stream.next() => n,
            };
            let resp = match next {
                Some(Ok(r)) => r,
                _ => break,
            };
            if resp.canceled || resp.compact_revision > 0 {
                tracing::error!(prefix = %log.prefix, compact_revision = resp.compact_revision, reason = %resp.cancel_reason, "canonical watch cancelled");
                break;
            }
            let mut last = None;
            if let Ok(mut events) = log.events.lock() {
                for ev in &resp.events {
                    let Some(kv) = ev.kv.as_ref() else { continue };
                    let k = String::from_utf8_lossy(&kv.key).into_owned();
                    let value = if ev.r#type == EventType::Delete as i32 { None } else { decode(&k, &kv.value) };
                    events.push(Event { revision: kv.mod_revision, key: k, value });
                    last = Some(kv.mod_revision);
                }
            }
            if let Some(rev) = last {
                log.progress.fetch_max(rev, Ordering::SeqCst);
            } else if resp.events.is_empty() && !resp.created {
                // A progress notification: everything up to the header's revision is here.
                if let Some(h) = resp.header {
                    log.progress.fetch_max(h.revision, Ordering::SeqCst);
                }
            }
        }
        drop(tx);
        pause(&cancel).await;
    }
}

/// Compacts every `every`, to at most `keep` revisions behind the head and never past
/// what the canonical watchers have received.
pub async fn compactor(
    logs: Vec<Arc<Canonical>>,
    endpoints: Arc<Endpoints>,
    recorder: Recorder,
    every: Duration,
    keep: i64,
    cancel: CancellationToken,
) {
    let mut compacted = 0i64;
    let mut round = 0usize;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        round += 1;
        let master = round % endpoints.len();
        let mut kv = KvClient::new(endpoints.etcd[master].clone());
        let head = RangeRequest { key: b"/".to_vec(), count_only: true, ..Default::default() };
        let Ok(Ok(resp)) = tokio::time::timeout(OP_TIMEOUT, kv.range(head)).await else { continue };
        let head = resp.into_inner().header.map(|h| h.revision).unwrap_or(0);
        let floor = logs.iter().map(|l| l.progress.load(Ordering::SeqCst)).min().unwrap_or(0);
        let target = (head - keep).min(floor);
        if target <= compacted {
            continue;
        }
        let pending = recorder.invoke(u32::MAX, Some(master), OpKind::Compact { revision: target });
        let req = CompactionRequest { revision: target, physical: false };
        let outcome = match tokio::time::timeout(OP_TIMEOUT, kv.compact(req)).await {
            Ok(Ok(r)) => {
                compacted = target;
                Outcome::Ok { revision: r.into_inner().header.map(|h| h.revision).unwrap_or(0), value: None }
            }
            Ok(Err(s)) => Outcome::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
            Err(_) => Outcome::Unknown { error: format!("no answer within {OP_TIMEOUT:?}") },
        };
        tracing::debug!(revision = target, ?outcome, "compaction");
        pending.finish(outcome);
    }
}

async fn pause(cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}
