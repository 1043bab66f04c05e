//! `keelson`: the one binary. `keelson server` runs a master (store, etcd endpoint, API
//! server; `api.rs`, `pki.rs`, `kubeconfig.rs`; on the Raft leader the controllers and
//! scheduler, `leader.rs`); `keelson up` a one-master cluster; `keelson agent --simulate N`
//! simulated nodes; `keelson controllers` the control loops against any API server;
//! `keelson bench store` measures an etcd-v3 endpoint (keelson's or a real etcd's). Start
//! reading at the subcommand modules: `server.rs`, `bench/`.

mod agent;
mod api;
mod bench;
mod chaos_cmd;
mod cluster_cmd;
mod controllers_cmd;
mod kubeclient;
mod kubeconfig;
mod leader;
mod pki;
mod server;
mod span_queue;
mod telemetry;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: allocation was ~20% of a master's CPU under load
/// (docs/benchmarks.md). tikv makes the same choice with jemalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keelson", version, about = "A Kubernetes-compatible control plane with an embedded Raft store")]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `keelson_store=debug`.
    #[arg(long, global = true, env = "KEELSON_LOG", default_value = "info")]
    log: String,
    /// Export traces over OTLP gRPC to this collector (e.g. `http://127.0.0.1:4317`).
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one master: the Raft-replicated store, its etcd v3 endpoint and the
    /// Kubernetes API over HTTPS.
    Server(server::ServerArgs),
    /// A one-master cluster in one process; prints the admin kubeconfig path when ready.
    Up(up::UpArgs),
    /// A node: `--node-name N` runs a real one (runc/crun, CNI; as root), `--simulate N`
    /// runs N simulated nodes against the API.
    Agent(agent::AgentArgs),
    /// The controllers and the scheduler against any API server (keelson's masters run
    /// them on the Raft leader themselves).
    Controllers(controllers_cmd::ControllersArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// A local multi-master cluster: `up`, `status`, `down`.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCmd),
    /// Chaos runs: faults against a local multi-master cluster under recorded workloads,
    /// then the histories checked (linearizability, watches, lost writes).
    #[command(subcommand)]
    Chaos(chaos_cmd::ChaosCmd),
}

fn main() {
    // `keelson shim …`: a container's shim (started by the kubelet; not a user command).
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == "shim") {
        match keelson_node::kubelet::runtime::ShimArgs::parse(&raw[2..]) {
            Ok(args) => std::process::exit(keelson_node::kubelet::runtime::shim::run(&args)),
            Err(e) => {
                eprintln!("keelson shim: {e}");
                std::process::exit(2);
            }
        }
    }
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("KEELSON_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keelson: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let instance = match &cli.cmd {
        Cmd::Server(a) => a.name.clone(),
        Cmd::Up(_) => "up".to_string(),
        Cmd::Bench(_) => "bench".to_string(),
        Cmd::Agent(a) => a.node_name.clone().unwrap_or_else(|| "agent".to_string()),
        Cmd::Controllers(_) => "controllers".to_string(),
        Cmd::Cluster(_) => "cluster".to_string(),
        Cmd::Chaos(_) => "chaos".to_string(),
    };
    // Inside the runtime: the OTLP exporter's gRPC channel lives on it.
    // The chaos harness's Kubernetes clients fail by design while masters are down; the
    // kube client logs each failure at ERROR, which would drown the run's own log.
    let log = match &cli.cmd {
        Cmd::Chaos(_) => format!("{},kube_client=off", cli.log),
        _ => cli.log.clone(),
    };
    // A real agent's spans carry its node (OpenTelemetry's k8s.node.name resource attribute).
    let resource: Vec<(&'static str, String)> = match &cli.cmd {
        Cmd::Agent(a) => a.node_name.iter().map(|n| ("k8s.node.name", n.clone())).collect(),
        _ => Vec::new(),
    };
    let telemetry =
        match rt.block_on(async { telemetry::init(&log, cli.otlp_endpoint.as_deref(), &instance, &resource) }) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("keelson: {e:#}");
                std::process::exit(1);
            }
        };
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Server(args) => server::run(args).await,
            Cmd::Up(args) => up::run(args).await,
            Cmd::Bench(b) => bench::run(b).await,
            Cmd::Agent(a) => agent::run(a).await,
            Cmd::Controllers(a) => controllers_cmd::run(a).await,
            Cmd::Cluster(c) => cluster_cmd::run(c).await,
            Cmd::Chaos(c) => chaos_cmd::run(c).await,
        }
    });
    rt.block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await.ok() });
    if let Err(e) = res {
        eprintln!("keelson: {e:#}");
        std::process::exit(1);
    }
}
