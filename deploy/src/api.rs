//! Starting a master's API server: PKI, serving certificate, the HTTPS listener, the
//! default namespaces, this master's entry in the master list and the admin kubeconfig
//! (rewritten whenever a master joins, so it always has a context per master).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use keelson_api::tls::TlsMaterial;
use keelson_api::{ApiConfig, ApiServer};
use keelson_store::{KeyRange, RangeRequest, Store, Txn, WatchRequest};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::pki::{self, Pki};

/// Where masters publish their API URL (read to write kubeconfigs) — Kubernetes keeps its
/// masters' addresses under the same prefix.
const MASTERS_PREFIX: &str = "/registry/masterleases/";

pub struct ApiOptions {
    pub name: String,
    pub data_dir: PathBuf,
    pub api_addr: String,
    pub pki_dir: Option<PathBuf>,
    /// Hosts of the other masters (and any extra names) for the serving certificate.
    pub sans: Vec<String>,
    pub event_ttl: Duration,
    pub service_ranges: keelson_api::alloc::ServiceRanges,
    /// Scrape kubelets for `metrics.k8s.io` this often (`None` = never).
    pub metric_resolution: Option<Duration>,
}

/// A running API server.
pub struct ApiHandle {
    pub kubeconfig: PathBuf,
    pub url: String,
    /// Fires once the default namespaces exist and the kubeconfig is written.
    pub ready: oneshot::Receiver<()>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The API server itself (for the leader's in-process clients).
    pub server: ApiServer,
}

fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => addr.to_string(),
    }
}

/// Bind the API address (so a taken port fails the start at once).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on --api-addr {addr}"))
}

pub async fn start(
    store: Store,
    opts: ApiOptions,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<ApiHandle> {
    let pki_dir = opts.pki_dir.clone().unwrap_or_else(|| opts.data_dir.join("pki"));
    let pki = tokio::task::spawn_blocking(move || pki::load_or_create(&pki_dir)).await??;
    let local = listener.local_addr()?;
    let mut host = host_of(&opts.api_addr);
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) || host.is_empty() {
        host = "127.0.0.1".into();
    }
    let advertise = format!("{host}:{}", local.port());
    let url = format!("https://{advertise}");
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        host.clone(),
    ];
    sans.extend(opts.sans.iter().cloned());
    sans.sort();
    sans.dedup();
    let (cert_pem, key_pem) = pki.serving_cert(&opts.name, &sans)?;
    let kubelet_client = pki.client_cert("kube-apiserver-kubelet-client", "system:masters")?;
    let server = ApiServer::new(
        store.clone(),
        ApiConfig {
            tls: TlsMaterial { ca_pem: pki.ca_cert.clone(), cert_pem, key_pem },
            advertise: advertise.clone(),
            event_ttl: opts.event_ttl,
            service_account_key: Some((pki.sa_key.clone(), pki.sa_pub.clone())),
            service_ranges: opts.service_ranges.clone(),
            kubelet_client: Some(kubelet_client),
            metrics_resolution: opts.metric_resolution,
        },
        stop.clone(),
    )?;
    server.register_metric(Box::new(crate::telemetry::spans_dropped().clone()))?;
    // The leader's loops count into process-wide series: this master's, whichever term.
    for c in keelson_controllers::metrics::collectors().into_iter().chain(keelson_scheduler::metrics::collectors()) {
        server.register_metric(c)?;
    }
    let server_handle = server.clone();
    let task = tokio::spawn(server.clone().serve(listener));
    let kubeconfig = opts.data_dir.join("admin.kubeconfig");
    crate::kubeconfig::write(&kubeconfig, &pki, &[(opts.name.clone(), url.clone())], &opts.name)?;
    let (ready_tx, ready) = oneshot::channel();
    tokio::spawn(maintain(store, server, pki, opts.name.clone(), url.clone(), kubeconfig.clone(), stop, ready_tx));
    tracing::info!(api = %url, kubeconfig = %kubeconfig.display(), "API server listening");
    Ok(ApiHandle { kubeconfig, url, ready, task, server: server_handle })
}

/// Retry `f` until it succeeds or `stop` fires (a new cluster has no leader for a moment).
async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, stop: &CancellationToken, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::debug!(error = %e, "{what}: retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[allow(clippy::too_many_arguments)]
async fn maintain(
    store: Store,
    server: ApiServer,
    pki: Pki,
    name: String,
    url: String,
    kubeconfig: PathBuf,
    stop: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    if retry("creating the default namespaces", &stop, || server.bootstrap()).await.is_none() {
        return;
    }
    let entry = serde_json::json!({"name": name, "url": url}).to_string();
    let key = format!("{MASTERS_PREFIX}{name}");
    if retry("publishing this master", &stop, || store.txn(Txn::put(key.clone(), entry.clone()))).await.is_none() {
        return;
    }
    let mut ready = Some(ready);
    loop {
        let Some(r) = retry("reading the master list", &stop, || {
            store.range(RangeRequest { serializable: true, ..RangeRequest::new(KeyRange::prefix(MASTERS_PREFIX)) })
        })
        .await
        else {
            return;
        };
        let mut masters: Vec<(String, String)> = r
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
            .filter_map(|v| Some((v.get("name")?.as_str()?.to_string(), v.get("url")?.as_str()?.to_string())))
            .collect();
        masters.sort();
        if let Err(e) = crate::kubeconfig::write(&kubeconfig, &pki, &masters, &name) {
            tracing::warn!(error = %e, "cannot rewrite the kubeconfig");
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        let mut w = store.watch(WatchRequest {
            range: KeyRange::prefix(MASTERS_PREFIX),
            start_revision: r.revision + 1,
            ..Default::default()
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = w.next() => {}
        }
    }
}
