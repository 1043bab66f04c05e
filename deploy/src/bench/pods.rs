//! `keelson bench pod-startup`: pod startup latency on a real node — pod create sent →
//! phase Running seen by a watch, for pods created one after another and then all at
//! once, each `sleep` in a busybox whose image the node already has (a warm-up pod pulls
//! it). With `--agent-pid`, the agent's RSS and CPU while idle and while the pods run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use tokio::sync::Notify;

#[derive(Args, Debug)]
pub struct PodStartupBenchArgs {
    /// The cluster's admin kubeconfig.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
    /// The real node the pods go to (a nodeSelector on kubernetes.io/hostname).
    #[arg(long)]
    pub node: String,
    /// The image (already pullable; pulled once by a warm-up pod).
    #[arg(long)]
    pub image: String,
    /// Pods created one after another, then pods created at once.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Creates in flight for the at-once round.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The agent's PID, for its RSS and CPU.
    #[arg(long)]
    pub agent_pid: Option<u32>,
    /// The agent's `--root-dir`: after the last round, wait until it holds no pod (the
    /// agent tears pods down after the API has forgotten them) before measuring it idle,
    /// and report how long that took.
    #[arg(long)]
    pub agent_root: Option<std::path::PathBuf>,
    /// Give up waiting for a round after this long.
    #[arg(long, default_value = "600s", value_parser = crate::server::parse_duration)]
    pub timeout: Duration,
}

const NS: &str = "bench-pods";

/// When each pod was first seen Running.
#[derive(Default)]
struct Seen {
    running: Mutex<HashMap<String, Instant>>,
    gone: Mutex<std::collections::HashSet<String>>,
    changed: Notify,
}

fn pod(name: &str, node: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": "pod-startup" } },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node },
            "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "c", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"] }],
        },
    }))?)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn report(what: &str, h: &Histogram<u64>) {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{what}: n={} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        h.max() as f64 / 1000.0
    );
}

/// (RSS KiB, CPU ticks) of a process.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

/// The agent's RSS and CPU share over `window`.
async fn agent_usage(pid: u32, what: &str, window: Duration) {
    let Some((_, t0)) = sample(pid) else {
        println!("agent {what}: pid {pid} not found");
        return;
    };
    tokio::time::sleep(window).await;
    let Some((rss, t1)) = sample(pid) else { return };
    // USER_HZ is 100 on Linux.
    let cpu = (t1 - t0) as f64 / 100.0 / window.as_secs_f64() * 100.0;
    println!("agent {what}: rss={:.1}MiB cpu={cpu:.2}% of one core over {}s", rss as f64 / 1024.0, window.as_secs());
}

async fn wait_for(seen: &Seen, timeout: Duration, what: &str, done: impl Fn(&Seen) -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = seen.changed.notified();
        if done(seen) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        let _ = tokio::time::timeout(left, notified).await;
    }
}

