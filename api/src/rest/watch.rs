//! watch: newline-delimited JSON events over a chunked (HTTP/1.1) or streamed (HTTP/2)
//! body. From "now" (resourceVersion unset or "0": synthetic ADDED events for the current
//! state first) or strictly after a resourceVersion; 410 Expired as an ERROR event when
//! that is compacted away; bookmarks; sendInitialEvents; timeoutSeconds; selectors with
//! ADDED/DELETED on objects entering and leaving the selection.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use keelson_store::{EventKind, WatchRequest, WatchUpdate};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::Ctx;
use crate::selector::{FieldSelector, LabelSelector};
use crate::serve::{Body, Output};
use crate::status::ApiError;
use crate::storage::{self, parse_rv, Freshness};

struct Encoder {
    api: std::sync::Arc<crate::serve::Api>,
    def: std::sync::Arc<crate::resources::ResourceDef>,
    output: Output,
    first_table: bool,
    /// `group/version/plural`, naming shared lines ([`super::watch_lines`]).
    resource: std::sync::Arc<str>,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        if kind != "BOOKMARK" && kind != "ERROR" {
            self.api.metrics.watch_event(&self.def.group, &self.def.version, &self.def.kind);
        }
        let object = match self.output {
            Output::Table if kind != "BOOKMARK" && kind != "ERROR" => {
                let rv = crate::meta::resource_version(&obj).unwrap_or("").to_string();
                let t = crate::table::table(
                    &self.def,
                    std::slice::from_ref(&obj),
                    json!({"resourceVersion": rv}),
                    self.first_table,
                );
                self.first_table = false;
                t
            }
            Output::Metadata if kind != "BOOKMARK" && kind != "ERROR" => {
                crate::meta::partial_object_metadata(&self.def.served(obj))
            }
            _ if kind != "BOOKMARK" && kind != "ERROR" => self.def.served(obj),
            _ => obj,
        };
        line(kind, &object)
    }

    /// The event a store event is for a watch with no selector and JSON output, encoded
    /// once for every such watcher of this master. The same events as [`translate`]
    /// gives with a selector that matches everything.
    fn shared(&self, ev: &keelson_store::Event) -> Option<Bytes> {
        let kind = match ev.kind {
            EventKind::Put if ev.prev_kv.is_some() => "MODIFIED",
            EventKind::Put => "ADDED",
            EventKind::Delete => {
                ev.prev_kv.as_ref()?;
                "DELETED"
            }
        };
        let rev = ev.kv.mod_revision;
        let line = self.api.watch_lines.get_or_encode(&self.resource, &ev.kv.key, rev, kind, || {
            let obj = match ev.kind {
                EventKind::Put => storage::decode(&ev.kv).ok()?,
                EventKind::Delete => {
                    let mut p = storage::decode(ev.prev_kv.as_ref()?).ok()?;
                    crate::meta::set_resource_version(&mut p, rev);
                    p
                }
            };
            Some(line(kind, &self.def.served(with_type_meta(&self.def, obj))))
        })?;
        self.api.metrics.watch_event(&self.def.group, &self.def.version, &self.def.kind);
        Some(line)
    }

    fn bookmark(&mut self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        self.event("BOOKMARK", obj)
    }
}

/// `{"type": kind, "object": object}` and a newline.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn with_type_meta(ctx_def: &crate::resources::ResourceDef, mut o: Value) -> Value {
    if let Some(m) = o.as_object_mut() {
        m.entry("kind").or_insert_with(|| json!(ctx_def.kind));
        m.entry("apiVersion").or_insert_with(|| json!(ctx_def.api_version()));
    }
    o
}

