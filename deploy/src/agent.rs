//! `keelson agent`: a node. `--simulate N` runs N simulated nodes (like KWOK): they
//! register, renew their Leases, and run the pods bound to them on paper — how the
//! scheduler and controllers are tested and benchmarked at scale. With `--port` they also
//! serve the kubelet's `/metrics/resource` (HTTPS, client certificates required), so
//! metrics.k8s.io and the HPA can be tested with simulated load. `--node-name N` runs a
//! real node: the kubelet (runc/crun, CNI), the service proxy (nftables), cluster DNS on
//! the pod bridge and the local-path provisioner (see `--disable`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::server::parse_duration;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Run this many simulated nodes instead of a real one. Their pods "use" what the pod
    /// annotations sim.keelson.dev/cpu-usage ("250m") and sim.keelson.dev/memory-usage
    /// ("64Mi") say (else 10% of their requests), served with --port.
    #[arg(long)]
    pub simulate: Option<usize>,
    /// The kubeconfig to reach the API with (its credentials and CA).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// API server URLs (`https://m1:6443,https://m2:6443`), overriding the kubeconfig's:
    /// with several, the agent fails over between them by itself.
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
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
    /// Serve the kubelet endpoint on 127.0.0.1:PORT (0: a free port, logged) for all the
    /// simulated nodes, which report it as their kubelet port: GET /metrics/resource (what
    /// metrics-server scrapes) and /healthz, over HTTPS with client certificates required.
    /// Needs --tls-cert-file, --tls-private-key-file and --client-ca-file. Without it no
    /// resource usage is tracked.
    #[arg(long, value_name = "PORT", requires_all = ["tls_cert_file", "tls_private_key_file", "client_ca_file"])]
    pub port: Option<u16>,
    /// The kubelet endpoint's serving certificate (PEM, leaf first, then any intermediates).
    #[arg(long, value_name = "FILE", requires = "port")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "port")]
    pub tls_private_key_file: Option<PathBuf>,
    /// The CA (PEM) that must have signed the certificate every client of the kubelet
    /// endpoint presents (e.g. the API server's kubelet client certificate).
    #[arg(long, value_name = "FILE", requires = "port")]
    pub client_ca_file: Option<PathBuf>,
    /// A real node's name (without --simulate): pods bound to it run in runc/crun
    /// containers wired by CNI. Needs root.
    #[arg(long, conflicts_with = "simulate")]
    pub node_name: Option<String>,
    /// Where a real node keeps its pods, images and runtime state.
    #[arg(long, default_value = "/var/lib/keelson/agent")]
    pub root_dir: PathBuf,
    /// The OCI runtime: runc or crun (a name on PATH or a path).
    #[arg(long, default_value = "runc")]
    pub runtime: PathBuf,
    /// Where the CNI plugins are (bridge, host-local, loopback); repeatable.
    #[arg(long = "cni-bin-dir", default_values = ["/usr/lib/cni", "/opt/cni/bin"])]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The Linux bridge pods are attached to.
    #[arg(long, default_value = "keelson0")]
    pub bridge: String,
    /// A registry (host:port) pulled from over plain HTTP; repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// The address the node reports as its InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: std::net::IpAddr,
    /// The first back-off before a crashed container or a failed image pull is retried
    /// (doubling up to 5 minutes), as the kubelet's 10 s.
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub restart_backoff: Duration,
    /// Events the kubelet writes per second (0: no limit), as the kubelet's --event-qps.
    #[arg(long, default_value_t = 50.0, value_parser = parse_rate)]
    pub event_qps: f64,
    /// The burst of Events above --event-qps, as the kubelet's --event-burst.
    #[arg(long, default_value_t = 100)]
    pub event_burst: u32,
    /// Network namespaces of the node's pods are named <prefix><pod uid>.
    #[arg(long, default_value = "keelson-")]
    pub netns_prefix: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Nameservers for ClusterFirst pods (default: this node's own DNS on its bridge address).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// Node components not to run: dns, proxy, local-storage (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = ["dns", "proxy", "local-storage"])]
    pub disable: Vec<String>,
    /// The nftables table (family ip) the service proxy owns.
    #[arg(long, default_value = "keelson")]
    pub proxy_table: String,
    /// With --simulate: run a local-path provisioner for each simulated node, its volumes
    /// real directories under <root-dir>/storage/<node> (so StatefulSets' claims bind).
    #[arg(long, requires = "simulate")]
    pub local_storage: bool,
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

fn read_pem(flag: &str, path: &Option<PathBuf>) -> Result<String> {
    let Some(path) = path else { bail!("--port needs --{flag}") };
    std::fs::read_to_string(path).with_context(|| format!("reading --{flag} {}", path.display()))
}

/// The kubelet endpoint's TLS material (with `--port`).
fn kubelet_tls(args: &AgentArgs) -> Result<Option<keelson_node::simulate::KubeletTls>> {
    if args.port.is_none() {
        return Ok(None);
    }
    Ok(Some(keelson_node::simulate::KubeletTls {
        cert_pem: read_pem("tls-cert-file", &args.tls_cert_file)?,
        key_pem: read_pem("tls-private-key-file", &args.tls_private_key_file)?,
        client_ca_pem: read_pem("client-ca-file", &args.client_ca_file)?,
    }))
}

/// A rate: a finite number, 0 or more.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a rate (a number, 0 or more)")),
    }
}

