//! The two heartbeats of every node, as the kubelet sends them: its Lease renewed every
//! `renew_interval` and its conditions (`lastHeartbeatTime`) every `status_interval`, each
//! spread over its interval with bounded concurrency — and both paused while the Node is
//! annotated `sim.keelson.dev/heartbeat: stopped`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::lease::{self, Renewed, LEASE_NAMESPACE};
use super::nodes::{NodeTable, Wake};
use super::queue::WorkQueue;
use super::retry::{is_not_found, Backoff};
use super::{node_object, spread, SimConfig, FIELD_MANAGER};

/// Annotate a Node `sim.keelson.dev/heartbeat: stopped` to stop its heartbeats (its Lease
/// expires and the control plane sees it go NotReady); remove it to resume them.
pub const HEARTBEAT_ANNOTATION: &str = "sim.keelson.dev/heartbeat";

/// Writes in flight per heartbeat kind.
const CONCURRENCY: usize = 32;
/// Attempts per heartbeat write before waiting for the node's next turn.
const ATTEMPTS: u32 = 3;

/// Whether the object's heartbeat annotation says `stopped`.
pub fn heartbeat_stopped(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(HEARTBEAT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("stopped"))
}

/// Heartbeats wanted now (a node resumed, or was marked not ready), by node index.
#[derive(Default)]
pub struct Wakers {
    lease: Arc<WorkQueue<usize>>,
    status: Arc<WorkQueue<usize>>,
}

impl Wakers {
    pub fn wake(&self, i: usize, w: Wake) {
        if w.lease {
            self.lease.add(i);
        }
        if w.status {
            self.status.add(i);
        }
    }
}

pub struct Heartbeat {
    cfg: Arc<SimConfig>,
    table: Arc<NodeTable>,
    wakers: Arc<Wakers>,
    leases: Api<Lease>,
    nodes: Api<Node>,
    pp: PatchParams,
    lease_failures: AtomicU64,
    status_failures: AtomicU64,
}

impl Heartbeat {
    pub fn new(client: kube::Client, cfg: Arc<SimConfig>, table: Arc<NodeTable>, wakers: Arc<Wakers>) -> Heartbeat {
        Heartbeat {
            leases: Api::namespaced(client.clone(), LEASE_NAMESPACE),
            nodes: Api::all(client),
            cfg,
            table,
            wakers,
            pp: PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
            lease_failures: AtomicU64::new(0),
            status_failures: AtomicU64::new(0),
        }
    }

    /// Renew every node's Lease every `renew_interval` until `stop`.
    pub async fn leases(self: Arc<Self>, stop: CancellationToken) {
        let wake = self.wakers.lease.clone();
        let job = |(first, i)| {
            if first {
                report(&self.lease_failures, "lease renewals", self.cfg.renew_interval);
            }
            self.renew(i)
        };
        periodic(self.table.count(), self.cfg.renew_interval, wake, &stop, job).await
    }

    /// Refresh every node's conditions every `status_interval` until `stop`.
    pub async fn statuses(self: Arc<Self>, stop: CancellationToken) {
        let wake = self.wakers.status.clone();
        let job = |(first, i)| {
            if first {
                report(&self.status_failures, "node status heartbeats", self.cfg.status_interval);
            }
            self.beat(i)
        };
        periodic(self.table.count(), self.cfg.status_interval, wake, &stop, job).await
    }

