//! The simulated nodes' kubelet endpoint: one HTTPS server for all the nodes of a sim,
//! serving what metrics-server scrapes from a kubelet — `GET /metrics/resource`, the
//! Prometheus text of [`render`] — and `GET /healthz`. Client certificates are required
//! and must chain to the configured client CA (anything else is refused by TLS).
//! Connections are bounded ([`MAX_CONNECTIONS`]), handshakes, request heads and
//! connections time out, and the server winds down when the sim stops.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::config::KubeletTls;
use super::retry::{lock, sleep_or_stop};
use super::usage::{Sample, UsageTable};
use super::SimError;

/// Connections served at once (more wait in the listen backlog).
pub const MAX_CONNECTIONS: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection is closed (gracefully, between requests) after this long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// How long in-flight requests may finish after a stop (or a connection's lifetime).
const GRACE: Duration = Duration::from_secs(5);
/// The read buffer of a connection (requests are a line and a few headers).
const MAX_BUF: usize = 16 * 1024;
/// A pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub const METRICS_PATH: &str = "/metrics/resource";
pub const HEALTHZ_PATH: &str = "/healthz";
/// The Prometheus text exposition format, as the kubelet serves it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The rustls server config for `tls`: its certificate chain and key, client certificates
/// required and verified against its client CA (ring), HTTP/1.1 by ALPN.
pub fn tls_config(tls: &KubeletTls) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading the serving certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the serving certificate PEM has no CERTIFICATE".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| format!("reading the private key: {e}"))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| format!("reading the client CA: {e}"))?;
        roots.add(ca).map_err(|e| format!("the client CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the client CA PEM has no CERTIFICATE".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("the client CA: {e}"))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("the serving certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// What a request is answered from.
struct State {
    usage: Arc<Mutex<UsageTable>>,
    /// Nodes are `{prefix}-{i}`.
    prefix: String,
}

/// A bound (not yet serving) kubelet endpoint.
pub struct KubeletServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    port: u16,
    state: Arc<State>,
}

impl KubeletServer {
    /// Bind `addr` (port 0: any free port) with `tls`, to serve `usage` of the nodes
    /// `{prefix}-{i}`.
    pub async fn bind(
        addr: SocketAddr,
        tls: &KubeletTls,
        usage: Arc<Mutex<UsageTable>>,
        prefix: &str,
    ) -> Result<KubeletServer, SimError> {
        let cfg = tls_config(tls).map_err(SimError::Kubelet)?;
        let listener = TcpListener::bind(addr).await.map_err(|e| SimError::Kubelet(format!("binding {addr}: {e}")))?;
        let port = listener.local_addr().map_err(|e| SimError::Kubelet(format!("bound address: {e}")))?.port();
        let state = Arc::new(State { usage, prefix: prefix.to_string() });
        Ok(KubeletServer { listener, acceptor: TlsAcceptor::from(Arc::new(cfg)), port, state })
    }

    /// The port it is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until `stop`, then let in-flight requests finish (for at most [`GRACE`]).
    pub async fn serve(self, stop: CancellationToken) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut conns = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.listener.accept() => r,
            };
            while conns.try_join_next().is_some() {}
            match accepted {
                Ok((tcp, peer)) => {
                    let (acceptor, state, stop) = (self.acceptor.clone(), self.state.clone(), stop.clone());
                    conns.spawn(async move {
                        connection(tcp, peer, acceptor, state, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "kubelet endpoint: accept failed");
                    if !sleep_or_stop(&stop, ACCEPT_BACKOFF).await {
                        break;
                    }
                }
            }
        }
        drop(self.listener);
        let drained = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            conns.shutdown().await;
        }
        tracing::debug!(port = self.port, "kubelet endpoint stopped");
    }
}

