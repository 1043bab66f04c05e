//! Answering one question from a [`Table`]: pure, no I/O. A question the table does not own
//! (outside the cluster zone, or a reverse name it has no PTR for) is handed to the forwarder.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::records::{Found, Node, Table};

/// How many CNAMEs inside the zone are followed before giving up (SERVFAIL).
const MAX_CHAIN: usize = 8;

/// A locally made response (authoritative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The answer ends in a CNAME to this name outside the zone (an ExternalName Service):
    /// resolve it upstream and append what comes back, as CoreDNS does.
    pub chase: Option<Name>,
}

impl Answer {
    fn new(rcode: ResponseCode) -> Self {
        Self { rcode, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new(), chase: None }
    }
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Answer it from the table.
    Local(Answer),
    /// Not ours: relay it to the upstream servers.
    Forward,
}

/// Answer `qname`/`qtype`/`qclass` from `table`, or say it goes upstream.
pub fn lookup(table: &Table, qname: &Name, qtype: RecordType, qclass: DNSClass, ttl: u32) -> Lookup {
    if table.in_zone(qname) {
        return Lookup::Local(in_zone(table, qname, qtype, qclass, ttl));
    }
    if matches!(qtype, RecordType::PTR | RecordType::ANY) && qclass == DNSClass::IN {
        if let Some(ip) = reverse_ip(qname) {
            let names = table.ptr(ip);
            if !names.is_empty() {
                let mut a = Answer::new(ResponseCode::NoError);
                a.answers =
                    names.iter().map(|n| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(n.clone())))).collect();
                return Lookup::Local(a);
            }
        }
    }
    Lookup::Forward
}

/// The answer for a question inside the zone whose table is not loaded yet: SERVFAIL, so
/// clients retry rather than cache a negative answer.
pub fn not_ready() -> Answer {
    Answer::new(ResponseCode::ServFail)
}

/// The address a full `in-addr.arpa.`/`ip6.arpa.` name stands for.
fn reverse_ip(name: &Name) -> Option<IpAddr> {
    let net = name.to_lowercase().parse_arpa_name().ok()?;
    let full = if net.addr().is_ipv4() { 32 } else { 128 };
    (net.prefix_len() == full).then(|| net.addr())
}

/// The zone's SOA, as the authority of negative answers (its minimum is the TTL of NXDOMAIN
/// and NODATA) and the answer at the apex.
pub fn soa(table: &Table, ttl: u32) -> Record {
    let zone = table.zone().clone();
    let mname = Name::from_labels(["ns", "dns"]).and_then(|n| n.append_domain(&zone)).unwrap_or_else(|_| zone.clone());
    let rname = Name::from_labels(["hostmaster"]).and_then(|n| n.append_domain(&zone)).unwrap_or_else(|_| zone.clone());
    Record::from_rdata(zone, ttl, RData::SOA(SOA::new(mname, rname, table.serial(), 7200, 1800, 86400, ttl)))
}

fn in_zone(table: &Table, qname: &Name, qtype: RecordType, qclass: DNSClass, ttl: u32) -> Answer {
    if !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
        return Answer::new(ResponseCode::NotImp);
    }
    match qtype {
        RecordType::AXFR | RecordType::IXFR => return Answer::new(ResponseCode::NotImp),
        RecordType::OPT | RecordType::TSIG | RecordType::ZERO => return Answer::new(ResponseCode::FormErr),
        _ => {}
    }

    let mut ans = Answer::new(ResponseCode::NoError);
    let nodata = |mut ans: Answer| {
        ans.authorities.push(soa(table, ttl));
        ans
    };
    let mut owner = qname.clone();
    for _ in 0..MAX_CHAIN {
        match table.find(&owner) {
            Found::Missing => {
                ans.rcode = ResponseCode::NXDomain;
                return nodata(ans);
            }
            Found::Empty => return nodata(ans),
            Found::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    let mut r = soa(table, ttl);
                    r.name = owner;
                    ans.answers.push(r);
                    return ans;
                }
                return nodata(ans);
            }
            Found::Pod(ip) => {
                let data = match (qtype, ip) {
                    (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => Some(RData::A(A(v4))),
                    (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(v6))),
                    _ => None,
                };
                return match data {
                    Some(d) => {
                        ans.answers.push(Record::from_rdata(owner, ttl, d));
                        ans
                    }
                    None => nodata(ans),
                };
            }
            Found::Node(node) => {
                if let Some(target) = &node.cname {
                    if !matches!(qtype, RecordType::CNAME | RecordType::ANY) {
                        ans.answers.push(Record::from_rdata(owner, ttl, RData::CNAME(CNAME(target.clone()))));
                        if table.in_zone(target) {
                            owner = target.clone();
                            continue;
                        }
                        ans.chase = Some(target.clone());
                        return ans;
                    }
                }
                let records = records_of(node, &owner, qtype, ttl);
                if records.is_empty() {
                    return nodata(ans);
                }
                if qtype == RecordType::SRV {
                    ans.additionals = srv_additionals(table, node, ttl);
                }
                ans.answers.extend(records);
                return ans;
            }
        }
    }
    // A CNAME loop inside the zone (only a malformed ExternalName can make one).
    Answer::new(ResponseCode::ServFail)
}

