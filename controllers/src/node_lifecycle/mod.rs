//! The node lifecycle controller: node health from the kubelet's Lease and status, the
//! taints that follow from it, and taint-based eviction.
//!
//! Every `node_monitor_period` (and when a timed eviction falls due) a pass visits each Node:
//! - [`health`]: a Node whose kubelet was not heard from (Ready heartbeat or Lease renewal)
//!   for `node_monitor_grace` gets its kubelet conditions set to Unknown (`nodes/status`);
//! - [`taints`]: its `NoSchedule` condition taints and `NoExecute` `not-ready`/`unreachable`
//!   taints are made to match its conditions;
//! - [`pods`]: pods of a Node that is unreachable (or just turned not ready) are marked
//!   Ready=False;
//! - [`eviction`]: pods that do not tolerate its `NoExecute` taints are deleted, at once or
//!   when their `tolerationSeconds` since the taint's `timeAdded` run out.
//!
//! Not done (upstream has them): zone disruption modes (no evictions when a whole zone or
//! cluster is down) and rate limits on tainting; the startup grace for a Node that never
//! posted a status is `node_monitor_grace` too.

pub mod eviction;
pub mod health;
pub mod pods;
pub mod taints;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, NodeStatus, Pod, Taint},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
    Api, Resource, ResourceExt,
};
use tracing::Instrument;

use crate::{
    events::Events,
    util_api::{is_conflict, is_not_found},
    util_runtime::{spawn_reflector, wait_ready},
    Context, Error,
};
use eviction::Eviction;
use health::Health;

/// Where kubelets keep their heartbeat Leases (one per Node, named after it).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The shortest pause between passes, whatever the configuration.
const MIN_PAUSE: Duration = Duration::from_millis(100);

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let nodes = spawn_reflector(Api::<Node>::all(client.clone()), watcher::Config::default());
    let leases = spawn_reflector(Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE), watcher::Config::default());
    let pods = spawn_reflector(Api::<Pod>::all(client.clone()), watcher::Config::default());
    for ready in [
        wait_ready(&nodes.store, &ctx.stop).await,
        wait_ready(&leases.store, &ctx.stop).await,
        wait_ready(&pods.store, &ctx.stop).await,
    ] {
        if !ready {
            return Ok(());
        }
    }
    let mut monitor = Monitor::new(client, ctx.config.node_monitor_grace);
    loop {
        let now = Timestamp::now();
        let next = monitor
            .pass(&nodes.store, &leases.store, &pods.store, now)
            .instrument(tracing::debug_span!("node_health_pass"))
            .await;
        let mut pause = ctx.config.node_monitor_period;
        if let Some(at) = next {
            let until = Timestamp::now().duration_until(at);
            pause = pause.min(Duration::try_from(until).unwrap_or(Duration::ZERO));
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause.max(MIN_PAUSE)) => {}
        }
    }
}

/// What the controller remembers between passes.
struct Monitor {
    client: kube::Client,
    events: Events,
    grace: Duration,
    health: HashMap<String, Health>,
    /// Each Node's Ready status as of the last pass (to catch Ready turning False).
    last_ready: HashMap<String, Option<String>>,
    /// When a `NoExecute` taint without `timeAdded` was first seen: (node, key) → time.
    first_seen: HashMap<(String, String), Timestamp>,
}

impl Monitor {
    fn new(client: kube::Client, grace: Duration) -> Self {
        Monitor {
            events: Events::new(client.clone(), "node-controller"),
            client,
            grace,
            health: HashMap::new(),
            last_ready: HashMap::new(),
            first_seen: HashMap::new(),
        }
    }

