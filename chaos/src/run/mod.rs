//! `keelson chaos run`: a cluster, the recorded workloads, a seeded schedule of faults,
//! convergence, the checkers and the report.

pub mod converge;
pub mod monitor;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::RangeRequest;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::check::{self, Verdict};
use crate::cluster::{Cluster, ClusterError, ClusterSpec};
use crate::fault::{
    clock, disk, failpoint, fsync, kill, membership, partition, pause, proxy, FaultError, FaultKind, FaultMix,
    FaultRecord,
};
use crate::history::{Clock, Event, History};
use crate::report::{self, Report};
use crate::workload::{Endpoints, Workload, WorkloadConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("fault: {0}")]
    Fault(#[from] FaultError),
    #[error("{0}")]
    Setup(String),
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub cluster: ClusterSpec,
    pub duration: Duration,
    pub faults: FaultMix,
    pub seed: u64,
    /// Before the first fault and after the last heal, the workload runs undisturbed.
    pub quiet: Duration,
    pub kube_clients: usize,
    pub register_clients: usize,
    pub watchers: usize,
    pub linearizability_budget: Duration,
    /// Keep the data dirs after the run.
    pub keep: bool,
    /// Keep injecting past `duration` (up to three times it) until the leader has been
    /// SIGKILLed this often.
    pub min_leader_kills: usize,
}

impl RunConfig {
    pub fn new(cluster: ClusterSpec, duration: Duration, faults: FaultMix, seed: u64) -> RunConfig {
        RunConfig {
            cluster,
            duration,
            faults,
            seed,
            quiet: Duration::from_secs(3),
            kube_clients: 4,
            register_clients: 4,
            watchers: 3,
            linearizability_budget: Duration::from_secs(60),
            keep: false,
            min_leader_kills: 0,
        }
    }
}

/// How long after a heal the cluster may take to have every master up and a leader.
const RECOVERY: Duration = Duration::from_secs(30);
/// At most this long, after a leader fault, for the controllers to act before the next fault.
const CONTROLLERS_SETTLE: Duration = Duration::from_secs(10);

fn ms_between(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..=hi))
}

/// Every master answers and names the same leader.
async fn recovered(endpoints: &Endpoints, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        let said = monitor::ask_all(&endpoints.etcd, Duration::from_millis(500)).await;
        let (leader, term) = monitor::leader_of(&said);
        if leader.is_some() && said.iter().all(|s| s.map(|s| s.term == term).unwrap_or(false)) {
            return Ok(started.elapsed());
        }
        last = format!(
            "leader {leader:?} term {term}, masters answering: {:?}",
            said.iter().map(|s| s.map(|s| (s.leader, s.term))).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn endpoints_of(cluster: &Cluster) -> Result<Endpoints, RunError> {
    let mut etcd = Vec::new();
    let mut kube = Vec::new();
    for i in 0..cluster.len() {
        etcd.push(cluster.etcd_channel(i).await?);
        kube.push(cluster.kube_client(i).await?);
    }
    Ok(Endpoints { etcd, kube })
}

async fn head_revision(endpoints: &Endpoints) -> Result<i64, RunError> {
    for c in &endpoints.etcd {
        let mut kv = KvClient::new(c.clone());
        let req = RangeRequest { key: b"/".to_vec(), count_only: true, ..Default::default() };
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), kv.range(req)).await {
            return Ok(r.into_inner().header.map(|h| h.revision).unwrap_or(0));
        }
    }
    Err(RunError::Setup("no master answered a linearizable read".into()))
}

async fn create_namespace(endpoints: &Endpoints, name: &str) -> Result<(), RunError> {
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() }, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        for k in &endpoints.kube {
            match Api::<Namespace>::all(k.clone()).create(&PostParams::default(), &ns).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(RunError::Setup(format!("cannot create namespace {name}: {last}")))
}

