//! Serving: TLS accept loop, HTTP/1.1 and HTTP/2 on one port, and the top of every
//! request — authentication, routing, authorization, content negotiation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keelson_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::authn::{user_from_cert, UserInfo};
use crate::reqinfo::{route, Query, Route};
use crate::resources::Registry;
use crate::status::ApiError;
use crate::tls::{server_config, TlsError, TlsMaterial};

/// A response body: a whole document or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// What the API server needs besides the store.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tls: TlsMaterial,
    /// `host:port` clients reach this master at (discovery's `serverAddressByClientCIDRs`).
    pub advertise: String,
    /// How long Events live (Kubernetes' `--event-ttl`, default 1 h).
    pub event_ttl: Duration,
    /// The service-account signing key pair (PEM private, PEM public), for the
    /// TokenRequest API and for verifying ServiceAccount tokens.
    pub service_account_key: Option<(String, String)>,
    /// Where Service ClusterIPs and NodePorts come from.
    pub service_ranges: crate::alloc::ServiceRanges,
    /// The client certificate and key (PEM) this master presents to kubelets for pod
    /// logs, exec, attach and port-forward; `None` = those routes answer 503.
    pub kubelet_client: Option<(String, String)>,
    /// How often kubelets are scraped for the resource metrics API (metrics-server's
    /// `--metric-resolution`); `None` = not scraped, the API answers empty lists.
    pub metrics_resolution: Option<Duration>,
}

/// State shared by every request.
pub(crate) struct Api {
    pub store: Store,
    pub registry: Registry,
    pub advertise: String,
    pub stop: CancellationToken,
    /// The OpenAPI documents, with the registry generation they were built from.
    pub openapi: std::sync::Mutex<Option<(u64, Arc<crate::openapi::OpenApi>)>>,
    pub event_leases: crate::events::EventLeases,
    pub tokens: Option<crate::tokens::TokenKeys>,
    pub ranges: crate::alloc::ServiceRanges,
    /// TLS to kubelets (pod logs, exec, attach, port-forward).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// The cluster CA (PEM), published in each namespace's `kube-root-ca.crt`.
    pub ca_pem: String,
    pub metrics: crate::metrics::Metrics,
    pub resource_metrics: crate::resource_metrics::ResourceMetrics,
    pub metrics_resolution: Option<Duration>,
    /// Watch event lines shared by every watcher of this master.
    pub watch_lines: crate::rest::watch_lines::WatchLines,
}

/// Why an API server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The API server of one master.
#[derive(Clone)]
pub struct ApiServer {
    api: Arc<Api>,
    tls: Arc<rustls::ServerConfig>,
}

/// How to encode a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Json,
    Yaml,
    Table,
    /// `as=PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

pub(crate) fn negotiate(accept: &str) -> Result<Output, ApiError> {
    if accept.is_empty() {
        return Ok(Output::Json);
    }
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        let essence = p.split(';').next().unwrap_or("");
        if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
            return Ok(Output::Table);
        }
        if p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io") {
            return Ok(Output::Metadata);
        }
        match essence {
            // A plain JSON entry (not a conversion to some other `as=` kind we lack).
            "application/json" | "*/*" | "application/*" | "" if !p.contains("as=") => return Ok(Output::Json),
            "application/yaml" => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {accept:?})"),
    ))
}

