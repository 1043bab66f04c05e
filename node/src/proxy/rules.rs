//! The service table → one nftables transaction that replaces the proxy's table. Pure.
//!
//! The transaction is `add table; delete table; add table; …everything`, so the kernel
//! swaps the old table for the new one atomically (no packet sees a half-written table)
//! and only this table is ever touched. Its layout follows kube-proxy's nftables mode
//! (family `ip`, IPv4 only):
//!
//! ```text
//! chain nat-prerouting  { type nat hook prerouting priority dstnat; jump services }
//! chain nat-output      { type nat hook output priority dstnat; jump services }
//! chain nat-postrouting { type nat hook postrouting priority srcnat;
//!                         meta mark & 0x4000 == 0 return
//!                         meta mark set meta mark ^ 0x4000 masquerade fully-random }
//! chain filter-prerouting { type filter hook prerouting priority dstnat - 10; ct state new jump endpoints-check }
//! chain filter-output     { type filter hook output priority dstnat - 10; ct state new jump endpoints-check }
//! chain services {
//!     ip daddr . meta l4proto . th dport vmap { 10.96.0.10 . tcp . 80 : goto service-ns/web/tcp/80, … }
//!     ip daddr @nodeport-ips meta l4proto . th dport vmap { tcp . 30080 : goto service-ns/web/tcp/80, … }
//! }
//! chain endpoints-check {      # ports with no endpoint: fail fast
//!     ip daddr . meta l4proto . th dport vmap { 10.96.0.11 . tcp . 80 : goto reject-chain, … }
//!     ip daddr @nodeport-ips meta l4proto . th dport vmap { tcp . 30081 : goto reject-chain, … }
//! }
//! chain reject-chain { reject with tcp reset; reject with icmp port-unreachable }
//! chain service-ns/web/tcp/80 {
//!     meta mark set meta mark | 0x4000
//!     ip saddr @affinity-ns/web/tcp/80__10.1.0.1/8080 goto endpoint-ns/web/tcp/80__10.1.0.1/8080   # ClientIP only
//!     numgen random mod 2 vmap { 0 : goto endpoint-…__10.1.0.1/8080, 1 : goto endpoint-…__10.1.0.2/8080 }
//! }
//! chain endpoint-ns/web/tcp/80__10.1.0.1/8080 {
//!     update @affinity-ns/web/tcp/80__10.1.0.1/8080 { ip saddr }                                  # ClientIP only
//!     meta l4proto tcp dnat to 10.1.0.1:8080
//! }
//! set affinity-ns/web/tcp/80__10.1.0.1/8080 { type ipv4_addr; flags timeout; timeout 10800s }
//! set nodeport-ips { type ipv4_addr; elements = { <node IPs> } }
//! ```
//!
//! **Masquerade.** Every connection to a service is masqueraded (kube-proxy's
//! `--masquerade-all`). The pod network is a plain Linux bridge without br_netfilter: a
//! backend on the same bridge as its client would answer the client directly at layer 2,
//! past the host's conntrack, and the client would drop a reply from an address it never
//! called. With the client's address rewritten to the host's, every reply comes back
//! through the host, where conntrack undoes both translations. The cost: backends see the
//! node's address, not the client pod's. Marking happens in the service chain (so NodePort
//! traffic, which jumps to the same chain, is marked too); the mark is cleared when the
//! masquerade is applied.
//!
//! **Affinity.** The per-endpoint `affinity-…` sets (timeout = the Service's) are part of
//! the table, so replacing the table would forget every client; the caller reads their
//! entries first and passes them back in [`AffinityState`], and they are written into the
//! new sets with the time they had left.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use nftables::expr::{
    BinaryOperation, Elem, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, NgMode, Numgen,
    Payload, PayloadField, Prefix, SetItem, Verdict, CT,
};
use nftables::schema::{
    Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{self, JumpTarget, Mangle, Match, Operator, Reject, RejectType, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};

use super::model::{Endpoint, ServicePort, ServiceTable};

/// The packet mark that asks for masquerade (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// nft's `dstnat` and `srcnat` priorities.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
/// Before DNAT, so the filter chains still see the service address.
const FILTER: i32 = DSTNAT - 10;

pub const SERVICES: &str = "services";
pub const ENDPOINTS_CHECK: &str = "endpoints-check";
pub const REJECT: &str = "reject-chain";
pub const NODEPORT_IPS: &str = "nodeport-ips";

/// The addresses NodePorts answer on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddrs {
    /// These (an empty list: no NodePorts at all).
    List(Vec<Ipv4Addr>),
    /// Every local address but 127.0.0.0/8 (`fib daddr type local`).
    Local,
}