    /// One pass over every Node; returns when the next timed eviction falls due, if any.
    async fn pass(
        &mut self,
        nodes: &Store<Node>,
        leases: &Store<Lease>,
        pods: &Store<Pod>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let all = nodes.state();
        let names: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
        self.health.retain(|n, _| names.contains(n));
        self.last_ready.retain(|n, _| names.contains(n));
        self.first_seen.retain(|(n, _), _| names.contains(n));
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in pods.state() {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let mut next: Option<Timestamp> = None;
        for node in all {
            let name = node.name_any();
            let lease = leases.get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
            let renew = lease.as_ref().and_then(|l| l.spec.as_ref()?.renew_time.as_ref()).map(|t| t.0);
            let on_node = by_node.remove(&name).unwrap_or_default();
            if let Some(at) = self.node_pass(&node, renew, &on_node, now).await {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    async fn node_pass(
        &mut self,
        node: &Node,
        lease_renew: Option<Timestamp>,
        on_node: &[Arc<Pod>],
        now: Timestamp,
    ) -> Option<Timestamp> {
        let name = node.name_any();
        let api = Api::<Node>::all(self.client.clone());
        let mut node = node.clone();

        let mut h = health::observe(self.health.get(&name), &node, lease_renew, now);
        if h.is_stale(self.grace, now) {
            if let Some(conds) = health::unknown_conditions(&node, now) {
                node.status.get_or_insert_with(NodeStatus::default).conditions = Some(conds);
                match api.replace_status(&name, &PostParams::default(), &node).await {
                    Ok(updated) => {
                        tracing::info!(node = %name, "kubelet stopped posting node status: conditions set to Unknown");
                        node = updated;
                        h.wrote(&node);
                    }
                    Err(e) => {
                        log_write_error(&e, &name, "node status");
                        self.health.insert(name, h);
                        return None;
                    }
                }
            }
        }
        self.health.insert(name.clone(), h);

        let now_time = Time(now);
        if let Some(taints) = taints::reconcile(&node, &now_time) {
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": node.resource_version() },
                "spec": { "taints": taints },
            });
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(updated) => {
                    tracing::info!(node = %name, taints = ?taint_names(&updated), "node taints updated");
                    node = updated;
                }
                Err(e) => log_write_error(&e, &name, "node taints"),
            }
        }

        let ready = health::ready_status(&node).map(str::to_string);
        let was_ready = self.last_ready.get(&name).cloned().flatten();
        let mark = pods::should_mark_not_ready(ready.as_deref(), was_ready.as_deref());
        let marked = !mark || self.mark_pods_not_ready(&name, on_node, &now_time).await;
        if marked {
            if ready.as_deref() != Some("True") && was_ready.as_deref() == Some("True") {
                let note = format!("Node {name} status is now: NodeNotReady");
                self.events.normal(node.object_ref(&()), "NodeNotReady", "NodeNotReady", note);
            }
            self.last_ready.insert(name.clone(), ready);
        }

        self.evict(&node, on_node, now).await
    }

    /// Ready=False on every pod of the node; false if some could not be written.
    async fn mark_pods_not_ready(&self, node: &str, on_node: &[Arc<Pod>], now: &Time) -> bool {
        let mut ok = true;
        for pod in on_node {
            let Some(cond) = pods::not_ready(pod, now) else { continue };
            let (ns, pod_name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
            let patch = pods::condition_patch(&cond);
            match api.patch_status(&pod_name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => {
                    tracing::debug!(node, pod = %pod_name, namespace = %ns, "marked pod not ready: node is not ready");
                    self.events.warning(
                        pod.object_ref(&()),
                        "NodeNotReady",
                        "MarkPodNotReady",
                        "Node is not ready".into(),
                    );
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    log_write_error(&e, &pod_name, "pod readiness");
                    ok = false;
                }
            }
        }
        ok
    }

    /// Delete the pods that must leave the node now; returns the next timed eviction.
    async fn evict(&mut self, node: &Node, on_node: &[Arc<Pod>], now: Timestamp) -> Option<Timestamp> {
        let name = node.name_any();
        let no_execute: Vec<&Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == taints::NO_EXECUTE)
            .collect();
        self.first_seen
            .retain(|(n, k), _| n != &name || no_execute.iter().any(|t| t.time_added.is_none() && &t.key == k));
        if no_execute.is_empty() {
            return None;
        }
        for t in no_execute.iter().filter(|t| t.time_added.is_none()) {
            self.first_seen.entry((name.clone(), t.key.clone())).or_insert(now);
        }
        let since = |t: &Taint| {
            t.time_added
                .as_ref()
                .map(|a| a.0)
                .or_else(|| self.first_seen.get(&(name.clone(), t.key.clone())).copied())
                .unwrap_or(now)
        };
        let mut next = None;
        let mut due = vec![];
        for pod in on_node {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
            match eviction::eviction(tolerations, &no_execute, since, now) {
                Eviction::Never => {}
                Eviction::At(at) => next = Some(next.map_or(at, |n: Timestamp| n.min(at))),
                Eviction::Now => due.push(pod.clone()),
            }
        }
        for pod in due {
            self.delete_pod(&name, &pod, now).await;
        }
        next
    }

    async fn delete_pod(&self, node: &str, pod: &Pod, now: Timestamp) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
        self.events.normal(
            pod.object_ref(&()),
            "TaintManagerEviction",
            "Evict",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        if let Some(cond) = pods::disruption_target(pod, &Time(now)) {
            let patch = pods::condition_patch(&cond);
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                tracing::debug!(pod = %name, namespace = %ns, error = %e, "could not mark the pod as a disruption target");
            }
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(node, pod = %name, namespace = %ns, "evicted pod: it does not tolerate the node's NoExecute taints")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(node, pod = %name, namespace = %ns, error = %e, "could not evict pod"),
        }
    }
}

fn taint_names(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

/// Conflicts are routine (the kubelet wrote first): retried next pass, quietly.
fn log_write_error(e: &kube::Error, object: &str, what: &str) {
    if is_conflict(e) || is_not_found(e) {
        tracing::debug!(object, error = %e, "{what} not written; next pass retries");
    } else {
        tracing::warn!(object, error = %e, "{what} not written; next pass retries");
    }
}
