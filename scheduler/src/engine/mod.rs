//! The scheduling loop: one task owning the snapshot and the queue. It applies every
//! pending watch event, then makes one scheduling decision, and repeats; it sleeps only
//! when there is nothing to do (no active pod, all binding slots busy, or the watches not
//! yet synced). Bindings, events and status writes run in their own tasks.

mod placement;
mod volume_events;
mod watch_events;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    binder::BindError,
    informer::Change,
    node_info::NodeData,
    pod_info::PodInfo,
    queue::SchedulingQueue,
    reporter::Reporter,
    schedule::Algorithm,
    snapshot::Snapshot,
    volumes::{ClaimData, ClassData, VolumeData},
    Error, SchedulerConfig,
};

/// How long a bound pod stays assumed if the watch never shows it bound.
const ASSUME_TTL: Duration = Duration::from_secs(30);
/// Watch events applied between two scheduling decisions at most.
const EVENT_BUDGET: usize = 1024;
/// How often assumptions are expired and finished reports collected.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const STATS_EVERY: Duration = Duration::from_secs(60);
/// Scheduling decisions in a row before the loop yields to other tasks.
const YIELD_EVERY: u64 = 32;

pub type NamespaceLabels = (String, BTreeMap<String, String>);

/// The watches, in the order [`Scheduler::drain`] takes their events.
const WATCHES: [&str; 6] =
    ["nodes", "pods", "namespaces", "persistentvolumeclaims", "persistentvolumes", "storageclasses"];

/// The converted watch streams.
pub struct Receivers {
    pub nodes: mpsc::Receiver<Change<NodeData>>,
    pub pods: mpsc::Receiver<Change<Arc<PodInfo>>>,
    pub namespaces: mpsc::Receiver<Change<NamespaceLabels>>,
    pub claims: mpsc::Receiver<Change<ClaimData>>,
    pub volumes: mpsc::Receiver<Change<VolumeData>>,
    pub classes: mpsc::Receiver<Change<ClassData>>,
}

/// The result of one binding task.
struct BindOutcome {
    pod: Arc<PodInfo>,
    node: String,
    /// The claims the node was selected for before the binding (keys).
    claims: Vec<String>,
    result: Result<(), BindError>,
    /// The decision's span (its reports join its trace).
    span: tracing::Span,
}

/// Keys seen during a relist of one resource (`None` when not relisting).
#[derive(Default)]
struct Relist {
    seen: Option<HashSet<String>>,
    synced: bool,
}

#[derive(Default)]
struct Stats {
    scheduled: u64,
    unschedulable: u64,
    bind_failures: u64,
}

pub struct Scheduler {
    client: kube::Client,
    cfg: SchedulerConfig,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    algorithm: Algorithm,
    reporter: Reporter,
    binds: JoinSet<BindOutcome>,
    /// The pod, node and selected claims of each binding task, to recover from a task that died.
    bind_tasks: HashMap<tokio::task::Id, (Arc<PodInfo>, String, Vec<String>)>,
    nodes_relist: Relist,
    pods_relist: Relist,
    namespaces_relist: Relist,
    volume_relists: volume_events::VolumeRelists,
    stats: Stats,
}

impl Scheduler {
    pub fn new(client: kube::Client, cfg: SchedulerConfig) -> Scheduler {
        Scheduler {
            reporter: Reporter::new(client.clone(), &cfg.scheduler_name),
            queue: SchedulingQueue::new(cfg.initial_backoff, cfg.max_backoff),
            algorithm: Algorithm::new(cfg.percentage_of_nodes_to_score),
            client,
            cfg,
            snapshot: Snapshot::new(),
            binds: JoinSet::new(),
            bind_tasks: HashMap::new(),
            nodes_relist: Relist::default(),
            pods_relist: Relist::default(),
            namespaces_relist: Relist::default(),
            volume_relists: volume_events::VolumeRelists::default(),
            stats: Stats::default(),
        }
    }

    fn synced(&self) -> bool {
        self.nodes_relist.synced && self.pods_relist.synced && self.namespaces_relist.synced
    }

