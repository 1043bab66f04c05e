//! A `kube::Client` from a kubeconfig file (for `keelson agent` and `keelson controllers`,
//! which are ordinary Kubernetes clients), optionally spread over several API servers
//! (`--server a,b,c`): requests go to the last master that answered and move on to the
//! next when a connection fails or a master answers 503 — no load balancer in front.
//! Each request carries the W3C `traceparent` of the span it is made in, so what a kubelet
//! or a controller writes joins the trace it works in.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use kube::client::Body;

/// How long connecting to one master may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `context` (default: the kubeconfig's current context) of `path`.
pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<kube::Client> {
    connect(path, context, &[]).await
}

/// A client for the kubeconfig's context; with `servers`, one per API server URL (same
/// credentials and CA), failing over between them.
pub async fn connect(path: &Path, context: Option<&str>, servers: &[String]) -> Result<kube::Client> {
    let base = config(path, context).await?;
    let ns = base.default_namespace.clone();
    let traced = |c: kube::Client| kube::Client::new(TraceHeaders(c), ns.clone());
    if servers.is_empty() {
        return Ok(traced(kube::Client::try_from(base).context("cannot build a Kubernetes client")?));
    }
    let mut clients = Vec::new();
    for s in servers {
        let url: http::Uri = s.parse().with_context(|| format!("--server {s:?} is not a URL"))?;
        if url.scheme_str() != Some("https") || url.host().is_none() {
            bail!("--server {s:?}: expected https://host:port");
        }
        let mut c = base.clone();
        c.cluster_url = url;
        c.connect_timeout = Some(CONNECT_TIMEOUT);
        clients.push(kube::Client::try_from(c).with_context(|| format!("cannot build a client for {s}"))?);
    }
    if clients.len() == 1 {
        return Ok(traced(clients.remove(0)));
    }
    let svc = Failover { clients: Arc::new(clients), urls: Arc::new(servers.to_vec()), current: Default::default() };
    Ok(traced(kube::Client::new(svc, ns.clone())))
}

/// Adds the current span's `traceparent` (when it is sampled) to each request.
#[derive(Clone)]
struct TraceHeaders(kube::Client);

impl tower::Service<Request<Body>> for TraceHeaders {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // Called in the caller's span (kube's buffer enters it for the call).
        if let Some(tp) = keelson_scheduler::trace::traceparent(&tracing::Span::current()) {
            if let Ok(v) = http::HeaderValue::from_str(&tp) {
                req.headers_mut().insert("traceparent", v);
            }
        }
        let client = self.0.clone();
        Box::pin(async move { client.send(req).await })
    }
}

async fn config(path: &Path, context: Option<&str>) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .with_context(|| format!("the kubeconfig {} is not usable", path.display()))
}

/// Sends each request to the current master; on a transport error or a 503 the next one
/// gets it (each at most once per request), and becomes current when it answers.
#[derive(Clone)]
struct Failover {
    clients: Arc<Vec<kube::Client>>,
    urls: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // Streaming bodies cannot be replayed: those go to one master only.
            let replay = body.try_clone();
            let mut body = Some(body);
            let n = this.clients.len();
            let start = this.current.load(Ordering::Relaxed) % n;
            let mut last = None;
            for i in 0..n {
                let idx = (start + i) % n;
                let b = match body.take() {
                    Some(b) => b,
                    None => match replay.as_ref().and_then(Body::try_clone) {
                        Some(b) => b,
                        None => break,
                    },
                };
                let mut r = Request::new(b);
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = parts.uri.clone();
                *r.version_mut() = parts.version;
                *r.headers_mut() = parts.headers.clone();
                match this.clients[idx].send(r).await {
                    Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE && i + 1 < n => {
                        tracing::debug!(server = %this.urls[idx], "API server unavailable; trying the next");
                        last = Some(Ok(resp));
                    }
                    Ok(resp) => {
                        if idx != start {
                            tracing::info!(server = %this.urls[idx], "API server failover");
                            this.current.store(idx, Ordering::Relaxed);
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        tracing::warn!(server = %this.urls[idx], error = %e, "API server unreachable; trying the next");
                        last = Some(Err(e));
                    }
                }
            }
            last.unwrap_or_else(|| Err(kube::Error::Service("no API server answered".into())))
        })
    }
}
