//! Cluster DNS, in the manner of CoreDNS's kubernetes plugin: each node agent serves it on
//! its pod bridge's gateway address, and pods with dnsPolicy ClusterFirst point at it.
//!
//! - [`records`]: the cluster's names as a pure table built from Services, EndpointSlices
//!   (discovery.k8s.io/v1) and Pods, per the Kubernetes DNS schema: `<svc>.<ns>.svc.<zone>`
//!   (A/AAAA of the cluster IPs, or of every ready endpoint for a headless Service; CNAME for
//!   ExternalName), `<hostname>.<svc>.<ns>.svc.<zone>` for endpoints (their `hostname`, else
//!   their dashed address), SRV `_<port>._<proto>.<svc>.<ns>.svc.<zone>` for named ports,
//!   `<a-b-c-d>.<ns>.pod.<zone>`, `dns-version.<zone>` TXT, PTR for cluster IPs, endpoints
//!   and pods.
//! - [`answer`]: one question against the table — authoritative answers, NXDOMAIN or NODATA
//!   with the zone's SOA, case-insensitive — or "forward it".
//! - [`forward`]: everything else relayed to the upstreams (UDP, TCP when truncated,
//!   SERVFAIL when none answers).
//! - [`server`]: the hickory-server on UDP and TCP, and the [`TableHandle`] it reads.
//! - [`watch`]: reflectors that rebuild the table on every change.
//!
//! TTL: `DnsConfig::ttl` on every record, and as the SOA minimum (so also how long a client
//! may cache NXDOMAIN/NODATA). [`DEFAULT_TTL`] is CoreDNS's 5 s: short enough that a new or
//! moved Service is seen quickly.

pub mod answer;
pub mod forward;
pub mod records;
pub mod server;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use records::Table;
pub use server::{DnsServer, Options, TableHandle};

/// CoreDNS's default TTL for cluster records.
pub const DEFAULT_TTL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Bind(String),
    #[error("{0}")]
    Serve(String),
    #[error("{0}")]
    Config(String),
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// `cluster.local`.
    pub cluster_domain: String,
    /// Where other names go; empty: the nameservers of the host's /etc/resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    pub ttl: u32,
}

/// Serve the cluster's names from Services, EndpointSlices and Pods until `stop`.
///
/// A listen address that is not on the host yet (the pod bridge appears with the first pod)
/// is waited for, retrying every second; any other bind error is returned.
pub async fn run(client: kube::Client, cfg: DnsConfig, stop: CancellationToken) -> Result<(), DnsError> {
    run_with(client, cfg, Options::default(), stop).await
}

/// [`run`] with [`Options`].
pub async fn run_with(
    client: kube::Client,
    cfg: DnsConfig,
    opts: Options,
    stop: CancellationToken,
) -> Result<(), DnsError> {
    let zone = records::zone_name(&cfg.cluster_domain).map_err(DnsError::Config)?;
    let table = TableHandle::new();
    let mut waited = 0u32;
    let server = loop {
        match DnsServer::try_bind(&cfg, zone.clone(), table.clone(), opts.clone()).await {
            Ok(s) => break s,
            Err((addr, e)) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                if waited % 30 == 0 {
                    warn!(%addr, "DNS: listen address not on this host yet; waiting");
                }
                waited += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
            Err((addr, e)) => return Err(DnsError::Bind(format!("{addr}: {e}"))),
        }
    };
    let feed = tokio::spawn(watch::feed(client, zone, table, stop.clone()));
    let served = server.serve(stop).await;
    feed.abort();
    served
}
