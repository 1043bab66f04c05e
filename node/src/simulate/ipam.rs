//! Fake pod addresses. Each node hands out addresses from its `spec.podCIDR` when it has
//! one, otherwise from a /24 of its own derived from its index (`10.244.0.0/24` for node
//! 0, `10.244.1.0/24` for node 1, …, continuing through `10.0.0.0/8`), with a per-node
//! cursor. A pod keeps its address (recorded by uid) until it finishes or goes away.
//! Nothing is ever sent to these addresses.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses a node can hand out: `count` of them, from `base + first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    base: IpAddr,
    first: u128,
    count: u128,
}

/// At most this many addresses per node are used (a big IPv6 range needs no more).
const MAX_PER_NODE: u128 = 65_534;

impl Block {
    /// The block of a CIDR such as `10.244.3.0/24` or `fd00:1::/64` (skipping the network
    /// and, for IPv4, broadcast addresses); `None` if it does not parse.
    pub fn from_cidr(cidr: &str) -> Option<Block> {
        let (addr, prefix) = cidr.trim().split_once('/')?;
        let prefix: u32 = prefix.parse().ok()?;
        let addr: IpAddr = addr.parse().ok()?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        let host_bits = bits - prefix;
        let size: u128 = if host_bits >= 128 { u128::MAX } else { 1u128 << host_bits };
        let mask = if host_bits >= 128 { 0 } else { !(size - 1) };
        let base = from_u128(addr, to_u128(addr) & mask);
        let (first, count) = match (addr.is_ipv4(), host_bits) {
            (_, 0) => (0, 1),
            (true, 1) => (0, 2),
            (true, _) => (1, size - 2),
            (false, _) => (1, size - 1),
        };
        Some(Block { base, first, count: count.min(MAX_PER_NODE) })
    }

    /// Node `index`'s own /24 when it has no podCIDR: the `index`th /24 from `10.244.0.0`,
    /// wrapping within `10.0.0.0/8`.
    pub fn fallback(index: usize) -> Block {
        let offset = ((244u32 << 16).wrapping_add((index as u32).wrapping_mul(256))) & 0x00ff_ff00;
        Block { base: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | offset)), first: 1, count: 254 }
    }

    /// The `k`th address (`k < count`).
    pub fn addr(&self, k: u128) -> IpAddr {
        from_u128(self.base, to_u128(self.base).wrapping_add(self.first + k % self.count.max(1)))
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// One node's addresses in use.
#[derive(Debug, Default)]
struct NodeIps {
    next: u128,
    by_uid: HashMap<String, IpAddr>,
    /// Address → how many pods hold it (more than one only when a block is exhausted).
    used: HashMap<IpAddr, u32>,
}

impl NodeIps {
    fn hold(&mut self, uid: &str, ip: IpAddr) {
        if let Some(old) = self.by_uid.insert(uid.to_string(), ip) {
            self.unhold(old);
        }
        *self.used.entry(ip).or_insert(0) += 1;
    }

    fn unhold(&mut self, ip: IpAddr) {
        if let Some(n) = self.used.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.used.remove(&ip);
            }
        }
    }
}

/// Every node's addresses.
#[derive(Debug)]
pub struct Ipam {
    nodes: Vec<NodeIps>,
}

impl Ipam {
    pub fn new(count: usize) -> Ipam {
        Ipam { nodes: (0..count).map(|_| NodeIps::default()).collect() }
    }

    /// The address of pod `uid` on node `node`: the one it holds, else the next free one of
    /// `block` after the node's cursor (reused round-robin if the block is full).
    pub fn allocate(&mut self, node: usize, uid: &str, block: Block) -> Option<IpAddr> {
        let n = self.nodes.get_mut(node)?;
        if let Some(ip) = n.by_uid.get(uid) {
            return Some(*ip);
        }
        let free =
            (0..block.count).map(|step| (n.next + step) % block.count).find(|k| !n.used.contains_key(&block.addr(*k)));
        let k = free.unwrap_or(n.next % block.count.max(1));
        n.next = (k + 1) % block.count.max(1);
        let ip = block.addr(k);
        n.hold(uid, ip);
        Some(ip)
    }

