//! `keelson chaos run`: a local multi-master cluster under recorded workloads and a seeded
//! schedule of faults; prints the report and exits non-zero when a checker fails.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keelson_chaos::cluster::{ClusterSpec, NetworkMode};
use keelson_chaos::fault::FaultMix;
use keelson_chaos::run::{run as run_chaos, RunConfig};

#[derive(Subcommand)]
pub enum ChaosCmd {
    /// Start a cluster, run the workloads under faults, check the histories, report.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Masters (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// How long to inject faults, e.g. `90s`, `5m`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Faults to choose from, optionally weighted: kill, kill-leader, pause, partition
    /// (= partition-leader, partition-halves, partition-one-way), partition-ring,
    /// membership, clock, delay, drop, disk-full, fsync, failpoint; e.g.
    /// `kill-leader=3,pause,partition`.
    #[arg(long, default_value = "kill,kill-leader,pause,partition")]
    pub faults: String,
    /// Seed of every random choice (printed; rerun with it to repeat a run's schedule).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the cluster lives (default: a fresh directory under /tmp). Kept when a checker
    /// fails or with --keep.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub keep: bool,
    /// `netns` (a namespace per master; needed for partitions) or `loopback`.
    #[arg(long)]
    pub network: Option<String>,
    /// The /24 for the masters in netns mode (e.g. 10.77.3.0).
    #[arg(long)]
    pub subnet: Option<std::net::Ipv4Addr>,
    /// Name prefix of the namespaces and bridge (at most 12 characters).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Raft election timeout of the masters (ms).
    #[arg(long, default_value_t = 300)]
    pub election_timeout_ms: u64,
    /// Kubernetes-profile writers, etcd register clients and watchers.
    #[arg(long, default_value_t = 4)]
    pub kube_clients: usize,
    #[arg(long, default_value_t = 4)]
    pub register_clients: usize,
    #[arg(long, default_value_t = 3)]
    pub watchers: usize,
    /// Simulated nodes (`keelson agent --simulate N`) the scheduler binds the controller
    /// probe's pods to, for the one-node-per-pod check; 0 for none.
    #[arg(long, default_value_t = 2)]
    pub simulate: usize,
    /// KEELSON_LOG of the masters and the simulated agent (their logs are in --dir).
    #[arg(long, default_value = "info")]
    pub master_log: String,
    /// Undisturbed workload before the first fault and after the last heal.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub quiet: Duration,
    /// Keep injecting past --duration (up to 3x) until the leader was SIGKILLed this often.
    #[arg(long, default_value_t = 0)]
    pub min_leader_kills: usize,
    /// Also write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// `90`, `90s`, `1500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}: want e.g. 90s, 5m, 1500ms"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(d)
}

pub async fn run(cmd: ChaosCmd) -> Result<()> {
    match cmd {
        ChaosCmd::Run(a) => run_one(a).await,
    }
}

async fn run_one(a: RunArgs) -> Result<()> {
    if !(1..=9).contains(&a.masters) {
        bail!("--masters must be between 1 and 9 (3 or 5 to survive failures)");
    }
    let faults: FaultMix = a.faults.parse().context("--faults")?;
    let seed = a.seed.unwrap_or_else(rand::random);
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("keelson-chaos-{seed}")),
    };
    if dir.join("cluster.json").exists() {
        // Its data would carry an earlier run's keys: the checkers assume a fresh cluster.
        bail!(
            "{} holds a cluster from an earlier run (cluster.json); run `keelson cluster down --purge --dir {}` or pick another --dir",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let binary = std::env::current_exe().context("cannot find the keelson binary")?;
    let mut spec = ClusterSpec::new(a.masters, &dir, binary);
    spec.network = match a.network.as_deref() {
        None => match NetworkMode::auto() {
            NetworkMode::Netns { .. } => NetworkMode::Netns { subnet: a.subnet, prefix: a.prefix.clone() },
            other => other,
        },
        Some("netns") => NetworkMode::Netns { subnet: a.subnet, prefix: a.prefix.clone() },
        Some("loopback") => NetworkMode::Loopback,
        Some(other) => bail!("--network {other}: use netns or loopback"),
    };
    spec.election_timeout_ms = Some(a.election_timeout_ms);
    spec.simulate = (a.simulate > 0).then_some(a.simulate);
    spec.log_filter = a.master_log.clone();
    let mut cfg = RunConfig::new(spec, a.duration, faults, seed);
    cfg.kube_clients = a.kube_clients;
    cfg.register_clients = a.register_clients;
    cfg.watchers = a.watchers;
    cfg.quiet = a.quiet;
    cfg.keep = a.keep;
    cfg.min_leader_kills = a.min_leader_kills;
    eprintln!("keelson chaos run: seed {seed}, {} masters, {:?}, data in {}", a.masters, a.duration, dir.display());
    let report = run_chaos(cfg).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.report {
        std::fs::write(p, &json).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{}", report.text());
    }
    if !report.ok {
        bail!("a checker failed (seed {seed}); the cluster's data and history.json are kept in {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
