//! `keelson bench scheduler`: the scheduler_perf `SchedulingBasic` shape against a running
//! cluster — N simulated nodes (4 CPU, 32 GiB, 110 pods, in this process unless
//! `--no-sim`), a warm-up of pods, then the measured pods (pause, 100m / 500Mi) created
//! with bounded concurrency. Prints pods scheduled per second, pod create (API mutating)
//! latency, create → bound and create → Running latency, and the master's RSS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct SchedulerBenchArgs {
    /// The cluster's admin kubeconfig.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
    /// Simulated nodes.
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Pods scheduled before measuring (scheduler_perf's initPods).
    #[arg(long, default_value_t = 1000)]
    pub init_pods: usize,
    /// Measured pods.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Pod creates in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Nodes come from a separate `keelson agent --simulate` (named `--node-prefix-i`).
    #[arg(long)]
    pub no_sim: bool,
    #[arg(long, default_value = "bench")]
    pub node_prefix: String,
    /// Lease renewal of the simulated nodes.
    #[arg(long, default_value = "10s", value_parser = crate::agent::parse_duration_ms)]
    pub lease_renew_interval: Duration,
    /// The master's PID, for its RSS.
    #[arg(long)]
    pub master_pid: Option<u32>,
    /// Give up waiting after this long.
    #[arg(long, default_value = "600s", value_parser = crate::server::parse_duration)]
    pub timeout: Duration,
}

#[derive(Default, Clone, Copy)]
struct Times {
    created: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}}}]},
    }))
    .expect("pod")
}

fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| s.lines().find(|l| l.starts_with(k))?.split_whitespace().nth(1)?.parse::<u64>().ok();
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub async fn run(a: SchedulerBenchArgs) -> Result<()> {
    let client = crate::kubeclient::from_kubeconfig(&a.kubeconfig, None).await?;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut sim_task = None;
    if !a.no_sim {
        let cfg = keelson_node::simulate::SimConfig {
            count: a.nodes,
            name_prefix: a.node_prefix.clone(),
            cpu: "4".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            renew_interval: a.lease_renew_interval,
            status_interval: Duration::from_secs(300),
            delete_nodes_on_exit: true,
            ..Default::default()
        };
        let (c, s) = (client.clone(), stop.clone());
        sim_task = Some(tokio::spawn(async move {
            if let Err(e) = keelson_node::simulate::run(c, cfg, s).await {
                tracing::error!(error = %e, "simulated nodes failed");
            }
        }));
    }
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let l = nodes.list(&ListParams::default().labels("type=keelson-sim")).await?;
        let ready = l
            .items
            .iter()
            .filter(|n| n.metadata.name.as_deref().is_some_and(|x| x.starts_with(&format!("{}-", a.node_prefix))))
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= a.nodes {
            break;
        }
        if started.elapsed() > a.timeout {
            bail!("only {ready} of {} nodes Ready after {:?}", a.nodes, a.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("nodes: {} Ready after {:.1}s", a.nodes, started.elapsed().as_secs_f64());

    let ns = format!("bench-sched-{}", std::process::id());
    let nsapi: Api<Namespace> = Api::all(client.clone());
    nsapi
        .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let times: Arc<Mutex<HashMap<String, Times>>> = Arc::default();
    let watch_times = times.clone();
    let wstop = stop.clone();
    let wpods = pods.clone();
    tokio::spawn(async move {
        let mut s = watcher(wpods, watcher::Config::default()).boxed();
        loop {
            let ev = tokio::select! { _ = wstop.cancelled() => return, ev = s.next() => ev };
            let Some(Ok(ev)) = ev else {
                if wstop.is_cancelled() {
                    return;
                } else {
                    continue;
                }
            };
            let p = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            let now = Instant::now();
            let mut t = watch_times.lock().unwrap_or_else(|e| e.into_inner());
            let e = t.entry(p.metadata.name.clone().unwrap_or_default()).or_default();
            if e.bound.is_none() && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                e.bound = Some(now);
            }
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if e.running.is_none() && running {
                e.running = Some(now);
            }
        }
    });

    let create_hist = Arc::new(Mutex::new(hist()));
    let create = |prefix: &'static str, n: usize| {
        let pods = pods.clone();
        let times = times.clone();
        let create_hist = create_hist.clone();
        let concurrency = a.concurrency;
        async move {
            let results = futures::stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    let times = times.clone();
                    let create_hist = create_hist.clone();
                    async move {
                        let name = format!("{prefix}-{i}");
                        let t0 = Instant::now();
                        times.lock().unwrap_or_else(|e| e.into_inner()).entry(name.clone()).or_default().created =
                            Some(t0);
                        let r = pods.create(&PostParams::default(), &pod(&name)).await;
                        let us = t0.elapsed().as_micros().max(1) as u64;
                        let _ = create_hist.lock().unwrap_or_else(|e| e.into_inner()).record(us);
                        r.map(|_| ())
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                tracing::warn!(failed, error = %e, "pod creates failed");
            }
            failed
        }
    };
    let wait_bound = |prefix: &'static str, n: usize| {
        let times = times.clone();
        let timeout = a.timeout;
        async move {
            let t0 = Instant::now();
            loop {
                let bound = times
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|(k, v)| k.starts_with(prefix) && v.bound.is_some())
                    .count();
                if bound >= n {
                    return Ok(());
                }
                if t0.elapsed() > timeout {
                    bail!("only {bound} of {n} {prefix} pods bound after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    if a.init_pods > 0 {
        create("init", a.init_pods).await;
        wait_bound("init", a.init_pods).await?;
        *create_hist.lock().unwrap_or_else(|e| e.into_inner()) = hist();
        println!("warm-up: {} pods bound", a.init_pods);
    }
    let t0 = Instant::now();
    let failed = create("m", a.pods).await;
    let created_in = t0.elapsed();
    wait_bound("m", a.pods - failed).await.context("waiting for the measured pods to be bound")?;
    // Running too (bounded).
    let t_run = Instant::now();
    while t_run.elapsed() < a.timeout {
        let running = times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, v)| k.starts_with("m-") && v.running.is_some())
            .count();
        if running + failed >= a.pods || a.no_sim {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let measured: Vec<&Times> = t.iter().filter(|(k, _)| k.starts_with("m-")).map(|(_, v)| v).collect();
    let first = measured.iter().filter_map(|v| v.created).min().unwrap_or(t0);
    let last_bound = measured.iter().filter_map(|v| v.bound).max().unwrap_or(first);
    let (mut bind_h, mut run_h) = (hist(), hist());
    for v in &measured {
        if let (Some(c), Some(b)) = (v.created, v.bound) {
            let _ = bind_h.record(b.saturating_duration_since(c).as_micros().max(1) as u64);
        }
        if let (Some(c), Some(r)) = (v.created, v.running) {
            let _ = run_h.record(r.saturating_duration_since(c).as_micros().max(1) as u64);
        }
    }
    let span = last_bound.saturating_duration_since(first).as_secs_f64().max(1e-6);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ch = create_hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!("scheduler: {} nodes, {} pods (+{} warm-up), {} create failures", a.nodes, a.pods, a.init_pods, failed);
    println!(
        "  created in {:.2}s ({:.0} creates/s)",
        created_in.as_secs_f64(),
        a.pods as f64 / created_in.as_secs_f64()
    );
    println!("  scheduled: {:.0} pods/s (first create → last bind {:.2}s)", (a.pods - failed) as f64 / span, span);
    println!("  create latency (API mutating) p50 {:.1} ms p99 {:.1} ms", ms(&ch, 0.5), ms(&ch, 0.99));
    println!("  create → bound p50 {:.1} ms p99 {:.1} ms", ms(&bind_h, 0.5), ms(&bind_h, 0.99));
    if run_h.len() > 0 {
        println!(
            "  create → Running p50 {:.1} ms p99 {:.1} ms ({} pods)",
            ms(&run_h, 0.5),
            ms(&run_h, 0.99),
            run_h.len()
        );
    }
    if let Some((rss, hwm)) = a.master_pid.and_then(rss_kib) {
        println!("  master RSS {:.0} MiB (peak {:.0} MiB)", rss as f64 / 1024.0, hwm as f64 / 1024.0);
    }
    println!(
        "JSON {}",
        serde_json::json!({"nodes": a.nodes, "pods": a.pods, "failed": failed, "pods_per_s": (a.pods - failed) as f64 / span,
            "create_p50_ms": ms(&ch, 0.5), "create_p99_ms": ms(&ch, 0.99),
            "bound_p50_ms": ms(&bind_h, 0.5), "bound_p99_ms": ms(&bind_h, 0.99),
            "running_p50_ms": ms(&run_h, 0.5), "running_p99_ms": ms(&run_h, 0.99),
            "master_rss_mib": a.master_pid.and_then(rss_kib).map(|(r, h)| (r / 1024, h / 1024))})
    );
    // Clean up: the namespace (the namespace controller deletes its pods), then the nodes.
    let _ = nsapi.delete(&ns, &DeleteParams::default()).await;
    stop.cancel();
    if let Some(t) = sim_task {
        // The simulated nodes delete their Nodes on the way out (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
    }
    Ok(())
}
