//! `keelson controllers --kubeconfig F`: the controllers and the scheduler as an ordinary
//! client of any Kubernetes API server (keelson's masters run them in-process on the
//! Raft leader instead; see `leader.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::server::parse_duration;

#[derive(Args, Debug)]
pub struct ControllersArgs {
    /// The kubeconfig to reach the API with.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Where node podCIDRs come from; `none` turns node IPAM off.
    #[arg(long, default_value = "none")]
    pub cluster_cidr: String,
    /// The size of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// A node whose Lease is older than this is NotReady.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// Run the controllers only, not the scheduler.
    #[arg(long)]
    pub no_scheduler: bool,
}

pub async fn run(args: ControllersArgs) -> Result<()> {
    let client = crate::kubeclient::from_kubeconfig(&args.kubeconfig, args.context.as_deref()).await?;
    let cluster_cidr = match args.cluster_cidr.as_str() {
        "" | "none" => None,
        c => {
            keelson_api::alloc::ServiceRanges::parse_cidr(c).map_err(|e| anyhow::anyhow!("--cluster-cidr {c}: {e}"))?;
            Some(c.to_string())
        }
    };
    // The CA of the cluster this kubeconfig trusts, published as kube-root-ca.crt.
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let root_ca_pem = kubeconfig
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref()?.certificate_authority_data.clone())
        .next()
        .and_then(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b64).ok().and_then(|b| String::from_utf8(b).ok())
        });
    let stop = CancellationToken::new();
    let ctx = keelson_controllers::Context {
        client: client.clone(),
        config: keelson_controllers::ControllerConfig {
            cluster_cidr,
            node_cidr_mask_size: args.node_cidr_mask_size,
            node_monitor_grace: args.node_monitor_grace_period,
            root_ca_pem,
            ..Default::default()
        },
        stop: stop.clone(),
    };
    let no_scheduler = args.no_scheduler;
    let sched_stop = stop.clone();
    let task = tokio::spawn(async move {
        let controllers = keelson_controllers::run(ctx);
        if no_scheduler {
            controllers.await;
            return Ok::<(), std::convert::Infallible>(());
        }
        let scheduler = crate::leader::run_scheduler(client, keelson_scheduler::SchedulerConfig::default(), sched_stop);
        tokio::join!(controllers, scheduler);
        Ok::<(), std::convert::Infallible>(())
    });
    tracing::info!("controllers and scheduler running");
    until_signal(task, stop).await
}

/// Run `task` until it ends or SIGINT/SIGTERM arrives (then cancel it and wait, bounded).
pub async fn until_signal<E: std::fmt::Display>(
    mut task: tokio::task::JoinHandle<std::result::Result<(), E>>,
    stop: CancellationToken,
) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let early = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = &mut task => Some(r),
    };
    let r = match early {
        Some(r) => r,
        None => {
            stop.cancel();
            match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
                Ok(r) => r,
                Err(_) => {
                    task.abort();
                    anyhow::bail!("did not stop within 10 s");
                }
            }
        }
    };
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
        Err(e) => Err(anyhow::anyhow!("task failed: {e}")),
    }
}
