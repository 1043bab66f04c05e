//! Node IPAM (the range allocator): with a cluster CIDR configured, every Node without a
//! `spec.podCIDR` gets a free `/node_cidr_mask_size` subnet of it (`spec.podCIDR` and
//! `spec.podCIDRs`). A subnet is in use while a Node in the store has it, so deleting the
//! Node releases it. When the range is full the Node waits, with a warning and an Event.

pub mod cidr;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, reflector::Store, watcher, Controller},
    Api, Resource, ResourceExt,
};

use crate::{
    events::Events,
    util_runtime::{drive, retry_policy},
    Context, Error,
};
use cidr::{Cidr, CidrSet};

/// How soon a Node that found the range full tries again.
const FULL_RETRY: Duration = Duration::from_secs(30);
/// Once the range was found full, how long Nodes already told so skip looking again. Without
/// this every waiting Node scanned every Node at each retry: thousands of Nodes beyond the
/// range's size cost O(n²) work every 30 s.
const FULL_RECHECK: Duration = Duration::from_secs(10);

/// Hands out subnets; remembers the ones given but not yet seen on their Node.
#[derive(Debug)]
pub struct Allocator {
    set: CidrSet,
    /// Node name → subnet index, from assignment until the store shows the Node with a CIDR.
    pending: BTreeMap<String, u64>,
    /// Nodes already told the range is full (one Event each).
    reported_full: BTreeSet<String>,
    /// The range was full at this time (cleared by the next assignment).
    full_at: Option<std::time::Instant>,
}

impl Allocator {
    pub fn new(set: CidrSet) -> Self {
        Allocator { set, pending: BTreeMap::new(), reported_full: BTreeSet::new(), full_at: None }
    }

    /// Whether `node` was already told the range is full and it was full less than
    /// [`FULL_RECHECK`] before `now`: then it waits without scanning the Nodes.
    pub fn still_full_for(&self, node: &str, now: std::time::Instant) -> bool {
        self.full_at.is_some_and(|t| now.saturating_duration_since(t) < FULL_RECHECK)
            && self.reported_full.contains(node)
    }

    /// The subnet for `node`, given every Node's current pod CIDRs (`nodes`: name → CIDRs);
    /// `None` if the range is full. Asking again before the Node shows its CIDR returns the
    /// same subnet.
    pub fn assign(&mut self, node: &str, nodes: &BTreeMap<String, Vec<String>>) -> Option<Cidr> {
        // A pending subnet is settled once its Node shows a CIDR, and freed if the Node went.
        self.pending.retain(|n, _| nodes.get(n).is_some_and(Vec::is_empty));
        self.reported_full.retain(|n| nodes.get(n).is_some_and(Vec::is_empty));
        if let Some(i) = self.pending.get(node) {
            return Some(self.set.subnet(*i));
        }
        let mut used: BTreeSet<u64> = self.pending.values().copied().collect();
        for c in nodes.values().flatten() {
            used.extend(self.set.overlapping(c));
        }
        let Some(i) = self.set.allocate(&used) else {
            self.full_at = Some(std::time::Instant::now());
            return None;
        };
        self.full_at = None;
        self.pending.insert(node.to_string(), i);
        Some(self.set.subnet(i))
    }

    /// Whether to report the range full for `node` (true once per Node).
    pub fn first_full_report(&mut self, node: &str) -> bool {
        self.reported_full.insert(node.to_string())
    }
}

/// A Node's pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else { return vec![] };
    let cidrs: Vec<String> = spec.pod_cidrs.iter().flatten().filter(|c| !c.is_empty()).cloned().collect();
    if !cidrs.is_empty() {
        return cidrs;
    }
    spec.pod_cidr.iter().filter(|c| !c.is_empty()).cloned().collect()
}

