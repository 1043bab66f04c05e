//! etcd `Watch`: one bidirectional stream multiplexing many watchers. Each watcher is a
//! store [`Watcher`](crate::watch::Watcher) forwarded by its own task, so a slow client
//! back-pressures its watchers instead of losing events.

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, Etcd};
use crate::keys::KeyRange;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::watch::{WatchRequest, WatchUpdate};

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

struct Running {
    stop: CancellationToken,
    progress: std::sync::Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl Watch for Etcd {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(self.clone().serve_stream(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Etcd {
    async fn serve_stream(self, mut inbound: Streaming<pb::WatchRequest>, tx: Out) {
        let stream_stop = self.store.stopped().child_token();
        let mut watchers: HashMap<i64, Running> = HashMap::new();
        let mut next_id: i64 = 0;
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                _ = stream_stop.cancelled() => break,
                _ = tx.closed() => break,
            };
            let req = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            watchers.retain(|_, w| !w.stop.is_cancelled());
            match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => {
                    let id = if c.watch_id != 0 {
                        c.watch_id
                    } else {
                        while watchers.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    };
                    if watchers.contains_key(&id) || id < 0 {
                        let resp = pb::WatchResponse {
                            header: self.header(self.store.revision()),
                            watch_id: id,
                            created: true,
                            canceled: true,
                            cancel_reason: "etcdserver: duplicate watch ID".into(),
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let running = self.start_watcher(id, c, tx.clone(), stream_stop.child_token()).await;
                    match running {
                        Some(r) => {
                            watchers.insert(id, r);
                        }
                        None => break,
                    }
                }
                Some(RequestUnion::CancelRequest(c)) => {
                    if let Some(w) = watchers.remove(&c.watch_id) {
                        w.stop.cancel();
                        let resp = pb::WatchResponse {
                            header: self.header(self.store.revision()),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(RequestUnion::ProgressRequest(_)) => {
                    if watchers.is_empty() {
                        let resp = pb::WatchResponse {
                            header: self.header(self.store.revision()),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    // Each watcher answers once it has delivered everything up to the
                    // revision it reports.
                    for w in watchers.values() {
                        w.progress.notify_one();
                    }
                }
                None => {}
            }
        }
        stream_stop.cancel();
    }

    /// Send the `created` response and start forwarding. `None`: the client is gone.
    async fn start_watcher(
        &self,
        id: i64,
        c: pb::WatchCreateRequest,
        tx: Out,
        stop: CancellationToken,
    ) -> Option<Running> {
        use pb::watch_create_request::FilterType;
        let req = WatchRequest {
            range: KeyRange { key: c.key, range_end: c.range_end },
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            filter_put: c.filters.contains(&(FilterType::Noput as i32)),
            filter_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let mut watcher = self.store.watch(req);
        let created_rev = if c.start_revision > 0 { self.store.revision() } else { watcher.start_revision() - 1 };
        let created =
            pb::WatchResponse { header: self.header(created_rev), watch_id: id, created: true, ..Default::default() };
        tx.send(Ok(created)).await.ok()?;
        // The store watcher serves progress requests through its own notify.
        let progress = std::sync::Arc::new(tokio::sync::Notify::new());
        let me = self.clone();
        let task_stop = stop.clone();
        let task_progress = progress.clone();
        tokio::spawn(async move {
            loop {
                let update = tokio::select! {
                    u = watcher.next() => u,
                    _ = task_progress.notified() => {
                        watcher.request_progress();
                        continue;
                    }
                    _ = task_stop.cancelled() => return,
                };
                let Some(update) = update else { break };
                let (resp, last) = match update {
                    WatchUpdate::Events { events, revision } => (
                        pb::WatchResponse {
                            header: me.header(revision),
                            watch_id: id,
                            events: events.into_iter().map(convert::event).collect(),
                            ..Default::default()
                        },
                        false,
                    ),
                    WatchUpdate::Progress { revision } => {
                        (pb::WatchResponse { header: me.header(revision), watch_id: id, ..Default::default() }, false)
                    }
                    WatchUpdate::Compacted { compact_revision } => (
                        pb::WatchResponse {
                            header: me.header(me.store.revision()),
                            watch_id: id,
                            canceled: true,
                            compact_revision,
                            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                            ..Default::default()
                        },
                        true,
                    ),
                    WatchUpdate::Failed { reason } => (
                        pb::WatchResponse {
                            header: me.header(me.store.revision()),
                            watch_id: id,
                            canceled: true,
                            cancel_reason: format!("keelson: {reason}"),
                            ..Default::default()
                        },
                        true,
                    ),
                };
                let sent = tokio::select! {
                    r = tx.send(Ok(resp)) => r.is_ok(),
                    _ = task_stop.cancelled() => false,
                };
                if !sent || last {
                    break;
                }
            }
            task_stop.cancel();
        });
        Some(Running { stop, progress })
    }
}
