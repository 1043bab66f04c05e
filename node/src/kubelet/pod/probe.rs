//! Probes (upstream's prober): startup, liveness and readiness, each exec (through the
//! runtime), httpGet (HTTP or HTTPS, with httpHeaders), tcpSocket or grpc (the standard
//! `grpc.health.v1.Health/Check`) against the pod's address, with initialDelaySeconds,
//! periodSeconds, timeoutSeconds and the success/failure thresholds.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::kubelet::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's running state, for one container instance.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub kind: Kind,
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The verdict so far: liveness starts passing; startup ("started") and readiness
    /// start not passing.
    pub ok: bool,
    /// Why the last run failed.
    pub last_error: Option<String>,
}

/// Seconds of a probe field: unset or not positive means `default` (as the API server's
/// defaulting would have set it).
fn secs(v: Option<i32>, default: i32) -> Duration {
    let v = v.filter(|s| *s > 0).unwrap_or(default);
    Duration::from_secs(u64::try_from(v.max(0)).unwrap_or(0))
}

impl Tracker {
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> Tracker {
        let next = started + secs(probe.initial_delay_seconds, 0).min(Duration::from_secs(86_400));
        Tracker { kind, probe, next, successes: 0, failures: 0, ok: kind == Kind::Liveness, last_error: None }
    }

    /// The container's probes (startup first).
    pub fn for_container(c: &Container, started: Instant) -> Vec<Tracker> {
        [(Kind::Startup, &c.startup_probe), (Kind::Liveness, &c.liveness_probe), (Kind::Readiness, &c.readiness_probe)]
            .into_iter()
            .filter_map(|(k, p)| p.clone().map(|p| Tracker::new(k, p, started)))
            .collect()
    }

    /// Whether it has failed `failureThreshold` times in a row.
    pub fn failed(&self) -> bool {
        self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    pub fn next_at(&self) -> Instant {
        self.next
    }

    /// Record a result; returns whether the verdict changed.
    pub fn record(&mut self, success: bool, error: Option<String>, now: Instant) -> bool {
        self.next = now + secs(self.probe.period_seconds, 10);
        let before = self.ok;
        if success {
            self.successes += 1;
            self.failures = 0;
            self.last_error = None;
            if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                self.ok = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            self.last_error = error;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.ok = false;
            }
        }
        before != self.ok
    }

    /// Run the probe once: `Ok(())` on success, else why not.
    pub async fn run(&self, c: &Container, pod_ip: &str, runtime: &Runtime, id: &str) -> Result<(), String> {
        let timeout = secs(self.probe.timeout_seconds, 1).max(Duration::from_secs(1));
        let p = &self.probe;
        let attempt = async {
            if let Some(e) = &p.exec {
                return exec_action(runtime, id, e, timeout).await;
            }
            if let Some(h) = &p.http_get {
                return http_get_action(h, c, pod_ip).await;
            }
            if let Some(t) = &p.tcp_socket {
                let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
                let port = resolve_port(c, &t.port)?;
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
                return Ok(());
            }
            if let Some(g) = &p.grpc {
                let port = u16::try_from(g.port).map_err(|_| format!("port {} is out of range", g.port))?;
                return grpc_check(pod_ip, port, g.service.as_deref().unwrap_or_default(), timeout).await;
            }
            Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
        }
    }
}

/// An exec handler (a probe's or a lifecycle hook's) in container `id`: exit 0 passes.
pub(super) async fn exec_action(runtime: &Runtime, id: &str, e: &ExecAction, timeout: Duration) -> Result<(), String> {
    let cmd = e.command.clone().unwrap_or_default();
    let code = runtime.exec(id, &cmd, timeout).await.map_err(|e| e.to_string())?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!("command {cmd:?} exited with {code}"))
    }
}

