//! The scraper: every resolution, each master reads `/metrics/resource` from every node's
//! kubelet (over TLS with its kubelet client certificate, as for pod logs) and turns the
//! counters into usage rates — metrics-server, built in. Nodes sharing one endpoint
//! (simulated nodes) are scraped once; nodes without a kubelet port are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{stream, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::Instrument;

use super::parse::parse;
use super::rates::Scrape;
use crate::serve::Api;
use crate::storage::{self, Freshness};

/// Endpoints scraped at once.
const CONCURRENCY: usize = 16;
/// The largest body read from one endpoint (a simulated agent of 50,000 pods is ~30 MB).
const MAX_BODY: usize = 256 * 1024 * 1024;
/// Longest one scrape may take.
const MAX_SCRAPE: Duration = Duration::from_secs(10);

/// Scrape every `resolution` until the API server stops.
pub(crate) async fn run(api: Arc<Api>, resolution: Duration) {
    let Some(tls) = api.kubelet_tls.clone() else {
        tracing::info!("no kubelet client certificate: the resource metrics API stays empty");
        return;
    };
    let mut tick = tokio::time::interval(resolution);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = api.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let span = tracing::debug_span!("metrics_scrape");
        round(&api, &tls, resolution).instrument(span).await;
    }
}

/// `host:port` of each node's kubelet, with the nodes behind it.
fn endpoints(nodes: &[Value]) -> BTreeMap<(String, u16), Vec<String>> {
    let mut out: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    for n in nodes {
        let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) else { continue };
        let has_port =
            n.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_i64).is_some_and(|p| p > 0);
        if !has_port {
            continue;
        }
        if let Ok(ep) = crate::rest::kubelet::kubelet_endpoint(n, name) {
            out.entry(ep).or_default().push(name.to_string());
        }
    }
    out
}

async fn round(api: &Arc<Api>, tls: &Arc<rustls::ClientConfig>, resolution: Duration) {
    let Some(def) = api.registry.find("", "v1", "nodes") else { return };
    let nodes = match storage::list(&api.store, &def.key_prefix, Freshness::Any, None, None, &|_| true, false).await {
        Ok(p) => p.items,
        Err(e) => {
            tracing::debug!(error = %e.message, "listing nodes to scrape failed");
            return;
        }
    };
    let eps = endpoints(&nodes);
    let timeout = resolution.min(MAX_SCRAPE);
    let results: Vec<_> = stream::iter(eps.clone())
        .map(|((host, port), names)| {
            let tls = tls.clone();
            async move {
                let r = tokio::time::timeout(timeout, fetch(tls, &host, port)).await;
                let r = r.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                (format!("{host}:{port}"), names, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut rates = api.resource_metrics.rates.write().unwrap_or_else(|e| e.into_inner());
    for (endpoint, names, r) in results {
        match r {
            Ok(text) => {
                let (samples, bad) = parse(&text, |n| n.starts_with("node_") || n.starts_with("container_"));
                if bad > 0 {
                    tracing::debug!(%endpoint, bad, "malformed metric lines skipped");
                }
                let only = (names.len() == 1).then(|| names[0].as_str());
                rates.update(&endpoint, Scrape::from_samples(&samples, only, now_ms));
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "scraping the kubelet failed"),
        }
    }
    let live: std::collections::HashSet<String> = eps.keys().map(|(h, p)| format!("{h}:{p}")).collect();
    let oldest = now_ms - (resolution * 3).max(Duration::from_secs(60)).as_millis() as i64;
    rates.retain(|e| live.contains(e), oldest);
}

/// `GET /metrics/resource` from one kubelet.
async fn fetch(tls: Arc<rustls::ClientConfig>, host: &str, port: u16) -> Result<String, String> {
    let stream = crate::rest::kubelet::dial(tls, host, port).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get("/metrics/resource")
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| e.to_string())?.to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_sharing_an_endpoint_are_scraped_once() {
        let node = |name: &str, ip: &str, port: Option<i64>| {
            let mut n =
                json!({"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
            if let Some(p) = port {
                n["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": p}});
            }
            n
        };
        let eps = endpoints(&[
            node("a", "127.0.0.1", Some(2000)),
            node("b", "127.0.0.1", Some(2000)),
            node("c", "127.0.0.2", Some(2000)),
            node("d", "127.0.0.1", None),
            node("e", "127.0.0.1", Some(0)),
            json!({"metadata": {"name": "f"}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}}),
        ]);
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[&("127.0.0.1".to_string(), 2000)], vec!["a", "b"]);
        assert_eq!(eps[&("127.0.0.2".to_string(), 2000)], vec!["c"]);
    }
}
