//! Workloads recorded as histories: the Kubernetes profile through the API, the per-key
//! register through the etcd endpoint, watchers, the canonical log and the compactor.

pub mod canonical;
pub mod controllers;
pub mod kube;
pub mod probe;
pub mod recorder;
pub mod register;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::history::{Clock, ControllerLog, Event, Op, WatchLog};
pub use recorder::Recorder;

/// Process ids per client: after an operation without an answer a client continues as a
/// new process (`id * INCARNATIONS + incarnation`), as in Jepsen. Client ids stay below
/// 4294 so every process id fits a u32.
pub const INCARNATIONS: u32 = 1_000_000;

/// The process id of a client's `incarnation` (wrapping within the client's own range, so
/// two clients never share one).
pub fn process_id(client: u32, incarnation: u32) -> u32 {
    client * INCARNATIONS + incarnation % INCARNATIONS
}

/// How long one request may take before its outcome is "unknown".
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to every master (index = master).
pub struct Endpoints {
    pub etcd: Vec<tonic::transport::Channel>,
    pub kube: Vec<::kube::Client>,
}

impl Endpoints {
    pub fn len(&self) -> usize {
        self.etcd.len()
    }

    pub fn is_empty(&self) -> bool {
        self.etcd.is_empty()
    }
}

/// Which master a client talks to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Always this one.
    Pinned(usize),
    /// A random one per request.
    Spread,
}

impl Target {
    pub fn pick(&self, rng: &mut StdRng, n: usize) -> usize {
        match self {
            Target::Pinned(i) => *i % n.max(1),
            Target::Spread => rng.gen_range(0..n.max(1)),
        }
    }

