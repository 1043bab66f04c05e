//! Faults: each a small module, each reversible, each logged with timestamps.

pub mod clock;
pub mod disk;
pub mod failpoint;
pub mod fsync;
pub mod kill;
pub mod membership;
pub mod partition;
pub mod pause;
pub mod proxy;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::history::Stamp;

/// A kind of fault `keelson chaos run --faults` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a random master (sometimes the leader) and restart it after a delay.
    Kill,
    /// SIGKILL the leader and restart it after a delay.
    KillLeader,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    Pause,
    /// Cut the leader off from every other master (both directions).
    PartitionLeader,
    /// Split the masters into a minority and a majority.
    PartitionHalves,
    /// The leader can send to the others but receives nothing from them.
    PartitionOneWay,
    /// Each master hears only its ring neighbours (5 masters).
    PartitionRing,
    /// Remove a master, wipe it, add it back as a new member.
    Membership,
    /// Restart a master with its wall clock off by 5–60 s, then with the true clock.
    Clock,
    /// Route one master's peer (Raft) connections through a TCP proxy that delays them.
    Delay,
    /// Route one master's peer (Raft) connections through a TCP proxy that loses data.
    Drop,
    /// Fill one master's data directory (a small tmpfs) until writes fail with ENOSPC.
    DiskFull,
    /// Restart one master under libfiu (`fiu-run`) with fsync/fdatasync failing.
    Fsync,
    /// Restart one master with a named store failpoint (`fail` crate) armed.
    Failpoint,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Pause,
        FaultKind::PartitionLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionRing,
        FaultKind::Membership,
        FaultKind::Clock,
        FaultKind::Delay,
        FaultKind::Drop,
        FaultKind::DiskFull,
        FaultKind::Fsync,
        FaultKind::Failpoint,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Pause => "pause",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionRing => "partition-ring",
            FaultKind::Membership => "membership",
            FaultKind::Clock => "clock",
            FaultKind::Delay => "delay",
            FaultKind::Drop => "drop",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Fsync => "fsync",
            FaultKind::Failpoint => "failpoint",
        }
    }

    pub fn needs_netns(&self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader
                | FaultKind::PartitionHalves
                | FaultKind::PartitionOneWay
                | FaultKind::PartitionRing
                | FaultKind::Delay
                | FaultKind::Drop
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault {0:?}; known: kill, kill-leader, pause, partition (all kinds), partition-leader, partition-halves, partition-one-way, partition-ring, membership, clock, delay, drop, disk-full, fsync, failpoint")]
    Unknown(String),
    #[error("bad weight in {0:?}: want NAME or NAME=WEIGHT with WEIGHT 1..=100")]
    Weight(String),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("partition fault needs the masters in network namespaces (run as root with --network netns)")]
    NoNetns,
    #[error("nft in {netns}: {message}")]
    Nft { netns: String, message: String },
    #[error("no leader: {0}")]
    NoLeader(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("membership change: {0}")]
    Membership(String),
}

/// A weighted choice of faults, from `kill,kill-leader=3,pause,partition`.
#[derive(Clone, Debug, Serialize)]
pub struct FaultMix(pub Vec<(FaultKind, u32)>);

impl FromStr for FaultMix {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<FaultMix, FaultError> {
        let mut mix = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: u32 = w.parse().map_err(|_| FaultError::Weight(part.to_string()))?;
                    if !(1..=100).contains(&w) {
                        return Err(FaultError::Weight(part.to_string()));
                    }
                    (n, w)
                }
                None => (part, 1),
            };
            if name == "partition" {
                for k in [FaultKind::PartitionLeader, FaultKind::PartitionHalves, FaultKind::PartitionOneWay] {
                    mix.push((k, weight));
                }
                continue;
            }
            let kind = FaultKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| FaultError::Unknown(name.to_string()))?;
            mix.push((kind, weight));
        }
        if mix.is_empty() {
            return Err(FaultError::Unknown(s.to_string()));
        }
        Ok(FaultMix(mix))
    }
}

impl FaultMix {
    pub fn pick(&self, rng: &mut impl rand::Rng) -> FaultKind {
        let total: u32 = self.0.iter().map(|(_, w)| *w).sum();
        let mut roll = rng.gen_range(0..total.max(1));
        for (k, w) in &self.0 {
            if roll < *w {
                return *k;
            }
            roll -= w;
        }
        self.0[0].0
    }
}

/// One injected fault, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Master indices acted on.
    pub targets: Vec<usize>,
    /// The leader when the fault began.
    pub leader_before: Option<usize>,
    pub leader_was_target: bool,
    pub injected: Stamp,
    pub healed: Stamp,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixes() {
        let m: FaultMix = "kill,kill-leader=3,pause".parse().unwrap();
        assert_eq!(m.0, vec![(FaultKind::Kill, 1), (FaultKind::KillLeader, 3), (FaultKind::Pause, 1)]);
        let m: FaultMix = "partition".parse().unwrap();
        assert_eq!(m.0.len(), 3);
        assert!("explode".parse::<FaultMix>().is_err());
        assert!("kill=0".parse::<FaultMix>().is_err());
        assert!("kill=x".parse::<FaultMix>().is_err());
        assert!("".parse::<FaultMix>().is_err());
    }

    #[test]
    fn weighted_pick_is_reproducible() {
        use rand::SeedableRng;
        let m: FaultMix = "kill,pause=3".parse().unwrap();
        let a: Vec<_> = {
            let mut r = rand::rngs::StdRng::seed_from_u64(7);
            (0..50).map(|_| m.pick(&mut r)).collect()
        };
        let b: Vec<_> = {
            let mut r = rand::rngs::StdRng::seed_from_u64(7);
            (0..50).map(|_| m.pick(&mut r)).collect()
        };
        assert_eq!(a, b);
        assert!(a.contains(&FaultKind::Kill) && a.contains(&FaultKind::Pause));
    }
}
