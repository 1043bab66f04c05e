//! The pods of the simulated nodes: one watch on all bound pods feeds a queue of pending
//! writes (status patches, final deletes), worked off with bounded concurrency. Only pods
//! with a write pending or an address held cost memory; nothing runs per pod. With a
//! kubelet endpoint, the running pods' usage is tracked too, following the watch exactly.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ipam::{Block, Ipam};
use super::nodes::NodeTable;
use super::pod_status::{self, Decision};
use super::queue::WorkQueue;
use super::retry::{is_conflict, is_invalid, is_not_found, lock};
use super::usage::UsageTable;
use super::{SimConfig, FIELD_MANAGER};

/// Pod writes in flight.
const CONCURRENCY: usize = 64;
/// Longest a completion is scheduled ahead (a huge `job_run` just means "not soon").
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Status { patch: Value, what: &'static str },
    Delete { uid: String },
}

/// The keys and uids of the pods of ours seen in a (re-)list so far.
type Listed = (HashSet<PodKey>, HashSet<String>);

/// A write a pod needs, from the latest version of it seen.
#[derive(Debug)]
struct Pending {
    op: Op,
    /// Not before (a completion).
    due: Option<Instant>,
    /// Which decision this is (a newer one replaces it while it is written).
    seq: u64,
    node: usize,
}

pub struct PodSim {
    client: kube::Client,
    cfg: Arc<SimConfig>,
    table: Arc<NodeTable>,
    ipam: Mutex<Ipam>,
    pending: Mutex<HashMap<PodKey, Pending>>,
    queue: WorkQueue<PodKey>,
    seq: AtomicU64,
    pp: PatchParams,
    /// The running pods' usage, when a kubelet endpoint serves it (else nothing is kept).
    usage: Option<Arc<Mutex<UsageTable>>>,
}

impl PodSim {
    pub fn new(
        client: kube::Client,
        cfg: Arc<SimConfig>,
        table: Arc<NodeTable>,
        usage: Option<Arc<Mutex<UsageTable>>>,
    ) -> PodSim {
        PodSim {
            client,
            ipam: Mutex::new(Ipam::new(table.count())),
            cfg,
            table,
            pending: Mutex::default(),
            queue: WorkQueue::default(),
            seq: AtomicU64::new(0),
            pp: PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
            usage,
        }
    }

    /// The key and node index of a pod bound to one of our nodes.
    fn ours(&self, pod: &Pod) -> Option<(PodKey, usize)> {
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        let i = self.table.index(node)?;
        let key = PodKey { namespace: pod.metadata.namespace.clone()?, name: pod.metadata.name.clone()? };
        Some((key, i))
    }

    /// Take in a pod as the watch shows it now: track its usage, decide what it needs and
    /// queue that.
    pub fn observe(&self, pod: &Pod) {
        let Some((key, node)) = self.ours(pod) else { return };
        if let Some(usage) = &self.usage {
            lock(usage).observe(&key, node, pod, Timestamp::now());
        }
        self.decide(key, node, pod);
    }