    async fn renew(&self, i: usize) {
        // The owner reference is set until it is known to be there.
        let target = self.table.with(i, |s| s.beating().then(|| if s.lease_owned { None } else { s.uid.clone() }));
        let Some(Some(owner)) = target else { return };
        let name = self.table.name(i);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..=ATTEMPTS {
            match lease::renew(&self.leases, &self.pp, &name, self.cfg.lease_duration_seconds, owner.as_deref()).await {
                Ok(r) => {
                    if let (Some(uid), true) = (&owner, r != Renewed::Raced) {
                        self.table.with(i, |s| s.lease_owned |= s.uid.as_ref() == Some(uid));
                    }
                    if r == Renewed::Created {
                        tracing::debug!(node = %name, "lease created");
                    }
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(node = %name, attempt, error = %e, "lease renewal failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "lease renewal failed");
                    self.lease_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn beat(&self, i: usize) {
        let Some(Some(conditions)) = self.table.with(i, |s| s.beating().then(|| s.conditions.clone())) else { return };
        let name = self.table.name(i);
        let patch = node_object::status_patch(&self.cfg, &name, &conditions, Timestamp::now());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..=ATTEMPTS {
            match self.nodes.patch_status(&name, &self.pp, &Patch::Merge(&patch)).await {
                Ok(_) => return,
                Err(e) if is_not_found(&e) => {
                    self.table.with(i, |s| s.gone());
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(node = %name, attempt, error = %e, "node status heartbeat failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "node status heartbeat failed");
                    self.status_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Warn once per round if any heartbeat of a kind failed in it.
fn report(failures: &AtomicU64, what: &str, interval: Duration) {
    let n = failures.swap(0, Ordering::Relaxed);
    if n > 0 {
        tracing::warn!(failed = n, interval_ms = interval.as_millis() as u64, "{what} failed in the last round");
    }
}

/// Run `job((first, node))` for every node once per `interval` (spread over it; `first`
/// marks a round's first) and for every node woken through `wake`, at most
/// [`CONCURRENCY`] at once, until `stop`.
async fn periodic<F, Fut>(
    count: usize,
    interval: Duration,
    wake: Arc<WorkQueue<usize>>,
    stop: &CancellationToken,
    job: F,
) where
    F: FnMut((bool, usize)) -> Fut,
    Fut: Future<Output = ()>,
{
    let turns = spread::ticks(count, interval);
    let woken = stream::unfold(wake, |q| async move {
        let i = q.pop().await?;
        q.done(&i);
        Some(((false, i), q))
    });
    stream::select(turns, woken)
        .map(job)
        .buffer_unordered(CONCURRENCY)
        .take_until(stop.cancelled())
        .for_each(|()| async {})
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(v: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            annotations: v.map(|v| BTreeMap::from([(HEARTBEAT_ANNOTATION.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_stopped_annotation_stops_a_heartbeat() {
        assert!(heartbeat_stopped(&meta(Some("stopped"))));
        assert!(heartbeat_stopped(&meta(Some(" Stopped "))));
        for v in [None, Some(""), Some("running"), Some("stop"), Some("false")] {
            assert!(!heartbeat_stopped(&meta(v)), "{v:?}");
        }
        let other = ObjectMeta {
            annotations: Some(BTreeMap::from([("sim.keelson.dev/other".to_string(), "stopped".to_string())])),
            ..Default::default()
        };
        assert!(!heartbeat_stopped(&other));
    }

    #[tokio::test]
    async fn periodic_work_visits_each_node_per_round_and_woken_ones_at_once() {
        use std::sync::Mutex;
        let seen = Mutex::new(Vec::new());
        let rounds = AtomicU64::new(0);
        let wake = Arc::new(WorkQueue::default());
        let stop = CancellationToken::new();
        wake.add(2);
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            stopper.cancel();
        });
        let job = |(first, i): (bool, usize)| {
            if first {
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            seen.lock().unwrap().push(i);
            async {}
        };
        periodic(3, Duration::from_secs(3600), wake, &stop, job).await;
        let seen = seen.into_inner().unwrap();
        // Node 0's turn comes at once, the woken node 2 too; nodes 1 and 2's turns are an
        // hour away.
        assert!(seen.contains(&0) && seen.contains(&2), "{seen:?}");
        assert!(!seen.contains(&1), "{seen:?}");
        assert_eq!(rounds.load(Ordering::Relaxed), 1);
    }
}
