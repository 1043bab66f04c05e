//! What the simulator knows about each of its nodes (uid, podCIDR, conditions, whether its
//! heartbeat is stopped, whether it exists), kept current by one watch on all Nodes.

use std::pin::pin;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::node_index;
use super::heartbeat::{heartbeat_stopped, Wakers};
use super::node_object::is_ready;
use super::retry::lock;
use super::SimConfig;

/// One node as last seen.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub uid: Option<String>,
    /// The Node exists (a node deleted by someone else is not re-created until restart,
    /// like the kubelet; its heartbeats pause until it reappears).
    pub present: bool,
    /// `sim.keelson.dev/heartbeat: stopped`.
    pub stopped: bool,
    pub pod_cidr: Option<String>,
    pub conditions: Vec<NodeCondition>,
    /// The Lease's owner reference is known to point at `uid`.
    pub lease_owned: bool,
}

/// Heartbeats a change calls for now rather than at the node's next turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    pub lease: bool,
    pub status: bool,
}

impl NodeState {
    /// Take in the Node as it is now.
    pub fn observe(&mut self, node: &Node) -> Wake {
        let stopped = heartbeat_stopped(&node.metadata);
        let resumed = self.stopped && !stopped;
        let appeared = !self.present;
        if node.metadata.uid != self.uid {
            self.lease_owned = false;
        }
        self.uid = node.metadata.uid.clone();
        self.present = true;
        self.stopped = stopped;
        self.pod_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        self.conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        if stopped {
            return Wake::default();
        }
        // Like the kubelet, report Ready at once when the control plane thinks otherwise.
        Wake { lease: resumed || appeared, status: resumed || appeared || !is_ready(&self.conditions) }
    }

    /// The Node was deleted.
    pub fn gone(&mut self) {
        self.present = false;
        self.lease_owned = false;
    }

    /// Its heartbeats run.
    pub fn beating(&self) -> bool {
        self.present && !self.stopped
    }
}

/// Every simulated node's state, by index.
pub struct NodeTable {
    prefix: String,
    states: Vec<Mutex<NodeState>>,
}

impl NodeTable {
    pub fn new(cfg: &SimConfig) -> NodeTable {
        NodeTable { prefix: cfg.name_prefix.clone(), states: (0..cfg.count).map(|_| Mutex::default()).collect() }
    }

    pub fn count(&self) -> usize {
        self.states.len()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        node_index(&self.prefix, self.states.len(), name)
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// Run `f` on node `i`'s state (`None` if there is no such node).
    pub fn with<R>(&self, i: usize, f: impl FnOnce(&mut NodeState) -> R) -> Option<R> {
        self.states.get(i).map(|s| f(&mut lock(s)))
    }

    pub fn observe(&self, i: usize, node: &Node) -> Wake {
        self.with(i, |s| s.observe(node)).unwrap_or_default()
    }

    pub fn pod_cidr(&self, i: usize) -> Option<String> {
        self.with(i, |s| s.pod_cidr.clone()).flatten()
    }
}

/// Watch all Nodes, keep `table` current and wake heartbeats that are due now; `synced`
/// turns true after the first full list.
pub async fn watch(
    client: kube::Client,
    table: Arc<NodeTable>,
    wakers: Arc<Wakers>,
    synced: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let events = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let mut events = pin!(events.take_until(stop.cancelled()));
    let mut listed: Option<Vec<bool>> = None;
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listed = Some(vec![false; table.count()]),
            watcher::Event::InitApply(n) | watcher::Event::Apply(n) => {
                let Some(i) = n.metadata.name.as_deref().and_then(|name| table.index(name)) else { continue };
                if let Some(seen) = listed.as_mut().and_then(|l| l.get_mut(i)) {
                    *seen = true;
                }
                let wake = table.observe(i, &n);
                wakers.wake(i, wake);
            }
            watcher::Event::Delete(n) => {
                if let Some(i) = n.metadata.name.as_deref().and_then(|name| table.index(name)) {
                    tracing::info!(node = %table.name(i), "simulated node deleted; its heartbeats pause");
                    table.with(i, NodeState::gone);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listed.take() {
                    for (i, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
                        table.with(i, NodeState::gone);
                    }
                }
                synced.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn node(uid: &str, annotation: Option<&str>, ready: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("sim-0".into()),
                uid: Some(uid.into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([("sim.keelson.dev/heartbeat".to_string(), a.to_string())])),
                ..Default::default()
            },
            spec: Some(NodeSpec { pod_cidr: Some("10.244.7.0/24".into()), ..Default::default() }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn observing_a_node_wakes_the_heartbeats_it_needs() {
        let mut s = NodeState::default();
        assert_eq!(s.observe(&node("u1", None, "True")), Wake { lease: true, status: true }, "appeared");
        assert_eq!(s.pod_cidr.as_deref(), Some("10.244.7.0/24"));
        assert_eq!(s.observe(&node("u1", None, "True")), Wake::default(), "nothing new");
        assert_eq!(s.observe(&node("u1", None, "Unknown")), Wake { lease: false, status: true }, "marked not ready");
        assert_eq!(s.observe(&node("u1", Some("stopped"), "Unknown")), Wake::default(), "stopped: silent");
        assert!(!s.beating());
        assert_eq!(s.observe(&node("u1", None, "Unknown")), Wake { lease: true, status: true }, "resumed");
        s.lease_owned = true;
        s.observe(&node("u2", None, "True"));
        assert!(!s.lease_owned, "a new Node (uid) needs its Lease's owner set again");
        s.gone();
        assert!(!s.beating());
        assert_eq!(s.observe(&node("u2", None, "True")), Wake { lease: true, status: true }, "back again");
    }

    #[test]
    fn the_table_knows_its_nodes_by_name() {
        let t = NodeTable::new(&SimConfig { count: 3, ..Default::default() });
        assert_eq!(t.index("sim-2"), Some(2));
        assert_eq!(t.index("sim-3"), None);
        assert_eq!(t.name(1), "sim-1");
        t.observe(1, &node("u", None, "True"));
        assert_eq!(t.pod_cidr(1).as_deref(), Some("10.244.7.0/24"));
        assert_eq!(t.pod_cidr(0), None);
        assert_eq!(t.pod_cidr(9), None);
        assert_eq!(t.with(1, |s| s.beating()), Some(true));
        assert_eq!(t.with(7, |s| s.beating()), None);
    }
}
