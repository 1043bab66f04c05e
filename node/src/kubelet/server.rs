//! The kubelet's HTTPS endpoint (the port the Node reports in `daemonEndpoints`), which
//! the API server proxies `pods/log`, `exec`, `attach` and `portforward` to:
//!
//! - `GET /containerLogs/{ns}/{pod}/{container}` (follow, tailLines, sinceSeconds/sinceTime,
//!   timestamps, previous, limitBytes);
//! - `GET|POST /exec/{ns}/{pod}/{container}?command=…&stdin=…&stdout=…&stderr=…&tty=…` and
//!   `/attach/{ns}/{pod}/{container}?…`, upgraded to WebSocket or SPDY/3.1 ([`stream`]);
//! - `GET|POST /portForward/{ns}/{pod}` (WebSocket: `?ports=…`), upgraded likewise;
//! - `/metrics` (the agent's own) and `/metrics/resource` (node and container usage from
//!   cgroups, for the resource metrics API);
//! - `/healthz`.
//!
//! Clients must present a certificate from the cluster CA.
//!
//! [`stream`]: super::stream

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::logs::{self, LogOptions, Tail};
use super::pod::{container, sandbox, Shared};
use super::runtime::{shim, InstanceFiles, Runtime};
use super::stream::{attach, exec, portforward, spdy, websocket, Options, Outcome, Session};
use crate::simulate::KubeletTls;

type Body = BoxBody<Bytes, Infallible>;
type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// A refused upgrade, as a `metav1.Status`: clients decode a failed upgrade's body as one
/// (client-go reads plain text as YAML, and `a: b` text becomes an empty Status).
fn refuse(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        _ => "BadRequest",
    };
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = full(code, status.to_string());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
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
                    async move {
                        if req.uri().path() == "/metrics/resource" {
                            return Ok::<_, Infallible>(resource_metrics(&shared, req.method()).await);
                        }
                        Ok::<_, Infallible>(respond(&shared, req, stop))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended with an error");
                }
            });
        }
        conns.shutdown().await;
    }
}

fn respond(shared: &Shared, req: Request<hyper::body::Incoming>, stop: CancellationToken) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return match *req.method() {
            Method::GET => full(StatusCode::OK, "ok"),
            _ => full(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"),
        };
    }
    if path == "/metrics" {
        if *req.method() != Method::GET {
            return full(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        return match super::metrics::render() {
            Ok(text) => {
                let mut r = full(StatusCode::OK, text);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(crate::simulate::kubelet_server::CONTENT_TYPE),
                );
                r
            }
            Err(e) => full(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}\n")),
        };
    }
    // Each endpoint: its path's prefix, the names after it, whether it takes POST (the
    // upgrades: older kubectls POST exec and attach).
    const CONTAINER: &str = "{namespace}/{pod}/{container}";
    let endpoints = [
        ("/containerLogs/", CONTAINER, false),
        ("/exec/", CONTAINER, true),
        ("/attach/", CONTAINER, true),
        ("/portForward/", "{namespace}/{pod}", true),
    ];
    let Some((prefix, want, post, rest)) = endpoints
        .into_iter()
        .find_map(|(prefix, want, post)| path.strip_prefix(prefix).map(|rest| (prefix, want, post, rest)))
    else {
        return full(StatusCode::NOT_FOUND, format!("{path}: not found\n"));
    };
    // Logs answer in text, the upgrades with a Status.
    let error = |code, message: String| if post { refuse(code, message) } else { full(code, message + "\n") };
    if !(req.method() == Method::GET || post && req.method() == Method::POST) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{prefix}: only GET{}", if post { " and POST" } else { "" }),
        );
    }
    let Some(names) = names(rest, want.matches('/').count() + 1) else {
        return error(StatusCode::BAD_REQUEST, format!("expected {prefix}{want}, each a DNS name"));
    };
    match prefix {
        "/containerLogs/" => container_logs(shared, &names, req.uri().query().unwrap_or_default(), stop),
        "/exec/" => remote_command(shared, req, &names, false, stop),
        "/attach/" => remote_command(shared, req, &names, true, stop),
        _ => port_forward(shared, req, &names, stop),
    }
}

