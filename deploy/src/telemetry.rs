//! Logs and traces. Logs go to stderr (`--log`, tracing's filter syntax). With
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) spans of keelson's own crates are
//! exported over OTLP gRPC by a batch exporter (bounded queue; `OTEL_BSP_*` tune it,
//! `OTEL_SERVICE_NAME` names the service, `OTEL_TRACES_SAMPLER[_ARG]` sample). W3C trace
//! context is the propagation format: requests' `traceparent` parents the API span, and
//! the store carries the context through Raft (hooks installed here, see
//! `keelson_store::trace`).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `keelson_trace_spans_dropped_total{reason}`: spans lost to a full queue or a failed
/// export (registered on the API server's `/metrics`).
pub fn spans_dropped() -> &'static prometheus::IntCounterVec {
    static DROPPED: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    DROPPED.get_or_init(|| {
        let c = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "keelson_trace_spans_dropped_total",
                "Spans not exported: the export queue was full, or the export failed or timed out",
            ),
            &["reason"],
        )
        .expect("literal counter options");
        // Both series exist from the start (at 0).
        for reason in ["queue_full", "export_failed", "shut_down"] {
            c.with_label_values(&[reason]);
        }
        c
    })
}

/// Put the dropped-span counter on the kubelet's `/metrics` too (an agent exports spans).
pub fn register_on_kubelet() {
    // Registered once per process; a second call finds it there.
    let _ = keelson_node::kubelet::metrics::registry().register(Box::new(spans_dropped().clone()));
}

/// The exporter's handle: flushed and shut down at exit.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// How long an export may take (the shutdown waits one, plus a second).
    export_timeout: std::time::Duration,
}

impl Telemetry {
    /// Export what is queued (bounded by the exporter's own timeout) and stop.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown_with_timeout(self.export_timeout + std::time::Duration::from_secs(1)) {
                tracing::debug!(error = %e, "trace exporter shutdown");
            }
        }
    }
}

struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's W3C context when it is sampled (else nothing to carry).
fn inject() -> BTreeMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut out = BTreeMap::new();
    if cx.span().span_context().is_sampled() {
        TraceContextPropagator::new().inject_context(&cx, &mut MapInjector(&mut out));
    }
    out
}

fn adopt(span: &tracing::Span, carried: &BTreeMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&MapExtractor(carried));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Install logging, and tracing export when an endpoint is given. `instance` names this
/// process among its peers (`service.instance.id`, a master's `--name`); `resource` adds
/// resource attributes (an agent's `k8s.node.name`).
pub fn init(
    log: &str,
    otlp_endpoint: Option<&str>,
    instance: &str,
    resource: &[(&'static str, String)],
) -> Result<Telemetry> {
    // hickory-server logs every DNS query at info: quiet unless asked for by name.
    let log = if log.contains("hickory") { log.to_string() } else { format!("{log},hickory_server=warn") };
    let log = log.as_str();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info")));
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()) else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(Telemetry { provider: None, export_timeout: std::time::Duration::ZERO });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("OTLP exporter for {endpoint}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "keelson".into());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(*k, v.clone())))
        .build();
    let cfg = crate::span_queue::QueueConfig::from_env();
    let queue = crate::span_queue::QueueProcessor::new(
        exporter,
        tokio::runtime::Handle::current(),
        cfg,
        spans_dropped().clone(),
    )
    .context("starting the span export thread")?;
    let provider = SdkTracerProvider::builder().with_span_processor(queue).with_resource(resource).build();
    let tracer = provider.tracer("keelson");
    // Only the spans keelson means for export (the API's and the store's, and the control
    // loops' and the kubelet's under `keelson::trace`); not the long-lived task spans the
    // logs use, and not the exporter's own gRPC stack.
    let otel = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(EnvFilter::new(format!(
        "off,keelson_api=info,keelson_store=info,{}=info",
        keelson_scheduler::trace::TARGET
    )));
    tracing_subscriber::registry().with(fmt).with(otel).init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    keelson_store::trace::install(keelson_store::trace::TraceHooks { inject, adopt });
    tracing::info!(endpoint, instance, "exporting traces over OTLP");
    Ok(Telemetry { provider: Some(provider), export_timeout: cfg.export_timeout })
}