/// An httpGet handler (a probe's or a lifecycle hook's) against the pod at `pod_ip`,
/// unless it names a host.
pub(super) async fn http_get_action(h: &HTTPGetAction, c: &Container, pod_ip: &str) -> Result<(), String> {
    let https = h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
    let port = resolve_port(c, &h.port)?;
    let headers: Vec<(String, String)> =
        h.http_headers.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect();
    http_get(&host, port, h.path.as_deref().unwrap_or("/"), https, &headers).await
}

/// `host:port`, with an IPv6 host in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no port named {name:?} in the container"))
        }
    }
}

/// The request line and headers of a probe: upstream's defaults (`Host`, `User-Agent:
/// kube-probe/<version>`, `Accept: */*`), each replaced by a probe header of the same name,
/// then the probe's other headers. A name or value that would break the request is refused.
fn request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Result<String, String> {
    let mut all: Vec<(String, String)> = vec![
        ("Host".into(), authority(host, port)),
        ("User-Agent".into(), "kube-probe/1.33".into()),
        ("Accept".into(), "*/*".into()),
    ];
    let mut replaced = [false; 3];
    for (name, value) in headers {
        let bad = |s: &str| s.chars().any(|c| c == '\r' || c == '\n' || c == '\0');
        if name.is_empty() || bad(name) || name.contains(':') || name.contains(' ') || bad(value) {
            return Err(format!("invalid probe header {name:?}"));
        }
        // The first of a default's name replaces it; more of the same name are added.
        match all[..3].iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) if !replaced[i] => {
                all[i] = (name.clone(), value.clone());
                replaced[i] = true;
            }
            _ => all.push((name.clone(), value.clone())),
        }
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid probe path {path:?}"));
    }
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (n, v) in &all {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    Ok(req)
}