/// `/metrics/resource`: the node's and its containers' usage ([`stats`]).
///
/// [`stats`]: super::stats
async fn resource_metrics(shared: &Shared, method: &Method) -> Response<Body> {
    if *method != Method::GET {
        return full(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match super::stats::render(shared).await {
        Ok(text) => {
            let mut r = full(StatusCode::OK, text);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::simulate::kubelet_server::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "kubelet endpoint: reading resource usage failed");
            full(StatusCode::INTERNAL_SERVER_ERROR, format!("reading resource usage: {e}\n"))
        }
    }
}

/// The `n` path segments of `rest`, each a DNS name.
fn names(rest: &str, n: usize) -> Option<Vec<String>> {
    let parts: Vec<&str> = rest.split('/').collect();
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with('.')
    };
    (parts.len() == n && parts.iter().all(|p| label(p))).then(|| parts.into_iter().map(str::to_string).collect())
}

/// The pod's directory on this node, or why there is none (a 404).
fn pod_dir(shared: &Shared, ns: &str, pod: &str) -> Result<PathBuf, String> {
    match shared.uid_of(ns, pod) {
        Some(uid) => Ok(shared.cfg.pods_dir().join(uid)),
        None => Err(format!("pod {ns}/{pod} is not on this node")),
    }
}

fn container_logs(shared: &Shared, names: &[String], query: &str, stop: CancellationToken) -> Response<Body> {
    let [ns, pod, name] = names else { return full(StatusCode::BAD_REQUEST, "bad path\n") };
    let opts = match LogOptions::parse(query, jiff::Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return full(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let dir = match pod_dir(shared, ns, pod) {
        Ok(d) => d,
        Err(e) => return full(StatusCode::NOT_FOUND, e + "\n"),
    };
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
    let ended = shim::read_exit(&files.exit_file()).is_some();
    if !opts.follow || opts.previous || ended {
        return full(StatusCode::OK, first);
    }
    // Follow: what is there, then new whole lines until the instance ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let tail = Tail::at(&files.log, complete as u64);
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let line_opts = LogOptions { timestamps: opts.timestamps, ..Default::default() };
        let sender = tx.clone();
        let gone = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tx.closed() => {}
            }
        };
        logs::follow(tail, &files.exit_file(), gone, |new| {
            let (tx, text) = (sender.clone(), logs::render(&new, &line_opts));
            async move { tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_ok() }
        })
        .await;
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

/// What an exec or attach runs once its streams are up.
enum Job {
    Exec { runtime: Runtime, id: String, command: Vec<String>, tty: bool, log: PathBuf },
    Attach { files: InstanceFiles },
}

impl Job {
    async fn run(self, session: Session) -> Outcome {
        match self {
            Job::Exec { runtime, id, command, tty, log } => {
                exec::run(&runtime, &id, &command, tty, &log, session).await
            }
            Job::Attach { files } => attach::run(&files, session).await,
        }
    }
}

/// Whether the instance runs now: its process started (the runtime wrote its pid) and
/// has not ended.
fn running(files: &InstanceFiles) -> bool {
    files.pid_file().exists() && shim::read_exit(&files.exit_file()).is_none()
}

fn remote_command(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
    names: &[String],
    attach: bool,
    stop: CancellationToken,
) -> Response<Body> {
    let [ns, pod, name] = names else { return refuse(StatusCode::BAD_REQUEST, "bad path") };
    let (opts, command) = match Options::parse(req.uri().query().unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if !attach && command.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "a command is required (command=…, once per argument)");
    }
    if attach && opts.stdin {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("attaching stdin is not supported: container {name:?} in pod {ns}/{pod} has no stdin to attach to on this node"),
        );
    }
    let dir = match pod_dir(shared, ns, pod) {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::NOT_FOUND, e),
    };
    let Some(record) = container::load(&dir, name) else {
        return refuse(StatusCode::NOT_FOUND, format!("container {name:?} not found in pod {ns}/{pod}"));
    };
    let files = container::instance(&dir, name, record.attempt);
    if !running(&files) {
        return refuse(StatusCode::BAD_REQUEST, format!("container {name:?} in pod {ns}/{pod} is not running"));
    }
    tracing::info!(namespace = %ns, pod = %pod, container = %name, attach, ?opts, "streaming session");
    let job = if attach {
        Job::Attach { files }
    } else {
        let log = files.dir.join(format!("exec-{:016x}.log", rand::random::<u64>()));
        Job::Exec { runtime: shared.runtime.clone(), id: record.id, command, tty: opts.tty, log }
    };
    let headers = req.headers();
    if websocket::requested(headers) {
        let (protocol, answer) = match websocket::accept(headers, websocket::REMOTECOMMAND_PROTOCOLS) {
            Ok(a) => a,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
        };
        upgrade(req, stop, answer, move |io| async move {
            let ws = websocket::server(io).await;
            websocket::serve_remotecommand(ws, protocol, opts, |s| job.run(s)).await;
        })
    } else if spdy::requested(headers) {
        let (protocol, answer) = match spdy_answer(headers, spdy::REMOTECOMMAND_PROTOCOLS) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        upgrade(req, stop, answer, move |io| spdy::serve_remotecommand(io, protocol, opts, |s| job.run(s)))
    } else {
        refuse(StatusCode::BAD_REQUEST, "exec and attach need an upgrade to WebSocket or SPDY/3.1")
    }
}

