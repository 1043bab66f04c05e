//! The cluster DNS server for real, on loopback: the hickory server on UDP and TCP answering
//! from a table set in memory, a fake upstream (on another loopback port) for everything
//! else, queried with a raw client (to see every header bit and section) and with
//! hickory-resolver; and `run` itself against a fake API server that serves list and watch.
//! Nothing is sent anywhere but 127.0.0.1.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keelson_node::dns::records::zone_name;
use keelson_node::dns::{DnsConfig, DnsServer, Options, Table, TableHandle};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long a test waits for one answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Objects

fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32, &str)]) -> Value {
    let ports: Vec<Value> =
        ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": "1"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports},
    })
}

fn external(ns: &str, name: &str, target: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": "1"},
        "spec": {"type": "ExternalName", "externalName": target},
    })
}

/// `(address, hostname)` per ready endpoint.
fn slice(ns: &str, svc: &str, eps: &[(&str, Option<&str>)], ports: &[(&str, i32, &str)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, host)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    let ports: Vec<Value> =
        ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": format!("{svc}-x"), "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    })
}

fn pod(ns: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": "1"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn de<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn zone() -> Name {
    zone_name("cluster.local").unwrap()
}

/// The cluster most tests serve.
fn cluster() -> Table {
    let services: Vec<Service> = [
        service("default", "web", "10.96.0.10", &[("http", 80, "TCP")]),
        service("db", "pg", "None", &[("sql", 5432, "TCP")]),
        external("default", "ext", "www.example.test"),
    ]
    .iter()
    .map(de)
    .collect();
    let slices: Vec<EndpointSlice> =
        [slice("db", "pg", &[("10.244.1.5", Some("pg-0")), ("10.244.2.6", None)], &[("sql", 5432, "TCP")])]
            .iter()
            .map(de)
            .collect();
    let pods: Vec<Pod> = [pod("default", "a", "10.244.1.9")].iter().map(de).collect();
    Table::build(zone(), &services, &slices, &pods)
}

// ---------------------------------------------------------------------------------------------
// A fake upstream: UDP and TCP on one loopback port.
//
//   www.example.test.      A 192.0.2.80
//   example.test.          A 192.0.2.1
//   big.example.test.      40 A records over TCP; over UDP an empty, truncated answer
//   anything else          NXDOMAIN with example.test's SOA

struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

fn upstream_answer(req: &Message, tcp: bool) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.clone());
    let Some(q) = req.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let name = q.name().to_lowercase().to_ascii();
    let a = |ip: [u8; 4]| Record::from_rdata(q.name().clone(), 300, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])));
    match (name.as_str(), q.query_type()) {
        ("www.example.test.", RecordType::A) => {
            resp.add_answer(a([192, 0, 2, 80]));
        }
        ("example.test.", RecordType::A) => {
            resp.add_answer(a([192, 0, 2, 1]));
        }
        ("big.example.test.", RecordType::A) if tcp => {
            for i in 1..=40 {
                resp.add_answer(a([192, 0, 2, i]));
            }
        }
        ("big.example.test.", RecordType::A) => resp.metadata.truncation = true,
        ("www.example.test." | "example.test.", _) => {}
        _ => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            let zone = Name::from_ascii("example.test.").unwrap();
            let soa = SOA::new(zone.clone(), zone.clone(), 1, 1, 1, 1, 60);
            resp.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
        }
    }
    resp
}

async fn start_upstream() -> Upstream {
    let (udp, tcp, addr) = bind_both().await;
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(&upstream_answer(&req, false).to_vec().unwrap(), from).await;
        }
    });
    let count = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                while let Ok(len) = s.read_u16().await {
                    let mut buf = vec![0u8; len as usize];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Ok(req) = Message::from_vec(&buf) else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    let out = upstream_answer(&req, true).to_vec().unwrap();
                    let _ = s.write_all(&(out.len() as u16).to_be_bytes()).await;
                    let _ = s.write_all(&out).await;
                }
            });
        }
    });
    Upstream { addr, queries }
}

/// A UDP socket and a TCP listener on one free loopback port.
async fn bind_both() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((LOCAL, 0)).await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
    panic!("no free loopback port for UDP and TCP");
}

// ---------------------------------------------------------------------------------------------
// The server under test

