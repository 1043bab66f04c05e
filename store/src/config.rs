//! Store configuration, the initial-cluster flag, and the data directory's identity
//! file that makes a restart rejoin and a wrong data directory refuse to start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::types::NodeId;

/// Whether this master bootstraps a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    #[default]
    New,
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(StoreError::Config(format!("--initial-cluster-state must be new or existing, not {other:?}"))),
        }
    }
}

/// Everything a master's store needs to start.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// host:port this master listens on for other masters (and advertises).
    pub peer_addr: String,
    /// host:port of this master's etcd v3 endpoint (advertised in the member list).
    pub client_addr: String,
    /// name → peer host:port of the masters that bootstrap the cluster.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    pub cluster_token: String,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot (a follower further behind gets the snapshot).
    pub snapshot_keep_logs: u64,
    /// Group commit: most commands and bytes in one Raft entry, entries in flight.
    pub max_batch_commands: usize,
    pub max_batch_bytes: usize,
    pub max_inflight_batches: usize,
    /// How long a write or linearizable read may wait (for a leader, for commit).
    pub request_timeout: Duration,
    /// Idle interval after which a watcher that asked for progress gets one.
    pub progress_interval: Duration,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub min_lease_ttl: i64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            name: "default".into(),
            data_dir: PathBuf::from("keelson-data"),
            peer_addr: "127.0.0.1:2380".into(),
            client_addr: "127.0.0.1:2379".into(),
            initial_cluster: Vec::new(),
            initial_cluster_state: ClusterState::New,
            cluster_token: "keelson".into(),
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_after_entries: 20_000,
            snapshot_keep_logs: 1000,
            max_batch_commands: 1024,
            max_batch_bytes: 4 << 20,
            max_inflight_batches: 4,
            request_timeout: Duration::from_secs(7),
            progress_interval: Duration::from_secs(10),
            max_request_bytes: 3 << 19, // 1.5 MiB, etcd's default
            max_txn_ops: 128,
            min_lease_ttl: 2,
        }
    }
}

/// Parse `m1=host:port,m2=host:port`; `http://` prefixes are accepted and dropped.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, addr) = part
            .split_once('=')
            .ok_or_else(|| StoreError::Config(format!("--initial-cluster entry {part:?} is not name=host:port")))?;
        let addr = strip_scheme(addr);
        if name.is_empty() || addr.is_empty() || !addr.contains(':') {
            return Err(StoreError::Config(format!("--initial-cluster entry {part:?} is not name=host:port")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(StoreError::Config(format!("--initial-cluster names {name:?} twice")));
        }
        out.push((name.to_string(), addr.to_string()));
    }
    Ok(out)
}

/// `http://h:p` or `https://h:p` → `h:p`.
pub fn strip_scheme(addr: &str) -> &str {
    addr.trim().trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

/// The initial cluster in a canonical form (sorted by name).
pub fn canonical_cluster(members: &[(String, String)]) -> String {
    let mut m = members.to_vec();
    m.sort();
    m.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(",")
}

/// FNV-1a, 64 bit: stable ids from names (never 0).
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

impl StoreConfig {
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(StoreError::Config("--name must not be empty".into()));
        }
        if self.initial_cluster.is_empty() {
            return Err(StoreError::Config("--initial-cluster is required (e.g. m1=127.0.0.1:2380)".into()));
        }
        match self.initial_cluster.iter().find(|(n, _)| n == &self.name) {
            None => {
                return Err(StoreError::Config(format!(
                    "--initial-cluster does not list this master's --name {:?}",
                    self.name
                )))
            }
            Some((_, addr)) if addr != &self.peer_addr => {
                return Err(StoreError::Config(format!(
                    "--initial-cluster gives {} the peer address {addr}, but --peer-addr is {}",
                    self.name, self.peer_addr
                )))
            }
            _ => {}
        }
        if self.election_timeout_min <= self.heartbeat || self.election_timeout_max <= self.election_timeout_min {
            return Err(StoreError::Config("need heartbeat < election-timeout-min < election-timeout-max".into()));
        }
        Ok(())
    }

    /// Cluster id of a cluster bootstrapped from this configuration.
    pub fn bootstrap_cluster_id(&self) -> u64 {
        fnv64(&[&self.cluster_token, &canonical_cluster(&self.initial_cluster)])
    }

    /// Node id of an initial member.
    pub fn initial_member_id(&self, name: &str) -> NodeId {
        fnv64(&[&self.cluster_token, &canonical_cluster(&self.initial_cluster), name])
    }
}