/// `GET path` over HTTP/1.1, or over TLS for HTTPS (as the kubelet: the certificate is
/// not verified): 200–399 passes.
async fn http_get(host: &str, port: u16, path: &str, https: bool, headers: &[(String, String)]) -> Result<(), String> {
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let req = request(host, port, path, headers)?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("Get {url:?}: {e}"))?;
    let line = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("Get {url:?}: {host:?} is not a server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        status_line(tls, &req).await
    } else {
        status_line(tcp, &req).await
    }
    .map_err(|e| format!("Get {url:?}: {e}"))?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get {url:?}: no HTTP status in {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Send `req` and read the response's status line.
async fn status_line<S>(mut s: S, req: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() && !head[..n].windows(2).any(|w| w == b"\r\n") {
        let r = s.read(&mut head[n..]).await.map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or_default().to_string())
}

/// A TLS client that accepts any server certificate (upstream's HTTPS probes skip
/// verification: a pod's certificate is rarely one the node could check).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts every certificate; still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `grpc.health.v1.Health/Check` for `service` ("" is the whole server): SERVING passes.
async fn grpc_check(host: &str, port: u16, service: &str, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let authority = authority(host, port);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("bad probe address {authority}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {authority:?} within {}s: {e}", timeout.as_secs()))?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_string() })
        .await
        .map_err(|s| format!("health rpc probe failed: {:?}: {}", s.code(), s.message()))?;
    match resp.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("service unhealthy (responded with {:?})", other.as_str_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn thresholds_decide() {
        let t0 = Instant::now();
        let mut r = Tracker::new(
            Kind::Readiness,
            probe(
                json!({ "periodSeconds": 2, "successThreshold": 2, "failureThreshold": 2, "initialDelaySeconds": 5 }),
            ),
            t0,
        );
        assert!(!r.ok && !r.due(t0) && r.due(t0 + Duration::from_secs(5)));
        assert!(!r.record(true, None, t0));
        assert!(r.record(true, None, t0), "two successes make it ready");
        assert_eq!(r.next_at(), t0 + Duration::from_secs(2));
        assert!(!r.record(false, Some("x".into()), t0));
        assert!(r.record(false, Some("y".into()), t0), "two failures make it unready");
        assert_eq!(r.last_error.as_deref(), Some("y"));
        let l = Tracker::new(Kind::Liveness, probe(json!({})), t0);
        assert!(l.ok, "liveness passes until it fails");
    }

    #[test]
    fn named_ports() {
        let c: Container =
            serde_json::from_value(json!({ "name": "c", "ports": [{ "name": "http", "containerPort": 8080 }] }))
                .unwrap();
        assert_eq!(resolve_port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(resolve_port(&c, &IntOrString::Int(81)), Ok(81));
        assert!(resolve_port(&c, &IntOrString::String("nope".into())).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for code in ["200 OK", "404 Not Found"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
            }
        });
        assert_eq!(http_get("127.0.0.1", port, "/", false, &[]).await, Ok(()));
        assert!(http_get("127.0.0.1", port, "/", false, &[]).await.unwrap_err().contains("404"));
    }

    #[test]
    fn probe_headers_replace_the_defaults_and_bad_ones_are_refused() {
        let h = |n: &str, v: &str| (n.to_string(), v.to_string());
        let r = request("10.0.0.5", 80, "healthz", &[h("host", "svc.local"), h("X-Probe", "yes")]).unwrap();
        assert!(r.starts_with("GET /healthz HTTP/1.1\r\n"), "{r}");
        assert!(r.contains("host: svc.local\r\n") && !r.contains("Host: 10.0.0.5"), "{r}");
        assert!(r.contains("User-Agent: kube-probe/1.33\r\n") && r.contains("X-Probe: yes\r\n"), "{r}");
        assert!(request("h", 1, "/", &[h("X-Bad", "a\r\nInjected: 1")]).is_err());
        assert!(request("h", 1, "/", &[h("Bad:Name", "v")]).is_err());
        assert!(request("h", 1, "/a b", &[]).is_err());
    }

    /// A TLS server with a self-signed certificate (which the probe must not verify)
    /// answering `codes` in turn; returns its port and what it was sent.
    async fn https_server(codes: Vec<&'static str>) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.local".to_string()]).unwrap().self_signed(&key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for code in codes {
                let (s, _) = l.accept().await.unwrap();
                let mut s = acceptor.accept(s).await.unwrap();
                let mut b = [0u8; 2048];
                let n = s.read(&mut b).await.unwrap();
                let _ = tx.send(String::from_utf8_lossy(&b[..n]).into_owned());
                s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn https_probes_skip_verification_and_send_their_headers() {
        let (port, mut sent) = https_server(vec!["200 OK", "503 Service Unavailable"]).await;
        let headers = [("X-Probe".to_string(), "yes".to_string())];
        assert_eq!(http_get("127.0.0.1", port, "/ready", true, &headers).await, Ok(()));
        let req = sent.recv().await.unwrap();
        assert!(req.starts_with("GET /ready HTTP/1.1\r\n") && req.contains("X-Probe: yes\r\n"), "{req}");
        let err = http_get("127.0.0.1", port, "/ready", true, &[]).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        // Plain HTTP to a TLS port fails rather than passing.
        let (port, _sent) = https_server(vec!["200 OK"]).await;
        assert!(http_get("127.0.0.1", port, "/", false, &[]).await.is_err());
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_standard_health_service() {
        use tonic_health::ServingStatus;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("db", ServingStatus::NotServing).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(l), until.cancelled())
                .await
        });
        let t = Duration::from_secs(2);
        assert_eq!(grpc_check("127.0.0.1", port, "", t).await, Ok(()), "the server as a whole serves");
        let err = grpc_check("127.0.0.1", port, "db", t).await.unwrap_err();
        assert!(err.contains("NOT_SERVING"), "{err}");
        let err = grpc_check("127.0.0.1", port, "nope", t).await.unwrap_err();
        assert!(err.contains("NotFound"), "{err}");
        stop.cancel();
        let _ = server.await;
        // Nothing listening: a failure, not a pass.
        let err = grpc_check("127.0.0.1", port, "", t).await.unwrap_err();
        assert!(err.contains("failed to connect"), "{err}");
    }
}
