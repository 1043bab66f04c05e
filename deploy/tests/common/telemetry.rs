//! What a collector and a Prometheus server would see: a small OTLP/gRPC trace receiver
//! (opentelemetry-proto's tonic service; there is no collector on this machine) and
//! Prometheus' own text-format parser (PyPI `prometheus_client`, in the test venv).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value as AnyValue, AnyValue as Any};

/// One exported span; ids in hex.
#[derive(Debug, Clone)]
pub struct SpanRec {
    /// The exporting process's `service.instance.id` (a master's name, an agent's node).
    pub instance: String,
    pub name: String,
    pub trace: String,
    pub id: String,
    /// Empty for a root.
    pub parent: String,
    pub attrs: BTreeMap<String, String>,
    /// How many links it has.
    pub links: usize,
}

impl SpanRec {
    pub fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map_or("", String::as_str)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&Any>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

struct Receiver(Arc<Mutex<Vec<SpanRec>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let instance = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.instance.id")
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    seen.push(SpanRec {
                        instance: instance.clone(),
                        trace: hex(&s.trace_id),
                        id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attrs: s.attributes.iter().map(|a| (a.key.clone(), text(a.value.as_ref()))).collect(),
                        links: s.links.len(),
                        name: s.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A trace receiver on loopback; stops when dropped.
pub struct Collector {
    pub endpoint: String,
    seen: Arc<Mutex<Vec<SpanRec>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Collector {
    pub async fn start() -> Collector {
        let seen: Arc<Mutex<Vec<SpanRec>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let stop = tokio_util::sync::CancellationToken::new();
        let svc = TraceServiceServer::new(Receiver(seen.clone()));
        let until = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), until.cancelled())
                .await
        });
        Collector { endpoint, seen, stop }
    }

    /// The spans of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRec> {
        self.seen.lock().unwrap().iter().filter(|s| s.trace == trace_id).cloned().collect()
    }

    /// Every span received so far.
    pub fn all(&self) -> Vec<SpanRec> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fresh W3C context: (trace id, span id, the `traceparent: …` header).
pub fn client_context() -> (String, String, String) {
    let trace = format!("{:032x}", rand::random::<u128>() | 1);
    let span = format!("{:016x}", rand::random::<u64>() | 1);
    let header = format!("traceparent: 00-{trace}-{span}-01");
    (trace, span, header)
}

/// POST the JSON `doc` to `path` on the master at `api` with the `traceparent: …` header
/// (admin credentials); returns (HTTP status, body).
pub async fn post_traced(pki: &std::path::Path, api: &str, traceparent: &str, doc: &str, path: &str) -> (u16, String) {
    let args = ["-X", "POST", "-H", "Content-Type: application/json", "-H", traceparent, "--data", doc];
    super::curl_api(pki, true, 15, api, &args, path).await
}

/// The spans under `parent`, indented (the README's examples come from this).
pub fn tree(spans: &[SpanRec], parent: &str, depth: usize) -> String {
    let mut out = String::new();
    for s in spans.iter().filter(|s| s.parent == parent) {
        let what = ["k8s.controller", "k8s.pod.name", "k8s.node.name", "scheduler.result"]
            .iter()
            .filter(|k| !s.attr(k).is_empty())
            .map(|k| format!("{k}={}", s.attr(k)))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!("{}{} [{}] {what}\n", "  ".repeat(depth), s.name, s.instance));
        out.push_str(&tree(spans, &s.id, depth + 1));
    }
    out
}

/// Whether `ancestor` is `span`'s parent, grandparent, … among `spans`.
pub fn descends(spans: &[SpanRec], span: &SpanRec, ancestor: &str) -> bool {
    let mut at = span.parent.clone();
    for _ in 0..spans.len() {
        if at == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.id == at) {
            Some(p) => at = p.parent.clone(),
            None => return false,
        }
    }
    false
}

/// Prometheus' text-format parser reads `text`; every sample comes back as
/// `name{labels-json}` → value. Panics (saying why) if it cannot parse it.
pub async fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let python = std::env::var("KEELSON_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/keelson/venv/bin/python", std::env::var("HOME").unwrap_or_default()));
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\nout = {}\nfor fam in text_string_to_metric_families(sys.stdin.read()):\n    for s in fam.samples:\n        out[s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else '')] = s.value\nprint(json.dumps(out))\n";
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (run ./scripts/test.sh to create the venv)"));
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).await.expect("feed the parser");
    }
    let out = super::within(super::WAIT, "the Prometheus text parser", child.wait_with_output()).await.expect("python");
    assert!(
        out.status.success(),
        "prometheus_client could not parse the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}
