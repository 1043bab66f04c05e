//! `keelson cluster up|status|down`: a local multi-master cluster, each master a
//! `keelson server` process with its own address (a network namespace per master on a
//! bridge as root, else its own loopback address), an admin kubeconfig, and optionally
//! simulated nodes (`--simulate N`) or real ones (`--agents N`, each its own namespace).
//! The harness itself is `keelson_chaos::cluster`; this is its CLI.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use keelson_chaos::cluster::{status, Cluster, ClusterSpec, Net, NetworkMode, State};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Start the masters (detached) and return once they have a leader and every API
    /// server answers; prints the admin kubeconfig's path.
    Up(UpArgs),
    /// Each master's process and Raft state (members, leader, term, indexes, revision).
    Status(StatusArgs),
    /// Stop every process, delete the namespaces and the bridge; the data stays unless --purge.
    Down(DownArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// netns as root with iproute2 and nsenter, else loopback.
    Auto,
    /// A network namespace per master on a bridge (partitions possible).
    Netns,
    /// Every master on its own 127.0.B.x address (no partitions).
    Loopback,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the cluster lives: mI/ (data), mI.log, pki/, admin.kubeconfig, cluster.json.
    #[arg(long)]
    pub dir: PathBuf,
    /// How many masters (3 or 5 to survive failures; 1 to 9).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Run N simulated nodes (`keelson agent --simulate N` against every master).
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// Run N real nodes (1 to 9): `keelson agent --node-name nI`, each in its own network
    /// namespace on the cluster's bridge (netns network: root, runc or crun, the CNI plugins).
    #[arg(long, value_name = "N", conflicts_with = "simulate")]
    pub agents: Option<usize>,
    /// One more `keelson agent` argument for every real node; repeatable
    /// (`--agent-arg=--insecure-registry --agent-arg=10.150.7.1:5000`).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true, requires = "agents")]
    pub agent_args: Vec<String>,
    #[arg(long, value_enum, default_value_t = Network::Auto)]
    pub network: Network,
    /// The netns network's /24 (e.g. 10.150.7.0; default: a free one derived from --dir).
    #[arg(long)]
    pub subnet: Option<Ipv4Addr>,
    /// Names the netns network's namespaces (<prefix>-m1…) and bridge (<prefix>-br); at
    /// most 12 characters (default: kc + 6 hex digits of --dir).
    #[arg(long)]
    pub prefix: Option<String>,
    /// The masters' Raft election timeout (ms; the server's default if unset).
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// One more `keelson server` argument for every master; repeatable
    /// (`--server-arg=--snapshot-count --server-arg=1000`).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The masters' (and agent's) log filter, as KEELSON_LOG.
    #[arg(long, default_value = "info")]
    pub master_log: String,
    /// How long to wait for a leader and every API server.
    #[arg(long, default_value = "90s", value_parser = crate::server::parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Also remove everything the cluster wrote in --dir (data, PKI, logs, kubeconfigs).
    #[arg(long)]
    pub purge: bool,
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Up(a) => up(a).await,
        ClusterCmd::Status(a) => show_status(a).await,
        ClusterCmd::Down(a) => down(a).await,
    }
}

