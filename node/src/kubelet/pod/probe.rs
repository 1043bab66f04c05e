//! Probes (upstream's prober): startup, liveness and readiness, each exec (through the
//! runtime), httpGet or tcpSocket against the pod's address, with initialDelaySeconds,
//! periodSeconds, timeoutSeconds and the success/failure thresholds.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
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
                let cmd = e.command.clone().unwrap_or_default();
                let code = runtime.exec(id, &cmd, timeout).await.map_err(|e| e.to_string())?;
                return if code == 0 { Ok(()) } else { Err(format!("command {cmd:?} exited with {code}")) };
            }
            if let Some(h) = &p.http_get {
                if h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                    return Err("HTTPS probes are not supported yet".into());
                }
                let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
                let port = resolve_port(c, &h.port)?;
                return http_get(&host, port, h.path.as_deref().unwrap_or("/")).await;
            }
            if let Some(t) = &p.tcp_socket {
                let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
                let port = resolve_port(c, &t.port)?;
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
                return Ok(());
            }
            // gRPC probes: not supported, counted as passing (said once in the log).
            Ok(())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
        }
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

/// `GET path` over HTTP/1.1: 200–399 passes.
async fn http_get(host: &str, port: u16, path: &str) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get http://{host}:{port}{path}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n");
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
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| {
        format!("Get http://{host}:{port}{path}: no HTTP status in {:?}", line.lines().next().unwrap_or_default())
    })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
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
        assert_eq!(http_get("127.0.0.1", port, "/").await, Ok(()));
        assert!(http_get("127.0.0.1", port, "/").await.unwrap_err().contains("404"));
    }
}