fn port_forward(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
    names: &[String],
    stop: CancellationToken,
) -> Response<Body> {
    let [ns, pod] = names else { return refuse(StatusCode::BAD_REQUEST, "bad path") };
    let dir = match pod_dir(shared, ns, pod) {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::NOT_FOUND, e),
    };
    let Some(netns) = sandbox::load(&dir).map(|s| s.netns_path).filter(|p| p.exists()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("pod {ns}/{pod} has no network namespace on this node (it is not running)"),
        );
    };
    tracing::info!(namespace = %ns, pod = %pod, "port-forward session");
    let connect = move |port: u16| {
        let netns = netns.clone();
        async move { portforward::connect(&netns, port).await }
    };
    let headers = req.headers();
    if websocket::requested(headers) {
        let (protocol, answer) = match websocket::accept(headers, websocket::PORTFORWARD_PROTOCOLS) {
            Ok(a) => a,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
        };
        if protocol == websocket::TUNNEL_PROTOCOL {
            return upgrade(req, stop, answer, move |io| async move {
                let spdy = websocket::tunnel(websocket::server(io).await);
                portforward::serve_spdy(spdy::Connection::serve(spdy, portforward::valid_stream), connect).await;
            });
        }
        let ports = match portforward::ports_of(req.uri().query().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
        };
        upgrade(req, stop, answer, move |io| async move {
            let ws = websocket::server(io).await;
            websocket::serve_portforward(ws, ports, |port, from_client, data, error| {
                portforward::forward(connect(port), port, from_client, data, error)
            })
            .await;
        })
    } else if spdy::requested(headers) {
        let (_, answer) = match spdy_answer(headers, spdy::PORTFORWARD_PROTOCOLS) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        upgrade(req, stop, answer, move |io| {
            portforward::serve_spdy(spdy::Connection::serve(io, portforward::valid_stream), connect)
        })
    } else {
        refuse(StatusCode::BAD_REQUEST, "port-forward needs an upgrade to WebSocket or SPDY/3.1")
    }
}

/// The negotiated `X-Stream-Protocol-Version` and the 101's headers for SPDY; else the
/// refusal (400 when the client offers none, 403 with the ones accepted when none fits).
fn spdy_answer(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<(&'static str, HeaderMap), Box<Response<Body>>> {
    match spdy::negotiate(headers, supported) {
        Ok(protocol) => {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(http::header::UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
            h.insert("x-stream-protocol-version", HeaderValue::from_static(protocol));
            Ok((protocol, h))
        }
        Err(spdy::Negotiation::Missing) => {
            Err(Box::new(refuse(StatusCode::BAD_REQUEST, "unable to upgrade: X-Stream-Protocol-Version is required")))
        }
        Err(spdy::Negotiation::NoMatch(message)) => {
            let mut r = refuse(StatusCode::FORBIDDEN, message);
            for p in supported {
                r.headers_mut().append("x-accepted-stream-protocol-versions", HeaderValue::from_static(p));
            }
            Err(Box::new(r))
        }
    }
}

/// Answer 101 with `headers`, and once hyper hands the connection over, `serve` it (until
/// it is done, or the kubelet stops).
fn upgrade<F, Fut>(
    req: Request<hyper::body::Incoming>,
    stop: CancellationToken,
    headers: HeaderMap,
    serve: F,
) -> Response<Body>
where
    F: FnOnce(Upgraded) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "the upgrade did not happen");
                return;
            }
        };
        tokio::select! {
            () = serve(io) => {}
            () = stop.cancelled() => {}
        }
    });
    let mut r = Response::new(BodyExt::boxed(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = headers;
    r
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