/// The final state of the workload's keys, read linearizably.
async fn final_state(endpoints: &Endpoints, prefixes: &[String]) -> Result<(Vec<Event>, i64), RunError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for c in &endpoints.etcd {
            let mut kv = KvClient::new(c.clone());
            let mut events = Vec::new();
            let mut revision = 0;
            let mut good = true;
            for p in prefixes {
                let key = p.as_bytes().to_vec();
                let req = RangeRequest {
                    range_end: keelson_store::keys::prefix_end(&key),
                    key,
                    revision,
                    ..Default::default()
                };
                match tokio::time::timeout(Duration::from_secs(3), kv.range(req)).await {
                    Ok(Ok(r)) => {
                        let r = r.into_inner();
                        if revision == 0 {
                            revision = r.header.map(|h| h.revision).unwrap_or(0);
                        }
                        for kv in r.kvs {
                            let key = String::from_utf8_lossy(&kv.key).into_owned();
                            let value = if key.starts_with("/registry/") {
                                serde_json::from_slice::<serde_json::Value>(&kv.value)
                                    .ok()
                                    .and_then(|o| o.get("data")?.get("v")?.as_str().map(str::to_string))
                            } else {
                                Some(String::from_utf8_lossy(&kv.value).into_owned())
                            };
                            events.push(Event { revision: kv.mod_revision, key, value });
                        }
                    }
                    _ => {
                        good = false;
                        break;
                    }
                }
            }
            if good {
                events.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok((events, revision));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(RunError::Setup("no master answered the final read within 20 s".into()))
}

/// Panics in the masters' logs, except those a failpoint fault injected.
fn panics(cluster: &Cluster) -> Verdict {
    let mut violations = Vec::new();
    for i in 0..cluster.len() {
        let text = std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default();
        for p in uninjected_panics(&text) {
            violations.push(format!("{}: {p}", cluster.name(i)));
        }
    }
    Verdict {
        name: "no-panic",
        ok: violations.is_empty(),
        checked: cluster.len(),
        summary: if violations.is_empty() {
            format!("no panic in {} master logs", cluster.len())
        } else {
            format!("{} panics in the master logs", violations.len())
        },
        violations,
    }
}

/// The panics in a log, each as its "panicked at" line and the message after it, except
/// those whose message says a failpoint injected them.
fn uninjected_panics(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
        let message = lines.get(i + 1).copied().unwrap_or_default();
        if line.contains(failpoint::INJECTED_PANIC) || message.contains(failpoint::INJECTED_PANIC) {
            continue;
        }
        out.push(format!("{} {}", line.trim(), message.trim()));
    }
    out
}

/// Injects one fault and heals it.
async fn inject(
    cluster: &mut Cluster,
    kind: FaultKind,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    let n = cluster.len();
    let leader_or = |rng: &mut StdRng| leader.unwrap_or_else(|| rng.gen_range(0..n));
    match kind {
        FaultKind::Kill => {
            let t = rng.gen_range(0..n);
            let d = kill::kill_and_restart(cluster, t, ms_between(rng, 200, 1500)).await?;
            Ok((vec![t], d))
        }
        FaultKind::KillLeader => {
            let t = leader_or(rng);
            let d = kill::kill_and_restart(cluster, t, ms_between(rng, 200, 1500)).await?;
            Ok((vec![t], d))
        }
        FaultKind::Membership => {
            let t = rng.gen_range(0..n);
            let d = membership::remove_and_readd(cluster, t).await?;
            Ok((vec![t], d))
        }
        FaultKind::Clock => {
            let t = rng.gen_range(0..n);
            let offset = rng.gen_range(5..=60) * if rng.gen_bool(0.5) { 1 } else { -1 };
            let d = clock::skew(cluster, t, offset, ms_between(rng, 2000, 4000)).await?;
            Ok((vec![t], d))
        }
        FaultKind::Delay => proxy::delay(cluster, leader, rng, election_ms).await,
        FaultKind::Drop => proxy::drop_links(cluster, leader, rng, election_ms).await,
        FaultKind::DiskFull => disk::fill(cluster, leader, rng, election_ms).await,
        FaultKind::Fsync => fsync::fail(cluster, leader, rng, election_ms).await,
        FaultKind::Failpoint => failpoint::arm(cluster, leader, rng, election_ms).await,
        FaultKind::Pause => {
            let t = leader_or(rng);
            let d = pause::pause_and_resume(cluster, t, ms_between(rng, election_ms * 3, election_ms * 6)).await?;
            Ok((vec![t], d))
        }
        FaultKind::PartitionLeader
        | FaultKind::PartitionOneWay
        | FaultKind::PartitionHalves
        | FaultKind::PartitionRing => {
            let t = leader_or(rng);
            let p = match kind {
                FaultKind::PartitionLeader => partition::split(&[t], n),
                FaultKind::PartitionOneWay => partition::deaf(t, n),
                FaultKind::PartitionRing if n >= 5 => partition::ring(n),
                _ => {
                    // A minority with or without the leader.
                    let mut group: Vec<usize> = vec![if rng.gen_bool(0.5) { t } else { (t + 1) % n }];
                    while group.len() < (n - 1) / 2 {
                        let c = rng.gen_range(0..n);
                        if !group.contains(&c) {
                            group.push(c);
                        }
                    }
                    partition::split(&group, n)
                }
            };
            let hold = ms_between(rng, election_ms * 3, election_ms * 8);
            let targets = (0..n).filter(|&r| !p.drop_from[r].is_empty()).collect();
            partition::apply(cluster, &p)?;
            tokio::time::sleep(hold).await;
            partition::heal(cluster)?;
            Ok((targets, format!("{} for {} ms", p.description, hold.as_millis())))
        }
    }
}

