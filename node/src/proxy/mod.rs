//! The service proxy: kube-proxy's job in its nftables mode. Services' cluster IPs (and
//! NodePorts) are DNATed to their endpoints by one nftables table that the proxy owns and
//! rewrites whole.
//!
//! - [`model`]: Services + EndpointSlices → [`ServiceTable`] (which ports, which endpoints).
//! - [`rules`]: the table → one nftables transaction (the layout and the masquerade choice
//!   are documented there).
//! - [`apply`]: `nft -j -f -` (through `ip netns exec` for [`ProxyConfig::netns`]),
//!   reading back the affinity sets, `net.ipv4.ip_forward`.
//! - [`watch`]: reflectors on Services and EndpointSlices; a sync after each burst of
//!   changes and every [`ProxyConfig::resync`].
//!
//! [`Proxier`] is the one path from objects to the kernel: [`run`] feeds it from the API
//! server, tests feed it objects directly.
//!
//! IPv4 only: IPv6 cluster IPs, endpoints and node addresses are ignored.

pub mod apply;
pub mod model;
pub mod rules;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use model::{Endpoint, Protocol, ServicePort, ServiceTable};
pub use rules::NodeAddrs;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// nft ran and refused: the command and nft's stderr.
    #[error("{0}")]
    Nft(String),
    /// nft (or `ip`) could not be started at all.
    #[error("{0}")]
    Exec(String),
    /// Reading or setting `net.ipv4.ip_forward`.
    #[error("{0}")]
    Sysctl(String),
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Addresses NodePorts answer on.
    pub node_ips: Vec<IpAddr>,
    /// The nftables table this proxy owns (family `ip`); nothing else is touched.
    pub table: String,
    /// Run `nft` inside this named network namespace (`ip netns exec`); `None`: here.
    pub netns: Option<String>,
    /// Rewrite the whole table at least this often.
    pub resync: Duration,
}

/// Program the table from Services and EndpointSlices until `stop`.
///
/// Failed syncs are logged and retried (with backoff, and at the next change); the only
/// error returned is that `nft` cannot be run at all on the first try. The table is left
/// in place on return (as kube-proxy leaves its rules), so services keep working while
/// the agent restarts; [`cleanup`] removes it.
pub async fn run(client: kube::Client, cfg: ProxyConfig, stop: CancellationToken) -> Result<(), ProxyError> {
    watch::run(client, Proxier::new(cfg), stop).await
}

/// Delete the proxy's table (and nothing else); no error when it is not there.
pub async fn cleanup(cfg: &ProxyConfig) -> Result<(), ProxyError> {
    let table =
        nftables::schema::Table { family: nftables::types::NfFamily::IP, name: cfg.table.clone().into(), handle: None };
    let mut batch = nftables::batch::Batch::new();
    batch.add(nftables::schema::NfListObject::Table(table.clone()));
    batch.delete(nftables::schema::NfListObject::Table(table));
    apply::apply(cfg.netns.as_deref(), &batch.to_nftables()).await?;
    info!(table = %cfg.table, netns = ?cfg.netns, "proxy: table deleted");
    Ok(())
}

/// Turns Services and EndpointSlices into the kernel's table.
#[derive(Debug)]
pub struct Proxier {
    cfg: ProxyConfig,
    nodes: NodeAddrs,
    forwarding_checked: bool,
    localnet_checked: bool,
    /// What the table holds now; `None` after a failure (the next sync writes).
    last: Option<ServiceTable>,
}

impl Proxier {
    pub fn new(cfg: ProxyConfig) -> Proxier {
        let nodes = node_addrs(&cfg.node_ips);
        Proxier { cfg, nodes, forwarding_checked: false, localnet_checked: false, last: None }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Rewrite the table from these objects.
    pub async fn sync<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<(), ProxyError> {
        let table = ServiceTable::build(services, slices);
        self.write(table).await
    }

    /// [`Proxier::sync`], unless the table would come out as it is now; whether it wrote.
    pub async fn sync_if_changed<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<bool, ProxyError> {
        let table = ServiceTable::build(services, slices);
        if self.last.as_ref() == Some(&table) {
            return Ok(false);
        }
        self.write(table).await.map(|()| true)
    }

    #[tracing::instrument(name = "proxy_sync", skip_all, fields(table = %self.cfg.table, netns = ?self.cfg.netns,
        ports = table.ports.len(), endpoints = table.endpoint_count()))]
    async fn write(&mut self, table: ServiceTable) -> Result<(), ProxyError> {
        let started = Instant::now();
        let netns = self.cfg.netns.as_deref();
        if !self.forwarding_checked {
            match apply::ensure_ip_forward(netns).await {
                Ok(true) => {
                    info!("proxy: net.ipv4.ip_forward was off; turned it on");
                    self.forwarding_checked = true;
                }
                Ok(false) => self.forwarding_checked = true,
                Err(e) => {
                    warn!(error = %e, "proxy: cannot turn on net.ipv4.ip_forward; service traffic from pods may not be forwarded")
                }
            }
        }
        if !self.localnet_checked && self.cfg.node_ips.iter().any(std::net::IpAddr::is_loopback) {
            match apply::ensure_route_localnet(netns).await {
                Ok(changed) => {
                    if changed {
                        info!(
                            "proxy: net.ipv4.conf.all.route_localnet was off; turned it on for NodePorts on loopback"
                        );
                    }
                    self.localnet_checked = true;
                }
                Err(e) => {
                    warn!(error = %e, "proxy: cannot turn on route_localnet; NodePorts on 127.0.0.1 will not answer")
                }
            }
        }
        let carried = if table.ports.iter().any(|p| p.affinity_timeout.is_some() && !p.endpoints.is_empty()) {
            apply::read_affinity(netns, &self.cfg.table).await.unwrap_or_else(|e| {
                warn!(error = %e, "proxy: cannot read the session affinity sets; clients may change endpoints");
                Default::default()
            })
        } else {
            Default::default()
        };
        let ruleset = rules::ruleset(&self.cfg.table, &table, &self.nodes, &carried);
        self.last = None;
        apply::apply(netns, &ruleset).await?;
        debug!(
            objects = ruleset.objects.len(),
            affinity_entries = carried.values().map(Vec::len).sum::<usize>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "proxy: table written"
        );
        self.last = Some(table);
        Ok(())
    }
}

/// The configured node addresses as the rules take them: the IPv4 ones, or every local
/// address when none is configured.
fn node_addrs(ips: &[IpAddr]) -> NodeAddrs {
    if ips.is_empty() {
        return NodeAddrs::Local;
    }
    let v4: Vec<Ipv4Addr> = ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(v6) => {
                warn!(address = %v6, "proxy: IPv6 node address ignored (IPv4 only)");
                None
            }
        })
        .collect();
    if v4.is_empty() {
        warn!("proxy: no IPv4 node address; NodePorts are not programmed");
    }
    NodeAddrs::List(v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert_eq!(node_addrs(&[]), NodeAddrs::Local);
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(node_addrs(&[v6, v4]), NodeAddrs::List(vec!["10.0.0.5".parse().unwrap()]));
        assert_eq!(node_addrs(&[v6]), NodeAddrs::List(vec![]));
    }
}