    /// Half the clients pinned (round robin over the masters), half spread.
    fn for_client(i: usize, masters: usize) -> Target {
        if i % 2 == 0 {
            Target::Pinned((i / 2) % masters.max(1))
        } else {
            Target::Spread
        }
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Namespace of the Kubernetes profile's ConfigMaps (created beforehand).
    pub namespace: String,
    /// etcd key prefix of the register workload (unique per run).
    pub register_prefix: String,
    pub kube_clients: usize,
    pub kube_keys: usize,
    pub register_clients: usize,
    pub register_keys: usize,
    pub watchers: usize,
    pub compact_every: Duration,
    /// Compaction keeps at least this many revisions behind the head.
    pub compact_keep: i64,
    /// Create a probe ReplicaSet this often (None: no controller probe).
    pub controller_probe: Option<Duration>,
    pub seed: u64,
}

/// A running workload.
pub struct Workload {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    recorder: Recorder,
    watch_logs: Vec<Arc<Mutex<WatchLog>>>,
    canonical: Vec<Arc<canonical::Canonical>>,
    canonical_cancel: CancellationToken,
    canonical_tasks: JoinSet<()>,
    canonical_from: i64,
    controllers: Arc<Mutex<ControllerLog>>,
    controller_probe: bool,
}

/// What a stopped workload recorded.
pub struct Recorded {
    pub ops: Vec<Op>,
    pub watches: Vec<WatchLog>,
    pub canonical: Vec<Event>,
    pub canonical_from: i64,
    pub controllers: ControllerLog,
}

impl Workload {
    /// Starts the canonical watchers from `from` (exclusive; a revision before the first
    /// write), then every client.
    pub fn start(cfg: &WorkloadConfig, endpoints: Arc<Endpoints>, clock: Clock, from: i64) -> Workload {
        let recorder = Recorder::new(clock);
        let cancel = CancellationToken::new();
        let canonical_cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut canonical_tasks = JoinSet::new();
        let kube_prefix = kube::etcd_key(&cfg.namespace, "");
        let canonical =
            vec![canonical::Canonical::new(&kube_prefix, from), canonical::Canonical::new(&cfg.register_prefix, from)];
        for log in &canonical {
            canonical_tasks.spawn(canonical::watch(log.clone(), endpoints.clone(), canonical_cancel.clone()));
        }
        let masters = endpoints.len();
        let names: Arc<Vec<String>> = Arc::new((0..cfg.kube_keys).map(|i| format!("cm-{i}")).collect());
        for i in 0..cfg.kube_clients {
            tasks.spawn(kube::client(
                1 + i as u32,
                Target::for_client(i, masters),
                cfg.namespace.clone(),
                names.clone(),
                endpoints.clone(),
                recorder.clone(),
                cfg.seed.wrapping_add(1000 + i as u64),
                cancel.clone(),
            ));
        }
        let keys: Arc<Vec<String>> =
            Arc::new((0..cfg.register_keys).map(|i| format!("{}k{i}", cfg.register_prefix)).collect());
        for i in 0..cfg.register_clients {
            tasks.spawn(register::client(
                101 + i as u32,
                Target::for_client(i, masters),
                keys.clone(),
                endpoints.clone(),
                recorder.clone(),
                cfg.seed.wrapping_add(2000 + i as u64),
                cancel.clone(),
            ));
        }
        let mut watch_logs = Vec::new();
        for i in 0..cfg.watchers {
            let log = Arc::new(Mutex::new(WatchLog {
                watcher: 1 + i as u32,
                prefix: kube_prefix.clone(),
                deliveries: Vec::new(),
            }));
            watch_logs.push(log.clone());
            tasks.spawn(watch::watcher(
                1 + i as u32,
                Target::for_client(i, masters),
                cfg.namespace.clone(),
                endpoints.clone(),
                clock,
                cfg.seed.wrapping_add(3000 + i as u64),
                cancel.clone(),
                log,
            ));
        }
        tasks.spawn(probe::etcd(
            format!("{}probe", cfg.register_prefix),
            endpoints.clone(),
            recorder.clone(),
            cancel.clone(),
        ));
        tasks.spawn(probe::kube(cfg.namespace.clone(), endpoints.clone(), recorder.clone(), cancel.clone()));
        let controllers = Arc::new(Mutex::new(ControllerLog::default()));
        if let Some(every) = cfg.controller_probe {
            tasks.spawn(controllers::creator(
                cfg.namespace.clone(),
                endpoints.clone(),
                clock,
                every,
                controllers.clone(),
                cancel.clone(),
            ));
            tasks.spawn(controllers::pod_watcher(
                cfg.namespace.clone(),
                endpoints.clone(),
                clock,
                controllers.clone(),
                cancel.clone(),
            ));
        }
        tasks.spawn(canonical::compactor(
            canonical.clone(),
            endpoints,
            recorder.clone(),
            cfg.compact_every,
            cfg.compact_keep,
            cancel.clone(),
        ));
        Workload {
            cancel,
            tasks,
            recorder,
            watch_logs,
            canonical,
            canonical_cancel,
            canonical_tasks,
            canonical_from: from,
            controllers,
            controller_probe: cfg.controller_probe.is_some(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Everything recorded so far (for live availability figures).
    pub fn ops_so_far(&self) -> Vec<Op> {
        self.recorder.ops()
    }

    /// Stops the clients and watchers (outstanding requests are recorded as never
    /// completed). The canonical watchers keep running until [`Workload::finish`].
    pub async fn stop_clients(&mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Have the controllers made a pod for a probe ReplicaSet created at or after `mono`
    /// (ns on the run's clock)? True when the run has no controller probe.
    pub fn controllers_acted_since(&self, mono: u64) -> bool {
        let Ok(log) = self.controllers.lock() else { return true };
        if !self.controller_probe {
            return true;
        }
        log.created
            .iter()
            .filter(|(_, _, at)| at.mono >= mono)
            .any(|(name, _, _)| log.pods.iter().any(|p| p.live && &p.owner == name))
    }

    /// The highest revision every canonical watcher has received.
    pub fn canonical_progress(&self) -> i64 {
        self.canonical.iter().map(|c| c.progress.load(std::sync::atomic::Ordering::SeqCst)).min().unwrap_or(0)
    }

    /// Stops the canonical watchers and returns the record. Call once the canonical
    /// progress has reached the final revision.
    pub async fn finish(mut self, up_to: i64) -> Recorded {
        self.stop_clients().await;
        self.canonical_cancel.cancel();
        while self.canonical_tasks.join_next().await.is_some() {}
        let mut canonical: Vec<Event> =
            self.canonical.iter().flat_map(|c| c.events()).filter(|e| e.revision <= up_to).collect();
        canonical.sort();
        let watches = self.watch_logs.iter().filter_map(|l| l.lock().ok().map(|l| l.clone())).collect();
        let controllers = self.controllers.lock().map(|c| c.clone()).unwrap_or_default();
        Recorded { ops: self.recorder.ops(), watches, canonical, canonical_from: self.canonical_from, controllers }
    }
}