pub(crate) fn json_response(code: StatusCode, v: &serde_json::Value, output: Output) -> Response<Body> {
    let (ct, bytes) = match output {
        Output::Yaml => match serde_yaml_ng::to_string(v) {
            Ok(s) => ("application/yaml", Bytes::from(s)),
            Err(_) => ("application/json", Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
        },
        Output::Table => {
            ("application/json;as=Table;v=v1;g=meta.k8s.io", Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
        }
        _ => ("application/json", Bytes::from(serde_json::to_vec(v).unwrap_or_default())),
    };
    let mut r = Response::new(Full::new(bytes).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(e.to_json())).boxed());
    *r.status_mut() = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    if let Some(secs) = e.details.as_ref().and_then(|d| d.retry_after_seconds) {
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

impl ApiServer {
    pub fn new(store: Store, cfg: ApiConfig, stop: CancellationToken) -> Result<ApiServer, StartError> {
        let tls = server_config(&cfg.tls)?;
        let tokens = match &cfg.service_account_key {
            Some((private, public)) => Some(
                crate::tokens::TokenKeys::from_pem(private, public)
                    .map_err(|e| TlsError::Pem { what: "the service-account key", reason: e.to_string() })?,
            ),
            None => None,
        };
        let kubelet_tls = match &cfg.kubelet_client {
            Some((cert, key)) => Some(crate::tls::kubelet_client_config(&cfg.tls.ca_pem, cert, key)?),
            None => None,
        };
        let metrics = crate::metrics::Metrics::new(&store)?;
        let api = Arc::new(Api {
            metrics,
            store,
            registry: Registry::builtin(),
            advertise: cfg.advertise,
            stop,
            openapi: std::sync::Mutex::new(None),
            event_leases: crate::events::EventLeases::new(cfg.event_ttl),
            tokens,
            ranges: cfg.service_ranges.clone(),
            kubelet_tls,
            ca_pem: cfg.tls.ca_pem.clone(),
            resource_metrics: Default::default(),
            watch_lines: Default::default(),
            metrics_resolution: cfg.metrics_resolution,
        });
        Ok(ApiServer { api, tls })
    }

    /// Export one more collector on `/metrics` (the binary's own, e.g. dropped spans).
    pub fn register_metric(&self, c: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.api.metrics.register(c)
    }

    /// Serve one request in-process (no TCP, no TLS) as `user`, through the same
    /// authorization, admission and strategy as any other; its writes are fenced to
    /// `fence` when given. The transport of the leader's in-process `kube::Client`.
    pub async fn handle_local(&self, req: Request<Bytes>, user: UserInfo, fence: Option<u64>) -> Response<Body> {
        let (mut parts, bytes) = req.into_parts();
        if let Some(term) = fence {
            parts.extensions.insert(crate::Fence(term));
        }
        handle(&self.api, Request::from_parts(parts, Full::new(bytes)), Some(user)).await
    }

    /// The cluster CA (PEM) this API server serves with.
    pub fn ca_pem(&self) -> &str {
        &self.api.ca_pem
    }

    /// The store under this API server.
    pub fn store(&self) -> &Store {
        &self.api.store
    }

    /// Create the default namespaces (idempotent; any master may do it).
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        crate::bootstrap::run(&self.api).await
    }

    /// Accept TLS connections until `stop` fires.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let stop = self.api.stop.clone();
        tokio::spawn(crate::crd::sync(self.api.clone()).instrument(tracing::debug_span!("crd_sync")));
        let api = self.api.clone();
        tokio::spawn(async move { api.metrics.follow_leadership(api.store.clone(), api.stop.clone()).await });
        if let Some(resolution) = self.api.metrics_resolution.filter(|r| !r.is_zero()) {
            let span = tracing::debug_span!("metrics_scraper");
            tokio::spawn(crate::resource_metrics::scrape::run(self.api.clone(), resolution).instrument(span));
        }
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let api = self.api.clone();
            let stop = stop.clone();
            tokio::spawn(
                async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let user =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| user_from_cert(c));
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let api = api.clone();
                        let user = user.clone();
                        async move { Ok::<_, Infallible>(handle(&api, req, user).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    tokio::select! {
                        r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection ended with an error") },
                        _ = stop.cancelled() => {}
                    }
                }
                .instrument(tracing::debug_span!("api_conn", %peer)),
            );
        }
    }
}

/// The OpenAPI documents of the current registry (rebuilt after a CRD change).
fn openapi_docs(api: &Api) -> Arc<crate::openapi::OpenApi> {
    let generation = api.registry.generation();
    let mut cached = match api.openapi.lock() {
        Ok(c) => c,
        Err(e) => e.into_inner(),
    };
    match &*cached {
        Some((g, docs)) if *g == generation => docs.clone(),
        _ => {
            let docs = Arc::new(crate::openapi::OpenApi::build(&api.registry));
            *cached = Some((generation, docs.clone()));
            docs
        }
    }
}

/// The bearer token of `Authorization: Bearer …`.
fn bearer<B>(req: &Request<B>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
}

/// An HTTP method as a metrics verb: the standard ones, else `other` (Kubernetes'
/// `cleanVerb`), so arbitrary methods cannot add series.
fn method_verb(m: &Method) -> String {
    match *m {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            m.to_string()
        }
        _ => "other".into(),
    }
}

