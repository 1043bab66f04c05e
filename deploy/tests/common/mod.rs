//! A harness that runs real `keelson server` (or `keelson up`) processes on loopback, like a
//! user would, and talks to them over the etcd v3 protocol or HTTPS (curl). Every child is killed (by its PID) when
//! the harness drops; every wait has a timeout that names what hung.
#![allow(dead_code)]

pub mod registry;
pub mod sim;
pub mod telemetry;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keelson_store::pb::etcdserverpb::watch_client::WatchClient;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

pub const WAIT: Duration = Duration::from_secs(30);

/// This package's directory, as `cargo test` says at run time: `env!` would bake in the
/// checkout a reused test binary (shared CARGO_TARGET_DIR) was first built from.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn keelson_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keelson"))
}

/// A loopback port that is free now and stays free until the caller binds it.
///
/// `bind(127.0.0.1:0)` hands out ports from the kernel's ephemeral range, which outgoing
/// connections (one master dialling another) also take their source ports from, so a port
/// picked that way can be taken before the process meant to listen on it starts. These
/// come from below that range (`ip_local_port_range` starts at 32768), walking up from a
/// random point so that consecutive test binaries do not reuse each other's ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, rand::random::<u32>() % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

pub async fn within<T>(d: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// Poll `check` until it returns Some, failing with `what` after `d`.
pub async fn eventually<T, F, Fut>(d: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(d, what, check, String::new).await
}

/// [`eventually`], adding `detail()` (say, the processes' logs) to the timeout's message.
pub async fn eventually_or<T, F, Fut>(d: Duration, what: &str, mut check: F, detail: impl FnOnce() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + d;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {d:?} waiting for {what}{}", detail());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One master process.
pub struct Master {
    pub name: String,
    pub data_dir: PathBuf,
    pub peer_addr: String,
    pub etcd_addr: String,
    /// The HTTPS Kubernetes API.
    pub api_addr: String,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
}

impl Master {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.etcd_addr)
    }
}

/// Local masters as separate processes.
pub struct Cluster {
    pub dir: TempDir,
    pub masters: Vec<Master>,
    pub initial_cluster: String,
}

impl Cluster {
    /// Lay out `n` masters (not started).
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let masters: Vec<Master> = (1..=n)
            .map(|i| Master {
                name: format!("m{i}"),
                data_dir: dir.path().join(format!("m{i}")),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                etcd_addr: format!("127.0.0.1:{}", free_port()),
                api_addr: format!("127.0.0.1:{}", free_port()),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
                extra_args: Vec::new(),
                env: Vec::new(),
            })
            .collect();
        let initial_cluster =
            masters.iter().map(|m| format!("{}={}", m.name, m.peer_addr)).collect::<Vec<_>>().join(",");
        Cluster { dir, masters, initial_cluster }
    }

    /// Lay out `n` masters (not started) sharing one `--pki-dir` (one CA, so any master's
    /// kubeconfig and certificates work against all); `extra` goes to every master too.
    pub fn shared_pki(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::new(n);
        let pki = c.pki().display().to_string();
        for m in c.masters.iter_mut() {
            m.extra_args = vec!["--pki-dir".to_string(), pki.clone()];
            m.extra_args.extend(extra.iter().map(|a| a.to_string()));
        }
        c
    }

    /// The shared PKI directory of [`Cluster::shared_pki`].
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Start every master.
    pub fn spawn_all(&mut self) {
        for i in 0..self.masters.len() {
            self.spawn(i);
        }
    }

    /// Start `n` masters and wait until they agree on a leader and every API server has
    /// made its start-up writes (default namespaces, its entry under
    /// `/registry/masterleases/`), so tests that count revisions see only their own writes.
    pub async fn start(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_leader(&(0..n).collect::<Vec<_>>()).await;
        c.wait_api_settled(n).await;
        c
    }

    /// Wait until `n` masters have published themselves (each does so after its default
    /// namespaces exist, and writes nothing more on its own after that).
    pub async fn wait_api_settled(&self, n: usize) {
        let prefix = b"/registry/masterleases/".to_vec();
        eventually(WAIT, "every master's API server to finish its start-up writes", || async {
            let mut kv = KvClient::new(try_channel(&self.masters[0].etcd_addr).await?);
            let req = RangeRequest {
                key: prefix.clone(),
                range_end: keelson_store::keys::prefix_end(&prefix),
                count_only: true,
                ..Default::default()
            };
            let count = kv.range(req).await.ok()?.into_inner().count;
            (count as usize >= n).then_some(())
        })
        .await
    }

    pub fn command(&self, i: usize) -> Command {
        let m = &self.masters[i];
        let mut cmd = Command::new(keelson_bin());
        cmd.args(["server", "--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--peer-addr", &m.peer_addr, "--etcd-addr", &m.etcd_addr, "--api-addr", &m.api_addr])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(&m.extra_args)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .envs(m.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEELSON_LOG", std::env::var("KEELSON_TEST_LOG").unwrap_or_else(|_| "info".into()));
        cmd
    }

    /// Start master `i` (its stderr goes to its log file, appended).
    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.masters[i].log).expect("log file");
        let child = self.command(i).stdout(Stdio::null()).stderr(log).spawn().expect("spawn keelson server");
        self.masters[i].child = Some(child);
    }

    /// SIGKILL master `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM master `i` and wait (bounded) for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            for _ in 0..200 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.masters[i].log).unwrap_or_default()
    }

    /// The last `n` lines of master `i`'s log, headed by its name, for timeout messages.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = self.log_text(i);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("\n--- {} ({}), last {n} log lines:\n{tail}", self.masters[i].name, self.masters[i].log.display())
    }

    pub async fn channel(&self, i: usize) -> Channel {
        channel(&self.masters[i].etcd_addr).await
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    pub async fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i).await)
    }

    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let ch = try_channel(&self.masters[i].etcd_addr).await?;
        let mut c = MaintenanceClient::new(ch);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        c.status(req).await.ok().map(|r| r.into_inner())
    }

    /// Wait until every listed master reports the same leader; returns its index.
    pub async fn wait_leader(&self, among: &[usize]) -> usize {
        let detail = || among.iter().map(|&i| self.log_tail(i, 20)).collect::<String>();
        eventually_or(
            WAIT,
            "the masters to agree on a leader",
            || async {
                let mut leader = None;
                for &i in among {
                    let s = self.status(i).await?;
                    if s.leader == 0 || leader.is_some_and(|l| l != s.leader) {
                        return None;
                    }
                    leader = Some(s.leader);
                }
                let id = leader?;
                for &i in among {
                    if self.status(i).await?.header?.member_id == id {
                        return Some(i);
                    }
                }
                None
            },
            detail,
        )
        .await
    }

    pub async fn revision(&self, i: usize) -> Option<i64> {
        Some(self.status(i).await?.header?.revision)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.kill(i);
        }
    }
}