/// Runs the whole thing; the cluster is torn down before returning.
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    if cfg.faults.0.iter().any(|(k, _)| k.needs_netns())
        && !matches!(cfg.cluster.network, crate::cluster::NetworkMode::Netns { .. })
    {
        return Err(FaultError::NoNetns.into());
    }
    let election_ms = cfg.cluster.election_timeout_ms.unwrap_or(300);
    let masters = cfg.cluster.masters;
    let dir = cfg.cluster.dir.clone();
    let mut cluster = Cluster::up(cfg.cluster.clone()).await?;
    let result = drive(&cfg, &mut cluster, election_ms).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "chaos run failed; tearing the cluster down");
    }
    let keep = cfg.keep || result.as_ref().map(|r| !r.ok).unwrap_or(true);
    if let Err(e) = cluster.down(!keep).await {
        tracing::warn!(error = %e, "tearing the cluster down");
    }
    let mut report = result?;
    report.masters = masters;
    report.dir = dir.display().to_string();
    Ok(report)
}

async fn drive(cfg: &RunConfig, cluster: &mut Cluster, election_ms: u64) -> Result<Report, RunError> {
    let clock = Clock::new();
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let endpoints = Arc::new(endpoints_of(cluster).await?);
    let namespace = "chaos".to_string();
    create_namespace(&endpoints, &namespace).await?;
    let register_prefix = format!("/chaos/{}/", cfg.seed);
    let wcfg = WorkloadConfig {
        namespace: namespace.clone(),
        register_prefix: register_prefix.clone(),
        kube_clients: cfg.kube_clients,
        kube_keys: 8,
        register_clients: cfg.register_clients,
        register_keys: 8,
        watchers: cfg.watchers,
        compact_every: Duration::from_secs(5),
        compact_keep: 200,
        controller_probe: Some(Duration::from_millis(500)),
        seed: cfg.seed,
    };
    let from = head_revision(&endpoints).await?;
    let mut workload = Workload::start(&wcfg, endpoints.clone(), clock, from);
    let leaders = Arc::new(Mutex::new(Vec::new()));
    let monitor_cancel = CancellationToken::new();
    let monitor = tokio::spawn(monitor::run(
        endpoints.etcd.clone(),
        clock,
        Duration::from_millis(25),
        leaders.clone(),
        monitor_cancel.clone(),
    ));

    tokio::time::sleep(cfg.quiet).await;
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut recovery_failures = Vec::new();
    let fault_until = cfg.duration.saturating_sub(cfg.quiet);
    let hard_stop = fault_until * 3;
    let leader_kills = |f: &[FaultRecord]| {
        f.iter().filter(|f| f.leader_was_target && matches!(f.kind, FaultKind::Kill | FaultKind::KillLeader)).count()
    };
    while started.elapsed() < fault_until
        || (leader_kills(&faults) < cfg.min_leader_kills && started.elapsed() < hard_stop)
    {
        let kind = cfg.faults.pick(&mut rng);
        let said = monitor::ask_all(&endpoints.etcd, Duration::from_millis(500)).await;
        let leader = monitor::leader_of(&said).0;
        let injected = clock.now();
        let outcome = inject(cluster, kind, leader, &mut rng, election_ms).await;
        let healed = clock.now();
        let (targets, detail) = match outcome {
            Ok(x) => x,
            Err(e) => {
                // Heal what we can and stop injecting: the report says why.
                let _ = partition::heal(cluster);
                recovery_failures.push(format!("{kind} at {:.2}s: {e}", injected.mono as f64 / 1e9));
                break;
            }
        };
        let leader_was_target = leader.map(|l| targets.contains(&l)).unwrap_or(false);
        tracing::info!(fault = kind.name(), ?targets, ?leader, %detail, "fault injected and healed");
        faults.push(FaultRecord { kind, targets, leader_before: leader, leader_was_target, injected, healed, detail });
        if let Err(state) = recovered(&endpoints, RECOVERY).await {
            recovery_failures.push(format!(
                "after {kind} at {:.2}s: no stable leader within {RECOVERY:?}: {state}",
                injected.mono as f64 / 1e9
            ));
            break;
        }
        // A fault that took the leader is measured alone: the next one waits (bounded)
        // until the controllers have acted again, so the failover figures of one fault are
        // not cut short or stretched by the next.
        if leader_was_target {
            let deadline = Instant::now() + CONTROLLERS_SETTLE;
            while !workload.controllers_acted_since(injected.mono) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(ms_between(&mut rng, 300, 1000)).await;
    }
    // The workload keeps running undisturbed for a while after the last heal.
    tokio::time::sleep(cfg.quiet).await;
    workload.stop_clients().await;

    let (convergence, _) =
        converge::converge(&endpoints.etcd, Duration::from_secs(30), &format!("{register_prefix}end")).await;
    let prefixes = vec![crate::workload::kube::etcd_key(&namespace, ""), register_prefix.clone()];
    let (final_state, final_revision) = final_state(&endpoints, &prefixes).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while workload.canonical_progress() < final_revision && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = workload.canonical_progress() >= final_revision;
    let recorded = workload.finish(final_revision).await;
    monitor_cancel.cancel();
    let _ = monitor.await;
    let leaders = leaders.lock().map(|l| l.clone()).unwrap_or_default();

    let history = History {
        ops: recorded.ops,
        watches: recorded.watches,
        canonical: recorded.canonical,
        final_state,
        final_revision,
        canonical_from: recorded.canonical_from,
        controllers: recorded.controllers,
    };
    if let Ok(json) = serde_json::to_vec(&history) {
        let _ = std::fs::write(cfg.cluster.dir.join("history.json"), json);
    }
    if let Ok(json) = serde_json::to_vec_pretty(&(&leaders, &faults)) {
        let _ = std::fs::write(cfg.cluster.dir.join("leaders.json"), json);
    }
    let mut verdicts = check::all(&history, cfg.linearizability_budget);
    verdicts.push(convergence);
    verdicts.push(Verdict {
        name: "recovery",
        ok: recovery_failures.is_empty() && caught_up,
        checked: faults.len(),
        summary: if recovery_failures.is_empty() && caught_up {
            format!("every fault healed and the cluster recovered ({} faults)", faults.len())
        } else if !caught_up {
            format!("the canonical watch never reached the final revision {final_revision}")
        } else {
            recovery_failures[0].clone()
        },
        violations: recovery_failures,
    });
    verdicts.push(panics(cluster));
    Ok(report::build(
        cfg.seed,
        cluster.len(),
        started.elapsed().as_secs_f64(),
        &history,
        faults,
        &leaders,
        verdicts,
        String::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_panics_are_not_violations() {
        let log = "INFO ok\n\
                   thread 'tokio-runtime-worker' panicked at /x/fail-0.5.1/src/lib.rs:1:1:\n\
                   injected failpoint panic store::apply\n\
                   thread 'main' panicked at store/src/sm/mod.rs:10:5:\n\
                   index out of bounds\n";
        let found = uninjected_panics(log);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("index out of bounds"));
        assert!(uninjected_panics("no panics\n").is_empty());
    }
}