    /// Apply the watch events already waiting, up to a budget. Errors if a watch ended.
    fn drain(&mut self, rx: &mut Receivers) -> Result<(), Error> {
        use mpsc::error::TryRecvError::{Disconnected, Empty};
        let mut budget = EVENT_BUDGET;
        let mut live = [true; 6];
        while budget > 0 && live.iter().any(|l| *l) {
            for (i, l) in live.iter_mut().enumerate() {
                if !*l {
                    continue;
                }
                let r = match i {
                    0 => rx.nodes.try_recv().map(|c| self.on_node(c, Instant::now())),
                    1 => rx.pods.try_recv().map(|c| self.on_pod(c, Instant::now())),
                    2 => rx.namespaces.try_recv().map(|c| self.on_namespace(c)),
                    3 => rx.claims.try_recv().map(|c| self.on_claim(c, Instant::now())),
                    4 => rx.volumes.try_recv().map(|c| self.on_volume(c, Instant::now())),
                    _ => rx.classes.try_recv().map(|c| self.on_class(c, Instant::now())),
                };
                match r {
                    Ok(()) => budget = budget.saturating_sub(1),
                    Err(Empty) => *l = false,
                    Err(Disconnected) => return Err(Error::WatchEnded(WATCHES[i])),
                }
            }
        }
        Ok(())
    }

    /// Run until `stop` fires (`Ok`) or a watch ends (`Err`).
    pub async fn run(mut self, mut rx: Receivers, stop: &CancellationToken) -> Result<(), Error> {
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut last_stats = Instant::now();
        let mut decisions: u64 = 0;
        let result = loop {
            if stop.is_cancelled() {
                break Ok(());
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + HOUSEKEEPING;
                self.housekeeping(Instant::now());
                if last_stats.elapsed() >= STATS_EVERY {
                    last_stats = Instant::now();
                    self.log_stats();
                }
            }
            if let Err(e) = self.drain(&mut rx) {
                break Err(e);
            }
            while let Some(r) = self.binds.try_join_next_with_id() {
                self.on_bind_joined(r, Instant::now());
            }
            if self.synced() && self.binds.len() < self.cfg.bind_concurrency {
                if let Some(popped) = self.queue.pop(Instant::now()) {
                    self.schedule_one(popped, Instant::now());
                    decisions += 1;
                    if decisions % YIELD_EVERY == 0 {
                        // Let the watch, binding and report tasks on this thread run.
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            }
            let wake = self.queue.next_wakeup().map_or(next_housekeeping, |t| t.min(next_housekeeping));
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                c = rx.nodes.recv() => match c {
                    Some(c) => self.on_node(c, Instant::now()),
                    None => break Err(Error::WatchEnded("nodes")),
                },
                c = rx.pods.recv() => match c {
                    Some(c) => self.on_pod(c, Instant::now()),
                    None => break Err(Error::WatchEnded("pods")),
                },
                c = rx.namespaces.recv() => match c {
                    Some(c) => self.on_namespace(c),
                    None => break Err(Error::WatchEnded("namespaces")),
                },
                c = rx.claims.recv() => match c {
                    Some(c) => self.on_claim(c, Instant::now()),
                    None => break Err(Error::WatchEnded(WATCHES[3])),
                },
                c = rx.volumes.recv() => match c {
                    Some(c) => self.on_volume(c, Instant::now()),
                    None => break Err(Error::WatchEnded(WATCHES[4])),
                },
                c = rx.classes.recv() => match c {
                    Some(c) => self.on_class(c, Instant::now()),
                    None => break Err(Error::WatchEnded(WATCHES[5])),
                },
                Some(r) = self.binds.join_next_with_id(), if !self.binds.is_empty() => self.on_bind_joined(r, Instant::now()),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        };
        self.binds.abort_all();
        self.report_pending(true);
        // Watches end when told to stop too; that is not a failure.
        if stop.is_cancelled() {
            return Ok(());
        }
        result
    }

    fn housekeeping(&mut self, now: Instant) {
        if self.snapshot.expire_assumed(now) > 0 {
            self.queue.cluster_event(now);
        }
        self.reporter.reap();
        self.report_pending(false);
    }

    /// `scheduler_pending_pods`: this scheduler's queue, or nothing once it stops.
    fn report_pending(&self, stopped: bool) {
        let m = crate::metrics::metrics();
        let (active, backoff) =
            if stopped { (0, 0) } else { (self.queue.active_len(), self.queue.unschedulable_len()) };
        m.pending.with_label_values(&["active"]).set(active as i64);
        m.pending.with_label_values(&["backoff"]).set(backoff as i64);
    }

    fn log_stats(&self) {
        tracing::info!(
            nodes = self.snapshot.num_nodes(),
            active = self.queue.active_len(),
            backing_off = self.queue.unschedulable_len(),
            binding = self.binds.len(),
            scheduled = self.stats.scheduled,
            unschedulable = self.stats.unschedulable,
            bind_failures = self.stats.bind_failures,
            "scheduler stats"
        );
    }
}

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;