struct Dns {
    addr: SocketAddr,
    table: TableHandle,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), keelson_node::dns::DnsError>>,
}

impl Dns {
    async fn start(upstreams: Vec<SocketAddr>, forward_timeout: Duration) -> Self {
        let cfg = DnsConfig {
            listen: vec![SocketAddr::new(LOCAL, 0)],
            cluster_domain: "cluster.local".into(),
            upstreams,
            ttl: 5,
        };
        let table = TableHandle::new();
        let opts = Options { forward_timeout, ..Options::default() };
        let server = DnsServer::bind_with(&cfg, table.clone(), opts).await.expect("bind");
        let addr = server.local_addrs()[0];
        assert_ne!(addr.port(), 0);
        let stop = CancellationToken::new();
        let served = tokio::spawn(server.serve(stop.clone()));
        Self { addr, table, stop, served }
    }

    async fn stop(self) {
        self.stop.cancel();
        let r = timeout(Duration::from_secs(5), self.served).await.expect("server stops").expect("no panic");
        r.expect("server ended cleanly");
    }
}

// ---------------------------------------------------------------------------------------------
// A raw client

fn query(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    m
}

/// Send `bytes` and wait for one answer (None: nothing came back in `wait`).
async fn exchange_raw(server: SocketAddr, tcp: bool, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    timeout(wait, async {
        if tcp {
            let mut s = TcpStream::connect(server).await.ok()?;
            s.write_all(&(bytes.len() as u16).to_be_bytes()).await.ok()?;
            s.write_all(bytes).await.ok()?;
            let n = s.read_u16().await.ok()?;
            let mut buf = vec![0u8; n as usize];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf)
        } else {
            let sock = UdpSocket::bind((LOCAL, 0)).await.ok()?;
            sock.send_to(bytes, server).await.ok()?;
            let mut buf = vec![0u8; 65535];
            let (n, _) = sock.recv_from(&mut buf).await.ok()?;
            buf.truncate(n);
            Some(buf)
        }
    })
    .await
    .ok()
    .flatten()
}

async fn send(server: SocketAddr, tcp: bool, m: &Message) -> Message {
    let raw = exchange_raw(server, tcp, &m.to_vec().unwrap(), ANSWER_WAIT).await.expect("an answer");
    let resp = Message::from_vec(&raw).expect("a DNS message");
    assert_eq!(resp.metadata.id, m.metadata.id);
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    resp
}

async fn ask(server: SocketAddr, tcp: bool, name: &str, qtype: RecordType) -> Message {
    send(server, tcp, &query(name, qtype, false)).await
}

fn data(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data)).collect()
}

