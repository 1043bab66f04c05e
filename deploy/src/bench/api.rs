//! `keelson bench api`: load running masters' Kubernetes API the way clients do — HTTPS
//! with the admin certificate, HTTP/2 (ALPN h2), JSON bodies — and print latency and
//! throughput: ConfigMap creates, gets and lists, LISTs of 10,000 Pods (whole and paged),
//! and many watchers receiving events written at a fixed rate (with a check that every
//! watcher saw every event exactly once, in resourceVersion order).
//!
//! Every request has a timeout; every loop is bounded by `--total`; one summary line per
//! workload, and the same figures as JSON on a line starting with `RESULT `.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// Create ConfigMaps (`--clients` loops, `--total` objects).
    Create,
    /// GET random existing ConfigMaps.
    Get,
    /// LIST the namespace's ConfigMaps.
    List,
    /// LIST `--pods` Pods, whole and in pages of 500.
    ListPods,
    /// `--watchers` watches receiving `--total` ConfigMap creations at `--rate`/s.
    Watch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Create => "create",
            Workload::Get => "get",
            Workload::List => "list",
            Workload::ListPods => "list-pods",
            Workload::Watch => "watch",
        }
    }
}

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    /// The admin kubeconfig (`<data-dir>/admin.kubeconfig`): every context is a target master.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Use only the first N contexts' masters.
    #[arg(long)]
    pub masters: Option<usize>,
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// HTTP/2 connections shared by the clients, spread over the masters (default 4; for
    /// `watch` the default is one connection per 100 watchers on each master).
    #[arg(long)]
    pub conns: Option<usize>,
    /// Requests (create/get/list), LISTs (list-pods) or created objects (watch).
    #[arg(long, default_value_t = 1000)]
    pub total: u64,
    /// Namespace of the create/get/list ConfigMaps (created when missing).
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    /// get/list: first make sure the namespace holds at least this many ConfigMaps
    /// (default: --total for get, none for list).
    #[arg(long)]
    pub objects: Option<u64>,
    /// list-pods: Pods to list (created in `bench-pods` when fewer exist).
    #[arg(long, default_value_t = 10_000)]
    pub pods: u64,
    /// watch: concurrent watches (namespace `bench-watch`).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// watch: ConfigMaps created per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Bytes of data in each created ConfigMap.
    #[arg(long, default_value_t = 64)]
    pub data_size: usize,
    /// Concurrency of the set-up writes (seeding objects and Pods).
    #[arg(long, default_value_t = 50)]
    pub setup_clients: usize,
    /// Seconds before a request (or a watch that stopped delivering) counts as failed.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// A label printed with the figures (e.g. "keelson-3").
    #[arg(long, default_value = "")]
    pub label: String,
}

// ---------------------------------------------------------------------------------------
// Kubeconfig and connections

/// One master from the kubeconfig.
struct Target {
    /// `https://host:port`, the prefix of every request URI.
    base: String,
    /// `host:port` to connect to.
    addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

fn b64_field(v: &Value, field: &str, what: &str) -> Result<Vec<u8>> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{what} has no {field} (only embedded *-data fields are supported)"))?;
    base64::engine::general_purpose::STANDARD.decode(s.trim()).with_context(|| format!("{what}: {field} is not base64"))
}

fn named<'a>(doc: &'a Value, list: &str, name: &str, inner: &str) -> Result<&'a Value> {
    doc.get(list)
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(name)))
        .and_then(|e| e.get(inner))
        .ok_or_else(|| anyhow!("the kubeconfig has no {list} entry named {name:?}"))
}

/// `https://host:port[/…]` → (base, host:port, host).
fn split_server(url: &str) -> Result<(String, String, String)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("server {url:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("server {url:?} has no host");
    }
    let (host, has_port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| anyhow!("server {url:?}: bad IPv6 address"))?;
        (h.to_string(), after.starts_with(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) => (h.to_string(), true),
            None => (authority.to_string(), false),
        }
    };
    let addr = if has_port { authority.to_string() } else { format!("{authority}:443") };
    Ok((format!("https://{authority}"), addr, host))
}