/// How `apiserver_request_*` label a request (Kubernetes' upper-case verbs and scopes).
fn request_labels<B>(req: &Request<B>) -> crate::metrics::RequestLabels {
    let Route::Resource(p) = route(req.uri().path()) else {
        return crate::metrics::RequestLabels { verb: method_verb(req.method()), ..Default::default() };
    };
    let q = Query::parse(req.uri().query()).unwrap_or_default();
    let sub = p.subresource.clone().unwrap_or_default();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let verb = match crate::rest::verb(req.method(), &p, &q).unwrap_or("") {
        _ if matches!(sub.as_str(), "exec" | "attach" | "portforward") => "CONNECT".to_string(),
        "patch" if crate::rest::is_apply_media(content_type) => "APPLY".into(),
        "create" => "POST".into(),
        "update" => "PUT".into(),
        "" => method_verb(req.method()),
        v => v.to_ascii_uppercase(),
    };
    let scope = match (&p.name, &p.namespace) {
        (Some(_), _) => "resource",
        (None, Some(_)) => "namespace",
        (None, None) => "cluster",
    };
    crate::metrics::RequestLabels {
        verb,
        group: p.group.clone(),
        version: p.version.clone(),
        resource: p.resource.clone(),
        subresource: sub,
        scope,
    }
}