/// Who this data directory belongs to (`<data>/member.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: NodeId,
    pub name: String,
    /// `--initial-cluster` as given when the directory was created (canonical form).
    pub initial_cluster: String,
    /// True for a master that joined an existing cluster (it never bootstraps).
    pub joined: bool,
}

const IDENTITY_FILE: &str = "member.json";

impl Identity {
    pub fn load(data_dir: &Path) -> Result<Option<Identity>> {
        let path = data_dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Config(format!("{} is not a keelson identity file: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let body = serde_json::to_vec_pretty(self).map_err(StoreError::storage)?;
        std::fs::write(&tmp, body)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, data_dir.join(IDENTITY_FILE))?;
        Ok(())
    }

    /// Refuse a data directory that belongs to another member or another cluster.
    pub fn check(&self, cfg: &StoreConfig) -> Result<()> {
        if self.name != cfg.name {
            return Err(StoreError::Config(format!(
                "data dir {} belongs to member {:?}, not {:?}; refusing to start",
                cfg.data_dir.display(),
                self.name,
                cfg.name
            )));
        }
        let flags = canonical_cluster(&cfg.initial_cluster);
        if self.initial_cluster != flags {
            return Err(StoreError::Config(format!(
                "data dir {} was created for --initial-cluster {} but this start gives {}; \
                 refusing to start (a data dir from another cluster, or a changed flag)",
                cfg.data_dir.display(),
                self.initial_cluster,
                flags
            )));
        }
        if !self.joined && self.cluster_id != cfg.bootstrap_cluster_id() {
            return Err(StoreError::Config(format!(
                "data dir {} belongs to cluster {:016x}, the flags describe cluster {:016x}; refusing to start",
                cfg.data_dir.display(),
                self.cluster_id,
                cfg.bootstrap_cluster_id()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_cluster() {
        let m = parse_initial_cluster("m1=127.0.0.1:2380, m2=http://127.0.0.2:2380").unwrap();
        assert_eq!(m, vec![("m1".into(), "127.0.0.1:2380".into()), ("m2".into(), "127.0.0.2:2380".into())]);
        assert!(parse_initial_cluster("m1").is_err());
        assert!(parse_initial_cluster("m1=a:1,m1=b:2").is_err());
        assert_eq!(canonical_cluster(&m), canonical_cluster(&[m[1].clone(), m[0].clone()]));
    }

    #[test]
    fn identity_refuses_other_cluster() {
        let cfg = StoreConfig {
            name: "m1".into(),
            peer_addr: "127.0.0.1:1".into(),
            initial_cluster: parse_initial_cluster("m1=127.0.0.1:1,m2=127.0.0.1:2").unwrap(),
            ..Default::default()
        };
        let id = Identity {
            cluster_id: cfg.bootstrap_cluster_id(),
            member_id: cfg.initial_member_id("m1"),
            name: "m1".into(),
            initial_cluster: canonical_cluster(&cfg.initial_cluster),
            joined: false,
        };
        id.check(&cfg).unwrap();
        let mut other = cfg.clone();
        other.initial_cluster = parse_initial_cluster("m1=127.0.0.1:1,m3=127.0.0.1:3").unwrap();
        assert!(matches!(id.check(&other), Err(StoreError::Config(_))));
        let mut renamed = cfg.clone();
        renamed.name = "m2".into();
        assert!(matches!(id.check(&renamed), Err(StoreError::Config(_))));
    }
}