pub async fn try_channel(addr: &str) -> Option<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()
}

pub async fn channel(addr: &str) -> Channel {
    eventually(WAIT, &format!("a connection to {addr}"), || try_channel(addr)).await
}

pub async fn must_put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let r = within(WAIT, "put", kv.put(PutRequest { key: key.into(), value: value.into(), ..Default::default() }))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    r.into_inner().header.expect("header").revision
}

pub async fn must_get(kv: &mut KvClient<Channel>, key: &str, serializable: bool) -> Option<Vec<u8>> {
    let r = within(WAIT, "get", kv.range(RangeRequest { key: key.into(), serializable, ..Default::default() }))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    r.into_inner().kvs.into_iter().next().map(|kv| kv.value)
}

/// Run a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run command");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

pub fn data_dir_of(c: &Cluster, i: usize) -> &Path {
    &c.masters[i].data_dir
}

/// curl against a master's API: the cluster CA, the admin certificate when `cert`, at most
/// `max_secs`. Killed on drop.
pub fn curl_cmd(pki: &Path, cert: bool, max_secs: u64) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-sS", "--max-time", &max_secs.to_string()]).arg("--cacert").arg(pki.join("ca.crt"));
    if cert {
        c.arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"));
    }
    c.kill_on_drop(true);
    c
}

/// One HTTPS request to `https://{api}{path}` with curl `args` before the URL; returns
/// (HTTP status, body), status 0 when curl got no answer.
pub async fn curl_api(pki: &Path, cert: bool, max_secs: u64, api: &str, args: &[&str], path: &str) -> (u16, String) {
    let mut c = curl_cmd(pki, cert, max_secs);
    c.args(["-o", "-", "-w", "\n%{http_code}"]).args(args).arg(format!("https://{api}{path}"));
    let out =
        within(Duration::from_secs(max_secs + 15), &format!("curl {args:?} {path}"), c.output()).await.expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// SIGKILL `child` (by its PID) and wait, from a `Drop`, until it is gone (at most 10 s),
/// so a guard's cleanup can't race a still-running agent.
pub fn kill_and_reap(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `keelson up` in a temp dir, ready (it printed its kubeconfig path); killed on drop.
pub struct Up {
    pub child: tokio::process::Child,
    pub dir: TempDir,
    pub kubeconfig: PathBuf,
    pub api: String,
}

impl Up {
    pub async fn start() -> Up {
        Up::start_with(&[]).await
    }

    /// A control plane only (`--no-node`), with `extra` flags.
    pub async fn start_with(extra: &[&str]) -> Up {
        let mut args = vec!["--no-node"];
        args.extend_from_slice(extra);
        Up::spawn(&args).await
    }

    /// With the in-process real node (root, runc, CNI): `extra` names its bridge, netns
    /// prefix, proxy table and registry so tests don't clash.
    pub async fn start_with_node(extra: &[&str]) -> Up {
        Up::spawn(extra).await
    }

    async fn spawn(extra: &[&str]) -> Up {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let api = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("up.log")).expect("log");
        let mut child = tokio::process::Command::new(keelson_bin())
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--api-addr", &api])
            .args(["--peer-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--etcd-addr", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keelson up");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = within(Duration::from_secs(60), "keelson up to print its kubeconfig path", lines.next_line()).await;
        let kubeconfig = match first {
            Ok(Some(l)) => PathBuf::from(l.trim()),
            other => panic!(
                "keelson up printed no kubeconfig path ({other:?}); log:\n{}",
                std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
            ),
        };
        assert!(kubeconfig.exists(), "{} does not exist", kubeconfig.display());
        Up { child, dir, kubeconfig, api }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("data").join("pki")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
