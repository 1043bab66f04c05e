//! Network partitions between masters: an nftables table inside each master's network
//! namespace drops packets from the masters it must not hear. Clients (on the host) are
//! never cut off, so an isolated leader still answers them — which is the point.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use super::FaultError;
use crate::cluster::Cluster;

/// The table each master's namespace gets while partitioned.
pub const TABLE: &str = "keelson_chaos";

/// Which senders each master drops (index = receiver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub drop_from: Vec<BTreeSet<usize>>,
    pub description: String,
}

/// `group` and the rest cannot hear each other.
pub fn split(group: &[usize], n: usize) -> Partition {
    let inside: BTreeSet<usize> = group.iter().copied().filter(|&i| i < n).collect();
    let drop_from =
        (0..n).map(|r| (0..n).filter(|&s| s != r && inside.contains(&s) != inside.contains(&r)).collect()).collect();
    let rest: Vec<usize> = (0..n).filter(|i| !inside.contains(i)).collect();
    Partition {
        drop_from,
        description: format!("{} | {}", names(&inside.iter().copied().collect::<Vec<_>>()), names(&rest)),
    }
}

/// `target` hears no one; everyone still hears it.
pub fn deaf(target: usize, n: usize) -> Partition {
    let drop_from =
        (0..n).map(|r| if r == target { (0..n).filter(|&s| s != r).collect() } else { BTreeSet::new() }).collect();
    Partition { drop_from, description: format!("m{} hears no one (one way)", target + 1) }
}

/// Each master hears only its two ring neighbours.
pub fn ring(n: usize) -> Partition {
    let drop_from =
        (0..n).map(|r| (0..n).filter(|&s| s != r && s != (r + 1) % n && s != (r + n - 1) % n).collect()).collect();
    Partition { drop_from, description: format!("ring of {n}: each master hears only its neighbours") }
}

fn names(idx: &[usize]) -> String {
    idx.iter().map(|i| format!("m{}", i + 1)).collect::<Vec<_>>().join(",")
}

/// The nft script for one receiver: replaces the table atomically.
pub fn script(senders: &[String]) -> String {
    let mut s = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !senders.is_empty() {
        s.push_str(&format!(
            "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
            senders.join(", ")
        ));
    }
    s
}

/// Run `nft -f -` with `script` inside namespace `netns` (the partition and proxy faults).
pub(crate) fn nft(netns: &str, script: &str) -> Result<(), FaultError> {
    let err = |message: String| FaultError::Nft { netns: netns.to_string(), message };
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", crate::cluster::netns::netns_path(netns)))
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run nsenter/nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

pub fn apply(cluster: &Cluster, p: &Partition) -> Result<(), FaultError> {
    for (r, senders) in p.drop_from.iter().enumerate() {
        let ns = cluster.netns(r).ok_or(FaultError::NoNetns)?;
        let ips: Vec<String> = senders.iter().map(|&s| cluster.ip(s).to_string()).collect();
        nft(ns, &script(&ips))?;
    }
    tracing::info!(partition = %p.description, "fault: partition");
    Ok(())
}

/// Removes the table from every master's namespace.
pub fn heal(cluster: &Cluster) -> Result<(), FaultError> {
    for r in 0..cluster.len() {
        let ns = cluster.netns(r).ok_or(FaultError::NoNetns)?;
        nft(ns, &script(&[]))?;
    }
    tracing::info!("fault healed: partition removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn split_is_symmetric() {
        let p = split(&[0], 3);
        assert_eq!(p.drop_from, vec![set(&[1, 2]), set(&[0]), set(&[0])]);
        let p = split(&[0, 1], 5);
        assert_eq!(p.drop_from[0], set(&[2, 3, 4]));
        assert_eq!(p.drop_from[4], set(&[0, 1]));
        assert_eq!(p.description, "m1,m2 | m3,m4,m5");
    }

    #[test]
    fn deaf_and_ring() {
        assert_eq!(deaf(1, 3).drop_from, vec![set(&[]), set(&[0, 2]), set(&[])]);
        let r = ring(5);
        assert_eq!(r.drop_from[0], set(&[2, 3]));
        assert_eq!(r.drop_from[2], set(&[0, 4]));
    }

    #[test]
    fn script_replaces_the_table() {
        let s = script(&["10.0.0.11".into(), "10.0.0.12".into()]);
        assert!(s.starts_with("add table inet keelson_chaos\ndelete table inet keelson_chaos\n"));
        assert!(s.contains("ip saddr { 10.0.0.11, 10.0.0.12 } drop"));
        assert_eq!(script(&[]), "add table inet keelson_chaos\ndelete table inet keelson_chaos\n");
    }
}