/// A real node (`--node-name`).
async fn run_real(args: AgentArgs, node_name: String) -> Result<()> {
    let client = crate::kubeclient::connect(&args.kubeconfig, args.context.as_deref(), &args.server).await?;
    let off = |c: &str| args.disable.iter().any(|d| d == c);
    let cfg = keelson_node::kubelet::KubeletConfig {
        node_name,
        root_dir: args.root_dir.clone(),
        runtime: args.runtime.clone(),
        shim_exe: std::env::current_exe().context("cannot find this executable (the container shim)")?,
        cni_bin_dirs: args.cni_bin_dirs.clone(),
        bridge: args.bridge.clone(),
        insecure_registries: args.insecure_registries.clone(),
        node_ip: args.node_ip,
        labels: parse_labels(&args.node_labels)?,
        renew_interval: args.lease_renew_interval,
        initial_backoff: args.restart_backoff,
        event_qps: args.event_qps,
        event_burst: args.event_burst,
        netns_prefix: args.netns_prefix.clone(),
        kubelet_port: args.port.unwrap_or(10250),
        kubelet_tls: kubelet_tls(&args)?,
        cluster_domain: args.cluster_domain.clone(),
        cluster_dns: args.cluster_dns.clone(),
        serve_dns: !off("dns"),
        proxy: !off("proxy"),
        proxy_table: args.proxy_table.clone(),
        local_storage: !off("local-storage"),
        ..Default::default()
    };
    keelson_node::kubelet::preflight(&cfg).context("this host cannot run a real node")?;
    crate::telemetry::register_on_kubelet();
    let stop = CancellationToken::new();
    let task = tokio::spawn(keelson_node::kubelet::run(client, cfg, stop.clone()));
    crate::controllers_cmd::until_signal(task, stop).await
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let Some(count) = args.simulate else {
        let Some(name) = args.node_name.clone() else {
            bail!("pass --node-name N for a real node (root, runc or crun, CNI plugins), or --simulate N for simulated ones");
        };
        return run_real(args, name).await;
    };
    let kubelet_tls = kubelet_tls(&args)?;
    crate::telemetry::register_on_kubelet();
    let client = crate::kubeclient::connect(&args.kubeconfig, args.context.as_deref(), &args.server).await?;
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
        kubelet_port: args.port,
        kubelet_tls,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    if args.local_storage {
        for i in 0..count {
            let node_name = format!("{}-{i}", args.node_name_prefix);
            let dir = args.root_dir.join("storage").join(&node_name);
            let s = keelson_node::storage::StorageConfig { node_name, dir };
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = keelson_node::storage::run(client, s, stop).await {
                    tracing::error!(error = %e, "a simulated node's local-path provisioner stopped");
                }
            });
        }
    }
    let task = tokio::spawn(keelson_node::simulate::run(client, cfg, stop.clone()));
    tracing::info!(nodes = count, prefix = %args.node_name_prefix, "simulated nodes starting");
    crate::controllers_cmd::until_signal(task, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
        let args = ["agent", "--simulate", "2", "--kubeconfig", "k"].iter().chain(extra);
        Cli::try_parse_from(args).map(|c| c.agent)
    }

    #[test]
    fn the_kubelet_endpoint_flags_go_together() {
        let none = parse(&[]).unwrap();
        assert_eq!(none.port, None);
        assert!(kubelet_tls(&none).unwrap().is_none());
        let tls = ["--tls-cert-file", "c", "--tls-private-key-file", "k", "--client-ca-file", "ca"];
        let all = parse(&[&["--port", "0"][..], &tls[..]].concat()).unwrap();
        assert_eq!(all.port, Some(0));
        assert_eq!(all.client_ca_file.as_deref(), Some(std::path::Path::new("ca")));
        let missing = parse(&["--port", "10250", "--tls-cert-file", "c"]).err().unwrap().to_string();
        assert!(missing.contains("--tls-private-key-file") && missing.contains("--client-ca-file"), "{missing}");
        let stray = parse(&tls[..2]).err().unwrap().to_string();
        assert!(stray.contains("--port"), "{stray}");
        assert!(parse(&["--port", "70000"]).is_err());
        // Unreadable files are named.
        let unreadable = parse(&[&["--port", "0"][..], &tls[..]].concat()).unwrap();
        let e = format!("{:#}", kubelet_tls(&unreadable).unwrap_err());
        assert!(e.contains("--tls-cert-file c"), "{e}");
    }
}
