//! `keelson agent`: a node. `--simulate N` runs N simulated nodes (like KWOK): they
//! register, renew their Leases, and run the pods bound to them on paper — how the
//! scheduler and controllers are tested and benchmarked at scale. The real kubelet
//! (runc/crun, CNI) is the node issue's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::server::parse_duration;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Run this many simulated nodes instead of a real one.
    #[arg(long)]
    pub simulate: Option<usize>,
    /// The kubeconfig to reach the API with.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Simulated nodes are named `<prefix>-<i>`.
    #[arg(long, default_value = "sim")]
    pub node_name_prefix: String,
    /// Each simulated node's CPU capacity.
    #[arg(long, default_value = "32")]
    pub node_cpu: String,
    /// Each simulated node's memory capacity.
    #[arg(long, default_value = "256Gi")]
    pub node_memory: String,
    /// Each simulated node's pod capacity.
    #[arg(long, default_value = "110")]
    pub node_pods: String,
    /// Extra node labels, `k=v,k2=v2`.
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// How often each node renews its Lease (the kubelet's 10 s by default).
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub lease_renew_interval: Duration,
    /// How often each node's Ready condition heartbeat is refreshed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// How long a Job's pod (restartPolicy Never/OnFailure) runs before it succeeds.
    #[arg(long, default_value = "1s", value_parser = parse_duration_ms)]
    pub job_duration: Duration,
    /// Delete the simulated Nodes when the agent stops.
    #[arg(long)]
    pub delete_nodes_on_exit: bool,
}

/// `500ms`, or anything [`parse_duration`] takes.
pub fn parse_duration_ms(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<u64>().map(Duration::from_millis).map_err(|_| format!("{s:?} is not a duration"));
    }
    parse_duration(s)
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for kv in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else { bail!("--node-labels: {kv:?} is not key=value") };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let Some(count) = args.simulate else {
        bail!("only simulated nodes are built so far: pass --simulate N (the real kubelet is the node issue's)");
    };
    let client = crate::kubeclient::from_kubeconfig(&args.kubeconfig, args.context.as_deref()).await?;
    let cfg = keelson_node::simulate::SimConfig {
        count,
        name_prefix: args.node_name_prefix.clone(),
        cpu: args.node_cpu.clone(),
        memory: args.node_memory.clone(),
        pods: args.node_pods.clone(),
        labels: parse_labels(&args.node_labels)?,
        renew_interval: args.lease_renew_interval,
        status_interval: args.status_interval,
        job_run: args.job_duration,
        delete_nodes_on_exit: args.delete_nodes_on_exit,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(keelson_node::simulate::run(client, cfg, stop.clone()));
    tracing::info!(nodes = count, prefix = %args.node_name_prefix, "simulated nodes starting");
    crate::controllers_cmd::until_signal(task, stop).await
}
