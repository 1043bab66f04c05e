//! `keelson bench controller-failover`: how long the control loops are gone when the leader
//! dies. Starts three masters (this binary, `keelson server`), then `--kills` times:
//! SIGKILL the leader; through a surviving master create a ReplicaSet of one replica
//! (retrying until the API takes it); time until its pod exists — created by the
//! next leader's ReplicaSet controller, so the figure covers the election, the new
//! leader's controllers starting (their lists and watches) and one reconcile. The killed
//! master is restarted and the cluster settles before the next round. Upstream's
//! kube-controller-manager waits out its 15 s leader lease here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use keelson_store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_store::pb::etcdserverpb::StatusRequest;
use kube::api::{Api, ListParams, PostParams};

#[derive(Args, Debug)]
pub struct FailoverBenchArgs {
    /// Leader kills (rounds).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Where the masters keep their data (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Give up on a round after this long.
    #[arg(long, default_value = "60s", value_parser = crate::server::parse_duration)]
    pub round_timeout: Duration,
}

struct Master {
    name: String,
    args: Vec<String>,
    etcd: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Master {
    fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(std::env::current_exe()?)
            .args(&self.args)
            .env("KEELSON_LOG", "warn,keelson=info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn keelson server")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port below the ephemeral range that binds now.
fn port(next: &mut u16) -> Result<u16> {
    for _ in 0..10_000 {
        *next = if *next >= 31_999 { 20_000 } else { *next + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", *next)).is_ok() {
            return Ok(*next);
        }
    }
    bail!("no free loopback port")
}

/// (leader id, own id) as this master reports them.
async fn status(etcd: &str) -> Option<(u64, u64)> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{etcd}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let s = MaintenanceClient::new(ch).status(StatusRequest {}).await.ok()?.into_inner();
    Some((s.leader, s.header?.member_id))
}

/// The index of the master every running one names as leader.
async fn agreed_leader(ms: &[Master], timeout: Duration) -> Result<usize> {
    let t0 = Instant::now();
    loop {
        let mut views = vec![];
        for m in ms.iter().filter(|m| m.child.is_some()) {
            views.push(status(&m.etcd).await);
        }
        if let Some(Some((leader, _))) = views.first() {
            if *leader != 0 && views.iter().all(|v| v.is_some_and(|(l, _)| l == *leader)) {
                let running: Vec<usize> = (0..ms.len()).filter(|i| ms[*i].child.is_some()).collect();
                for (k, v) in views.iter().enumerate() {
                    if v.is_some_and(|(l, me)| l == me) {
                        return Ok(running[k]);
                    }
                }
            }
        }
        if t0.elapsed() > timeout {
            bail!("the masters did not agree on a leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn probe(name: &str) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"probe": name}},
            "template": {"metadata": {"labels": {"probe": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}},
    }))
    .expect("probe ReplicaSet")
}

async fn wait_kubeconfig(path: &Path, masters: usize, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(path).map(|s| s.matches("server: https://").count()).unwrap_or(0);
        if n >= masters {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            bail!("{} never listed {masters} masters", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(a: FailoverBenchArgs) -> Result<()> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let mut next = 20_000 + (std::process::id() % 10_000) as u16;
    let mut peers = vec![];
    for i in 1..=3 {
        peers.push((format!("m{i}"), format!("127.0.0.1:{}", port(&mut next)?)));
    }
    let cluster = peers.iter().map(|(n, p)| format!("{n}={p}")).collect::<Vec<_>>().join(",");
    let mut ms = vec![];
    for (name, peer) in &peers {
        let etcd = format!("127.0.0.1:{}", port(&mut next)?);
        let api = format!("127.0.0.1:{}", port(&mut next)?);
        let data = dir.join(name);
        let args: Vec<String> = [
            "server",
            "--name",
            name,
            "--peer-addr",
            peer,
            "--etcd-addr",
            &etcd,
            "--api-addr",
            &api,
            "--initial-cluster",
            &cluster,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--data-dir".to_string(),
            data.display().to_string(),
            "--pki-dir".into(),
            dir.join("pki").display().to_string(),
        ])
        .collect();
        ms.push(Master { name: name.clone(), args, etcd, child: None, log: dir.join(format!("{name}.log")) });
    }
    for m in ms.iter_mut() {
        m.start()?;
    }
    agreed_leader(&ms, Duration::from_secs(60)).await?;
    let kubeconfig = |i: usize| dir.join(format!("m{}", i + 1)).join("admin.kubeconfig");
    for i in 0..3 {
        wait_kubeconfig(&kubeconfig(i), 1, Duration::from_secs(60)).await?;
    }
    let mut samples: Vec<f64> = vec![];
    for round in 0..a.kills {
        let leader = agreed_leader(&ms, a.round_timeout).await?;
        let other = (leader + 1) % 3;
        let client = crate::kubeclient::from_kubeconfig(&kubeconfig(other), None).await?;
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        // The leader's controllers are up: a warm-up probe gets its pod.
        let warm = format!("warm-{round}");
        create_and_wait(&rss, &pods, &warm, a.round_timeout).await.context("warm-up probe")?;
        let t0 = Instant::now();
        ms[leader].kill();
        let name = format!("probe-{round}");
        create_and_wait(&rss, &pods, &name, a.round_timeout).await.with_context(|| format!("round {round}"))?;
        let secs = t0.elapsed().as_secs_f64();
        samples.push(secs);
        println!("round {round}: killed {} → controllers acted after {:.3}s", ms[leader].name, secs);
        ms[leader].start()?;
        agreed_leader(&ms, a.round_timeout).await?;
        let _ = rss.delete_collection(&Default::default(), &ListParams::default()).await;
    }
    if samples.is_empty() {
        bail!("no rounds run (--kills 0)");
    }
    samples.sort_by(|x, y| x.total_cmp(y));
    let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "controller failover over {} leader kills: p50 {:.3}s p90 {:.3}s p99 {:.3}s max {:.3}s",
        samples.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        samples.last().copied().unwrap_or(0.0)
    );
    println!(
        "JSON {}",
        serde_json::json!({"kills": samples.len(), "p50_s": q(0.5), "p99_s": q(0.99), "max_s": samples.last(), "samples_s": samples})
    );
    for m in ms.iter_mut() {
        m.kill();
    }
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("keelson-failover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Create the probe ReplicaSet (retrying while the API has no leader) and wait for its pod.
async fn create_and_wait(rss: &Api<ReplicaSet>, pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        match rss.create(&PostParams::default(), &probe(name)).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 => break,
            Err(e) if t0.elapsed() > timeout => bail!("cannot create {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let lp = ListParams::default().labels(&format!("probe={name}"));
    loop {
        if let Ok(l) = pods.list(&lp).await {
            if !l.items.is_empty() {
                return Ok(());
            }
        }
        if t0.elapsed() > timeout {
            bail!("no pod for {name} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
