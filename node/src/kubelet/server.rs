//! The kubelet's HTTPS endpoint (the port the Node reports in `daemonEndpoints`), which
//! the API server's `pods/log` proxies to: `GET /containerLogs/{ns}/{pod}/{container}`
//! (follow, tailLines, sinceSeconds/sinceTime, timestamps, previous, limitBytes) and
//! `/healthz`. Clients must present a certificate from the cluster CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::logs::{self, LogOptions};
use super::pod::{container, Shared};
use crate::simulate::KubeletTls;

type Body = BoxBody<Bytes, Infallible>;

const FOLLOW_POLL: Duration = Duration::from_millis(100);

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pub port: u16,
}

impl Server {
    pub async fn bind(addr: SocketAddr, tls: &KubeletTls) -> Result<Server, String> {
        let cfg = crate::simulate::kubelet_server::tls_config(tls)?;
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        Ok(Server { listener, acceptor: TlsAcceptor::from(Arc::new(cfg)), port })
    }

    pub async fn serve(self, shared: Arc<Shared>, stop: CancellationToken) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                r = self.listener.accept() => r,
            };
            while conns.try_join_next().is_some() {}
            let Ok((tcp, peer)) = accepted else { continue };
            let (acceptor, shared, stop) = (self.acceptor.clone(), shared.clone(), stop.clone());
            conns.spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    _ => {
                        tracing::debug!(%peer, "kubelet endpoint: TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    let stop = stop.clone();
                    async move { Ok::<_, Infallible>(respond(&shared, &req, stop).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended with an error");
                }
            });
        }
        conns.shutdown().await;
    }
}

async fn respond(shared: &Shared, req: &Request<hyper::body::Incoming>, stop: CancellationToken) -> Response<Body> {
    if req.method() != Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return full(StatusCode::OK, "ok");
    }
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return full(StatusCode::NOT_FOUND, format!("{path}: not found\n"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [ns, pod, name] = parts[..] else {
        return full(StatusCode::BAD_REQUEST, "expected /containerLogs/{namespace}/{pod}/{container}\n");
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with('.')
    };
    if !(label(ns) && label(pod) && label(name)) {
        return full(StatusCode::BAD_REQUEST, "namespace, pod and container must be DNS names\n");
    }
    let opts = match LogOptions::parse(req.uri().query().unwrap_or_default(), jiff::Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return full(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some(uid) = shared.uid_of(ns, pod) else {
        return full(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} is not on this node\n"));
    };
    let dir = shared.cfg.pods_dir().join(&uid);
    let Some(record) = container::load(&dir, name) else {
        return full(StatusCode::BAD_REQUEST, format!("container {name:?} in pod {pod:?} is waiting to start\n"));
    };
    let attempt = if opts.previous {
        match record.attempt.checked_sub(1) {
            Some(a) => a,
            None => {
                return full(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {name:?} in pod {pod:?} not found\n"),
                )
            }
        }
    } else {
        record.attempt
    };
    let files = container::instance(&dir, name, attempt);
    let content = std::fs::read(&files.log).unwrap_or_default();
    let complete = content.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let first = logs::render(&content[..complete], &opts);
    let ended = crate::kubelet::runtime::shim::read_exit(&files.exit_file()).is_some();
    if !opts.follow || opts.previous || ended {
        return full(StatusCode::OK, first);
    }
    // Follow: what is there, then new whole lines until the instance ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let mut offset = complete;
        let line_opts = LogOptions { timestamps: opts.timestamps, ..Default::default() };
        loop {
            let ended = crate::kubelet::runtime::shim::read_exit(&files.exit_file()).is_some();
            let content = std::fs::read(&files.log).unwrap_or_default();
            if content.len() > offset {
                let new = &content[offset..];
                let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                if whole > 0 {
                    let out = logs::render(&new[..whole], &line_opts);
                    offset += whole;
                    if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                        return;
                    }
                }
            }
            if ended {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