    /// Record that pod `uid` already has `ip` (seen in its status, e.g. after a restart).
    pub fn claim(&mut self, node: usize, uid: &str, ip: IpAddr) {
        if let Some(n) = self.nodes.get_mut(node) {
            if n.by_uid.get(uid) != Some(&ip) {
                n.hold(uid, ip);
            }
        }
    }

    /// Pod `uid` finished or is gone: its address is free again.
    pub fn release(&mut self, node: usize, uid: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            if let Some(ip) = n.by_uid.remove(uid) {
                n.unhold(ip);
            }
        }
    }

    /// Keep only the pods in `live` (after a re-list: the others went away unseen).
    pub fn retain(&mut self, live: &HashSet<String>) {
        for n in &mut self.nodes {
            let gone: Vec<String> = n.by_uid.keys().filter(|u| !live.contains(*u)).cloned().collect();
            for uid in gone {
                if let Some(ip) = n.by_uid.remove(&uid) {
                    n.unhold(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_give_their_host_addresses() {
        let b = Block::from_cidr("10.244.3.0/24").unwrap();
        assert_eq!((b.addr(0), b.addr(253)), (ip("10.244.3.1"), ip("10.244.3.254")));
        assert_eq!(b.count, 254);
        // A host address with a prefix is normalised to its network.
        let b30 = Block::from_cidr("10.1.2.77/30").unwrap();
        assert_eq!((b30.addr(0), b30.addr(1), b30.count), (ip("10.1.2.77"), ip("10.1.2.78"), 2));
        assert_eq!(Block::from_cidr("10.0.0.8/32").unwrap().addr(0), ip("10.0.0.8"));
        let v6 = Block::from_cidr("fd00:10:244:1::/64").unwrap();
        assert_eq!((v6.addr(0), v6.count), (ip("fd00:10:244:1::1"), MAX_PER_NODE));
        assert!(Block::from_cidr("::/0").is_some());
        for bad in ["", "10.0.0.0", "10.0.0.0/33", "x/24", "10.0.0.0/-1", "fd00::/129"] {
            assert_eq!(Block::from_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn fallback_blocks_follow_the_node_index() {
        assert_eq!(Block::fallback(0).addr(0), ip("10.244.0.1"));
        assert_eq!(Block::fallback(1).addr(4), ip("10.244.1.5"));
        assert_eq!(Block::fallback(2999).addr(0), ip("10.255.183.1"));
        assert_eq!(Block::fallback(3072).addr(0), ip("10.0.0.1"), "wraps within 10/8");
        assert_eq!(Block::fallback(usize::MAX).addr(0).to_string().split('.').next(), Some("10"));
    }

    #[test]
    fn pods_keep_their_address_and_free_ones_are_reused() {
        let mut ipam = Ipam::new(2);
        let b = Block::from_cidr("10.9.0.0/30").unwrap();
        assert_eq!(ipam.allocate(1, "a", b), Some(ip("10.9.0.1")));
        assert_eq!(ipam.allocate(1, "a", b), Some(ip("10.9.0.1")), "stable");
        assert_eq!(ipam.allocate(1, "b", b), Some(ip("10.9.0.2")));
        // Full: shared round-robin rather than failing.
        assert!(ipam.allocate(1, "c", b).is_some());
        ipam.release(1, "a");
        ipam.release(1, "c");
        assert_eq!(ipam.allocate(1, "d", b), Some(ip("10.9.0.1")));
        assert_eq!(ipam.allocate(7, "x", b), None, "no such node");
        // Claimed addresses (seen after a restart) are skipped.
        let mut ipam = Ipam::new(1);
        ipam.claim(0, "old", ip("10.244.0.1"));
        assert_eq!(ipam.allocate(0, "new", Block::fallback(0)), Some(ip("10.244.0.2")));
        ipam.retain(&HashSet::from(["new".to_string()]));
        assert_eq!(ipam.allocate(0, "newer", Block::fallback(0)), Some(ip("10.244.0.3")), "cursor moves on");
        assert_eq!(ipam.allocate(0, "old", Block::fallback(0)), Some(ip("10.244.0.4")), "old was dropped");
    }
}
