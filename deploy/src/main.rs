//! `keelson`: the one binary. `keelson server` runs a master (store, etcd endpoint, API
//! server; `api.rs`, `pki.rs`, `kubeconfig.rs`); `keelson up` a one-master cluster; `keelson bench store`
//! measures an etcd-v3 endpoint (keelson's or a real etcd's). Start reading at the
//! subcommand modules: `server.rs`, `bench/`.

mod api;
mod bench;
mod kubeconfig;
mod pki;
mod server;
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
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Server(args) => server::run(args).await,
            Cmd::Up(args) => up::run(args).await,
            Cmd::Bench(b) => bench::run(b).await,
        }
    });
    if let Err(e) = res {
        eprintln!("keelson: {e:#}");
        std::process::exit(1);
    }
}