async fn up(a: UpArgs) -> Result<()> {
    let network = match a.network {
        Network::Netns => NetworkMode::Netns { subnet: a.subnet, prefix: a.prefix.clone() },
        Network::Loopback => NetworkMode::Loopback,
        // A cluster that was here before keeps its network.
        Network::Auto => match State::read(&a.dir).ok().map(|s| s.net) {
            Some(Net::Loopback { .. }) => NetworkMode::Loopback,
            Some(Net::Netns { .. }) => NetworkMode::Netns { subnet: a.subnet, prefix: a.prefix.clone() },
            None => match NetworkMode::auto() {
                NetworkMode::Netns { .. } => NetworkMode::Netns { subnet: a.subnet, prefix: a.prefix.clone() },
                NetworkMode::Loopback => NetworkMode::Loopback,
            },
        },
    };
    if network == NetworkMode::Loopback && (a.subnet.is_some() || a.prefix.is_some()) {
        bail!("--subnet and --prefix apply to the netns network only (this cluster uses loopback addresses)");
    }
    let binary = std::env::current_exe().context("cannot find this keelson binary")?;
    let spec = ClusterSpec {
        masters: a.masters,
        dir: a.dir.clone(),
        binary,
        network,
        election_timeout_ms: a.election_timeout_ms,
        simulate: a.simulate,
        server_args: a.server_args.clone(),
        log_filter: a.master_log.clone(),
        agents: a.agents.unwrap_or(0),
        agent_args: a.agent_args.clone(),
    };
    // Interrupted while starting: the half-started cluster is dropped, which tears it down.
    let mut c = tokio::select! {
        r = Cluster::up_within(spec, a.timeout) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the masters that had started were stopped"),
    };
    c.detach();
    let net = match c.net() {
        Net::Netns { subnet, prefix } => {
            format!("network namespaces {prefix}-m1…{prefix}-m{} on bridge {prefix}-br, {subnet}/24", c.len())
        }
        Net::Loopback { subnet } => format!("loopback addresses in {subnet}/24"),
    };
    let statuses = c.status().await;
    let leader = status::leader_of(&statuses).map(|i| c.name(i).to_string()).unwrap_or_else(|| "none yet".into());
    eprintln!("keelson cluster: {} masters up in {} ({net}); leader {leader}", c.len(), c.dir().display());
    eprintln!("{}", status::table(&statuses));
    if let Some(pid) = c.agent_pid() {
        eprintln!(
            "simulated nodes: {} (agent pid {pid}, log {})",
            a.simulate.unwrap_or(0),
            c.agent_log_path().display()
        );
    }
    for (i, n) in c.nodes().iter().enumerate() {
        eprintln!(
            "node {}: {} in namespace {}, agent pid {}, log {}",
            n.name,
            n.ip,
            n.netns,
            c.node_pid(i).map_or("-".into(), |p| p.to_string()),
            n.log.display()
        );
    }
    eprintln!(
        "kubectl --kubeconfig {k} get nodes    # status: keelson cluster status --dir {d}; stop: keelson cluster down --dir {d}",
        k = c.kubeconfig_path().display(),
        d = c.dir().display()
    );
    println!("{}", c.kubeconfig_path().display());
    Ok(())
}

async fn show_status(a: StatusArgs) -> Result<()> {
    let c = Cluster::load(&a.dir)?;
    let statuses = c.status().await;
    let leader = status::leader_of(&statuses);
    if a.json {
        let doc = serde_json::json!({
            "dir": c.dir(),
            "network": c.net(),
            "leader": leader.map(|i| c.name(i)),
            "masters": statuses,
            "agent": c.state().agent.as_ref().map(|ag| serde_json::json!({
                "simulate": ag.simulate,
                "pid": c.agent_pid(),
                "running": c.agent_pid().is_some(),
                "log": ag.log,
            })),
            "nodes": c.nodes().iter().enumerate().map(|(i, n)| serde_json::json!({
                "name": n.name,
                "ip": n.ip,
                "netns": n.netns,
                "pid": c.node_pid(i),
                "running": c.node_pid(i).is_some(),
                "log": n.log,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{}", status::table(&statuses));
    match leader {
        Some(i) => println!("leader: {} (term {})", c.name(i), statuses[i].term),
        None => println!("leader: none agreed on by a majority of the masters that answer"),
    }
    if let Some(ag) = &c.state().agent {
        match c.agent_pid() {
            Some(pid) => println!("agent: {} simulated nodes, pid {pid}", ag.simulate),
            None => println!("agent: not running (log {})", ag.log.display()),
        }
    }
    for (i, n) in c.nodes().iter().enumerate() {
        match c.node_pid(i) {
            Some(pid) => println!("node {} ({}): agent pid {pid}", n.name, n.ip),
            None => println!("node {} ({}): agent not running (log {})", n.name, n.ip, n.log.display()),
        }
    }
    Ok(())
}

async fn down(a: DownArgs) -> Result<()> {
    let c = Cluster::load(&a.dir)?;
    let (dir, masters) = (c.dir().to_path_buf(), c.len());
    c.down(a.purge).await?;
    if a.purge {
        eprintln!("keelson cluster: down; removed its data from {}", dir.display());
    } else {
        eprintln!(
            "keelson cluster: down; the data is kept in {d} (start it again: keelson cluster up --dir {d} --masters {masters}; remove it: keelson cluster down --dir {d} --purge)",
            d = dir.display()
        );
    }
    Ok(())
}