pub async fn watch(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = ctx.selectors()?;
    let q = &ctx.query;
    let rv = q.resource_version.clone();
    let send_initial = match q.send_initial_events {
        Some(true) => {
            if !q.allow_watch_bookmarks || q.resource_version_match.as_deref() != Some("NotOlderThan") {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    vec![("sendInitialEvents".into(), "FieldValueForbidden".into(), "Forbidden: sendInitialEvents is allowed only with allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan".into())],
                ));
            }
            true
        }
        Some(false) => false,
        None => matches!(rv.as_deref(), None | Some("0")),
    };
    // Where the initial state comes from, and the revision the live stream starts after.
    let initial_freshness = match rv.as_deref() {
        None => Freshness::Latest,
        Some("0") => Freshness::Any,
        Some(n) => Freshness::NotOlderThan(parse_rv(n)?),
    };
    let after: Option<i64> = match rv.as_deref() {
        None | Some("0") => None,
        Some(n) => Some(parse_rv(n)?),
    };
    let timeout = match q.timeout_seconds {
        Some(s) => Duration::from_secs(s.max(1)),
        None => Duration::from_secs(1800 + rand::thread_rng().gen_range(0..1800)),
    };
    let prefix = storage::list_prefix(&ctx.def, ctx.namespace());
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let stop = ctx.api.stop.clone();
    let bookmarks = q.allow_watch_bookmarks;
    let store = ctx.api.store.clone();
    let resource = format!("{}/{}/{}", ctx.def.group, ctx.def.version, ctx.def.plural).into();
    let mut enc =
        Encoder { api: ctx.api.clone(), def: ctx.def.clone(), output: ctx.output, first_table: true, resource };
    let shared = labels.is_empty() && fields.is_empty() && ctx.output == Output::Json;
    let def = ctx.def.clone();
    let explicit_initial = q.send_initial_events == Some(true);

    // Initial state, before the response starts (errors become a Status reply).
    let mut initial = Vec::new();
    let start_after: i64 = if send_initial {
        let keep = |o: &Value| labels.matches(o) && fields.matches(o);
        let page = storage::list(&store, &prefix, initial_freshness, None, None, &keep, true).await?;
        initial = page.items;
        page.revision
    } else {
        match after {
            Some(n) => n,
            None => store.revision(),
        }
    };
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(b).await.is_ok() }
        };
        for o in initial {
            if !send(enc.event("ADDED", with_type_meta(&def, o))).await {
                return;
            }
        }
        // sendInitialEvents=true: a bookmark marks the end of the initial state.
        if explicit_initial && !send(enc.bookmark(start_after, true)).await {
            return;
        }
        let mut watcher = store.watch(WatchRequest {
            range: keelson_store::KeyRange::prefix(prefix.clone().into_bytes()),
            start_revision: start_after + 1,
            prev_kv: true,
            progress_notify: bookmarks,
            ..Default::default()
        });
        let _counted = enc.api.metrics.watcher();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let update = tokio::select! {
                _ = &mut deadline => return,
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                u = watcher.next() => u,
            };
            let Some(update) = update else { return };
            match update {
                WatchUpdate::Events { events, .. } => {
                    for ev in events {
                        if shared {
                            if let Some(line) = enc.shared(&ev) {
                                if !send(line).await {
                                    return;
                                }
                            }
                            continue;
                        }
                        for (kind, obj) in translate(&ev, &labels, &fields) {
                            if !send(enc.event(kind, with_type_meta(&def, obj))).await {
                                return;
                            }
                        }
                    }
                }
                WatchUpdate::Progress { revision } => {
                    if bookmarks && !send(enc.bookmark(revision, false)).await {
                        return;
                    }
                }
                WatchUpdate::Compacted { compact_revision } => {
                    let e = ApiError::gone(format!("too old resource version: {start_after} ({compact_revision})"));
                    let _ = send(enc.event("ERROR", e.to_value())).await;
                    return;
                }
                WatchUpdate::Failed { reason } => {
                    let e = ApiError::internal(format!("watch failed: {reason}"));
                    let _ = send(enc.event("ERROR", e.to_value())).await;
                    return;
                }
            }
        }
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let ct =
        if ctx.output == Output::Table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

/// The Kubernetes watch events one store event produces under a selection.
fn translate(ev: &keelson_store::Event, labels: &LabelSelector, fields: &FieldSelector) -> Vec<(&'static str, Value)> {
    let sel = |o: &Value| labels.matches(o) && fields.matches(o);
    let prev = ev.prev_kv.as_ref().and_then(|kv| storage::decode(kv).ok());
    match ev.kind {
        EventKind::Put => {
            let Ok(obj) = storage::decode(&ev.kv) else { return vec![] };
            let now = sel(&obj);
            let before = prev.as_ref().is_some_and(sel);
            match (prev.is_some() && before, now) {
                (true, true) => vec![("MODIFIED", obj)],
                (false, true) => vec![("ADDED", obj)],
                (true, false) => vec![("DELETED", obj)],
                (false, false) => vec![],
            }
        }
        EventKind::Delete => match prev {
            Some(mut p) if sel(&p) => {
                crate::meta::set_resource_version(&mut p, ev.kv.mod_revision);
                vec![("DELETED", p)]
            }
            _ => vec![],
        },
    }
}