/// Affinity entries carried from the old table into the new: set name → (client address,
/// seconds left, when known).
pub type AffinityState = HashMap<String, Vec<(Ipv4Addr, Option<u32>)>>;

pub fn service_chain(p: &ServicePort) -> String {
    format!("service-{}", p.id())
}

pub fn endpoint_chain(p: &ServicePort, ep: &Endpoint) -> String {
    format!("endpoint-{}__{}/{}", p.id(), ep.ip, ep.port)
}

pub fn affinity_set(p: &ServicePort, ep: &Endpoint) -> String {
    format!("affinity-{}__{}/{}", p.id(), ep.ip, ep.port)
}

/// The transaction that makes table `table` (family ip) exactly what `services` asks for.
pub fn ruleset(table: &str, services: &ServiceTable, nodes: &NodeAddrs, carried: &AffinityState) -> Nftables<'static> {
    let mut b = Builder { table: table.to_string(), objects: Vec::new() };
    let t = || Table { family: NfFamily::IP, name: table.to_string().into(), handle: None };
    b.objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t()))));
    b.objects.push(NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t()))));
    b.objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t()))));

    // Sets.
    let node_ips = match nodes {
        NodeAddrs::List(ips) if ips.is_empty() => None,
        NodeAddrs::List(ips) => {
            let elem = ips.iter().map(|ip| Expression::String(ip.to_string().into())).collect::<Vec<_>>();
            b.add(NfListObject::Set(Box::new(Set {
                family: NfFamily::IP,
                table: b.table.clone().into(),
                name: NODEPORT_IPS.into(),
                handle: None,
                set_type: SetTypeValue::Single(SetType::Ipv4Addr),
                policy: None,
                flags: None,
                elem: Some(elem.into()),
                timeout: None,
                gc_interval: None,
                size: None,
                comment: None,
            })));
            Some(Expression::String(format!("@{NODEPORT_IPS}").into()))
        }
        NodeAddrs::Local => None,
    };
    // The match that says "to this node": a statement list, or None when there are no
    // NodePorts at all.
    let to_node: Option<Vec<Statement<'static>>> = match (nodes, node_ips) {
        (NodeAddrs::List(_), Some(set)) => Some(vec![matches(payload("ip", "daddr"), Operator::EQ, set)]),
        (NodeAddrs::List(_), None) => None,
        (NodeAddrs::Local, _) => Some(vec![
            matches(
                Expression::Named(NamedExpression::Fib(Fib {
                    result: FibResult::Type,
                    flags: HashSet::from([FibFlag::Daddr]),
                })),
                Operator::EQ,
                Expression::String("local".into()),
            ),
            matches(
                payload("ip", "daddr"),
                Operator::NEQ,
                Expression::Named(NamedExpression::Prefix(Prefix {
                    addr: Box::new(Expression::String("127.0.0.0".into())),
                    len: 8,
                })),
            ),
        ]),
    };
    for p in &services.ports {
        let Some(timeout) = p.affinity_timeout else { continue };
        for ep in &p.endpoints {
            let name = affinity_set(p, ep);
            let elem: Vec<Expression<'static>> = carried
                .get(&name)
                .into_iter()
                .flatten()
                .filter_map(|(client, left)| match left {
                    Some(0) => None,
                    Some(left) => Some(Expression::Named(NamedExpression::Elem(Elem {
                        val: Box::new(Expression::String(client.to_string().into())),
                        timeout: Some(timeout),
                        expires: Some((*left).min(timeout)),
                        comment: None,
                        counter: None,
                    }))),
                    None => Some(Expression::String(client.to_string().into())),
                })
                .collect();
            b.add(NfListObject::Set(Box::new(Set {
                family: NfFamily::IP,
                table: b.table.clone().into(),
                name: name.into(),
                handle: None,
                set_type: SetTypeValue::Single(SetType::Ipv4Addr),
                policy: None,
                flags: Some(HashSet::from([SetFlag::Timeout])),
                elem: if elem.is_empty() { None } else { Some(elem.into()) },
                timeout: Some(timeout),
                gc_interval: None,
                size: None,
                comment: None,
            })));
        }
    }

    // Chains: every one before any rule, so jumps and gotos resolve.
    b.base_chain("nat-prerouting", NfChainType::NAT, NfHook::Prerouting, DSTNAT);
    b.base_chain("nat-output", NfChainType::NAT, NfHook::Output, DSTNAT);
    b.base_chain("nat-postrouting", NfChainType::NAT, NfHook::Postrouting, SRCNAT);
    b.base_chain("filter-prerouting", NfChainType::Filter, NfHook::Prerouting, FILTER);
    b.base_chain("filter-output", NfChainType::Filter, NfHook::Output, FILTER);
    for name in [SERVICES, ENDPOINTS_CHECK, REJECT] {
        b.chain(name.to_string());
    }
    for p in services.ports.iter().filter(|p| !p.endpoints.is_empty()) {
        b.chain(service_chain(p));
        for ep in &p.endpoints {
            b.chain(endpoint_chain(p, ep));
        }
    }

    // Hooks.
    b.rule("nat-prerouting", vec![jump(SERVICES)]);
    b.rule("nat-output", vec![jump(SERVICES)]);
    let mark = || Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark }));
    b.rule(
        "nat-postrouting",
        vec![
            matches(
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    mark(),
                    Expression::Number(MASQUERADE_MARK),
                ))),
                Operator::EQ,
                Expression::Number(0),
            ),
            Statement::Return(None),
        ],
    );
    b.rule(
        "nat-postrouting",
        vec![
            Statement::Mangle(Mangle {
                key: mark(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::XOR(
                    mark(),
                    Expression::Number(MASQUERADE_MARK),
                ))),
            }),
            Statement::Masquerade(Some(NAT {
                addr: None,
                family: None,
                port: None,
                flags: Some(HashSet::from([stmt::NATFlag::FullyRandom])),
            })),
        ],
    );
    let new_conn = || {
        matches(
            Expression::Named(NamedExpression::CT(CT { key: "state".into(), family: None, dir: None })),
            Operator::IN,
            Expression::String("new".into()),
        )
    };
    b.rule("filter-prerouting", vec![new_conn(), jump(ENDPOINTS_CHECK)]);
    b.rule("filter-output", vec![new_conn(), jump(ENDPOINTS_CHECK)]);
    b.rule(
        REJECT,
        vec![
            matches(meta(MetaKey::L4proto), Operator::EQ, Expression::String("tcp".into())),
            Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
        ],
    );
    b.rule(REJECT, vec![Statement::Reject(Some(Reject::new(Some(RejectType::ICMP), Some(RejectCode::PortUnreach))))]);

    // Dispatch: ports with endpoints to their service chain, the others to reject-chain.
    let (served, unserved): (Vec<&ServicePort>, Vec<&ServicePort>) =
        services.ports.iter().partition(|p| !p.endpoints.is_empty());
    b.dispatch(SERVICES, &served, to_node.as_deref(), service_chain);
    b.dispatch(ENDPOINTS_CHECK, &unserved, to_node.as_deref(), |_| REJECT.to_string());

    // Service and endpoint chains.
    for p in served {
        let chain = service_chain(p);
        b.rule(
            &chain,
            vec![Statement::Mangle(Mangle {
                key: mark(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                    mark(),
                    Expression::Number(MASQUERADE_MARK),
                ]))),
            })],
        );
        if p.affinity_timeout.is_some() {
            for ep in &p.endpoints {
                b.rule(
                    &chain,
                    vec![
                        matches(
                            payload("ip", "saddr"),
                            Operator::EQ,
                            Expression::String(format!("@{}", affinity_set(p, ep)).into()),
                        ),
                        goto(endpoint_chain(p, ep)),
                    ],
                );
            }
        }
        let n = u32::try_from(p.endpoints.len()).unwrap_or(u32::MAX);
        let pick = p
            .endpoints
            .iter()
            .zip(0u32..)
            .map(|(ep, i)| SetItem::Mapping(Expression::Number(i), goto_verdict(endpoint_chain(p, ep))))
            .collect();
        b.rule(
            &chain,
            vec![Statement::VerdictMap(stmt::VerdictMap {
                key: Expression::Named(NamedExpression::Numgen(Numgen {
                    mode: NgMode::Random,
                    ng_mod: n,
                    offset: None,
                })),
                data: Expression::Named(NamedExpression::Set(pick)),
            })],
        );
        for ep in &p.endpoints {
            let mut rule = Vec::new();
            if p.affinity_timeout.is_some() {
                rule.push(Statement::Set(stmt::Set {
                    op: stmt::SetOp::Update,
                    elem: payload("ip", "saddr"),
                    set: format!("@{}", affinity_set(p, ep)).into(),
                }));
            }
            rule.push(matches(meta(MetaKey::L4proto), Operator::EQ, Expression::String(p.protocol.nft().into())));
            rule.push(Statement::DNAT(Some(NAT {
                addr: Some(Expression::String(ep.ip.to_string().into())),
                family: None,
                port: Some(Expression::Number(ep.port.into())),
                flags: None,
            })));
            b.rule(&endpoint_chain(p, ep), rule);
        }
    }
    Nftables { objects: b.objects.into() }
}