fn load_kubeconfig(path: &PathBuf, masters: Option<usize>) -> Result<Vec<Arc<Target>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    let contexts = doc
        .get("contexts")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow!("{} has no contexts", path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut targets = Vec::new();
    for ctx in contexts.iter().take(masters.unwrap_or(usize::MAX)) {
        let name = ctx.get("name").and_then(Value::as_str).unwrap_or("?");
        let c = ctx.get("context").ok_or_else(|| anyhow!("context {name:?} is empty"))?;
        let cluster_name = c.get("cluster").and_then(Value::as_str).unwrap_or_default();
        let user_name = c.get("user").and_then(Value::as_str).unwrap_or_default();
        let cluster = named(&doc, "clusters", cluster_name, "cluster")?;
        let user = named(&doc, "users", user_name, "user")?;
        let server = cluster
            .get("server")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("cluster {cluster_name:?} has no server"))?;
        let (base, addr, host) = split_server(server)?;
        let ca = b64_field(cluster, "certificate-authority-data", &format!("cluster {cluster_name:?}"))?;
        let cert = b64_field(user, "client-certificate-data", &format!("user {user_name:?}"))?;
        let key = b64_field(user, "client-key-data", &format!("user {user_name:?}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.context("the cluster CA certificate")?).context("the cluster CA certificate")?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>().context("the client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&key).context("the client key")?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the client certificate and key")?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = ServerName::try_from(host.clone()).with_context(|| format!("server name {host:?}"))?;
        targets.push(Arc::new(Target { base, addr, server_name, tls: Arc::new(tls) }));
    }
    if targets.is_empty() {
        bail!("--masters 0: no master to talk to");
    }
    Ok(targets)
}

type Sender = http2::SendRequest<Full<Bytes>>;

async fn connect(t: &Target, timeout: Duration) -> Result<Sender> {
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&t.addr))
        .await
        .map_err(|_| anyhow!("connecting to {}: no answer within {timeout:?}", t.addr))?
        .with_context(|| format!("connecting to {}", t.addr))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(t.tls.clone()).connect(t.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {}: no answer within {timeout:?}", t.base))?
    .with_context(|| format!("TLS handshake with {}", t.base))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        bail!("{} did not agree to HTTP/2 (ALPN h2)", t.base);
    }
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(64 << 10)
        .handshake(TokioIo::new(tls))
        .await
        .with_context(|| format!("HTTP/2 handshake with {}", t.base))?;
    let base = t.base.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, %base, "HTTP/2 connection ended");
        }
    });
    Ok(sender)
}

/// Connections per master; requests go round-robin over masters, then over each master's
/// connections.
struct Pool {
    targets: Vec<Arc<Target>>,
    conns: Vec<Vec<Sender>>,
    next: AtomicUsize,
    timeout: Duration,
}

/// The `message` of a Kubernetes Status, else the start of the body.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// Percent-encode a query value.
fn qe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn build_request(t: &Target, method: Method, path: &str, body: Option<&Value>) -> Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{}{path}", t.base))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "keelson-bench-api");
    let bytes = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v)?)
        }
        None => Bytes::new(),
    };
    Ok(b.body(Full::new(bytes))?)
}

impl Pool {
    async fn open(targets: &[Arc<Target>], per_master: usize, timeout: Duration) -> Result<Pool> {
        let mut conns = Vec::with_capacity(targets.len());
        for t in targets {
            let mut cs = Vec::with_capacity(per_master);
            for _ in 0..per_master.max(1) {
                cs.push(connect(t, timeout).await?);
            }
            conns.push(cs);
        }
        Ok(Pool { targets: targets.to_vec(), conns, next: AtomicUsize::new(0), timeout })
    }

    fn pick(&self) -> (Arc<Target>, Sender) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let m = i % self.targets.len();
        let cs = &self.conns[m];
        (self.targets[m].clone(), cs[(i / self.targets.len()) % cs.len()].clone())
    }

    /// One request, its whole body read, within the timeout.
    async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Bytes)> {
        let (t, mut sender) = self.pick();
        let what = format!("{method} {}{path}", t.base);
        let req = build_request(&t, method, path, body)?;
        let fut = async {
            sender.ready().await.context("connection closed")?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.with_context(|| what.clone()),
            Err(_) => Err(anyhow!("{what}: no answer within {:?}", self.timeout)),
        }
    }

    /// A request that must succeed (2xx, or one of `also_ok`); returns the body.
    async fn expect(&self, method: Method, path: &str, body: Option<&Value>, also_ok: &[u16]) -> Result<Bytes> {
        let (status, bytes) = self.request(method.clone(), path, body).await?;
        if status.is_success() || also_ok.contains(&status.as_u16()) {
            Ok(bytes)
        } else {
            Err(anyhow!("{method} {path}: {status}: {}", status_message(&bytes)))
        }
    }
}

