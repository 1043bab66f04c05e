//! The span processor between keelson's spans and the OTLP exporter: a bounded queue that
//! never blocks the span's thread (a full queue drops the span and counts it), drained by
//! one thread that exports in batches on the runtime, each export under a timeout (a
//! failed or timed-out export's spans are counted as dropped too). A collector that is
//! down or black-holed therefore costs requests nothing but the enqueue. Tuned by the
//! standard `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and `OTEL_BSP_EXPORT_TIMEOUT` (milliseconds).

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounterVec;

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub max_queue: usize,
    pub delay: Duration,
    pub max_batch: usize,
    pub export_timeout: Duration,
}

fn env_ms(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl QueueConfig {
    /// OpenTelemetry's defaults (2048, 5 s, 512, 30 s), overridden by `OTEL_BSP_*`.
    pub fn from_env() -> QueueConfig {
        QueueConfig {
            max_queue: env_ms("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1) as usize,
            delay: Duration::from_millis(env_ms("OTEL_BSP_SCHEDULE_DELAY", 5000).max(1)),
            max_batch: env_ms("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).max(1) as usize,
            export_timeout: Duration::from_millis(env_ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000).max(1)),
        }
    }
}

enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    Flush(SyncSender<()>),
    Shutdown(SyncSender<()>),
}

#[derive(Debug)]
pub struct QueueProcessor {
    tx: SyncSender<Msg>,
    /// Control messages (flush, shutdown, resource) must not be lost to a full span queue.
    control: SyncSender<Msg>,
    dropped: IntCounterVec,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl QueueProcessor {
    /// `dropped` is labelled by `reason`: `queue_full` or `export_failed`.
    pub fn new<E: SpanExporter + 'static>(
        exporter: E,
        runtime: tokio::runtime::Handle,
        cfg: QueueConfig,
        dropped: IntCounterVec,
    ) -> std::io::Result<QueueProcessor> {
        let (tx, rx) = sync_channel(cfg.max_queue);
        let (control, control_rx) = sync_channel(16);
        let counter = dropped.clone();
        let worker = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || run(exporter, runtime, cfg, rx, control_rx, counter))?;
        Ok(QueueProcessor { tx, control, dropped, worker: Mutex::new(Some(worker)) })
    }

    fn wait(&self, msg: impl FnOnce(SyncSender<()>) -> Msg, timeout: Duration) -> OTelSdkResult {
        let (ack, done) = sync_channel(1);
        self.control.send(msg(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        // The worker only looks at control messages between spans: nudge it.
        let _ = self.tx.try_send(Msg::Flush(sync_channel(1).0));
        done.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn export<E: SpanExporter>(
    exporter: &E,
    runtime: &tokio::runtime::Handle,
    batch: &mut Vec<SpanData>,
    timeout: Duration,
    dropped: &IntCounterVec,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    let ok =
        runtime.block_on(async { matches!(tokio::time::timeout(timeout, exporter.export(spans)).await, Ok(Ok(()))) });
    if !ok {
        dropped.with_label_values(&["export_failed"]).inc_by(n);
    }
}

/// Export what is queued now (at most one queue's worth, in batches of `max_batch`).
fn drain<E: SpanExporter>(
    exporter: &E,
    runtime: &tokio::runtime::Handle,
    cfg: &QueueConfig,
    rx: &Receiver<Msg>,
    batch: &mut Vec<SpanData>,
    dropped: &IntCounterVec,
) {
    for m in rx.try_iter().take(cfg.max_queue) {
        if let Msg::Span(s) = m {
            batch.push(*s);
            if batch.len() >= cfg.max_batch {
                export(exporter, runtime, batch, cfg.export_timeout, dropped);
            }
        }
    }
    export(exporter, runtime, batch, cfg.export_timeout, dropped);
}

fn run<E: SpanExporter>(
    mut exporter: E,
    runtime: tokio::runtime::Handle,
    cfg: QueueConfig,
    rx: Receiver<Msg>,
    control: Receiver<Msg>,
    dropped: IntCounterVec,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(cfg.max_batch);
    let mut next = Instant::now() + cfg.delay;
    loop {
        while let Ok(m) = control.try_recv() {
            match m {
                Msg::Resource(r) => exporter.set_resource(&r),
                Msg::Flush(ack) => {
                    drain(&exporter, &runtime, &cfg, &rx, &mut batch, &dropped);
                    let _ = ack.send(());
                }
                Msg::Shutdown(ack) => {
                    drain(&exporter, &runtime, &cfg, &rx, &mut batch, &dropped);
                    let _ = exporter.shutdown();
                    let _ = ack.send(());
                    return;
                }
                Msg::Span(s) => batch.push(*s),
            }
        }
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Msg::Span(s)) => {
                batch.push(*s);
                if batch.len() >= cfg.max_batch {
                    export(&exporter, &runtime, &mut batch, cfg.export_timeout, &dropped);
                    next = Instant::now() + cfg.delay;
                }
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                export(&exporter, &runtime, &mut batch, cfg.export_timeout, &dropped);
                next = Instant::now() + cfg.delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&exporter, &runtime, &mut batch, cfg.export_timeout, &dropped);
                return;
            }
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.with_label_values(&["queue_full"]).inc(),
            Err(TrySendError::Disconnected(_)) => self.dropped.with_label_values(&["shut_down"]).inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.wait(Msg::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let r = self.wait(Msg::Shutdown, timeout);
        if let Ok(mut w) = self.worker.lock() {
            if r.is_ok() {
                if let Some(h) = w.take() {
                    let _ = h.join();
                }
            }
        }
        r
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Msg::Resource(resource.clone()));
        let _ = self.tx.try_send(Msg::Flush(sync_channel(1).0));
    }
}
