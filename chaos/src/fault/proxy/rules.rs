//! The nftables table inside a master's namespace that steers its peer connections into
//! the proxies: a `nat` `output` chain DNATs new TCP connections to another master's peer
//! address onto the proxy for that link, and a `filter` `output` chain resets whatever
//! still goes to that address directly — connections made before the table existed, which
//! conntrack would otherwise keep un-NATed. The filter hook (priority 0) runs after the
//! nat one (-100), so proxied packets, already rewritten to the proxy's address, pass.

use std::net::SocketAddrV4;

use crate::fault::FaultError;

/// The table; its own name, so it never touches the partition fault's.
pub const TABLE: &str = "keelson_chaos_proxy";

/// Connections from this namespace to `dest` go to `proxy` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub dest: SocketAddrV4,
    pub proxy: SocketAddrV4,
}

/// The nft script that replaces the table atomically (no redirects: removes it).
pub fn script(redirects: &[Redirect]) -> String {
    let mut s = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    if redirects.is_empty() {
        return s;
    }
    let matches = |r: &Redirect| format!("ip daddr {} tcp dport {}", r.dest.ip(), r.dest.port());
    s.push_str(&format!(
        "table ip {TABLE} {{\n  chain nat_out {{\n    type nat hook output priority -100; policy accept;\n"
    ));
    for r in redirects {
        s.push_str(&format!("    {} dnat to {}\n", matches(r), r.proxy));
    }
    s.push_str("  }\n  chain reset_out {\n    type filter hook output priority 0; policy accept;\n");
    for r in redirects {
        s.push_str(&format!("    {} reject with tcp reset\n", matches(r)));
    }
    s.push_str("  }\n}\n");
    s
}

/// Install (or with no redirects remove) the table in `netns`.
pub fn apply(netns: &str, redirects: &[Redirect]) -> Result<(), FaultError> {
    crate::fault::partition::nft(netns, &script(redirects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_dnats_new_connections_and_resets_direct_ones() {
        let r = Redirect { dest: "10.9.8.12:2380".parse().unwrap(), proxy: "10.9.8.1:40123".parse().unwrap() };
        let s = script(&[r]);
        assert!(s.starts_with("add table ip keelson_chaos_proxy\ndelete table ip keelson_chaos_proxy\n"));
        assert!(s.contains("type nat hook output priority -100;"));
        assert!(s.contains("ip daddr 10.9.8.12 tcp dport 2380 dnat to 10.9.8.1:40123\n"));
        assert!(s.contains("type filter hook output priority 0;"));
        assert!(s.contains("ip daddr 10.9.8.12 tcp dport 2380 reject with tcp reset\n"));
        assert_eq!(script(&[]), "add table ip keelson_chaos_proxy\ndelete table ip keelson_chaos_proxy\n");
    }
}
