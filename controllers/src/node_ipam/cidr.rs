//! The pool of node subnets: a cluster CIDR cut into equal `/mask` subnets, handed out
//! round-robin (the range allocator's `cidrset` upstream, IPv4). Pure.

use std::{collections::BTreeSet, net::Ipv4Addr, ops::Range};

/// Upstream refuses to cut a range into more than 2^16 subnets.
const MAX_SUBNET_BITS: u8 = 16;

/// An IPv4 CIDR: its base address (host bits cleared) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n`; the host bits are cleared.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?} is not an IPv4 CIDR"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{s:?} has a bad prefix length"))?;
        Ok(Cidr { base: u32::from(ip) & mask(prefix), prefix })
    }

    /// The number of addresses, as a half-open range of `u32` values (as u64 to hold 2^32).
    fn span(&self) -> Range<u64> {
        let start = u64::from(self.base);
        start..start + (1u64 << (32 - self.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The subnets of a cluster CIDR.
#[derive(Debug, Clone, PartialEq)]
pub struct CidrSet {
    cluster: Cidr,
    node_mask: u8,
    /// Where the next search starts (round-robin, so a released subnet is not reused at once).
    next: u64,
}

impl CidrSet {
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<CidrSet, String> {
        let cluster = Cidr::parse(cluster_cidr)?;
        if node_mask < cluster.prefix || node_mask > 32 {
            return Err(format!("node CIDR mask /{node_mask} does not fit in the cluster CIDR {cluster}"));
        }
        if node_mask - cluster.prefix > MAX_SUBNET_BITS {
            return Err(format!(
                "cluster CIDR {cluster} with node mask /{node_mask} makes more than 2^{MAX_SUBNET_BITS} subnets"
            ));
        }
        Ok(CidrSet { cluster, node_mask, next: 0 })
    }

    /// How many subnets there are (never none: a cluster CIDR holds at least one).
    pub fn size(&self) -> u64 {
        1u64 << (self.node_mask - self.cluster.prefix)
    }

    /// The `i`th subnet.
    pub fn subnet(&self, i: u64) -> Cidr {
        let size = 1u64 << (32 - self.node_mask);
        Cidr { base: (u64::from(self.cluster.base) + i * size) as u32, prefix: self.node_mask }
    }

    /// The subnets a CIDR overlaps (none if it is outside the cluster CIDR or unparseable).
    pub fn overlapping(&self, cidr: &str) -> Range<u64> {
        let Ok(c) = Cidr::parse(cidr) else { return 0..0 };
        let (ours, theirs) = (self.cluster.span(), c.span());
        let (start, end) = (ours.start.max(theirs.start), ours.end.min(theirs.end));
        if start >= end {
            return 0..0;
        }
        let size = 1u64 << (32 - self.node_mask);
        let first = (start - ours.start) / size;
        let last = (end - 1 - ours.start) / size;
        first..last + 1
    }

    /// The first subnet not in `used`, searching on from the last one handed out.
    pub fn allocate(&mut self, used: &BTreeSet<u64>) -> Option<u64> {
        let n = self.size();
        (0..n).map(|k| (self.next + k) % n).find(|i| !used.contains(i)).inspect(|i| self.next = (i + 1) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(Cidr::parse("10.244.1.7/16").unwrap().to_string(), "10.244.0.0/16");
        assert!(Cidr::parse("10.244.0.0").is_err());
        assert!(Cidr::parse("10.244.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/64").is_err());
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn rejects_bad_masks() {
        assert!(CidrSet::new("10.244.0.0/16", 8).is_err());
        assert!(CidrSet::new("10.0.0.0/8", 30).is_err());
        assert_eq!(CidrSet::new("10.244.0.0/16", 24).unwrap().size(), 256);
        assert_eq!(CidrSet::new("10.244.0.0/16", 16).unwrap().size(), 1);
    }

    #[test]
    fn allocates_round_robin_skipping_used() {
        let mut s = CidrSet::new("10.244.0.0/16", 24).unwrap();
        let mut used = BTreeSet::new();
        let a = s.allocate(&used).unwrap();
        assert_eq!(s.subnet(a).to_string(), "10.244.0.0/24");
        used.insert(a);
        used.insert(1);
        let b = s.allocate(&used).unwrap();
        assert_eq!(s.subnet(b).to_string(), "10.244.2.0/24");
        // Releasing the first does not hand it out again before the others.
        used.remove(&a);
        used.insert(b);
        assert_eq!(s.allocate(&used), Some(3));
    }

    #[test]
    fn full_range_allocates_nothing() {
        let mut s = CidrSet::new("10.0.0.0/30", 31).unwrap();
        let used: BTreeSet<u64> = [0, 1].into();
        assert_eq!(s.allocate(&used), None);
        let used: BTreeSet<u64> = [0].into();
        let i = s.allocate(&used).unwrap();
        assert_eq!(s.subnet(i).to_string(), "10.0.0.2/31");
    }

    #[test]
    fn overlapping_subnets() {
        let s = CidrSet::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(s.overlapping("10.244.5.0/24"), 5..6);
        assert_eq!(s.overlapping("10.244.4.0/23"), 4..6);
        assert_eq!(s.overlapping("10.244.7.128/25"), 7..8);
        assert_eq!(s.overlapping("10.0.0.0/8"), 0..256);
        assert_eq!(s.overlapping("192.168.0.0/24"), 0..0);
        assert_eq!(s.overlapping("nonsense"), 0..0);
    }
}