struct Builder {
    table: String,
    objects: Vec<NfObject<'static>>,
}

impl Builder {
    fn add(&mut self, obj: NfListObject<'static>) {
        self.objects.push(NfObject::CmdObject(NfCmd::Add(obj)));
    }

    fn chain(&mut self, name: String) {
        let table = self.table.clone().into();
        self.add(NfListObject::Chain(Chain { family: NfFamily::IP, table, name: name.into(), ..Chain::default() }));
    }

    fn base_chain(&mut self, name: &str, ty: NfChainType, hook: NfHook, prio: i32) {
        let table = self.table.clone().into();
        self.add(NfListObject::Chain(Chain {
            family: NfFamily::IP,
            table,
            name: name.to_string().into(),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.add(NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: self.table.clone().into(),
            chain: chain.to_string().into(),
            expr: expr.into(),
            ..Rule::default()
        }));
    }

    /// In `chain`: `ip daddr . meta l4proto . th dport vmap { cluster IP . proto . port :
    /// goto target(p) }` and, after `to_node`, `meta l4proto . th dport vmap { proto .
    /// nodePort : goto target(p) }` (no rule for an empty map: nft refuses those).
    fn dispatch(
        &mut self,
        chain: &str,
        ports: &[&ServicePort],
        to_node: Option<&[Statement<'static>]>,
        target: impl Fn(&ServicePort) -> String,
    ) {
        let cluster: Vec<SetItem<'static>> = ports
            .iter()
            .map(|p| {
                let key = concat(vec![
                    Expression::String(p.cluster_ip.to_string().into()),
                    Expression::String(p.protocol.nft().into()),
                    Expression::Number(p.port.into()),
                ]);
                SetItem::Mapping(key, goto_verdict(target(p)))
            })
            .collect();
        if !cluster.is_empty() {
            let key = concat(vec![payload("ip", "daddr"), meta(MetaKey::L4proto), payload("th", "dport")]);
            self.rule(chain, vec![vmap(key, cluster)]);
        }
        let Some(to_node) = to_node else { return };
        let node: Vec<SetItem<'static>> = ports
            .iter()
            .filter_map(|p| {
                let np = p.node_port?;
                let key = concat(vec![Expression::String(p.protocol.nft().into()), Expression::Number(np.into())]);
                Some(SetItem::Mapping(key, goto_verdict(target(p))))
            })
            .collect();
        if !node.is_empty() {
            let mut rule = to_node.to_vec();
            rule.push(vmap(concat(vec![meta(MetaKey::L4proto), payload("th", "dport")]), node));
            self.rule(chain, rule);
        }
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget { target: target.to_string().into() })
}

fn goto(target: String) -> Statement<'static> {
    Statement::Goto(JumpTarget { target: target.into() })
}

fn goto_verdict(target: String) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget { target: target.into() }))
}

