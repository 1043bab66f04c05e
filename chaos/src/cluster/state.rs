//! `cluster.json`: what `keelson cluster status|down` (and [`super::Cluster::load`]) need
//! to find a cluster again — its spec, where each master lives and which processes run it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::Net;
use super::nodes::NodeState;
use super::ClusterError;

/// The file name under the cluster directory.
pub const STATE_FILE: &str = "cluster.json";
/// Bumped when the format changes incompatibly.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The `keelson` binary the masters run.
    pub binary: PathBuf,
    pub net: Net,
    pub election_timeout_ms: Option<u64>,
    /// Extra `keelson server` arguments, for every master.
    pub server_args: Vec<String>,
    /// KEELSON_LOG of the masters (and the agent).
    pub log_filter: String,
    pub masters: Vec<MasterState>,
    /// The bridge (`netns` mode): name and address.
    pub bridge: Option<BridgeState>,
    /// The `keelson agent --simulate N` process, if any.
    pub agent: Option<AgentState>,
    /// Real nodes (`--agents N`), each a `keelson agent` in its own namespace.
    #[serde(default)]
    pub nodes: Vec<NodeState>,
    /// Extra `keelson agent` arguments, for every real node.
    #[serde(default)]
    pub agent_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterState {
    pub name: String,
    pub ip: Ipv4Addr,
    pub peer_port: u16,
    pub etcd_port: u16,
    pub api_port: u16,
    /// The server's PID while it runs (`None` once it was stopped by us).
    pub pid: Option<u32>,
    /// Its network namespace (`netns` mode).
    pub netns: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeState {
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// How many simulated nodes.
    pub simulate: usize,
    pub pid: Option<u32>,
    pub log: PathBuf,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    pub fn read(dir: &Path) -> Result<State, ClusterError> {
        let path = State::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClusterError::NotFound(dir.to_path_buf()));
            }
            Err(e) => return Err(ClusterError::io(format!("cannot read {}", path.display()), e)),
        };
        let state: State = serde_json::from_str(&text)
            .map_err(|e| ClusterError::State(format!("{} does not parse: {e}", path.display())))?;
        if state.version != STATE_VERSION {
            return Err(ClusterError::State(format!(
                "{} has format version {}, this keelson reads {STATE_VERSION}",
                path.display(),
                state.version
            )));
        }
        Ok(state)
    }

    /// Write atomically (a temporary file renamed over the old one).
    pub fn write(&self, dir: &Path) -> Result<(), ClusterError> {
        let path = State::path(dir);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| ClusterError::State(e.to_string()))?;
        std::fs::write(&tmp, text + "\n")
            .map_err(|e| ClusterError::io(format!("cannot write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ClusterError::io(format!("cannot write {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let net = Net::Netns { subnet: Ipv4Addr::new(10, 150, 7, 0), prefix: "kct1".into() };
        let state = State {
            version: STATE_VERSION,
            binary: "/usr/bin/keelson".into(),
            net: net.clone(),
            election_timeout_ms: Some(500),
            server_args: vec!["--snapshot-count".into(), "100".into()],
            log_filter: "info".into(),
            masters: (0..3)
                .map(|i| MasterState {
                    name: format!("m{}", i + 1),
                    ip: net.ip(i),
                    peer_port: 2380,
                    etcd_port: 2379,
                    api_port: 6443,
                    pid: Some(100 + i as u32),
                    netns: net.netns(i),
                    data_dir: d.path().join(format!("m{}", i + 1)),
                    log: d.path().join(format!("m{}.log", i + 1)),
                })
                .collect(),
            bridge: Some(BridgeState { name: "kct1-br".into(), ip: Ipv4Addr::new(10, 150, 7, 1) }),
            agent: Some(AgentState { simulate: 2, pid: None, log: d.path().join("agent.log") }),
            nodes: super::super::nodes::plan(&net, d.path(), 2).unwrap(),
            agent_args: vec!["--insecure-registry".into(), "10.150.7.1:5000".into()],
        };
        state.write(d.path()).unwrap();
        let back = State::read(d.path()).unwrap();
        assert_eq!(back, state);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(json["net"]["mode"], "netns");
        assert_eq!(json["masters"][1]["ip"], "10.150.7.12");
        assert_eq!(json["masters"][2]["netns"], "kct1-m3");
        assert_eq!(json["nodes"][1]["ip"], "10.150.7.102");

        let lo = State { net: Net::Loopback { subnet: Ipv4Addr::new(127, 0, 3, 0) }, bridge: None, ..state };
        lo.write(d.path()).unwrap();
        assert_eq!(State::read(d.path()).unwrap(), lo);

        assert!(matches!(State::read(&d.path().join("nope")), Err(ClusterError::NotFound(_))));
        std::fs::write(d.path().join(STATE_FILE), "{").unwrap();
        assert!(matches!(State::read(d.path()), Err(ClusterError::State(_))));
    }
}