/// The records of type `qtype` (all for ANY) at `node`, owned by `owner`.
fn records_of(node: &Node, owner: &Name, qtype: RecordType, ttl: u32) -> Vec<Record> {
    let any = qtype == RecordType::ANY;
    let rec = |d: RData| Record::from_rdata(owner.clone(), ttl, d);
    let mut out = Vec::new();
    if any || qtype == RecordType::A {
        out.extend(node.a.iter().map(|ip| rec(RData::A(A(*ip)))));
    }
    if any || qtype == RecordType::AAAA {
        out.extend(node.aaaa.iter().map(|ip| rec(RData::AAAA(AAAA(*ip)))));
    }
    if any || qtype == RecordType::CNAME {
        out.extend(node.cname.iter().map(|t| rec(RData::CNAME(CNAME(t.clone())))));
    }
    if any || qtype == RecordType::SRV {
        out.extend(node.srv.iter().map(|s| rec(RData::SRV(SRV::new(s.priority, s.weight, s.port, s.target.clone())))));
    }
    if any || qtype == RecordType::TXT {
        out.extend(node.txt.iter().map(|t| rec(RData::TXT(TXT::new(vec![t.clone()])))));
    }
    out
}

/// The A/AAAA records of the SRV targets, for the additional section.
fn srv_additionals(table: &Table, node: &Node, ttl: u32) -> Vec<Record> {
    let mut targets: Vec<&Name> = node.srv.iter().map(|s| &s.target).collect();
    targets.sort();
    targets.dedup();
    let mut out = Vec::new();
    for t in targets {
        if let Found::Node(n) = table.find(t) {
            out.extend(records_of(n, t, RecordType::A, ttl));
            out.extend(records_of(n, t, RecordType::AAAA, ttl));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::records::fixtures::*;
    use super::super::records::zone_name;
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn table() -> Table {
        let services = [
            service("default", "web", "10.96.0.10", &[("http", 80, "TCP")]),
            service("db", "pg", "None", &[("sql", 5432, "TCP")]),
            external("default", "ext", "www.example.com"),
            external("default", "alias", "web.default.svc.cluster.local"),
            external("default", "loop1", "loop2.default.svc.cluster.local"),
            external("default", "loop2", "loop1.default.svc.cluster.local"),
        ];
        let slices = [slice(
            "db",
            "pg",
            "pg-a",
            "IPv4",
            &[(&["10.244.1.5"], Some("pg-0"), None), (&["10.244.2.6"], Some("pg-1"), None)],
            &[("sql", 5432, "TCP")],
        )];
        Table::build(zone_name("cluster.local").unwrap(), &services, &slices, []).with_serial(42)
    }

    fn local(name: &str, qtype: RecordType) -> Answer {
        match lookup(&table(), &n(name), qtype, DNSClass::IN, 5) {
            Lookup::Local(a) => a,
            Lookup::Forward => panic!("{name} {qtype} forwarded"),
        }
    }

    fn data(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect()
    }

    fn is_soa(records: &[Record]) -> bool {
        matches!(records, [r] if r.record_type() == RecordType::SOA && r.name == n("cluster.local."))
    }

    #[test]
    fn service_a() {
        let a = local("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(data(&a.answers), vec!["web.default.svc.cluster.local. A 10.96.0.10"]);
        assert_eq!(a.answers[0].ttl, 5);
        assert!(a.authorities.is_empty() && a.additionals.is_empty() && a.chase.is_none());
    }

    #[test]
    fn question_case_is_kept_in_the_answer() {
        let a = local("Web.DEFAULT.svc.cluster.local.", RecordType::A);
        assert!(a.answers[0].name.eq_case(&n("Web.DEFAULT.svc.cluster.local.")));
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa() {
        let nx = local("nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert!(nx.answers.is_empty());
        assert!(is_soa(&nx.authorities));
        let RData::SOA(soa) = &nx.authorities[0].data else { panic!() };
        assert_eq!((soa.serial, soa.minimum), (42, 5));

        for (name, qtype) in [
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("web.default.svc.cluster.local.", RecordType::MX),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("_tcp.web.default.svc.cluster.local.", RecordType::SRV),
            ("cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::NS),
        ] {
            let a = local(name, qtype);
            assert_eq!(a.rcode, ResponseCode::NoError, "{name} {qtype}");
            assert!(a.answers.is_empty(), "{name} {qtype}");
            assert!(is_soa(&a.authorities), "{name} {qtype}");
        }
    }

    #[test]
    fn srv_with_additionals() {
        let a = local("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&a.answers),
            vec!["_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(data(&a.additionals), vec!["web.default.svc.cluster.local. A 10.96.0.10"]);

        let a = local("_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&a.answers),
            vec![
                "_sql._tcp.pg.db.svc.cluster.local. SRV 0 50 5432 pg-0.pg.db.svc.cluster.local.",
                "_sql._tcp.pg.db.svc.cluster.local. SRV 0 50 5432 pg-1.pg.db.svc.cluster.local.",
            ]
        );
        assert_eq!(
            data(&a.additionals),
            vec!["pg-0.pg.db.svc.cluster.local. A 10.244.1.5", "pg-1.pg.db.svc.cluster.local. A 10.244.2.6"]
        );
    }

    #[test]
    fn headless_and_hostnames() {
        let a = local("pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(
            data(&a.answers),
            vec!["pg.db.svc.cluster.local. A 10.244.1.5", "pg.db.svc.cluster.local. A 10.244.2.6"]
        );
        let a = local("pg-1.pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), vec!["pg-1.pg.db.svc.cluster.local. A 10.244.2.6"]);
    }

    #[test]
    fn external_name() {
        // Out of the zone: the CNAME, and the target is left for upstream.
        let a = local("ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), vec!["ext.default.svc.cluster.local. CNAME www.example.com."]);
        assert_eq!(a.chase, Some(n("www.example.com.")));
        assert!(a.authorities.is_empty());
        // Asking for the CNAME itself chases nothing.
        let a = local("ext.default.svc.cluster.local.", RecordType::CNAME);
        assert_eq!(data(&a.answers), vec!["ext.default.svc.cluster.local. CNAME www.example.com."]);
        assert_eq!(a.chase, None);
        // Into the zone: followed here.
        let a = local("alias.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            data(&a.answers),
            vec![
                "alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. A 10.96.0.10"
            ]
        );
        assert_eq!(a.chase, None);
        // A loop ends in SERVFAIL, not a hang.
        assert_eq!(local("loop1.default.svc.cluster.local.", RecordType::A).rcode, ResponseCode::ServFail);
    }

    #[test]
    fn pods_any_txt_and_soa() {
        let a = local("10-244-1-9.default.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), vec!["10-244-1-9.default.pod.cluster.local. A 10.244.1.9"]);
        let a = local("10-244-1-9.default.pod.cluster.local.", RecordType::AAAA);
        assert!(a.answers.is_empty() && is_soa(&a.authorities) && a.rcode == ResponseCode::NoError);
        assert_eq!(local("nonsense.default.pod.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);

        let a = local("dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(data(&a.answers), vec!["dns-version.cluster.local. TXT 1.1.0"]);
        let a = local("cluster.local.", RecordType::SOA);
        assert!(is_soa(&a.answers) && a.authorities.is_empty());
        let a = local("web.default.svc.cluster.local.", RecordType::ANY);
        assert_eq!(data(&a.answers), vec!["web.default.svc.cluster.local. A 10.96.0.10"]);
    }

    #[test]
    fn unsupported() {
        let t = table();
        let q = |name: &str, qtype, class| lookup(&t, &n(name), qtype, class, 5);
        let rcode = |l: Lookup| match l {
            Lookup::Local(a) => a.rcode,
            Lookup::Forward => panic!("forwarded"),
        };
        assert_eq!(rcode(q("web.default.svc.cluster.local.", RecordType::A, DNSClass::CH)), ResponseCode::NotImp);
        assert_eq!(rcode(q("cluster.local.", RecordType::AXFR, DNSClass::IN)), ResponseCode::NotImp);
        assert_eq!(rcode(q("cluster.local.", RecordType::IXFR, DNSClass::IN)), ResponseCode::NotImp);
        assert_eq!(rcode(q("cluster.local.", RecordType::OPT, DNSClass::IN)), ResponseCode::FormErr);
    }

    #[test]
    fn forward_or_ptr() {
        let t = table();
        let q = |name: &str, qtype| lookup(&t, &n(name), qtype, DNSClass::IN, 5);
        assert_eq!(q("example.com.", RecordType::A), Lookup::Forward);
        assert_eq!(q("cluster.local.example.com.", RecordType::A), Lookup::Forward);
        assert_eq!(q("local.", RecordType::A), Lookup::Forward);
        let Lookup::Local(a) = q("10.0.96.10.in-addr.arpa.", RecordType::PTR) else { panic!() };
        assert_eq!(data(&a.answers), vec!["10.0.96.10.in-addr.arpa. PTR web.default.svc.cluster.local."]);
        let Lookup::Local(a) = q("5.1.244.10.IN-ADDR.ARPA.", RecordType::PTR) else { panic!() };
        assert_eq!(data(&a.answers), vec!["5.1.244.10.IN-ADDR.ARPA. PTR pg-0.pg.db.svc.cluster.local."]);
        // Addresses the cluster does not know, partial names and other types go upstream.
        assert_eq!(q("1.1.1.1.in-addr.arpa.", RecordType::PTR), Lookup::Forward);
        assert_eq!(q("96.10.in-addr.arpa.", RecordType::PTR), Lookup::Forward);
        assert_eq!(q("10.0.96.10.in-addr.arpa.", RecordType::A), Lookup::Forward);
    }

    #[test]
    fn odd_names_never_panic() {
        let t = table();
        let long = format!("{}.cluster.local.", ["a".repeat(63), "b".repeat(63), "c".repeat(63)].join("."));
        let names = [
            ".",
            "local.",
            "cluster.local.",
            "pod.cluster.local.",
            "svc.cluster.local.",
            "-.pod.cluster.local.",
            "--.x.pod.cluster.local.",
            "1-2-3-4-5.x.pod.cluster.local.",
            "ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff.x.pod.cluster.local.",
            "a.b.c.d.e.f.g.pod.cluster.local.",
            "_._.web.default.svc.cluster.local.",
            "*.default.svc.cluster.local.",
            "arpa.",
            "in-addr.arpa.",
            "ip6.arpa.",
            "300.1.1.1.in-addr.arpa.",
            "1.1.1.1.1.in-addr.arpa.",
            "x.in-addr.arpa.",
            "g.0.0.0.ip6.arpa.",
            long.as_str(),
        ];
        // Any bytes in a label, as the wire allows.
        let raw = |s: &str| {
            let mut name = Name::from_labels(s.split('.').filter(|l| !l.is_empty()).map(str::as_bytes)).unwrap();
            name.set_fqdn(true);
            name
        };
        for name in names {
            let name = raw(name);
            for qtype in
                [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::PTR, RecordType::ANY, RecordType::NULL]
            {
                let _ = lookup(&t, &name, qtype, DNSClass::IN, 5);
            }
        }
        let nx = |name: &str| match lookup(&t, &raw(name), RecordType::A, DNSClass::IN, 5) {
            Lookup::Local(a) => a.rcode,
            Lookup::Forward => panic!("forwarded"),
        };
        assert_eq!(nx("1-2-3-4-5.x.pod.cluster.local."), ResponseCode::NXDomain);
        assert_eq!(nx("-.pod.cluster.local."), ResponseCode::NoError);
        // `--` is `::`, dashed: a pod name (with no A record).
        assert_eq!(nx("--.x.pod.cluster.local."), ResponseCode::NoError);
        assert_eq!(nx("1--2--3.x.pod.cluster.local."), ResponseCode::NXDomain);
    }
}