/// One request, start to finish, counted and timed.
pub(crate) async fn handle<B>(api: &Arc<Api>, req: Request<B>, user: Option<UserInfo>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    let mut labels = request_labels(&req);
    // Only served resources label the metrics (arbitrary paths must not grow the series).
    let served = labels.resource.is_empty()
        || api
            .registry
            .find(&labels.group, &labels.version, &labels.resource)
            .is_some_and(|d| labels.subresource.is_empty() || d.has_subresource(&labels.subresource));
    if !served {
        labels = crate::metrics::RequestLabels { verb: method_verb(req.method()), ..Default::default() };
    }
    // A server span (OpenTelemetry's HTTP and k8s conventions), child of the caller's
    // `traceparent` when it sends one.
    // Span names stay few: non-resource paths are named by their method only.
    let route_name = if labels.resource.is_empty() {
        labels.verb.clone()
    } else {
        let sub = if labels.subresource.is_empty() { String::new() } else { format!("/{}", labels.subresource) };
        format!("{} {}{sub}", labels.verb, labels.resource)
    };
    // Info level (exported) when traces go out, else debug (log context only).
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "api.request",
                otel.name = %route_name,
                otel.kind = "server",
                http.request.method = %req.method(),
                url.path = %req.uri().path(),
                http.response.status_code = tracing::field::Empty,
                k8s.resource = %labels.resource,
                k8s.verb = %labels.verb,
                user.name = user.as_ref().map(|u| u.username.as_str()).unwrap_or(""),
            )
        };
    }
    let span = if keelson_store::trace::enabled() {
        request_span!(tracing::Level::INFO)
    } else {
        request_span!(tracing::Level::DEBUG)
    };
    let carried: keelson_store::types::TraceContext = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|h| Some((h.to_string(), req.headers().get(*h)?.to_str().ok()?.to_string())))
        .collect();
    keelson_store::trace::adopt(&span, &carried);
    let resp = serve_request(api, req, user).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    api.metrics.request(&labels, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

async fn serve_request<B>(api: &Arc<Api>, req: Request<B>, user: Option<UserInfo>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    async move {
        let r = route(&path);
        // Public endpoints (Kubernetes' system:public-info-viewer).
        match &r {
            Route::Version => return json_response(StatusCode::OK, &crate::discovery::version(), Output::Json),
            Route::Health(_) => return text(StatusCode::OK, "ok"),
            _ => {}
        }
        let user = match user {
            Some(u) => Some(u),
            None => match bearer(&req) {
                Some(token) => crate::authn::from_bearer(api, &token).await,
                None => None,
            },
        };
        let Some(user) = user else { return error_response(&ApiError::unauthorized()) };
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        match r {
            Route::CoreGroups | Route::Groups if method == Method::GET => {
                let core = matches!(r, Route::CoreGroups);
                if let Some(v) = crate::discovery::aggregated_version(&accept) {
                    let doc = crate::discovery::aggregated(&api.registry, core, v);
                    let mut resp = json_response(StatusCode::OK, &doc, Output::Json);
                    let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
                    if let Ok(h) = header::HeaderValue::from_str(&ct) {
                        resp.headers_mut().insert(header::CONTENT_TYPE, h);
                    }
                    return resp;
                }
                let doc = if core {
                    crate::discovery::core_versions(&api.advertise)
                } else {
                    crate::discovery::group_list(&api.registry)
                };
                json_response(StatusCode::OK, &doc, Output::Json)
            }
            Route::Group(g) if method == Method::GET => match crate::discovery::group(&api.registry, &g) {
                Some(doc) => json_response(StatusCode::OK, &doc, Output::Json),
                None => error_response(&ApiError::no_route(&path)),
            },
            Route::GroupVersion { group, version } if method == Method::GET => {
                match crate::discovery::resource_list(&api.registry, &group, &version) {
                    Some(doc) => json_response(StatusCode::OK, &doc, Output::Json),
                    None => error_response(&ApiError::no_route(&path)),
                }
            }
            Route::Resource(p) => {
                let query = match Query::parse(req.uri().query()) {
                    Ok(q) => q,
                    Err(e) => return error_response(&e),
                };
                match crate::rest::dispatch(api, req, p, query, user, &accept).await {
                    Ok(resp) => resp,
                    Err(e) => error_response(&e),
                }
            }
            Route::Metrics if method == Method::GET => {
                if !user.in_group("system:masters") {
                    let mut e = ApiError::forbidden(format!(
                        "forbidden: User \"{}\" cannot get path \"/metrics\"",
                        user.username
                    ));
                    e.reason = "Forbidden";
                    return error_response(&e);
                }
                match api.metrics.render(&api.store).await {
                    Ok(body) => {
                        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        );
                        r
                    }
                    Err(e) => error_response(&ApiError::internal(format!("metrics: {e}"))),
                }
            }
            Route::OpenApi(p) if method == Method::GET && (p == "/openapi/v3" || p.starts_with("/openapi/v3/")) => {
                let docs = openapi_docs(api);
                match docs.get(&p) {
                    Some((bytes, hash)) => {
                        let mut r = Response::new(Full::new(Bytes::copy_from_slice(bytes)).boxed());
                        r.headers_mut()
                            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                        if let Some(h) = hash.and_then(|h| header::HeaderValue::from_str(&format!("\"{h}\"")).ok()) {
                            r.headers_mut().insert(header::ETAG, h);
                        }
                        r
                    }
                    None => error_response(&ApiError::no_route(&path)),
                }
            }
            Route::OpenApi(p) if method == Method::GET && p == "/openapi/v2" => {
                let docs = openapi_docs(api);
                let (ct, bytes) = if accept.contains("protobuf") {
                    (crate::openapi_v2::PROTO_MEDIA_TYPE, docs.v2_proto.clone())
                } else {
                    ("application/json", docs.v2_json.clone())
                };
                let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
                r
            }
            Route::OpenApi(_) => error_response(&ApiError::no_route(&path)),
            Route::CoreGroups | Route::Groups | Route::Group(_) | Route::GroupVersion { .. } => {
                error_response(&ApiError::method_not_allowed(format!("{method} is not supported on {path}")))
            }
            _ => error_response(&ApiError::no_route(&path)),
        }
    }
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(a).unwrap(), Output::Table);
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf, application/json").unwrap(), Output::Json);
        assert_eq!(negotiate("").unwrap(), Output::Json);
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf").unwrap_err().code, 406);
    }

    fn labels(method: &str, uri: &str, content_type: Option<&str>) -> crate::metrics::RequestLabels {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        request_labels(&b.body(()).unwrap())
    }

    #[test]
    fn requests_are_labelled_as_kubernetes_labels_them() {
        let l = labels("GET", "/api/v1/namespaces/default/pods/p", None);
        assert_eq!((l.verb.as_str(), l.resource.as_str(), l.scope), ("GET", "pods", "resource"));
        let l = labels("GET", "/api/v1/namespaces/default/pods", None);
        assert_eq!((l.verb.as_str(), l.scope), ("LIST", "namespace"));
        let l = labels("GET", "/api/v1/pods?watch=true", None);
        assert_eq!((l.verb.as_str(), l.scope), ("WATCH", "cluster"));
        let l = labels("GET", "/api/v1/watch/namespaces/default/pods", None);
        assert_eq!(l.verb, "WATCH");
        let l = labels("DELETE", "/api/v1/namespaces/default/configmaps", None);
        assert_eq!(l.verb, "DELETECOLLECTION");
        let l = labels("PATCH", "/apis/apps/v1/namespaces/d/deployments/x", Some("application/apply-patch+yaml"));
        assert_eq!((l.verb.as_str(), l.group.as_str()), ("APPLY", "apps"));
        let l = labels("POST", "/api/v1/namespaces/d/pods/p/exec?command=sh", None);
        assert_eq!((l.verb.as_str(), l.subresource.as_str()), ("CONNECT", "exec"));
        let l = labels("POST", "/api/v1/namespaces/d/configmaps", None);
        assert_eq!(l.verb, "POST");
        let l = labels("BREW", "/metrics", None);
        assert_eq!((l.verb.as_str(), l.resource.as_str()), ("other", ""));
    }
}