fn has_soa(resp: &Message) -> bool {
    matches!(&resp.authorities[..], [r] if r.record_type() == RecordType::SOA && r.name == Name::from_ascii("cluster.local.").unwrap())
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn serves_cluster_names_over_udp_and_tcp() {
    let up = start_upstream().await;
    let dns = Dns::start(vec![up.addr], Duration::from_secs(2)).await;
    dns.table.set(cluster());

    for tcp in [false, true] {
        let before = up.queries.load(Ordering::SeqCst);
        let r = ask(dns.addr, tcp, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && r.metadata.recursion_available && r.metadata.recursion_desired);
        assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.10"]);
        assert_eq!(r.answers[0].ttl, 5);

        // Case-insensitive, and the question's case comes back.
        let r = ask(dns.addr, tcp, "WEB.Default.Svc.Cluster.Local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.10"]);
        assert!(r.answers[0].name.eq_case(&Name::from_ascii("WEB.Default.Svc.Cluster.Local.").unwrap()));

        let r = ask(dns.addr, tcp, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(
            data(&r.answers),
            ["_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(data(&r.additionals), ["web.default.svc.cluster.local. A 10.96.0.10"]);

        // Headless: every ready endpoint, each endpoint's own name, one SRV per endpoint.
        let r = ask(dns.addr, tcp, "pg.db.svc.cluster.local.", RecordType::A).await;
        assert_eq!(
            data(&r.answers),
            ["pg.db.svc.cluster.local. A 10.244.1.5", "pg.db.svc.cluster.local. A 10.244.2.6"]
        );
        let r = ask(dns.addr, tcp, "pg-0.pg.db.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["pg-0.pg.db.svc.cluster.local. A 10.244.1.5"]);
        let r = ask(dns.addr, tcp, "10-244-2-6.pg.db.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["10-244-2-6.pg.db.svc.cluster.local. A 10.244.2.6"]);
        let r = ask(dns.addr, tcp, "_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(
            data(&r.answers),
            [
                "_sql._tcp.pg.db.svc.cluster.local. SRV 0 50 5432 10-244-2-6.pg.db.svc.cluster.local.",
                "_sql._tcp.pg.db.svc.cluster.local. SRV 0 50 5432 pg-0.pg.db.svc.cluster.local.",
            ]
        );
        assert_eq!(
            data(&r.additionals),
            ["10-244-2-6.pg.db.svc.cluster.local. A 10.244.2.6", "pg-0.pg.db.svc.cluster.local. A 10.244.1.5"]
        );

        // Pods, the schema version, PTR.
        let r = ask(dns.addr, tcp, "10-244-1-9.default.pod.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["10-244-1-9.default.pod.cluster.local. A 10.244.1.9"]);
        let r = ask(dns.addr, tcp, "dns-version.cluster.local.", RecordType::TXT).await;
        assert_eq!(r.answers.len(), 1);
        let r = ask(dns.addr, tcp, "10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(data(&r.answers), ["10.0.96.10.in-addr.arpa. PTR web.default.svc.cluster.local."]);
        let r = ask(dns.addr, tcp, "9.1.244.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(data(&r.answers), ["9.1.244.10.in-addr.arpa. PTR 10-244-1-9.default.pod.cluster.local."]);

        // NXDOMAIN vs NODATA, both authoritative with the zone's SOA.
        for name in
            ["nope.default.svc.cluster.local.", "web.nope.svc.cluster.local.", "google.com.default.svc.cluster.local."]
        {
            let r = ask(dns.addr, tcp, name, RecordType::A).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(r.metadata.authoritative && r.answers.is_empty() && has_soa(&r), "{name}");
        }
        for (name, qtype) in [
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("web.default.svc.cluster.local.", RecordType::MX),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
        ] {
            let r = ask(dns.addr, tcp, name, qtype).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name} {qtype}");
            assert!(r.answers.is_empty() && has_soa(&r), "{name} {qtype}");
        }
        // Nothing above went upstream.
        assert_eq!(up.queries.load(Ordering::SeqCst), before, "cluster names are never forwarded");

        // ExternalName: the CNAME, and its target resolved upstream.
        let r = ask(dns.addr, tcp, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            data(&r.answers),
            ["ext.default.svc.cluster.local. CNAME www.example.test.", "www.example.test. A 192.0.2.80"]
        );
        let r = ask(dns.addr, tcp, "ext.default.svc.cluster.local.", RecordType::CNAME).await;
        assert_eq!(data(&r.answers), ["ext.default.svc.cluster.local. CNAME www.example.test."]);
    }
    dns.stop().await;
}

#[tokio::test]
async fn forwards_everything_else() {
    let up = start_upstream().await;
    let dns = Dns::start(vec![up.addr], Duration::from_secs(2)).await;
    dns.table.set(cluster());

    for tcp in [false, true] {
        let r = ask(dns.addr, tcp, "example.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.metadata.authoritative && r.metadata.recursion_available);
        assert_eq!(data(&r.answers), ["example.test. A 192.0.2.1"]);

        // An upstream NXDOMAIN comes back as it was, SOA and all.
        let r = ask(dns.addr, tcp, "missing.example.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(r.authorities[0].name, Name::from_ascii("example.test.").unwrap());

        // An unknown address's PTR goes upstream too.
        let r = ask(dns.addr, tcp, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }

    // The upstream truncates over UDP: the server asks again over TCP. A client on TCP, or
    // on UDP with a big enough EDNS buffer, gets all 40; one on plain UDP gets TC and a part.
    let r = ask(dns.addr, true, "big.example.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 40);
    assert!(!r.metadata.truncation);
    let r = send(dns.addr, false, &query("big.example.test.", RecordType::A, true)).await;
    assert_eq!(r.answers.len(), 40);
    let r = ask(dns.addr, false, "big.example.test.", RecordType::A).await;
    assert!(r.metadata.truncation && r.answers.len() < 40);
    dns.stop().await;
}

#[tokio::test]
async fn servfail_when_upstreams_fail() {
    // One upstream that never answers (a bound, silent socket), one where nothing listens.
    let (silent, _silent_tcp, silent_addr) = bind_both().await;
    let (gone_udp, gone_tcp, gone_addr) = bind_both().await;
    drop((gone_udp, gone_tcp));
    let dns = Dns::start(vec![silent_addr, gone_addr], Duration::from_millis(300)).await;
    dns.table.set(cluster());

    for tcp in [false, true] {
        let started = std::time::Instant::now();
        let r = ask(dns.addr, tcp, "example.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        // The cluster's own names do not depend on the upstreams.
        let r = ask(dns.addr, tcp, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.10"]);
        // An ExternalName whose target cannot be resolved still gives its CNAME.
        let r = ask(dns.addr, tcp, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["ext.default.svc.cluster.local. CNAME www.example.test."]);
    }
    let mut buf = [0u8; 512];
    assert!(
        timeout(Duration::from_millis(10), silent.recv_from(&mut buf)).await.is_ok(),
        "the silent upstream was asked"
    );
    dns.stop().await;
}

#[tokio::test]
async fn table_updates_are_visible() {
    let up = start_upstream().await;
    let dns = Dns::start(vec![up.addr], Duration::from_secs(2)).await;
    let name = "web.default.svc.cluster.local.";

    // Before the first table: the zone answers SERVFAIL (nothing cached), the rest is served.
    let r = ask(dns.addr, false, name, RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let r = ask(dns.addr, false, "example.test.", RecordType::A).await;
    assert_eq!(data(&r.answers), ["example.test. A 192.0.2.1"]);

    dns.table.set(cluster());
    let r = ask(dns.addr, false, name, RecordType::A).await;
    assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.10"]);
    let serial = |r: &Message| match &r.authorities[0].data {
        RData::SOA(soa) => soa.serial,
        _ => panic!("no SOA"),
    };
    let s1 = serial(&ask(dns.addr, false, "nope.default.svc.cluster.local.", RecordType::A).await);

    // The Service moves and another appears.
    let services: Vec<Service> =
        [service("default", "web", "10.96.0.99", &[]), service("default", "api", "10.96.0.20", &[])]
            .iter()
            .map(de)
            .collect();
    dns.table.set(Table::build(zone(), &services, [], []));
    let r = ask(dns.addr, true, name, RecordType::A).await;
    assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.99"]);
    let r = ask(dns.addr, false, "api.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&r.answers), ["api.default.svc.cluster.local. A 10.96.0.20"]);
    let r = ask(dns.addr, false, "pg.db.svc.cluster.local.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(serial(&r) > s1, "the SOA serial moves with the table");

    // And goes away.
    dns.table.set(Table::empty(zone()));
    let r = ask(dns.addr, false, name, RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    dns.stop().await;
}

#[tokio::test]
async fn malformed_and_unsupported_queries() {
    let up = start_upstream().await;
    let dns = Dns::start(vec![up.addr], Duration::from_secs(2)).await;
    dns.table.set(cluster());
    let short = Duration::from_millis(300);

    // Garbage gets no answer (nothing to answer to) or FORMERR, and never kills the server.
    let mut noise: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 3], vec![0; 11]];
    let mut seed = 0x2545_f491_u32;
    for len in [12usize, 13, 17, 40, 100, 512, 1400] {
        noise.push(
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect(),
        );
    }
    // A header that promises a question and stops.
    noise.push(vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    // A question whose label runs past the end.
    noise.push(vec![0x12, 0x35, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, b'a', b'b']);
    for bytes in &noise {
        if let Some(raw) = exchange_raw(dns.addr, false, bytes, short).await {
            let m = Message::from_vec(&raw).expect("any answer is a DNS message");
            assert_ne!(m.metadata.response_code, ResponseCode::NoError, "{bytes:?}");
        }
    }
    let r = exchange_raw(dns.addr, false, &noise[noise.len() - 2], short)
        .await
        .expect("FORMERR for a header without its question");
    assert_eq!(Message::from_vec(&r).unwrap().metadata.response_code, ResponseCode::FormErr);

    // Over TCP: a length prefix and too little, then a hang-up.
    {
        let mut s = TcpStream::connect(dns.addr).await.unwrap();
        s.write_all(&[0x01, 0x00, 0xde, 0xad]).await.unwrap();
    }
    {
        let mut s = TcpStream::connect(dns.addr).await.unwrap();
        s.write_all(&[0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]).await.unwrap();
        let _ = timeout(short, s.read_u8()).await;
    }

    // A response sent as a query is dropped, not answered (no reflection).
    let mut m = query("web.default.svc.cluster.local.", RecordType::A, false);
    m.metadata.message_type = MessageType::Response;
    assert!(exchange_raw(dns.addr, false, &m.to_vec().unwrap(), short).await.is_none());

    // Two questions: FORMERR. No question: FORMERR.
    let mut m = query("web.default.svc.cluster.local.", RecordType::A, false);
    m.add_query(Query::query(Name::from_ascii("pg.db.svc.cluster.local.").unwrap(), RecordType::A));
    assert_eq!(send(dns.addr, false, &m).await.metadata.response_code, ResponseCode::FormErr);
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    assert_eq!(send(dns.addr, false, &m).await.metadata.response_code, ResponseCode::FormErr);

    // Other opcodes: NOTIMP. Zone transfers and other classes: NOTIMP.
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut m = query("cluster.local.", RecordType::SOA, false);
        m.metadata.op_code = op;
        assert_eq!(send(dns.addr, false, &m).await.metadata.response_code, ResponseCode::NotImp, "{op:?}");
    }
    assert_eq!(
        ask(dns.addr, true, "cluster.local.", RecordType::AXFR).await.metadata.response_code,
        ResponseCode::NotImp
    );
    let mut m = query("web.default.svc.cluster.local.", RecordType::A, false);
    m.queries[0].set_query_class(hickory_server::proto::rr::DNSClass::CH);
    assert_eq!(send(dns.addr, false, &m).await.metadata.response_code, ResponseCode::NotImp);

    // An EDNS version we do not speak: BADVERS.
    let mut m = query("web.default.svc.cluster.local.", RecordType::A, true);
    m.edns.as_mut().unwrap().set_version(1);
    let r = send(dns.addr, false, &m).await;
    // (16 is BADVERS in an OPT's context, BADSIG in a TSIG's: compare the number.)
    assert_eq!(u16::from(r.metadata.response_code), u16::from(ResponseCode::BADVERS));
    assert!(r.edns.is_some());

    // Still serving, on both transports.
    for tcp in [false, true] {
        let r = ask(dns.addr, tcp, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&r.answers), ["web.default.svc.cluster.local. A 10.96.0.10"]);
    }
    dns.stop().await;
}

#[tokio::test]
async fn hickory_resolver_as_a_client() {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::Resolver;

    let up = start_upstream().await;
    let dns = Dns::start(vec![up.addr], Duration::from_secs(2)).await;
    dns.table.set(cluster());

    for tcp in [false, true] {
        let mut conn = if tcp { ConnectionConfig::tcp() } else { ConnectionConfig::udp() };
        conn.port = dns.addr.port();
        let ns = NameServerConfig::new(dns.addr.ip(), true, vec![conn]);
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.attempts = 1;
        opts.timeout = Duration::from_secs(3);
        let resolver =
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .expect("resolver");

        let ips = resolver.ipv4_lookup("web.default.svc.cluster.local.").await.expect("A");
        assert_eq!(data(ips.answers()), ["web.default.svc.cluster.local. A 10.96.0.10"]);
        let srv = resolver.srv_lookup("_sql._tcp.pg.db.svc.cluster.local.").await.expect("SRV");
        assert_eq!(srv.answers().len(), 2);
        let ips = resolver.ipv4_lookup("pg.db.svc.cluster.local.").await.expect("headless");
        assert_eq!(ips.answers().len(), 2);
        let ext = resolver.ipv4_lookup("ext.default.svc.cluster.local.").await.expect("ExternalName");
        assert!(data(ext.answers()).contains(&"www.example.test. A 192.0.2.80".to_string()));
        let fwd = resolver.ipv4_lookup("example.test.").await.expect("forwarded");
        assert_eq!(data(fwd.answers()), ["example.test. A 192.0.2.1"]);
        assert!(resolver.ipv4_lookup("nope.default.svc.cluster.local.").await.is_err());
    }
    dns.stop().await;
}

// ---------------------------------------------------------------------------------------------
// `run` against a fake API server: list and watch for Services, EndpointSlices and Pods.

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";

/// One watch event: its collection path, resourceVersion and JSON line.
type Event = (String, u64, String);

#[derive(Default)]
struct ApiState {
    /// What a list returns, per collection path (at resourceVersion 1).
    lists: std::collections::HashMap<String, Vec<Value>>,
    /// Every event since, replayed to a watch that starts behind it.
    log: Vec<Event>,
    rv: u64,
}

#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    tx: tokio::sync::broadcast::Sender<Event>,
}

impl FakeApi {
    fn new(lists: &[(&str, Vec<Value>)]) -> Self {
        let state =
            ApiState { lists: lists.iter().map(|(p, v)| (p.to_string(), v.clone())).collect(), log: vec![], rv: 1 };
        Self { state: Arc::new(Mutex::new(state)), tx: tokio::sync::broadcast::channel(256).0 }
    }

    fn push(&self, path: &str, kind: &str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": kind, "object": object}).to_string() + "\n";
        st.log.push((path.to_string(), rv, line.clone()));
        let _ = self.tx.send((path.to_string(), rv, line));
    }

    fn respond(&self, path: String, query: &str) -> hyper::Response<Body> {
        use http_body_util::BodyExt;
        use hyper::body::Frame;

        let json_response =
            |body: Body| hyper::Response::builder().header("content-type", "application/json").body(body).unwrap();
        if ![SERVICES, SLICES, PODS].contains(&path.as_str()) {
            let b = http_body_util::Full::new(Bytes::from_static(b"{}"));
            return hyper::Response::builder().status(404).body(b.boxed()).unwrap();
        }
        let param = |k: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('='))).map(str::to_string)
        };
        if param("watch").as_deref() != Some("true") {
            let st = self.state.lock().unwrap();
            let list = json!({
                "apiVersion": if path == SLICES { "discovery.k8s.io/v1" } else { "v1" },
                "kind": match path.as_str() { SERVICES => "ServiceList", SLICES => "EndpointSliceList", _ => "PodList" },
                "metadata": {"resourceVersion": "1"},
                "items": st.lists.get(&path).cloned().unwrap_or_default(),
            });
            return json_response(http_body_util::Full::new(Bytes::from(list.to_string())).boxed());
        }
        // A watch: what the log holds past the asked resourceVersion, then live events.
        let from: u64 = param("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut rx = self.tx.subscribe();
        let backlog: Vec<Event> =
            self.state.lock().unwrap().log.iter().filter(|e| e.0 == path && e.1 > from).cloned().collect();
        let (ftx, frx) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut last = from;
            for (_, rv, line) in backlog {
                last = rv;
                if ftx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            while let Ok((p, rv, line)) = rx.recv().await {
                if p == path && rv > last {
                    last = rv;
                    if ftx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let frames = futures::stream::unfold(frx, |mut frx| async move {
            frx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), frx))
        });
        json_response(http_body_util::StreamBody::new(frames).boxed())
    }

    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let resp = api.respond(req.uri().path().to_string(), req.uri().query().unwrap_or(""));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        addr
    }
}

/// Ask until `check` passes on the answer, for up to 10 s.
async fn eventually(server: SocketAddr, name: &str, qtype: RecordType, check: impl Fn(&Message) -> bool) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(server, false, name, qtype).await;
        if check(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {qtype}: still {:?} {:?}",
            r.metadata.response_code,
            data(&r.answers)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn run_serves_what_the_api_server_holds() {
    let up = start_upstream().await;
    let api = FakeApi::new(&[
        (SERVICES, vec![service("default", "web", "10.96.0.10", &[("http", 80, "TCP")])]),
        (SLICES, vec![]),
        (PODS, vec![pod("default", "a", "10.244.1.9")]),
    ]);
    let api_addr = api.start().await;

    let client = kube::Client::try_from(kube::Config::new(format!("http://{api_addr}").parse().unwrap())).unwrap();
    let (udp, tcp, addr) = bind_both().await;
    drop((udp, tcp));
    let cfg =
        DnsConfig { listen: vec![addr], cluster_domain: "cluster.local".into(), upstreams: vec![up.addr], ttl: 5 };
    let stop = CancellationToken::new();
    let running = tokio::spawn(keelson_node::dns::run(client, cfg, stop.clone()));

    let is = |rcode: ResponseCode, answers: &'static [&'static str]| {
        move |r: &Message| r.metadata.response_code == rcode && data(&r.answers) == answers
    };
    // The listed Service, then forwarding.
    eventually(
        addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        is(ResponseCode::NoError, &["web.default.svc.cluster.local. A 10.96.0.10"]),
    )
    .await;
    let r = ask(addr, true, "example.test.", RecordType::A).await;
    assert_eq!(data(&r.answers), ["example.test. A 192.0.2.1"]);
    eventually(
        addr,
        "9.1.244.10.in-addr.arpa.",
        RecordType::PTR,
        is(ResponseCode::NoError, &["9.1.244.10.in-addr.arpa. PTR 10-244-1-9.default.pod.cluster.local."]),
    )
    .await;

    // Watch events: a headless Service with its endpoints appears, the first moves, then goes.
    api.push(SERVICES, "ADDED", service("db", "pg", "None", &[("sql", 5432, "TCP")]));
    api.push(SLICES, "ADDED", slice("db", "pg", &[("10.244.1.5", Some("pg-0"))], &[("sql", 5432, "TCP")]));
    eventually(
        addr,
        "pg-0.pg.db.svc.cluster.local.",
        RecordType::A,
        is(ResponseCode::NoError, &["pg-0.pg.db.svc.cluster.local. A 10.244.1.5"]),
    )
    .await;
    eventually(
        addr,
        "pg.db.svc.cluster.local.",
        RecordType::A,
        is(ResponseCode::NoError, &["pg.db.svc.cluster.local. A 10.244.1.5"]),
    )
    .await;

    let mut moved = service("default", "web", "10.96.0.99", &[]);
    moved["metadata"]["resourceVersion"] = json!("2");
    api.push(SERVICES, "MODIFIED", moved.clone());
    eventually(
        addr,
        "web.default.svc.cluster.local.",
        RecordType::A,
        is(ResponseCode::NoError, &["web.default.svc.cluster.local. A 10.96.0.99"]),
    )
    .await;
    api.push(SERVICES, "DELETED", moved);
    eventually(addr, "web.default.svc.cluster.local.", RecordType::A, is(ResponseCode::NXDomain, &[])).await;

    stop.cancel();
    let r = timeout(Duration::from_secs(5), running).await.expect("run stops").expect("no panic");
    r.expect("run ended cleanly");
}

#[tokio::test]
async fn run_waits_for_a_missing_address_and_fails_on_a_taken_port() {
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let cfg = |listen: SocketAddr| DnsConfig {
        listen: vec![listen],
        cluster_domain: "cluster.local".into(),
        upstreams: vec![SocketAddr::new(LOCAL, 1)],
        ttl: 5,
    };

    // TEST-NET-1 is on no interface here: `run` waits (binding only; nothing is sent) and
    // returns cleanly when stopped.
    let stop = CancellationToken::new();
    let running =
        tokio::spawn(keelson_node::dns::run(client.clone(), cfg("192.0.2.1:0".parse().unwrap()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!running.is_finished(), "run gave up on an address that may yet appear");
    stop.cancel();
    timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic").expect("Ok after stop");

    // A port already taken is an error at once.
    let (_udp, _tcp, taken) = bind_both().await;
    let r =
        timeout(Duration::from_secs(5), keelson_node::dns::run(client.clone(), cfg(taken), CancellationToken::new()))
            .await
            .expect("returns at once");
    assert!(matches!(r, Err(keelson_node::dns::DnsError::Bind(_))), "{r:?}");

    // So is a cluster domain that is no DNS name.
    let mut bad = cfg(SocketAddr::new(LOCAL, 0));
    bad.cluster_domain = "a..b".into();
    let r = keelson_node::dns::run(client, bad, CancellationToken::new()).await;
    assert!(matches!(r, Err(keelson_node::dns::DnsError::Config(_))), "{r:?}");
}