/// Wait until the agent's pod directory is empty (each pod's goes last in its teardown).
async fn node_emptied(pods_dir: &std::path::Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = match std::fs::read_dir(pods_dir) {
            Ok(entries) => entries.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => bail!("reading {}: {e}", pods_dir.display()),
        };
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for the agent to tear down its pods ({left} left in {})",
                pods_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete_all(api: &Api<Pod>, seen: &Seen, names: &[String], timeout: Duration) -> Result<()> {
    let dp = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    api.delete_collection(&dp, &ListParams::default().labels("bench=pod-startup")).await?;
    wait_for(seen, timeout, "the pods to be deleted", |s| {
        let gone = s.gone.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().all(|n| gone.contains(n))
    })
    .await
}

pub async fn run(args: PodStartupBenchArgs) -> Result<()> {
    let client = crate::kubeclient::from_kubeconfig(&args.kubeconfig, None).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": NS } }))?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("creating the bench namespace"),
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let seen = Arc::new(Seen::default());
    let watch_seen = seen.clone();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(watch_api, watcher::Config::default().labels("bench=pod-startup")));
        while let Some(ev) = events.next().await {
            let now = Instant::now();
            let (pods, deleted): (Vec<Pod>, bool) = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (vec![p], false),
                Ok(watcher::Event::Delete(p)) => (vec![p], true),
                _ => continue,
            };
            for p in pods {
                let name = p.metadata.name.clone().unwrap_or_default();
                if deleted {
                    watch_seen.gone.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
                } else if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    watch_seen.running.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_insert(now);
                }
            }
            watch_seen.changed.notify_waiters();
        }
    });
    println!(
        "# pod startup on node {} with {}: {} one after another, then {} at once",
        args.node, args.image, args.count, args.count
    );
    if let Some(pid) = args.agent_pid {
        agent_usage(pid, "idle before", Duration::from_secs(10)).await;
    }
    // Warm-up: the image is pulled once.
    let pp = PostParams::default();
    let warm = "warm-up".to_string();
    api.create(&pp, &pod(&warm, &args.node, &args.image)?).await?;
    wait_for(&seen, args.timeout, "the warm-up pod to run", |s| {
        s.running.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&warm)
    })
    .await?;
    delete_all(&api, &seen, std::slice::from_ref(&warm), args.timeout).await?;

    // One after another.
    let mut serial = Histogram::<u64>::new(3)?;
    let names: Vec<String> = (0..args.count).map(|i| format!("serial-{i}")).collect();
    for name in &names {
        let sent = Instant::now();
        api.create(&pp, &pod(name, &args.node, &args.image)?).await?;
        wait_for(&seen, args.timeout, &format!("{name} to run"), |s| {
            s.running.lock().unwrap_or_else(|e| e.into_inner()).contains_key(name)
        })
        .await?;
        let at = seen.running.lock().unwrap_or_else(|e| e.into_inner())[name];
        serial.record(ms(at.saturating_duration_since(sent)))?;
    }
    report("one after another (create -> Running seen by a watch)", &serial);
    delete_all(&api, &seen, &names, args.timeout).await?;

    // All at once.
    let names: Vec<String> = (0..args.count).map(|i| format!("burst-{i}")).collect();
    let started = Instant::now();
    let sent: Vec<(String, Instant)> = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let (api, pp, node, image) = (api.clone(), pp.clone(), args.node.clone(), args.image.clone());
            async move {
                let t = Instant::now();
                api.create(&pp, &pod(&name, &node, &image)?).await?;
                Ok::<_, anyhow::Error>((name, t))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    wait_for(&seen, args.timeout, "every burst pod to run", |s| {
        let r = s.running.lock().unwrap_or_else(|e| e.into_inner());
        names.iter().all(|n| r.contains_key(n))
    })
    .await?;
    let all = started.elapsed();
    let mut burst = Histogram::<u64>::new(3)?;
    {
        let r = seen.running.lock().unwrap_or_else(|e| e.into_inner());
        for (name, t) in &sent {
            burst.record(ms(r[name].saturating_duration_since(*t)))?;
        }
    }
    report("at once (create -> Running seen by a watch)", &burst);
    println!("at once: all {} Running after {:.2}s", args.count, all.as_secs_f64());
    if let Some(pid) = args.agent_pid {
        agent_usage(pid, &format!("with {} pods running", args.count), Duration::from_secs(10)).await;
    }
    let deleting = Instant::now();
    delete_all(&api, &seen, &names, args.timeout).await?;
    if let Some(root) = &args.agent_root {
        node_emptied(&root.join("pods"), args.timeout).await?;
        println!(
            "agent: all {} pods torn down {:.2}s after their deletion was sent",
            args.count,
            deleting.elapsed().as_secs_f64()
        );
    }
    if let Some(pid) = args.agent_pid {
        agent_usage(pid, "idle after", Duration::from_secs(10)).await;
    }
    watch.abort();
    Ok(())
}