fn vmap(key: Expression<'static>, items: Vec<SetItem<'static>>) -> Statement<'static> {
    Statement::VerdictMap(stmt::VerdictMap { key, data: Expression::Named(NamedExpression::Set(items)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::tests::{eps, service, slice, svc, Ep};
    use crate::proxy::model::ServiceTable;
    use serde_json::{json, Value};

    const T: &str = "keelson-test";

    fn build(services: &[Value], slices: &[Value]) -> ServiceTable {
        let s: Vec<_> = services.iter().cloned().map(service).collect();
        let e: Vec<_> = slices.iter().cloned().map(slice).collect();
        ServiceTable::build(&s, &e)
    }

    fn render(t: &ServiceTable, nodes: &NodeAddrs, carried: &AffinityState) -> Value {
        serde_json::to_value(ruleset(T, t, nodes, carried)).unwrap()
    }

    fn cmds(v: &Value) -> &Vec<Value> {
        v["nftables"].as_array().unwrap()
    }

    /// The `add` commands' objects of kind `kind` (`chain`, `set`, `rule`).
    fn added<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
        cmds(v).iter().filter_map(|c| c.get("add")?.get(kind)).collect()
    }

    fn chain_names(v: &Value) -> Vec<String> {
        added(v, "chain").iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    }

    /// The rules (their statement lists) of `chain`, in order.
    fn rules<'a>(v: &'a Value, chain: &str) -> Vec<&'a Vec<Value>> {
        added(v, "rule").into_iter().filter(|r| r["chain"] == chain).map(|r| r["expr"].as_array().unwrap()).collect()
    }

    /// The `(key, goto target)` pairs of the vmap in `rule`.
    fn vmap_entries(rule: &[Value]) -> Vec<(Value, String)> {
        let vmap = rule.iter().find_map(|s| s.get("vmap")).expect("a vmap");
        vmap["data"]["set"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].clone(), pair[1]["goto"]["target"].as_str().unwrap().to_string()))
            .collect()
    }

    fn ready(ip: &str) -> Ep<'_> {
        (ip, Some(true), None, None)
    }

    fn web() -> (Value, Value) {
        let s = svc("ns", "web", "10.96.0.10", &[("http", 80, "TCP")]);
        let e = eps("ns", "web", "a", &[ready("10.1.0.1"), ready("10.1.0.2")], &[("http", 8080, "TCP")]);
        (s, e)
    }

    #[test]
    fn only_our_table_replaced_in_one_transaction() {
        let (s, e) = web();
        let v = render(&build(&[s], &[e]), &NodeAddrs::Local, &AffinityState::new());
        let c = cmds(&v);
        assert_eq!(c[0], json!({"add": {"table": {"family": "ip", "name": T}}}));
        assert_eq!(c[1], json!({"delete": {"table": {"family": "ip", "name": T}}}));
        assert_eq!(c[2], json!({"add": {"table": {"family": "ip", "name": T}}}));
        for cmd in &c[3..] {
            let (verb, obj) = cmd.as_object().unwrap().iter().next().unwrap();
            assert_eq!(verb, "add", "{cmd}");
            let (kind, obj) = obj.as_object().unwrap().iter().next().unwrap();
            assert_ne!(kind, "table", "{cmd}");
            assert_eq!(obj["family"], "ip", "{cmd}");
            assert_eq!(obj["table"], T, "{cmd}");
        }
        // Chains before rules, so every jump resolves.
        let first_rule = c.iter().position(|c| c["add"].get("rule").is_some()).unwrap();
        assert!(c[first_rule..].iter().all(|c| c["add"].get("chain").is_none()));
    }

    #[test]
    fn hooks_at_kube_proxy_priorities() {
        let v = render(&ServiceTable::default(), &NodeAddrs::Local, &AffinityState::new());
        let base: Vec<(String, String, String, i64)> = added(&v, "chain")
            .iter()
            .filter(|c| c.get("hook").is_some())
            .map(|c| {
                (
                    c["name"].as_str().unwrap().into(),
                    c["type"].as_str().unwrap().into(),
                    c["hook"].as_str().unwrap().into(),
                    c["prio"].as_i64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("nat-prerouting", "nat", "prerouting", -100),
            ("nat-output", "nat", "output", -100),
            ("nat-postrouting", "nat", "postrouting", 100),
            ("filter-prerouting", "filter", "prerouting", -110),
            ("filter-output", "filter", "output", -110),
        ];
        assert_eq!(base, want.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d)));
        assert_eq!(rules(&v, "nat-prerouting"), [&vec![json!({"jump": {"target": "services"}})]]);
        assert_eq!(rules(&v, "nat-output"), [&vec![json!({"jump": {"target": "services"}})]]);
        let post = rules(&v, "nat-postrouting");
        assert_eq!(post[0][1], json!({"return": null}));
        assert_eq!(post[1][1], json!({"masquerade": {"flags": ["fully-random"]}}));
        // Nothing to dispatch: no vmap with an empty set (nft refuses those).
        assert!(rules(&v, SERVICES).is_empty());
        assert!(rules(&v, ENDPOINTS_CHECK).is_empty());
    }

    #[test]
    fn cluster_ip_dnat_random_across_endpoints() {
        let (s, e) = web();
        let v = render(&build(&[s], &[e]), &NodeAddrs::List(vec![]), &AffinityState::new());
        let svc_rules = rules(&v, SERVICES);
        assert_eq!(svc_rules.len(), 1, "no node IPs: no NodePort rule");
        assert_eq!(
            vmap_entries(svc_rules[0]),
            [(json!({"concat": ["10.96.0.10", "tcp", 80]}), "service-ns/web/tcp/80".to_string())]
        );
        let chain = rules(&v, "service-ns/web/tcp/80");
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0][0],
            json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 0x4000]}}})
        );
        assert_eq!(chain[1][0]["vmap"]["key"], json!({"numgen": {"mode": "random", "mod": 2}}));
        assert_eq!(
            vmap_entries(chain[1]),
            [
                (json!(0), "endpoint-ns/web/tcp/80__10.1.0.1/8080".to_string()),
                (json!(1), "endpoint-ns/web/tcp/80__10.1.0.2/8080".to_string())
            ]
        );
        assert_eq!(
            rules(&v, "endpoint-ns/web/tcp/80__10.1.0.2/8080"),
            [&vec![
                json!({"match": {"left": {"meta": {"key": "l4proto"}}, "right": "tcp", "op": "=="}}),
                json!({"dnat": {"addr": "10.1.0.2", "port": 8080}}),
            ]]
        );
        assert!(added(&v, "set").is_empty());
    }

    #[test]
    fn udp_and_sctp_ports() {
        let s =
            svc("kube-system", "dns", "10.96.0.53", &[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("s", 99, "SCTP")]);
        let e = eps(
            "kube-system",
            "dns",
            "a",
            &[ready("10.1.0.9")],
            &[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP"), ("s", 9999, "SCTP")],
        );
        let v = render(&build(&[s], &[e]), &NodeAddrs::Local, &AffinityState::new());
        let keys: Vec<Value> = vmap_entries(rules(&v, SERVICES)[0]).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                json!({"concat": ["10.96.0.53", "tcp", 53]}),
                json!({"concat": ["10.96.0.53", "udp", 53]}),
                json!({"concat": ["10.96.0.53", "sctp", 99]})
            ]
        );
        let udp = rules(&v, "endpoint-kube-system/dns/udp/53__10.1.0.9/5353");
        assert_eq!(udp[0][0]["match"]["right"], "udp");
        assert_eq!(udp[0][1], json!({"dnat": {"addr": "10.1.0.9", "port": 5353}}));
        let sctp = rules(&v, "endpoint-kube-system/dns/sctp/99__10.1.0.9/9999");
        assert_eq!(sctp[0][0]["match"]["right"], "sctp");
    }

    #[test]
    fn node_ports_on_listed_or_local_addresses() {
        let (mut s, e) = web();
        s["spec"]["type"] = json!("NodePort");
        s["spec"]["ports"][0]["nodePort"] = json!(30080);
        let t = build(&[s], &[e]);

        let listed = NodeAddrs::List(vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()]);
        let v = render(&t, &listed, &AffinityState::new());
        let sets = added(&v, "set");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0]["name"], NODEPORT_IPS);
        assert_eq!(sets[0]["type"], "ipv4_addr");
        assert_eq!(sets[0]["elem"], json!(["192.0.2.1", "192.0.2.2"]));
        let svc_rules = rules(&v, SERVICES);
        assert_eq!(svc_rules.len(), 2);
        assert_eq!(
            svc_rules[1][0],
            json!({"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@nodeport-ips", "op": "=="}})
        );
        assert_eq!(
            vmap_entries(svc_rules[1]),
            [(json!({"concat": ["tcp", 30080]}), "service-ns/web/tcp/80".to_string())]
        );

        let v = render(&t, &NodeAddrs::Local, &AffinityState::new());
        assert!(added(&v, "set").is_empty());
        let svc_rules = rules(&v, SERVICES);
        assert_eq!(svc_rules[1][0]["match"]["left"], json!({"fib": {"result": "type", "flags": ["daddr"]}}));
        assert_eq!(svc_rules[1][0]["match"]["right"], "local");
        assert_eq!(svc_rules[1][1]["match"]["op"], "!=");
        assert_eq!(svc_rules[1][1]["match"]["right"], json!({"prefix": {"addr": "127.0.0.0", "len": 8}}));

        // No node address at all: cluster IPs only.
        let v = render(&t, &NodeAddrs::List(vec![]), &AffinityState::new());
        assert_eq!(rules(&v, SERVICES).len(), 1);
    }

    #[test]
    fn no_endpoints_reject_fast() {
        let (mut s, _) = web();
        s["spec"]["type"] = json!("NodePort");
        s["spec"]["ports"][0]["nodePort"] = json!(30080);
        let down =
            eps("ns", "web", "a", &[("10.1.0.1", Some(false), Some(false), Some(true))], &[("http", 8080, "TCP")]);
        let v = render(&build(&[s], &[down]), &NodeAddrs::Local, &AffinityState::new());
        assert!(rules(&v, SERVICES).is_empty());
        assert!(!chain_names(&v).iter().any(|c| c.starts_with("service-") || c.starts_with("endpoint-")));
        let check = rules(&v, ENDPOINTS_CHECK);
        assert_eq!(check.len(), 2);
        assert_eq!(vmap_entries(check[0]), [(json!({"concat": ["10.96.0.10", "tcp", 80]}), REJECT.to_string())]);
        assert_eq!(vmap_entries(check[1]), [(json!({"concat": ["tcp", 30080]}), REJECT.to_string())]);
        // Reached for new connections only, before DNAT, from other hosts and this one.
        for hook in ["filter-prerouting", "filter-output"] {
            assert_eq!(
                rules(&v, hook),
                [&vec![
                    json!({"match": {"left": {"ct": {"key": "state"}}, "right": "new", "op": "in"}}),
                    json!({"jump": {"target": ENDPOINTS_CHECK}})
                ]]
            );
        }
        let reject = rules(&v, REJECT);
        assert_eq!(reject[0][1], json!({"reject": {"type": "tcp reset"}}));
        assert_eq!(reject[1][0], json!({"reject": {"type": "icmp", "expr": "port-unreachable"}}));
    }

    #[test]
    fn client_ip_affinity_sets_and_carried_entries() {
        let (mut s, e) = web();
        s["spec"]["sessionAffinity"] = json!("ClientIP");
        s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 600}});
        let t = build(&[s], &[e]);
        let a1 = "affinity-ns/web/tcp/80__10.1.0.1/8080";
        let a2 = "affinity-ns/web/tcp/80__10.1.0.2/8080";
        let mut carried = AffinityState::new();
        carried.insert(
            a1.to_string(),
            vec![
                ("10.2.0.1".parse().unwrap(), Some(100)),
                ("10.2.0.2".parse().unwrap(), Some(5000)), // more than the timeout now: clamped
                ("10.2.0.3".parse().unwrap(), Some(0)),    // expired
                ("10.2.0.4".parse().unwrap(), None),
            ],
        );
        carried.insert("affinity-ns/gone/tcp/80__10.1.0.1/8080".into(), vec![("10.2.0.9".parse().unwrap(), Some(9))]);
        let v = render(&t, &NodeAddrs::List(vec![]), &carried);

        let sets = added(&v, "set");
        assert_eq!(sets.len(), 2);
        for set in &sets {
            assert_eq!(set["type"], "ipv4_addr");
            assert_eq!(set["flags"], json!(["timeout"]));
            assert_eq!(set["timeout"], 600);
        }
        let s1 = sets.iter().find(|s| s["name"] == a1).unwrap();
        let elem = |ip: &str, left: u32| json!({"elem": {"val": ip, "timeout": 600, "expires": left, "comment": null, "counter": null}});
        assert_eq!(s1["elem"], json!([elem("10.2.0.1", 100), elem("10.2.0.2", 600), "10.2.0.4"]));
        let s2 = sets.iter().find(|s| s["name"] == a2).unwrap();
        assert!(s2.get("elem").is_none());

        let chain = rules(&v, "service-ns/web/tcp/80");
        assert_eq!(chain.len(), 4, "mark, two affinity lookups, numgen");
        assert_eq!(
            *chain[1],
            vec![
                json!({"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": format!("@{a1}"), "op": "=="}}),
                json!({"goto": {"target": "endpoint-ns/web/tcp/80__10.1.0.1/8080"}}),
            ]
        );
        assert_eq!(chain[2][0]["match"]["right"], format!("@{a2}"));
        assert!(chain[3][0].get("vmap").is_some());
        let ep = rules(&v, "endpoint-ns/web/tcp/80__10.1.0.2/8080");
        assert_eq!(
            ep[0][0],
            json!({"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": format!("@{a2}")}})
        );
        assert_eq!(ep[0][2], json!({"dnat": {"addr": "10.1.0.2", "port": 8080}}));
    }

    #[test]
    fn without_affinity_no_sets_and_no_updates() {
        let (s, e) = web();
        let v = render(&build(&[s], &[e]), &NodeAddrs::List(vec![]), &AffinityState::new());
        assert!(added(&v, "set").is_empty());
        let text = v.to_string();
        assert!(!text.contains("affinity-"), "{text}");
    }
}
