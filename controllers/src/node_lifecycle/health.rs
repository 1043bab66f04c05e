//! Is a node's kubelet alive? Upstream's `tryUpdateNodeHealth`: the controller notes, on its
//! own clock, when it last saw the node's Ready heartbeat or its Lease renewed (the "probe
//! time"); a node not heard from for the grace period gets every condition set to Unknown.
//! Pure.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Node, NodeCondition},
    apimachinery::pkg::apis::meta::v1::Time,
};

/// The conditions the controller sets to Unknown when the kubelet goes quiet
/// (`NetworkUnavailable` is not the kubelet's to report).
pub const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// What the controller last saw of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// When (controller clock) the node last showed a sign of life.
    pub probe: Timestamp,
    /// Whether the node had a Ready condition, and its heartbeat then.
    pub had_ready: bool,
    pub ready_heartbeat: Option<Timestamp>,
    /// The Lease's renew time then.
    pub lease_renew: Option<Timestamp>,
}

/// A node's condition of type `t`.
pub fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

/// The status of the node's Ready condition (`None`: the kubelet never posted one).
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// Update `prev` with the node's current state and its Lease's renew time.
pub fn observe(prev: Option<&Health>, node: &Node, lease_renew: Option<Timestamp>, now: Timestamp) -> Health {
    let ready = condition(node, "Ready");
    let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
    let mut h = match prev {
        // Never posted a status: count from the node's creation.
        None if ready.is_none() => Health {
            probe: node.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
            had_ready: false,
            ready_heartbeat: None,
            lease_renew: None,
        },
        // First sight of this node (or of its first status): count from now.
        None => Health { probe: now, had_ready: true, ready_heartbeat: heartbeat, lease_renew: None },
        Some(p) => {
            let mut h = p.clone();
            let seen_change = match (p.had_ready, ready.is_some()) {
                (false, true) | (true, false) => true,
                (true, true) => p.ready_heartbeat != heartbeat,
                (false, false) => false,
            };
            if seen_change {
                h.probe = now;
            }
            h.had_ready = ready.is_some();
            h.ready_heartbeat = heartbeat;
            h
        }
    };
    if let Some(renew) = lease_renew {
        if h.lease_renew.is_none_or(|old| old < renew) {
            h.lease_renew = Some(renew);
            h.probe = now;
        }
    }
    h
}

impl Health {
    /// Not heard from for longer than `grace`.
    pub fn is_stale(&self, grace: Duration, now: Timestamp) -> bool {
        let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
        self.probe.checked_add(grace).is_ok_and(|deadline| now > deadline)
    }

    /// Record a status the controller itself wrote (it is no sign of life).
    pub fn wrote(&mut self, node: &Node) {
        let ready = condition(node, "Ready");
        self.had_ready = ready.is_some();
        self.ready_heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
    }
}

/// The node's conditions with the kubelet's set to Unknown (`NodeStatusUnknown`, or
/// `NodeStatusNeverUpdated` for one never posted); `None` if they already are.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut changed = false;
    for t in KUBELET_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == t) {
            None => {
                conds.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conds)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    pub fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    pub fn node(ready: Option<(&str, i64)>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.creation_timestamp = Some(Time(t(0)));
        if let Some((status, hb)) = ready {
            n.status = Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_heartbeat_time: Some(Time(t(hb))),
                        last_transition_time: Some(Time(t(0))),
                        reason: Some("KubeletReady".into()),
                        message: None,
                    },
                    NodeCondition { type_: "MemoryPressure".into(), status: "False".into(), ..Default::default() },
                ]),
                ..Default::default()
            });
        }
        n
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_node_gets_the_grace_period_from_first_sight() {
        let n = node(Some(("True", -1000)));
        let h = observe(None, &n, None, t(100));
        assert_eq!(h.probe, t(100), "an old heartbeat at controller start is not held against the node");
        assert!(!h.is_stale(GRACE, t(140)));
        let h = observe(Some(&h), &n, None, t(141));
        assert!(h.is_stale(GRACE, t(141)));
    }

    #[test]
    fn heartbeats_and_lease_renewals_keep_it_alive() {
        let h = observe(None, &node(Some(("True", 0))), None, t(0));
        let h = observe(Some(&h), &node(Some(("True", 30))), None, t(35));
        assert_eq!(h.probe, t(35));
        // Only the lease moves (kubelets post status rarely once leases exist).
        let h = observe(Some(&h), &node(Some(("True", 30))), Some(t(60)), t(61));
        assert_eq!(h.probe, t(61));
        let h = observe(Some(&h), &node(Some(("True", 30))), Some(t(60)), t(100));
        assert_eq!(h.probe, t(61), "an unchanged lease is no sign of life");
        assert!(!h.is_stale(GRACE, t(100)));
        assert!(h.is_stale(GRACE, t(102)));
    }

    #[test]
    fn never_posted_counts_from_creation() {
        let h = observe(None, &node(None), None, t(100));
        assert_eq!(h.probe, t(0));
        assert!(h.is_stale(GRACE, t(100)));
    }

    #[test]
    fn conditions_go_unknown_once() {
        let n = node(Some(("True", 0)));
        let conds = unknown_conditions(&n, t(50)).unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(ready.last_heartbeat_time, Some(Time(t(0))), "the heartbeat is the kubelet's");
        assert_eq!(ready.last_transition_time, Some(Time(t(50))));
        let disk = conds.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conds.len(), 4);
        let mut updated = n.clone();
        updated.status.as_mut().unwrap().conditions = Some(conds);
        assert_eq!(unknown_conditions(&updated, t(60)), None);
    }

    #[test]
    fn our_own_write_is_no_sign_of_life() {
        let mut h = observe(None, &node(None), None, t(10));
        let mut n = node(None);
        n.status = Some(NodeStatus { conditions: unknown_conditions(&n, t(50)), ..Default::default() });
        h.wrote(&n);
        let again = observe(Some(&h), &n, None, t(55));
        assert_eq!(again.probe, t(0));
    }
}