// ---------------------------------------------------------------------------------------
// A closed loop: `clients` loops issuing `total` operations

type Op = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<u64>> + Send>> + Send + Sync>;

struct Stats {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    bytes: u64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

/// Run `op(i)` for i in 0..total from `clients` loops; `op` returns bytes received.
async fn closed_loop(clients: usize, total: u64, op: Op) -> Result<Stats> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let (issued, op) = (issued.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut errors, mut bytes, mut first_error) = (0u64, 0u64, None::<String>);
            loop {
                let i = issued.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(n) => {
                        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
                        bytes += n;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (hist, errors, bytes, first_error)
        }));
    }
    let mut stats = Stats { hist: new_hist(), errors: 0, first_error: None, elapsed: Duration::ZERO, bytes: 0 };
    for t in tasks {
        let (h, e, b, fe) = t.await.context("a client task failed")?;
        stats.hist.add(h)?;
        stats.errors += e;
        stats.bytes += b;
        if stats.first_error.is_none() {
            stats.first_error = fe;
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Print the summary line and the `RESULT` JSON of one closed-loop run.
fn report(a: &ApiBenchArgs, masters: usize, workload: &str, clients: usize, total: u64, s: &Stats, extra: Value) {
    let ok = s.hist.len();
    let rps = ok as f64 / s.elapsed.as_secs_f64().max(1e-9);
    let (p50, p99, max) = (ms(s.hist.value_at_quantile(0.5)), ms(s.hist.value_at_quantile(0.99)), ms(s.hist.max()));
    let mut tail = String::new();
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            tail.push_str(&format!(" {k} {}", v.to_string().trim_matches('"')));
        }
    }
    println!(
        "{label}{sep}api {workload} masters={masters} clients={clients} total={total}: {rps:.0} req/s p50 {p50:.2} ms \
         p99 {p99:.2} ms max {max:.2} ms errors {}{tail} ({:.2} s)",
        s.errors,
        s.elapsed.as_secs_f64(),
        label = a.label,
        sep = if a.label.is_empty() { "" } else { " " },
    );
    if let Some(e) = &s.first_error {
        println!("first error: {e}");
    }
    let mut j = json!({
        "label": a.label, "workload": workload, "masters": masters, "clients": clients, "total": total,
        "ok": ok, "errors": s.errors, "elapsed_s": s.elapsed.as_secs_f64(), "throughput": rps,
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
    });
    if let (Some(j), Some(o)) = (j.as_object_mut(), extra.as_object()) {
        for (k, v) in o {
            j.insert(k.replace('/', "_per_").replace(' ', "_"), v.clone());
        }
    }
    println!("RESULT {j}");
}

// ---------------------------------------------------------------------------------------
// Objects

fn configmap(name: &str, data_size: usize, annotations: Option<Value>) -> Value {
    let mut meta = json!({"name": name, "labels": {"app": "keelson-bench"}});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"payload": "x".repeat(data_size)}})
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "keelson-bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]},
    })
}

async fn ensure_namespace(pool: &Pool, ns: &str) -> Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    pool.expect(Method::POST, "/api/v1/namespaces", Some(&body), &[409]).await.map(|_| ())
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
    #[serde(rename = "resourceVersion", default)]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct NameOnly {
    metadata: NameMeta,
}

#[derive(Deserialize)]
struct NameMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct NameList {
    #[serde(default)]
    items: Vec<NameOnly>,
    metadata: ListMeta,
}

#[derive(Deserialize)]
struct CountList {
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
    metadata: ListMeta,
}

/// Every object name under a collection path, in pages of 500.
async fn list_names(pool: &Pool, collection: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1_000_000 {
        let mut path = format!("{collection}?limit=500");
        if let Some(t) = &token {
            path.push_str(&format!("&continue={}", qe(t)));
        }
        let body = pool.expect(Method::GET, &path, None, &[]).await?;
        let l: NameList = serde_json::from_slice(&body).with_context(|| format!("GET {path}: not a list"))?;
        names.extend(l.items.into_iter().map(|i| i.metadata.name));
        token = l.metadata.continue_token.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(names);
        }
    }
    bail!("GET {collection}: more than a million pages")
}