/// One client: a TLS handshake (its certificate verified), then HTTP/1.1 requests until it
/// closes, its lifetime is over or the server stops.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    stop: CancellationToken,
) {
    let tls = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "kubelet endpoint: TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "kubelet endpoint: TLS handshake timed out");
                return;
            }
        },
    };
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = state.clone();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        async move { Ok::<_, Infallible>(respond(state, &method, &path).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_BUF);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(tls), service));
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.cancelled() => None,
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, conn).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended with an error");
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The answer to a request (HEAD's body is left out by hyper).
async fn respond(state: Arc<State>, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        METRICS_PATH => {
            // Sampling and formatting every pod is a few milliseconds per 10,000 pods: off
            // the async workers.
            let body = tokio::task::spawn_blocking(move || {
                let mut usage = lock(&state.usage);
                // Read under the lock: no change is ever timed after a read that follows it.
                let now = Timestamp::now();
                let sample = usage.sample(now);
                drop(usage);
                render(&sample, Some(&state.prefix), now)
            })
            .await;
            match body {
                Ok(body) => {
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet endpoint: rendering metrics failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "rendering metrics failed\n")
                }
            }
        }
        HEALTHZ_PATH => text(StatusCode::OK, "ok"),
        // The agent process's own metrics (a simulated node runs no containers: its
        // kubelet series stay empty; the dropped-span counter is the agent's).
        "/metrics" => match crate::kubelet::metrics::render() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(CONTENT_TYPE));
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics: {e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (what client_golang
/// exposes): the shortest representation, with an exponent (`e+08`) when the exponent is
/// below -4 or at least 6.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else { return format!("{v}") };
    let Ok(exp) = exp.parse::<i32>() else { return format!("{v}") };
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// A label value escaped for the text format: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metric families of `/metrics/resource`: `(name, type, help)`, in the kubelet's
/// (alphabetical) order.
const FAMILIES: [(&str, &str, &str); 8] = [
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the container in core-seconds"),
    ("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes"),
    ("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds"),
    ("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds"),
    ("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes"),
    ("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds"),
    ("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes"),
    ("resource_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise"),
];

/// Seconds since the epoch (with fractions).
fn epoch_seconds(t: Timestamp) -> f64 {
    t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9
}

/// `sample` read at `now` as the kubelet's `/metrics/resource` text: every family of
/// [`FAMILIES`] with `# HELP` and `# TYPE`, every sample stamped with `now` in
/// milliseconds. With a `prefix`, node series carry a `node` label (`{prefix}-{i}`: one
/// endpoint serves many nodes); without, they have no labels (a real kubelet serves only
/// its own node). Pod series carry `namespace` and `pod`, container series `container` too.
pub fn render(sample: &Sample, prefix: Option<&str>, now: Timestamp) -> String {
    let ts = now.as_millisecond();
    let containers: usize = sample.pods.iter().map(|p| p.containers.len()).sum();
    let mut out = String::with_capacity(2048 + 120 * sample.nodes.len() + 130 * sample.pods.len() + 450 * containers);
    let prefix = prefix.map(escape_label);
    let pods: Vec<(String, String)> =
        sample.pods.iter().map(|p| (escape_label(&p.namespace), escape_label(&p.name))).collect();
    for (family, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {family} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        match family {
            "container_cpu_usage_seconds_total"
            | "container_memory_working_set_bytes"
            | "container_start_time_seconds" => {
                for (p, (ns, pod)) in sample.pods.iter().zip(&pods) {
                    for c in &p.containers {
                        let v = match family {
                            "container_cpu_usage_seconds_total" => c.cpu_core_seconds,
                            "container_memory_working_set_bytes" => c.memory_bytes as f64,
                            _ => epoch_seconds(c.started),
                        };
                        let name = escape_label(&c.name);
                        let _ = writeln!(
                            out,
                            "{family}{{container=\"{name}\",namespace=\"{ns}\",pod=\"{pod}\"}} {} {ts}",
                            go_float(v)
                        );
                    }
                }
            }
            "node_cpu_usage_seconds_total" | "node_memory_working_set_bytes" => {
                for n in &sample.nodes {
                    let v = if family == "node_cpu_usage_seconds_total" {
                        n.cpu_core_seconds
                    } else {
                        n.memory_bytes as f64
                    };
                    let _ = match &prefix {
                        Some(p) => writeln!(out, "{family}{{node=\"{p}-{}\"}} {} {ts}", n.node, go_float(v)),
                        None => writeln!(out, "{family} {} {ts}", go_float(v)),
                    };
                }
            }
            "pod_cpu_usage_seconds_total" | "pod_memory_working_set_bytes" => {
                for (p, (ns, pod)) in sample.pods.iter().zip(&pods) {
                    let v = if family == "pod_cpu_usage_seconds_total" {
                        p.cpu_core_seconds
                    } else {
                        p.memory_bytes as f64
                    };
                    let _ = writeln!(out, "{family}{{namespace=\"{ns}\",pod=\"{pod}\"}} {} {ts}", go_float(v));
                }
            }
            _ => {
                let _ = writeln!(out, "{family} 0 {ts}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::pods::PodKey;
    use crate::simulate::usage::{ContainerSample, NodeSample, PodSample, CPU_USAGE_ANNOTATION};
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use rustls::pki_types::ServerName;
    use std::collections::BTreeMap;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(10);

    /// `f`, or a test failure after [`WAIT`].
    async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
        match tokio::time::timeout(WAIT, f).await {
            Ok(v) => v,
            Err(_) => panic!("timed out: {what}"),
        }
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(ms).unwrap()
    }

    #[test]
    fn floats_are_written_like_go() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (12.5, "12.5"),
            (0.05, "0.05"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (134217728.0, "1.34217728e+08"),
            (1764201600.0, "1.7642016e+09"),
            (1.7048000201414006e9, "1.7048000201414006e+09"),
            (1e100, "1e+100"),
            (-2.5e-7, "-2.5e-07"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain-ünïcode"), "plain-ünïcode");
    }

    fn sample() -> Sample {
        Sample {
            nodes: vec![
                NodeSample { node: 0, cpu_core_seconds: 12.5, memory_bytes: 134217728 },
                NodeSample { node: 1, cpu_core_seconds: 0.05, memory_bytes: 1 << 30 },
            ],
            pods: vec![PodSample {
                namespace: "ns".into(),
                name: "we\"ird\\pod\n".into(),
                cpu_core_seconds: 3.0,
                memory_bytes: 64 << 20,
                containers: vec![ContainerSample {
                    name: "c".into(),
                    cpu_core_seconds: 3.0,
                    memory_bytes: 64 << 20,
                    started: Timestamp::from_second(1764201600).unwrap(),
                }],
            }],
        }
    }

    #[test]
    fn the_text_has_every_family_and_timestamps() {
        let text = render(&sample(), Some("sim"), t(1764201600123));
        let want = [
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds",
            "# TYPE container_cpu_usage_seconds_total counter",
            r#"container_cpu_usage_seconds_total{container="c",namespace="ns",pod="we\"ird\\pod\n"} 3 1764201600123"#,
            "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes",
            "# TYPE container_memory_working_set_bytes gauge",
            r#"container_memory_working_set_bytes{container="c",namespace="ns",pod="we\"ird\\pod\n"} 6.7108864e+07 1764201600123"#,
            "# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds",
            "# TYPE container_start_time_seconds gauge",
            r#"container_start_time_seconds{container="c",namespace="ns",pod="we\"ird\\pod\n"} 1.7642016e+09 1764201600123"#,
            "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds",
            "# TYPE node_cpu_usage_seconds_total counter",
            r#"node_cpu_usage_seconds_total{node="sim-0"} 12.5 1764201600123"#,
            r#"node_cpu_usage_seconds_total{node="sim-1"} 0.05 1764201600123"#,
            "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes",
            "# TYPE node_memory_working_set_bytes gauge",
            r#"node_memory_working_set_bytes{node="sim-0"} 1.34217728e+08 1764201600123"#,
            r#"node_memory_working_set_bytes{node="sim-1"} 1.073741824e+09 1764201600123"#,
            "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            "# TYPE pod_cpu_usage_seconds_total counter",
            r#"pod_cpu_usage_seconds_total{namespace="ns",pod="we\"ird\\pod\n"} 3 1764201600123"#,
            "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes",
            "# TYPE pod_memory_working_set_bytes gauge",
            r#"pod_memory_working_set_bytes{namespace="ns",pod="we\"ird\\pod\n"} 6.7108864e+07 1764201600123"#,
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
            "# TYPE resource_scrape_error gauge",
            "resource_scrape_error 0 1764201600123",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(text.ends_with('\n'));
        // No pods: every family is still described.
        let empty = render(&Sample { nodes: vec![], pods: vec![] }, Some("sim"), t(5));
        for (family, kind, _) in FAMILIES {
            assert!(empty.contains(&format!("# TYPE {family} {kind}\n")), "{family}");
        }
        assert!(empty.ends_with("resource_scrape_error 0 5\n"));
        // A real kubelet's own node: no label.
        let mut one = sample();
        one.nodes.truncate(1);
        let own = render(&one, None, t(7));
        assert!(own.contains("\nnode_cpu_usage_seconds_total 12.5 7\n"), "{own}");
        assert!(own.contains("\nnode_memory_working_set_bytes 1.34217728e+08 7\n"), "{own}");
    }

    // --- The server, over TLS on 127.0.0.1.

    struct Pki {
        ca_pem: String,
        server: KubeletTls,
        /// A client certificate (and key) signed by the CA, and one by a stranger.
        client: (String, String),
        stranger: (String, String),
    }

    fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (rcgen::Issuer::new(params, key), cert.pem())
    }

    fn leaf(
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
        san: &str,
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, san);
        params.extended_key_usages = vec![eku];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pki() -> Pki {
        let (issuer, ca_pem) = ca("kubelet-test-ca");
        let (cert_pem, key_pem) = leaf(&issuer, "127.0.0.1", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf(&issuer, "metrics-scraper", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let (other, _) = ca("another-ca");
        let stranger = leaf(&other, "intruder", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        Pki { server: KubeletTls { cert_pem, key_pem, client_ca_pem: ca_pem.clone() }, ca_pem, client, stranger }
    }

    fn client_config(pki: &Pki, cert: Option<&(String, String)>) -> rustls::ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match cert {
            Some((c, k)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }

    /// One request on a fresh connection: the whole response, or the error that ended it
    /// (a refused client sees the TLS alert on connect or first read).
    async fn request(port: u16, cfg: rustls::ClientConfig, head: &str) -> Result<String, std::io::Error> {
        let tcp = within("connect", TcpStream::connect(("127.0.0.1", port))).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut s = within("handshake", tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp)).await?;
        within("write", s.write_all(head.as_bytes())).await?;
        let mut out = Vec::new();
        within("read", s.read_to_end(&mut out)).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    }

    fn running_pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                annotations: Some(BTreeMap::from([(CPU_USAGE_ANNOTATION.to_string(), "250m".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container { name: "app".into(), ..Default::default() }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                start_time: Some(Time(Timestamp::now())),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_to_verified_clients_only() {
        let pki = pki();
        let usage = Arc::new(Mutex::new(UsageTable::new(2, Timestamp::now())));
        let key = PodKey { namespace: "default".into(), name: "web".into() };
        lock(&usage).observe(&key, 1, &running_pod(), Timestamp::now());
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = within("bind", KubeletServer::bind(addr, &pki.server, usage, "sim")).await.unwrap();
        let port = server.port();
        assert_ne!(port, 0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(stop.clone()));

        // A client with a certificate of the CA: the metrics.
        let ok = client_config(&pki, Some(&pki.client));
        let resp = request(port, ok.clone(), &get(METRICS_PATH)).await.unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
        for (family, _, _) in FAMILIES {
            assert!(body.contains(&format!("# HELP {family} ")), "{family}: {body}");
        }
        assert!(body.contains("node_cpu_usage_seconds_total{node=\"sim-0\"} "), "{body}");
        assert!(body.contains("node_memory_working_set_bytes{node=\"sim-1\"} 1.35266304e+08 "), "128Mi + 1Mi: {body}");
        assert!(body.contains("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} "), "{body}");
        assert!(
            body.contains(
                "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 1.048576e+06 "
            ),
            "{body}"
        );
        // Every sample is stamped with the time of the read.
        let before = Timestamp::now().as_millisecond() - 60_000;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(ts >= before, "{line}");
        }

        // Health, unknown paths, other methods, HEAD.
        let health = request(port, ok.clone(), &get(HEALTHZ_PATH)).await.unwrap();
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok"), "{health}");
        let nope = request(port, ok.clone(), &get("/nope")).await.unwrap();
        assert!(nope.starts_with("HTTP/1.1 404 "), "{nope}");
        // The agent's own metrics (the kubelet families, empty here).
        let own = request(port, ok.clone(), &get("/metrics")).await.unwrap();
        assert!(own.starts_with("HTTP/1.1 200 OK\r\n"), "{own}");
        assert!(own.contains("# TYPE kubelet_pod_start_duration_seconds histogram"), "{own}");
        let post = "POST /metrics/resource HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let post = request(port, ok.clone(), post).await.unwrap();
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("allow: GET, HEAD"), "{post}");
        let head = "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let head = request(port, ok.clone(), head).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body: {head}");
        // Garbage is answered (or dropped), never fatal.
        let junk = request(port, ok.clone(), "\0\0 not http\r\n\r\n").await;
        assert!(junk.map(|r| r.is_empty() || r.starts_with("HTTP/1.1 400")).unwrap_or(true));

        // No client certificate, or one from another CA: refused by TLS, nothing served.
        for (what, cfg) in
            [("no certificate", client_config(&pki, None)), ("stranger", client_config(&pki, Some(&pki.stranger)))]
        {
            match request(port, cfg, &get(METRICS_PATH)).await {
                Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
                Ok(resp) => assert!(!resp.contains("HTTP/1.1"), "{what} was served: {resp}"),
            }
        }
        // Still serving after the refusals.
        assert!(request(port, ok, &get(HEALTHZ_PATH)).await.unwrap().ends_with("ok"));

        stop.cancel();
        within("the server to stop", task).await.unwrap();
        let after = within("connecting after the stop", TcpStream::connect(("127.0.0.1", port))).await;
        assert!(after.is_err(), "no longer listening");
    }

    #[test]
    fn bad_tls_material_is_a_clear_error() {
        let pki = pki();
        let no_cert = KubeletTls { cert_pem: String::new(), ..pki.server.clone() };
        assert!(tls_config(&no_cert).unwrap_err().contains("serving certificate"));
        let no_key = KubeletTls { key_pem: "junk".into(), ..pki.server.clone() };
        assert!(tls_config(&no_key).unwrap_err().contains("private key"));
        let no_ca = KubeletTls { client_ca_pem: String::new(), ..pki.server.clone() };
        assert!(tls_config(&no_ca).unwrap_err().contains("client CA"));
        assert!(tls_config(&pki.server).is_ok());
    }
}