struct State {
    client: kube::Client,
    nodes: Store<Node>,
    alloc: Mutex<Allocator>,
    events: Events,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let Some(cluster_cidr) = ctx.config.cluster_cidr.clone() else {
        ctx.stop.cancelled().await;
        return Ok(());
    };
    let set = match CidrSet::new(&cluster_cidr, ctx.config.node_cidr_mask_size) {
        Ok(s) => s,
        Err(e) => {
            // A bad flag does not get better by restarting: say so once and stay idle.
            tracing::error!(error = %e, "node IPAM disabled: bad cluster CIDR");
            ctx.stop.cancelled().await;
            return Ok(());
        }
    };
    let controller = Controller::new(Api::<Node>::all(ctx.client.clone()), watcher::Config::default());
    let state = Arc::new(State {
        client: ctx.client.clone(),
        nodes: controller.store(),
        alloc: Mutex::new(Allocator::new(set)),
        events: Events::new(ctx.client.clone(), "node-ipam-controller"),
    });
    let results = controller
        .with_config(kube::runtime::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("node-ipam", &ctx.config.write_traces, reconcile), retry_policy, state);
    drive(results, &ctx.stop).await;
    Ok(())
}

async fn reconcile(node: Arc<Node>, st: Arc<State>) -> Result<Action, Error> {
    if !pod_cidrs(&node).is_empty() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    if st.alloc.lock().unwrap_or_else(|e| e.into_inner()).still_full_for(&name, std::time::Instant::now()) {
        return Ok(Action::requeue(FULL_RETRY));
    }
    let nodes: BTreeMap<String, Vec<String>> = st.nodes.state().iter().map(|n| (n.name_any(), pod_cidrs(n))).collect();
    let (assigned, report) = {
        let mut alloc = st.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let assigned = alloc.assign(&name, &nodes);
        let report = assigned.is_none() && alloc.first_full_report(&name);
        (assigned, report)
    };
    let Some(cidr) = assigned else {
        tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR for this node");
        if report {
            st.events.normal(
                node.object_ref(&()),
                "CIDRNotAvailable",
                "AllocatePodCIDR",
                format!("Node {name} status is now: CIDRNotAvailable"),
            );
        }
        return Ok(Action::requeue(FULL_RETRY));
    };
    let api = Api::<Node>::all(st.client.clone());
    let Some(fresh) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    if !pod_cidrs(&fresh).is_empty() {
        return Ok(Action::await_change());
    }
    let cidr = cidr.to_string();
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": fresh.resource_version() },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(node = %name, pod_cidr = %cidr, "allocated the node's pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn nodes(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        v.iter().map(|(n, c)| (n.to_string(), c.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn assigns_free_subnets_and_remembers_pending() {
        let mut a = Allocator::new(CidrSet::new("10.244.0.0/16", 24).unwrap());
        let world = nodes(&[("a", &["10.244.0.0/24"]), ("b", &[]), ("c", &[])]);
        let b = a.assign("b", &world).unwrap();
        assert_eq!(b.to_string(), "10.244.1.0/24");
        assert_eq!(a.assign("b", &world), Some(b), "asking again before the store catches up");
        let c = a.assign("c", &world).unwrap();
        assert_eq!(c.to_string(), "10.244.2.0/24");
    }

    #[test]
    fn deleted_nodes_release_their_subnets() {
        let mut a = Allocator::new(CidrSet::new("10.0.0.0/30", 31).unwrap());
        let world = nodes(&[("a", &["10.0.0.0/31"]), ("b", &["10.0.0.2/31"]), ("c", &[])]);
        assert_eq!(a.assign("c", &world), None, "full");
        assert!(!a.still_full_for("c", std::time::Instant::now()), "not told yet");
        assert!(a.first_full_report("c"));
        assert!(!a.first_full_report("c"));
        let now = std::time::Instant::now();
        assert!(a.still_full_for("c", now), "told, and full a moment ago: no scan");
        assert!(!a.still_full_for("c", now + FULL_RECHECK), "looks again after a while");
        let world = nodes(&[("b", &["10.0.0.2/31"]), ("c", &[])]);
        assert_eq!(a.assign("c", &world).unwrap().to_string(), "10.0.0.0/31");
        // A pending subnet of a node that went away is free again.
        let world = nodes(&[("b", &["10.0.0.2/31"]), ("d", &[])]);
        assert_eq!(a.assign("d", &world).unwrap().to_string(), "10.0.0.0/31");
    }

    #[test]
    fn reads_pod_cidrs() {
        let mut n = Node::default();
        assert!(pod_cidrs(&n).is_empty());
        n.spec = Some(NodeSpec { pod_cidr: Some("10.244.3.0/24".into()), ..Default::default() });
        assert_eq!(pod_cidrs(&n), vec!["10.244.3.0/24"]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.4.0/24".into()]);
        assert_eq!(pod_cidrs(&n), vec!["10.244.4.0/24"]);
    }
}