/// Create the named objects (409 tolerated) from `clients` loops; prints one line.
async fn seed(
    pool: &Arc<Pool>,
    what: &str,
    collection: &str,
    names: Vec<String>,
    clients: usize,
    make: fn(&str, usize) -> Value,
    data_size: usize,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let n = names.len() as u64;
    let names = Arc::new(names);
    let (p, collection2) = (pool.clone(), collection.to_string());
    let op: Op = Arc::new(move |i| {
        let (p, names, collection) = (p.clone(), names.clone(), collection2.clone());
        Box::pin(async move {
            let body = make(&names[i as usize], data_size);
            p.expect(Method::POST, &collection, Some(&body), &[409]).await.map(|_| 0)
        })
    });
    let s = closed_loop(clients, n, op).await?;
    eprintln!(
        "seeded {n} {what} in {collection} with {clients} clients: {:.1} s, {:.0}/s, p50 {:.2} ms p99 {:.2} ms, errors {}{}",
        s.elapsed.as_secs_f64(),
        s.hist.len() as f64 / s.elapsed.as_secs_f64().max(1e-9),
        ms(s.hist.value_at_quantile(0.5)),
        ms(s.hist.value_at_quantile(0.99)),
        s.errors,
        s.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default(),
    );
    Ok(())
}

