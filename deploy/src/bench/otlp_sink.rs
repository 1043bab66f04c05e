//! `keelson bench otlp-sink`: an OTLP/gRPC trace receiver that accepts and counts spans
//! (the "collector up" configuration of `scripts/bench-otlp.sh`; no collector is installed
//! on the benchmark machine). Prints the running span count every few seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(clap::Args)]
pub struct OtlpSinkArgs {
    /// host:port to listen on.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub addr: String,
}

struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize =
            req.into_inner().resource_spans.iter().flat_map(|r| r.scope_spans.iter()).map(|s| s.spans.len()).sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

pub async fn run(a: OtlpSinkArgs) -> Result<()> {
    let listener =
        tokio::net::TcpListener::bind(&a.addr).await.with_context(|| format!("cannot listen on {}", a.addr))?;
    let count = Arc::new(AtomicU64::new(0));
    let shown = count.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            let now = shown.load(Ordering::Relaxed);
            if now != last {
                println!("spans received: {now}");
                last = now;
            }
        }
    });
    println!("OTLP sink listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink(count)))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