    /// Decide what a pod of ours needs and queue that (usage is left to the watch: a pod
    /// re-read here may already be older than what the watch has delivered since).
    fn decide(&self, key: PodKey, node: usize, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let mut ipam = lock(&self.ipam);
            match status_ip(pod) {
                // A finished pod's sandbox is gone and its address free.
                _ if pod_status::is_terminal(pod) => ipam.release(node, &uid),
                // Keep what it shows (e.g. from before a restart of the sim).
                Some(ip) => ipam.claim(node, &uid, ip),
                None => {}
            }
        }
        let now = Timestamp::now();
        let (op, delay) = match pod_status::decide(pod, now, self.cfg.job_run) {
            Decision::Nothing => {
                lock(&self.pending).remove(&key);
                self.queue.remove(&key);
                return;
            }
            Decision::Delete => (Op::Delete { uid }, None),
            Decision::Run => {
                let ip = self.address(pod, node, &uid);
                let status = pod_status::running_status(pod, ip, now);
                (Op::Status { patch: pod_status::status_patch(pod, &status), what: "running" }, None)
            }
            Decision::Finish { at } => {
                let code = pod_status::exit_code(pod);
                let status = pod_status::finished_status(pod, at, code);
                let what = if code == 0 { "succeeded" } else { "failed" };
                let delay = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO).min(MAX_DELAY);
                (Op::Status { patch: pod_status::status_patch(pod, &status), what }, Some(delay))
            }
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let due = delay.map(|d| Instant::now() + d);
        tracing::debug!(pod = %key, node = %self.table.name(node), op = op_name(&op), "pod write queued");
        lock(&self.pending).insert(key.clone(), Pending { op, due, seq, node });
        match delay {
            Some(d) => self.queue.add_after(key, d),
            None => self.queue.add(key),
        }
    }

    /// The pod is gone: drop what it had pending, its usage, and free its address.
    fn forget(&self, pod: &Pod) {
        let Some((key, node)) = self.ours(pod) else { return };
        if let Some(usage) = &self.usage {
            lock(usage).remove(&key, Timestamp::now());
        }
        lock(&self.pending).remove(&key);
        self.queue.remove(&key);
        lock(&self.ipam).release(node, pod.metadata.uid.as_deref().unwrap_or_default());
    }

    /// The address of a pod about to run: the one its status shows, else a new one from
    /// its node's podCIDR (or the node's own block).
    fn address(&self, pod: &Pod, node: usize, uid: &str) -> IpAddr {
        let mut ipam = lock(&self.ipam);
        if let Some(ip) = status_ip(pod) {
            ipam.claim(node, uid, ip);
            return ip;
        }
        let block = self.table.pod_cidr(node).as_deref().and_then(Block::from_cidr).unwrap_or(Block::fallback(node));
        ipam.allocate(node, uid, block).unwrap_or_else(|| block.addr(0))
    }

    /// Watch all bound pods until `stop` (after the nodes' first list, so addresses come
    /// from the nodes' podCIDRs).
    pub async fn watch(self: Arc<Self>, mut nodes_synced: watch::Receiver<bool>, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = nodes_synced.wait_for(|s| *s) => {}
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let events = watcher(api, watcher::Config::default().fields("spec.nodeName!=")).default_backoff();
        let mut events = pin!(events.take_until(stop.cancelled()));
        let mut listed = None;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => self.on_event(ev, &mut listed),
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }

    /// Take in one event of the pod watch. `listed` holds, during a (re-)list, the keys and
    /// uids of the pods of ours listed so far: at its end, state of the others (pending
    /// writes, addresses, usage) is dropped — they are gone.
    fn on_event(&self, ev: watcher::Event<Pod>, listed: &mut Option<Listed>) {
        match ev {
            watcher::Event::Init => *listed = Some(Default::default()),
            watcher::Event::InitApply(p) => {
                if let (Some((keys, uids)), Some((key, _))) = (listed.as_mut(), self.ours(&p)) {
                    keys.insert(key);
                    uids.insert(p.metadata.uid.clone().unwrap_or_default());
                }
                self.observe(&p);
            }
            watcher::Event::InitDone => {
                if let Some((keys, uids)) = listed.take() {
                    lock(&self.pending).retain(|k, _| keys.contains(k));
                    lock(&self.ipam).retain(&uids);
                    let running = self.usage.as_ref().map(|usage| {
                        let mut usage = lock(usage);
                        usage.retain(&keys, Timestamp::now());
                        usage.len()
                    });
                    tracing::info!(
                        pods = keys.len(),
                        running,
                        queued = self.queue.len(),
                        "pods on simulated nodes listed"
                    );
                }
            }
            watcher::Event::Apply(p) => self.observe(&p),
            watcher::Event::Delete(p) => self.forget(&p),
        }
    }

    /// Work off the queue, [`CONCURRENCY`] writes at a time, until `stop`.
    pub async fn work(self: Arc<Self>, stop: CancellationToken) {
        let keys = stream::unfold(self.clone(), |me| async move {
            let k = me.queue.pop().await?;
            Some((k, me))
        });
        keys.map(|k| self.process(k))
            .buffer_unordered(CONCURRENCY)
            .take_until(stop.cancelled())
            .for_each(|()| async {})
            .await;
        self.queue.close();
    }

    /// Do what `key` has pending (if it is due).
    async fn process(&self, key: PodKey) {
        self.process_inner(&key).await;
        self.queue.done(&key);
    }

    async fn process_inner(&self, key: &PodKey) {
        let snapshot = lock(&self.pending).get(key).map(|p| (p.op.clone(), p.due, p.seq, p.node));
        let Some((op, due, seq, node)) = snapshot else { return };
        if let Some(due) = due {
            let now = Instant::now();
            if due > now {
                self.queue.add_after(key.clone(), due - now);
                return;
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let result = match &op {
            Op::Status { patch, .. } => api.patch_status(&key.name, &self.pp, &Patch::Merge(patch)).await.map(drop),
            Op::Delete { uid } => {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                api.delete(&key.name, &dp).await.map(drop)
            }
        };
        let node = self.table.name(node);
        match result {
            Ok(()) => {
                tracing::debug!(pod = %key, node = %node, op = op_name(&op), "pod written");
                self.settle(key, seq);
            }
            Err(e) if is_not_found(&e) => {
                tracing::debug!(pod = %key, node = %node, op = op_name(&op), "pod already gone");
                self.settle(key, seq);
            }
            Err(e) if is_conflict(&e) => {
                // It changed since (or is another pod of the same name now): read it again
                // and decide afresh.
                tracing::debug!(pod = %key, node = %node, op = op_name(&op), "pod changed; re-reading");
                match api.get_opt(&key.name).await {
                    Ok(Some(pod)) => match self.ours(&pod) {
                        Some((key, node)) => self.decide(key, node, &pod),
                        None => self.settle(key, seq),
                    },
                    Ok(None) => self.settle(key, seq),
                    Err(e) => {
                        tracing::debug!(pod = %key, error = %e, "re-reading pod failed; retrying");
                        self.queue.retry(key.clone());
                    }
                }
            }
            Err(e) => {
                let failures = self.queue.retry(key.clone());
                if is_invalid(&e) && failures == 1 {
                    tracing::warn!(pod = %key, node = %node, op = op_name(&op), error = %e, "pod write rejected; retrying with backoff");
                } else {
                    tracing::debug!(pod = %key, node = %node, op = op_name(&op), error = %e, "pod write failed; retrying");
                }
            }
        }
    }

    /// Decision `seq` is done: drop it unless a newer one replaced it meanwhile.
    fn settle(&self, key: &PodKey, seq: u64) {
        let mut pending = lock(&self.pending);
        if pending.get(key).is_some_and(|p| p.seq == seq) {
            pending.remove(key);
        }
        drop(pending);
        self.queue.forget(key);
    }
}

/// The address a pod's status shows.
fn status_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Status { what, .. } => what,
        Op::Delete { .. } => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    /// A client that is never used (no request is made in these tests).
    fn sim() -> PodSim {
        let cfg = Arc::new(SimConfig { count: 2, job_run: Duration::from_secs(5), ..Default::default() });
        let table = Arc::new(NodeTable::new(&cfg));
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        PodSim::new(client, cfg, table, None)
    }

    /// A sim that tracks usage.
    fn tracking() -> (PodSim, Arc<Mutex<UsageTable>>) {
        let s = sim();
        let usage = Arc::new(Mutex::new(UsageTable::new(s.table.count(), Timestamp::now())));
        (PodSim { usage: Some(usage.clone()), ..s }, usage)
    }

    /// `p` with the status the sim writes for a running pod.
    fn running(mut p: Pod) -> Pod {
        p.status = Some(pod_status::running_status(&p, "10.244.0.9".parse().unwrap(), Timestamp::now()));
        p
    }

    fn tracked(usage: &Mutex<UsageTable>) -> Vec<String> {
        lock(usage).sample(Timestamp::now()).pods.into_iter().map(|p| p.name).collect()
    }

    fn pod(name: &str, node: &str, restart: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                restart_policy: Some(restart.into()),
                containers: vec![Container { name: "c".into(), ..Default::default() }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn key(name: &str) -> PodKey {
        PodKey { namespace: "ns".into(), name: name.into() }
    }

    fn patch_of(s: &PodSim, name: &str) -> Option<Value> {
        match &lock(&s.pending).get(&key(name))?.op {
            Op::Status { patch, .. } => Some(patch.clone()),
            Op::Delete { .. } => None,
        }
    }

    #[tokio::test]
    async fn bound_pods_are_queued_with_stable_addresses_and_strangers_ignored() {
        let s = sim();
        s.observe(&pod("a", "sim-1", "Always"));
        s.observe(&pod("x", "other-node", "Always"));
        s.observe(&Pod { spec: None, ..pod("y", "sim-0", "Always") });
        assert_eq!(lock(&s.pending).len(), 1);
        let p = patch_of(&s, "a").unwrap();
        assert_eq!(p.pointer("/status/podIP").unwrap(), "10.244.1.1");
        // Seen again before the write lands: the same address.
        s.observe(&pod("a", "sim-1", "Always"));
        assert_eq!(patch_of(&s, "a").unwrap().pointer("/status/podIP").unwrap(), "10.244.1.1");
        s.observe(&pod("b", "sim-1", "Always"));
        assert_eq!(patch_of(&s, "b").unwrap().pointer("/status/podIP").unwrap(), "10.244.1.2");
        assert_eq!(s.queue.len(), 2);
        // Gone: nothing pending, its address free.
        s.forget(&pod("a", "sim-1", "Always"));
        assert!(patch_of(&s, "a").is_none());
        s.observe(&pod("c", "sim-1", "Always"));
        assert_eq!(patch_of(&s, "c").unwrap().pointer("/status/podIP").unwrap(), "10.244.1.3");
        // The cursor moves on (like host-local IPAM), reaching freed addresses again later.
        s.observe(&pod("d", "sim-1", "Always"));
        assert_eq!(patch_of(&s, "d").unwrap().pointer("/status/podIP").unwrap(), "10.244.1.4");
    }

    #[tokio::test]
    async fn addresses_come_from_the_pod_cidr_when_the_node_has_one() {
        let s = sim();
        let spec = NodeSpec { pod_cidr: Some("10.100.5.0/24".into()), ..Default::default() };
        let n = Node { spec: Some(spec), ..Default::default() };
        s.table.observe(0, &n);
        s.observe(&pod("a", "sim-0", "Always"));
        assert_eq!(patch_of(&s, "a").unwrap().pointer("/status/podIP").unwrap(), "10.100.5.1");
    }

    #[tokio::test]
    async fn a_running_job_is_scheduled_to_finish_and_a_finished_one_releases_its_address() {
        let s = sim();
        let mut p = pod("j", "sim-0", "Never");
        s.observe(&p);
        let running = patch_of(&s, "j").unwrap();
        p.status = Some(serde_json::from_value::<PodStatus>(running["status"].clone()).unwrap());
        s.observe(&p);
        let pending = lock(&s.pending);
        let e = pending.get(&key("j")).unwrap();
        assert!(e.due.is_some_and(|d| d > Instant::now() + Duration::from_secs(3)), "job_run is 5s");
        assert!(matches!(&e.op, Op::Status { what: "succeeded", .. }));
        drop(pending);
        // Finished: nothing pending, the address is free again.
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        s.observe(&p);
        assert!(lock(&s.pending).is_empty());
        s.observe(&pod("k", "sim-0", "Never"));
        assert_eq!(patch_of(&s, "k").unwrap().pointer("/status/podIP").unwrap(), "10.244.0.2", "cursor moves on");
        s.observe(&pod("l", "sim-0", "Never"));
        s.observe(&pod("m", "sim-0", "Never"));
        let ips: Vec<_> = ["l", "m"].iter().map(|n| patch_of(&s, n).unwrap()["status"]["podIP"].clone()).collect();
        assert!(ips.contains(&"10.244.0.3".into()) && ips.contains(&"10.244.0.4".into()));
    }

    #[tokio::test]
    async fn a_deleting_pod_is_queued_for_a_final_delete_with_its_uid() {
        let s = sim();
        let mut p = pod("d", "sim-0", "Always");
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        s.observe(&p);
        assert!(matches!(&lock(&s.pending).get(&key("d")).unwrap().op, Op::Delete { uid } if uid == "uid-d"));
        // A newer decision is not dropped by an older one's completion.
        let seq = lock(&s.pending).get(&key("d")).unwrap().seq;
        s.observe(&p);
        s.settle(&key("d"), seq);
        assert!(lock(&s.pending).contains_key(&key("d")));
    }

    #[tokio::test]
    async fn usage_follows_the_watch_through_changes_deletes_and_relists() {
        let (s, usage) = tracking();
        // Pending, then running: tracked from then on; strangers never.
        s.on_event(watcher::Event::Apply(pod("a", "sim-0", "Always")), &mut None);
        assert!(tracked(&usage).is_empty());
        s.on_event(watcher::Event::Apply(running(pod("a", "sim-0", "Always"))), &mut None);
        s.on_event(watcher::Event::Apply(running(pod("b", "sim-1", "Always"))), &mut None);
        s.on_event(watcher::Event::Apply(running(pod("x", "other-node", "Always"))), &mut None);
        assert_eq!(tracked(&usage), ["a", "b"]);
        // Deleted (watch delete) or being deleted: dropped.
        s.on_event(watcher::Event::Delete(running(pod("b", "sim-1", "Always"))), &mut None);
        assert_eq!(tracked(&usage), ["a"]);
        let mut deleting = running(pod("a", "sim-0", "Always"));
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        s.on_event(watcher::Event::Apply(deleting), &mut None);
        assert!(tracked(&usage).is_empty());
        // A relist: what it shows is tracked, what it no longer shows is dropped at its end.
        let mut listed = None;
        for p in ["c", "d"] {
            s.on_event(watcher::Event::Apply(running(pod(p, "sim-0", "Always"))), &mut listed);
        }
        s.on_event(watcher::Event::Init, &mut listed);
        s.on_event(watcher::Event::InitApply(running(pod("d", "sim-0", "Always"))), &mut listed);
        s.on_event(watcher::Event::InitApply(running(pod("e", "sim-1", "Always"))), &mut listed);
        assert_eq!(tracked(&usage), ["c", "d", "e"], "not before the list is complete");
        s.on_event(watcher::Event::InitDone, &mut listed);
        assert_eq!(tracked(&usage), ["d", "e"]);
        // A finished job stops counting.
        let mut done = running(pod("e", "sim-1", "Never"));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        s.on_event(watcher::Event::Apply(done), &mut None);
        assert_eq!(tracked(&usage), ["d"]);
    }
}