/// Make `collection` hold at least `want` ConfigMaps; returns their names.
async fn ensure_configmaps(pool: &Arc<Pool>, a: &ApiBenchArgs, collection: &str, want: u64) -> Result<Vec<String>> {
    let mut names = list_names(pool, collection).await?;
    if (names.len() as u64) < want {
        let run = rand::random::<u32>();
        let missing: Vec<String> = (0..want - names.len() as u64).map(|i| format!("seed-{run:08x}-{i}")).collect();
        seed(pool, "ConfigMaps", collection, missing, a.setup_clients, |n, d| configmap(n, d, None), a.data_size)
            .await?;
        names = list_names(pool, collection).await?;
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------
// Workloads

pub async fn run(a: ApiBenchArgs) -> Result<()> {
    if a.clients == 0 || a.total == 0 || a.conns == Some(0) || a.setup_clients == 0 {
        bail!("--clients, --conns, --total and --setup-clients must be positive");
    }
    tokio::select! {
        r = run_workload(&a) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn run_workload(a: &ApiBenchArgs) -> Result<()> {
    let targets = load_kubeconfig(&a.kubeconfig, a.masters)?;
    let timeout = Duration::from_secs(a.timeout.max(1));
    let m = targets.len();
    let per_master = a.conns.unwrap_or(4).div_ceil(m);
    let pool = Arc::new(Pool::open(&targets, per_master, timeout).await?);
    match a.workload {
        Workload::Create | Workload::Get | Workload::List => {
            ensure_namespace(&pool, &a.namespace).await?;
            let collection = format!("/api/v1/namespaces/{}/configmaps", a.namespace);
            let (op, extra): (Op, Value) = match a.workload {
                Workload::Create => {
                    let run = rand::random::<u32>();
                    let (p, c, size) = (pool.clone(), collection.clone(), a.data_size);
                    let op: Op = Arc::new(move |i| {
                        let (p, c) = (p.clone(), c.clone());
                        Box::pin(async move {
                            let body = configmap(&format!("c-{run:08x}-{i}"), size, None);
                            p.expect(Method::POST, &c, Some(&body), &[]).await.map(|_| 0)
                        })
                    });
                    (op, json!({}))
                }
                Workload::Get => {
                    let names = Arc::new(ensure_configmaps(&pool, a, &collection, a.objects.unwrap_or(a.total)).await?);
                    if names.is_empty() {
                        bail!("{collection} is empty");
                    }
                    let objects = names.len();
                    let (p, c) = (pool.clone(), collection.clone());
                    let op: Op = Arc::new(move |_| {
                        let (p, c, names) = (p.clone(), c.clone(), names.clone());
                        Box::pin(async move {
                            let name = &names[rand::random::<usize>() % names.len()];
                            p.expect(Method::GET, &format!("{c}/{name}"), None, &[]).await.map(|b| b.len() as u64)
                        })
                    });
                    (op, json!({ "objects": objects }))
                }
                _ => {
                    let objects = ensure_configmaps(&pool, a, &collection, a.objects.unwrap_or(0)).await?.len();
                    let (p, c) = (pool.clone(), collection.clone());
                    let op: Op = Arc::new(move |_| {
                        let (p, c) = (p.clone(), c.clone());
                        Box::pin(async move { p.expect(Method::GET, &c, None, &[]).await.map(|b| b.len() as u64) })
                    });
                    (op, json!({ "objects": objects }))
                }
            };
            let s = closed_loop(a.clients, a.total, op).await?;
            let mut extra = extra;
            if a.workload != Workload::Create && !s.hist.is_empty() {
                extra["KiB/req"] = json!(((s.bytes as f64 / s.hist.len() as f64 / 1024.0) * 10.0).round() / 10.0);
            }
            report(a, m, a.workload.name(), a.clients, a.total, &s, extra);
            if s.hist.is_empty() {
                bail!("no request succeeded");
            }
            Ok(())
        }
        Workload::ListPods => list_pods(a, &pool).await,
        Workload::Watch => watch(a, &targets, &pool).await,
    }
}

const PODS_NS: &str = "bench-pods";
const WATCH_NS: &str = "bench-watch";

async fn list_pods(a: &ApiBenchArgs, pool: &Arc<Pool>) -> Result<()> {
    let m = pool.targets.len();
    ensure_namespace(pool, PODS_NS).await?;
    let collection = format!("/api/v1/namespaces/{PODS_NS}/pods");
    let have: std::collections::HashSet<String> = list_names(pool, &collection).await?.into_iter().collect();
    let width = a.pods.to_string().len().max(5);
    let missing: Vec<String> = (0..a.pods).map(|i| format!("pod-{i:0width$}")).filter(|n| !have.contains(n)).collect();
    seed(pool, "Pods", &collection, missing, a.setup_clients, |n, _| pod(n), 0).await?;
    let expected = list_names(pool, &collection).await?.len() as u64;
    if expected < a.pods {
        bail!("{collection} holds {expected} Pods after seeding, not {}", a.pods);
    }

    // Whole LISTs.
    let (p, c) = (pool.clone(), collection.clone());
    let op: Op = Arc::new(move |_| {
        let (p, c) = (p.clone(), c.clone());
        Box::pin(async move {
            let body = p.expect(Method::GET, &c, None, &[]).await?;
            let l: CountList = serde_json::from_slice(&body).context("the Pod list is not a list")?;
            if (l.items.len() as u64) < expected {
                bail!("the LIST returned {} Pods, expected {expected}", l.items.len());
            }
            Ok(body.len() as u64)
        })
    });
    let s = closed_loop(a.clients, a.total, op).await?;
    let per = |s: &Stats| ((s.bytes as f64 / s.hist.len().max(1) as f64 / 1048576.0) * 100.0).round() / 100.0;
    report(a, m, "list-pods-full", a.clients, a.total, &s, json!({"pods": expected, "MiB/list": per(&s)}));
    let full_ok = !s.hist.is_empty();

    // Paged LISTs (limit=500 with continue), timed start to last page.
    let (p, c) = (pool.clone(), collection.clone());
    let op: Op = Arc::new(move |_| {
        let (p, c) = (p.clone(), c.clone());
        Box::pin(async move {
            let (mut bytes, mut items, mut token) = (0u64, 0u64, None::<String>);
            for _ in 0..100_000 {
                let mut path = format!("{c}?limit=500");
                if let Some(t) = &token {
                    path.push_str(&format!("&continue={}", qe(t)));
                }
                let body = p.expect(Method::GET, &path, None, &[]).await?;
                let l: CountList = serde_json::from_slice(&body).context("a Pod page is not a list")?;
                bytes += body.len() as u64;
                items += l.items.len() as u64;
                if l.items.len() > 500 {
                    bail!("a limit=500 page held {} Pods", l.items.len());
                }
                token = l.metadata.continue_token.filter(|t| !t.is_empty());
                if token.is_none() {
                    break;
                }
            }
            if token.is_some() || items < expected {
                bail!("the paged LIST returned {items} Pods, expected {expected}");
            }
            Ok(bytes)
        })
    });
    let s = closed_loop(a.clients, a.total, op).await?;
    report(a, m, "list-pods-paged", a.clients, a.total, &s, json!({"pods": expected, "MiB/list": per(&s)}));
    if !full_ok || s.hist.is_empty() {
        bail!("no LIST succeeded");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Watch

const SENT_ANNOTATION: &str = "bench.keelson.io/sent-unix-nanos";

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: WatchObject,
}

#[derive(Deserialize)]
struct WatchObject {
    #[serde(default)]
    metadata: WatchMeta,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct WatchMeta {
    #[serde(default)]
    name: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: Option<String>,
    #[serde(default)]
    annotations: Option<std::collections::HashMap<String, String>>,
}

#[derive(Default)]
struct WatchOutcome {
    /// Deliveries per object index.
    seen: Vec<u16>,
    duplicates: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
    error: Option<String>,
    /// The 200 headers arrived.
    established: bool,
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

struct WatchShared {
    established: AtomicUsize,
    /// Watches that failed before their headers arrived.
    refused: AtomicUsize,
    ended: AtomicUsize,
    /// Distinct (watcher, object) deliveries so far.
    delivered: AtomicU64,
    stop: CancellationToken,
}

struct OneWatch {
    target: Arc<Target>,
    sender: Sender,
    path: String,
    prefix: String,
    total: usize,
    timeout: Duration,
}

async fn one_watch(w: OneWatch, shared: Arc<WatchShared>) -> WatchOutcome {
    let mut out = WatchOutcome { seen: vec![0; w.total], ..Default::default() };
    let r = watch_stream(&w, &shared, &mut out).await;
    if let Err(e) = r {
        out.error = Some(format!("{e:#}"));
    }
    if !out.established {
        shared.refused.fetch_add(1, Ordering::Relaxed);
    }
    shared.ended.fetch_add(1, Ordering::Relaxed);
    out
}

async fn watch_stream(w: &OneWatch, shared: &WatchShared, out: &mut WatchOutcome) -> Result<()> {
    let req = build_request(&w.target, Method::GET, &w.path, None)?;
    let mut sender = w.sender.clone();
    let what = format!("GET {}{}", w.target.base, w.path);
    let resp = tokio::time::timeout(w.timeout, async {
        sender.ready().await.context("connection closed")?;
        Ok::<_, anyhow::Error>(sender.send_request(req).await?)
    })
    .await
    .map_err(|_| anyhow!("{what}: no response headers within {:?}", w.timeout))?
    .with_context(|| what.clone())?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let b = tokio::time::timeout(w.timeout, body.collect()).await.ok().and_then(|r| r.ok()).map(|c| c.to_bytes());
        bail!("{what}: {status}: {}", b.map(|b| status_message(&b)).unwrap_or_default());
    }
    out.established = true;
    shared.established.fetch_add(1, Ordering::Relaxed);
    let (mut buf, mut last_rv) = (Vec::<u8>::new(), 0i64);
    loop {
        let frame = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            f = body.frame() => f,
        };
        let data = match frame {
            None => bail!("{what}: the server ended the watch"),
            Some(Err(e)) => bail!("{what}: the watch stream failed: {e}"),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        let now = unix_nanos();
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev: WatchEvent = serde_json::from_slice(line)
                .with_context(|| format!("{what}: not a watch event: {}", String::from_utf8_lossy(line)))?;
            let rv = ev.object.metadata.resource_version.as_deref().and_then(|r| r.parse::<i64>().ok());
            match ev.kind.as_str() {
                "ERROR" => bail!("{what}: ERROR event: {}", ev.object.message.unwrap_or_default()),
                "BOOKMARK" => {
                    // Everything up to a bookmark's revision has been sent.
                    if let Some(rv) = rv {
                        if rv < last_rv {
                            out.out_of_order += 1;
                        }
                        last_rv = last_rv.max(rv);
                    }
                }
                kind => {
                    let Some(idx) =
                        ev.object.metadata.name.strip_prefix(&w.prefix).and_then(|s| s.parse::<usize>().ok())
                    else {
                        continue; // not this run's object
                    };
                    if kind != "ADDED" || idx >= w.total {
                        continue;
                    }
                    match rv {
                        Some(rv) if rv > last_rv => last_rv = rv,
                        _ => out.out_of_order += 1,
                    }
                    let sent = ev
                        .object
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SENT_ANNOTATION))
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        out.latencies_us.push(now.saturating_sub(sent) / 1000);
                    }
                    let seen = &mut out.seen[idx];
                    *seen = seen.saturating_add(1);
                    if *seen == 1 {
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        out.duplicates += 1;
                    }
                }
            }
        }
        buf.drain(..start);
    }
}

async fn watch(a: &ApiBenchArgs, targets: &[Arc<Target>], pool: &Arc<Pool>) -> Result<()> {
    let (m, w, total) = (targets.len(), a.watchers.max(1), a.total as usize);
    if a.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if w.saturating_mul(total) > 100_000_000 {
        bail!("--watchers × --total is too large (at most 100,000,000 deliveries)");
    }
    ensure_namespace(pool, WATCH_NS).await?;
    let collection = format!("/api/v1/namespaces/{WATCH_NS}/configmaps");
    let body = pool.expect(Method::GET, &format!("{collection}?limit=1"), None, &[]).await?;
    let l: CountList = serde_json::from_slice(&body).context("the initial list is not a list")?;
    let rv = l.metadata.resource_version.filter(|r| !r.is_empty()).ok_or_else(|| anyhow!("the list has no rv"))?;

    // Watch connections: one per 100 watchers on each master (the server allows 200
    // concurrent streams per connection), or --conns spread over the masters.
    let per_master_watchers = w.div_ceil(m);
    let per_master = match a.conns {
        Some(c) => c.div_ceil(m),
        None => per_master_watchers.div_ceil(100),
    };
    let timeout = Duration::from_secs(a.timeout.max(1));
    let opened = Instant::now();
    let wpool = Pool::open(targets, per_master, timeout).await?;
    let run = rand::random::<u32>();
    let prefix = format!("w-{run:08x}-");
    let shared = Arc::new(WatchShared {
        established: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    let path = format!("{collection}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=3600", qe(&rv));
    let mut tasks = Vec::with_capacity(w);
    for _ in 0..w {
        let (target, sender) = wpool.pick();
        let ow = OneWatch { target, sender, path: path.clone(), prefix: prefix.clone(), total, timeout };
        tasks.push(tokio::spawn(one_watch(ow, shared.clone())));
    }
    // Wait (bounded) for every watch's 200 headers.
    let deadline = Instant::now() + timeout * 2;
    while shared.established.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed) < w {
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let established = shared.established.load(Ordering::Relaxed);
    let establish_s = opened.elapsed().as_secs_f64();
    eprintln!(
        "{established}/{w} watches established over {} connections to {m} master(s) in {establish_s:.2} s",
        per_master * m
    );

    // Create at a fixed rate, each object carrying its send time.
    let created_ok = Arc::new(std::sync::Mutex::new(vec![false; total]));
    let create_errors = Arc::new(AtomicU64::new(0));
    let first_create_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let create_hist = Arc::new(std::sync::Mutex::new(new_hist()));
    let inflight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut creators = Vec::with_capacity(total);
    let create_started = Instant::now();
    if established == w {
        for i in 0..total {
            tick.tick().await;
            let permit = inflight.clone().acquire_owned().await?;
            let (p, c, prefix, size) = (pool.clone(), collection.clone(), prefix.clone(), a.data_size);
            let (ok, errs, first, hist) =
                (created_ok.clone(), create_errors.clone(), first_create_error.clone(), create_hist.clone());
            creators.push(tokio::spawn(async move {
                let _permit = permit;
                let t = Instant::now();
                let body =
                    configmap(&format!("{prefix}{i}"), size, Some(json!({SENT_ANNOTATION: unix_nanos().to_string()})));
                match p.expect(Method::POST, &c, Some(&body), &[]).await {
                    Ok(_) => {
                        if let Ok(mut h) = hist.lock() {
                            h.saturating_record(t.elapsed().as_micros().max(1) as u64);
                        }
                        if let Ok(mut v) = ok.lock() {
                            v[i] = true;
                        }
                    }
                    Err(e) => {
                        errs.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first.lock() {
                            f.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }));
        }
        for c in creators {
            let _ = c.await;
        }
    }
    let create_s = create_started.elapsed().as_secs_f64();
    let created: Vec<bool> = created_ok.lock().map(|v| v.clone()).unwrap_or_default();
    let n_created = created.iter().filter(|&&c| c).count();

    // Wait until every established watcher has every created object, or the timeout passes
    // with nothing new delivered.
    let want = (established * n_created) as u64;
    let (mut last, mut last_change) = (0u64, Instant::now());
    loop {
        let d = shared.delivered.load(Ordering::Relaxed);
        if d >= want || shared.ended.load(Ordering::Relaxed) >= w {
            break;
        }
        if d != last {
            (last, last_change) = (d, Instant::now());
        } else if last_change.elapsed() >= timeout {
            eprintln!("watch: no delivery for {timeout:?}; {d}/{want} delivered, giving up");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = create_started.elapsed().as_secs_f64() - create_s;
    shared.stop.cancel();
    let mut hist = new_hist();
    let (mut missing, mut duplicates, mut out_of_order, mut unexpected) = (0u64, 0u64, 0u64, 0u64);
    let (mut watch_errors, mut first_watch_error) = (0u64, None::<String>);
    for t in tasks {
        let o = match tokio::time::timeout(timeout, t).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => WatchOutcome {
                seen: vec![0; total],
                error: Some(format!("watch task failed: {e}")),
                ..Default::default()
            },
            Err(_) => WatchOutcome {
                seen: vec![0; total],
                error: Some("watch task did not stop".into()),
                ..Default::default()
            },
        };
        for &l in &o.latencies_us {
            hist.saturating_record(l.max(1));
        }
        duplicates += o.duplicates;
        out_of_order += o.out_of_order;
        for (i, &s) in o.seen.iter().enumerate() {
            match (created[i], s) {
                (true, 0) => missing += 1,
                (false, s) if s > 0 => unexpected += 1,
                _ => {}
            }
        }
        if let Some(e) = o.error {
            watch_errors += 1;
            first_watch_error.get_or_insert(e);
        }
    }
    let errors = create_errors.load(Ordering::Relaxed);
    let ch = create_hist.lock().map(|h| h.clone()).unwrap_or_else(|_| new_hist());
    let (p50, p99, max) = (ms(hist.value_at_quantile(0.5)), ms(hist.value_at_quantile(0.99)), ms(hist.max()));
    println!(
        "{label}{sep}api watch masters={m} watchers={w} total={total} rate={}/s: delivery p50 {p50:.2} ms p99 {p99:.2} ms \
         max {max:.2} ms deliveries {}/{} missing {missing} duplicate {duplicates} out-of-order {out_of_order} \
         unexpected {unexpected} watch-errors {watch_errors} create-errors {errors} create p50 {:.2} ms p99 {:.2} ms \
         (established {established}/{w} in {establish_s:.2} s, created in {create_s:.2} s, drained in {drain_s:.2} s)",
        a.rate,
        hist.len(),
        want,
        ms(ch.value_at_quantile(0.5)),
        ms(ch.value_at_quantile(0.99)),
        label = a.label,
        sep = if a.label.is_empty() { "" } else { " " },
    );
    if let Some(e) = first_create_error.lock().ok().and_then(|f| f.clone()) {
        println!("first create error: {e}");
    }
    if let Some(e) = &first_watch_error {
        println!("first watch error: {e}");
    }
    println!(
        "RESULT {}",
        json!({
            "label": a.label, "workload": "watch", "masters": m, "watchers": w, "total": total, "rate": a.rate,
            "established": established, "establish_s": establish_s, "created": n_created, "create_errors": errors,
            "deliveries": hist.len(), "expected": want, "missing": missing, "duplicates": duplicates,
            "out_of_order": out_of_order, "unexpected": unexpected, "watch_errors": watch_errors,
            "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "create_p50_ms": ms(ch.value_at_quantile(0.5)), "create_p99_ms": ms(ch.value_at_quantile(0.99)),
            "create_s": create_s, "drain_s": drain_s,
        })
    );
    if established < w {
        bail!("only {established} of {w} watches were established");
    }
    if missing + duplicates + out_of_order + watch_errors > 0 {
        bail!(
            "watch check failed: {missing} missing, {duplicates} duplicate, {out_of_order} out-of-order deliveries, \
             {watch_errors} watches failed"
        );
    }
    if n_created == 0 {
        bail!("no ConfigMap was created");
    }
    Ok(())
}
