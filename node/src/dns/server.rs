//! The DNS server: a hickory-server [`Server`] on UDP and TCP for every listen address, whose
//! handler answers the cluster zone from the current [`Table`] and relays everything else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::answer::{self, Lookup};
use super::forward::{self, Forwarder};
use super::records::{self, Table};
use super::{DnsConfig, DnsError};

/// The table the server answers from, shared with whatever keeps it current (the watch in
/// [`super::run`], or a test). Until the first [`TableHandle::set`] the cluster zone answers
/// SERVFAIL, so that no client caches an NXDOMAIN for a Service that merely is not loaded yet.
#[derive(Clone, Default)]
pub struct TableHandle {
    inner: Arc<RwLock<Option<Arc<Table>>>>,
}

impl TableHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `table` from now on. Its SOA serial is stamped with the time (seconds), kept
    /// increasing.
    pub fn set(&self, table: Table) {
        let mut slot = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        let serial = match slot.as_ref() {
            Some(prev) => now.max(prev.serial().wrapping_add(1)),
            None => now,
        };
        *slot = Some(Arc::new(table.with_serial(serial)));
    }

    /// The table being served, if one was set.
    pub fn get(&self) -> Option<Arc<Table>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Knobs that [`DnsConfig`] does not carry (tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long each upstream gets before the next is tried.
    pub forward_timeout: Duration,
    /// Where the upstreams come from when `DnsConfig::upstreams` is empty.
    pub resolv_conf: PathBuf,
    /// A TCP connection that sends nothing for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            forward_timeout: forward::DEFAULT_TIMEOUT,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound, not yet serving, DNS server.
pub struct DnsServer {
    server: Server<Handler>,
    addrs: Vec<SocketAddr>,
    upstreams: Vec<SocketAddr>,
}

impl DnsServer {
    /// Bind UDP and TCP on every `cfg.listen` address. A port 0 picks one free port for both.
    pub async fn bind(cfg: &DnsConfig, table: TableHandle) -> Result<Self, DnsError> {
        Self::bind_with(cfg, table, Options::default()).await
    }

    pub async fn bind_with(cfg: &DnsConfig, table: TableHandle, opts: Options) -> Result<Self, DnsError> {
        let zone = records::zone_name(&cfg.cluster_domain).map_err(DnsError::Config)?;
        Self::try_bind(cfg, zone, table, opts).await.map_err(|(addr, e)| DnsError::Bind(format!("{addr}: {e}")))
    }

    /// As [`DnsServer::bind_with`], keeping the I/O error (so [`super::run`] can wait for an
    /// address that is not on the host yet).
    pub(super) async fn try_bind(
        cfg: &DnsConfig,
        zone: Name,
        table: TableHandle,
        opts: Options,
    ) -> Result<Self, (SocketAddr, std::io::Error)> {
        let mut sockets = Vec::new();
        for addr in &cfg.listen {
            sockets.push(bind_pair(*addr).await.map_err(|e| (*addr, e))?);
        }
        let addrs: Vec<SocketAddr> = sockets.iter().map(|(_, _, a)| *a).collect();

        let resolv = if cfg.upstreams.is_empty() {
            std::fs::read_to_string(&opts.resolv_conf).unwrap_or_else(|e| {
                warn!(path = %opts.resolv_conf.display(), error = %e, "DNS: cannot read resolv.conf; names outside the cluster will fail");
                String::new()
            })
        } else {
            String::new()
        };
        let upstreams = forward::upstreams(&cfg.upstreams, &resolv, &addrs);
        if upstreams.is_empty() {
            warn!("DNS: no upstream servers; names outside the cluster will get SERVFAIL");
        }

        let handler =
            Handler { zone, table, forwarder: Forwarder::new(upstreams.clone(), opts.forward_timeout), ttl: cfg.ttl };
        let mut server = Server::new(handler);
        for (udp, tcp, _) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, opts.tcp_idle_timeout, 64);
        }
        Ok(Self { server, addrs, upstreams })
    }

    /// The bound addresses (UDP and TCP share each), in `cfg.listen` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where names outside the cluster go.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Serve until `stop`; an error if a socket dies first.
    pub async fn serve(mut self, stop: CancellationToken) -> Result<(), DnsError> {
        info!(listen = ?self.addrs, upstreams = ?self.upstreams, "DNS: serving");
        let token = self.server.shutdown_token().clone();
        tokio::select! {
            r = self.server.block_until_done() => {
                return match r {
                    Ok(()) => Err(DnsError::Serve("the DNS server stopped by itself".into())),
                    Err(e) => Err(DnsError::Serve(e.to_string())),
                };
            }
            _ = stop.cancelled() => {}
        }
        token.cancel();
        self.server.block_until_done().await.map_err(|e| DnsError::Serve(e.to_string()))
    }
}

