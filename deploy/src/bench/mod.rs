//! `keelson bench …`: load generators that print their figures.

mod api;
mod failover;
mod fsync;
mod otlp_sink;
mod pods;
mod scheduler;
mod store;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Load an etcd v3 endpoint (keelson or etcd) with puts or ranges.
    Store(store::StoreBenchArgs),
    /// Load the Kubernetes API over HTTPS: create/get/list/watch, a 10,000-pod LIST, many watchers.
    Api(api::ApiBenchArgs),
    /// An OTLP/gRPC trace receiver that accepts and counts spans (a stand-in collector).
    OtlpSink(otlp_sink::OtlpSinkArgs),
    /// Schedule pods onto simulated nodes (scheduler_perf's SchedulingBasic shape).
    Scheduler(scheduler::SchedulerBenchArgs),
    /// SIGKILL the leader of three masters again and again: time until controllers act.
    ControllerFailover(failover::FailoverBenchArgs),
    /// Pod startup latency on a real node: create -> Running, one after another and at once.
    PodStartup(pods::PodStartupBenchArgs),
}

pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Store(a) => store::run(a).await,
        BenchCmd::Api(a) => api::run(a).await,
        BenchCmd::OtlpSink(a) => otlp_sink::run(a).await,
        BenchCmd::Scheduler(a) => scheduler::run(a).await,
        BenchCmd::ControllerFailover(a) => failover::run(a).await,
        BenchCmd::PodStartup(a) => pods::run(a).await,
    }
}