/// A UDP socket and a TCP listener on the same address; port 0 finds a port free for both.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener, SocketAddr)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp, addr));
    }
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

struct Handler {
    zone: Name,
    table: TableHandle,
    forwarder: Forwarder,
    ttl: u32,
}

impl RequestHandler for Handler {
    // `RequestHandler` is an `async_trait`; this is its expansion, written out.
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}

impl Handler {
    async fn handle<R: ResponseHandler>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let reply = Reply { request, edns: edns.as_ref() };

        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            meta.response_code = ResponseCode::BADVERS;
            return reply.send(&mut rh, meta, &[], &[], &[]).await;
        }
        if request.metadata.op_code != OpCode::Query {
            meta.response_code = ResponseCode::NotImp;
            return reply.send(&mut rh, meta, &[], &[], &[]).await;
        }
        let [q] = request.queries.queries() else {
            meta.response_code = ResponseCode::FormErr;
            return reply.send(&mut rh, meta, &[], &[], &[]).await;
        };
        let (qname, qtype, qclass) = (q.original().name(), q.query_type(), q.query_class());

        let lookup = match self.table.get() {
            Some(table) => answer::lookup(&table, qname, qtype, qclass, self.ttl),
            None if self.zone.zone_of(&qname.to_lowercase()) => Lookup::Local(answer::not_ready()),
            None => Lookup::Forward,
        };
        match lookup {
            Lookup::Local(mut ans) => {
                if let Some(target) = ans.chase.take() {
                    // An ExternalName's target: resolve it upstream, as CoreDNS does.
                    match self.forwarder.query(&target, qtype).await {
                        Ok(up) => match up.metadata.response_code {
                            ResponseCode::NoError => ans.answers.extend(up.answers),
                            ResponseCode::NXDomain => ans.rcode = ResponseCode::NXDomain,
                            _ => {}
                        },
                        Err(e) => debug!(%target, error = %e, "DNS: CNAME target did not resolve upstream"),
                    }
                }
                meta.response_code = ans.rcode;
                meta.authoritative = matches!(ans.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
                reply.send(&mut rh, meta, &ans.answers, &ans.authorities, &ans.additionals).await
            }
            Lookup::Forward => {
                let questions: Vec<Query> = request.queries.queries().iter().map(|q| q.original().clone()).collect();
                match self.forwarder.forward(request.as_slice(), &questions).await {
                    Ok(up) => {
                        meta.response_code = up.metadata.response_code;
                        meta.authoritative = up.metadata.authoritative;
                        meta.authentic_data = up.metadata.authentic_data;
                        reply.send(&mut rh, meta, &up.answers, &up.authorities, &up.additionals).await
                    }
                    Err(e) => {
                        debug!(name = %qname, %qtype, error = %e, "DNS: forwarding failed");
                        meta.response_code = ResponseCode::ServFail;
                        reply.send(&mut rh, meta, &[], &[], &[]).await
                    }
                }
            }
        }
    }
}

struct Reply<'q> {
    request: &'q Request,
    edns: Option<&'q Edns>,
}

impl Reply<'_> {
    async fn send<R: ResponseHandler>(
        &self,
        rh: &mut R,
        meta: Metadata,
        answers: &[Record],
        authorities: &[Record],
        additionals: &[Record],
    ) -> ResponseInfo {
        let resp = MessageResponseBuilder::new(&self.request.queries, self.edns).build(
            meta,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        match rh.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                warn!(error = %e, "DNS: cannot send a response");
                let mut failed = meta;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: failed, counts: HeaderCounts::default() })
            }
        }
    }
}
