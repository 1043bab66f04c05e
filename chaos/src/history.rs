//! Recorded histories: every operation a workload invoked and how it completed, every
//! watch delivery, and the canonical event log the checkers compare them with.
//!
//! Times are recorded twice: wall clock (for the report and for matching a fault's log
//! line) and monotonic nanoseconds since the run started (for ordering: the checkers use
//! only `mono`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One instant, both clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Nanoseconds since the run's start (monotonic). Orders everything.
    pub mono: u64,
    /// Unix time in milliseconds (wall clock), for humans.
    pub wall_ms: u64,
}

/// The run's clock: every recorder shares one so that `mono` values are comparable.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    pub fn now(&self) -> Stamp {
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Stamp { mono: self.start.elapsed().as_nanos() as u64, wall_ms }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// etcd v3 Put of a unique value (register workload).
    Put { key: String, value: String },
    /// etcd v3 linearizable Range of one key (register workload).
    Get { key: String },
    /// Kubernetes create of an object named `key` holding `value`.
    Create { key: String, value: String },
    /// Kubernetes update (PUT) of `key` to `value`, conditional on `expected_rv`.
    Update { key: String, value: String, expected_rv: i64 },
    /// Kubernetes delete of `key`, conditional on `expected_rv` (a precondition).
    Delete { key: String, expected_rv: i64 },
    /// Kubernetes list of the workload's objects.
    List,
    /// etcd v3 compaction to `revision`.
    Compact { revision: i64 },
}

impl OpKind {
    pub fn key(&self) -> Option<&str> {
        match self {
            OpKind::Put { key, .. }
            | OpKind::Get { key }
            | OpKind::Create { key, .. }
            | OpKind::Update { key, .. }
            | OpKind::Delete { key, .. } => Some(key),
            OpKind::List | OpKind::Compact { .. } => None,
        }
    }

    /// Whether the operation changes state when it takes effect.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. } | OpKind::List)
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged. `revision` is the store revision the response named (the write's
    /// revision for a write; the header/list revision for a read); `value` is what a read
    /// returned (`None`: the key was absent) or, for a write, the value now stored.
    Ok { revision: i64, value: Option<String> },
    /// Refused with an answer that guarantees nothing was written (a conflict, a failed
    /// precondition, not found, already exists, or a refusal before sending).
    Fail { error: String },
    /// No answer (timeout, connection lost mid-request, 5xx). A write may or may not have
    /// taken effect — a checker must treat it as "maybe", never as "absent".
    Unknown { error: String },
}

/// One invoke/complete pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (one sequential process) that ran it.
    pub client: u32,
    /// Which master the request went to (index in the cluster), when pinned.
    pub master: Option<usize>,
    pub kind: OpKind,
    pub invoke: Stamp,
    /// `None` only if the run ended with the request still outstanding (treated like
    /// `Unknown` that never returned).
    pub complete: Option<Stamp>,
    pub outcome: Outcome,
}

/// A change to one key, as a watch (or the canonical log) reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Event {
    /// The store revision of the change (a Kubernetes object's resourceVersion).
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
}

/// One thing a watcher received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivery {
    /// A watch (re)started from `from_revision` exclusive: it promises every event with a
    /// revision greater than `from_revision`, in order.
    Start { at: Stamp, from_revision: i64, master: Option<usize> },
    /// Events received in one response (one etcd WatchResponse, or one Kubernetes watch
    /// event). Every event of one revision must arrive in the same delivery.
    Events { at: Stamp, events: Vec<Event> },
    /// A progress notification / Kubernetes BOOKMARK: every event up to `revision` has been
    /// delivered.
    Bookmark { at: Stamp, revision: i64 },
    /// The stream ended (error, EOF or 410 Gone). A following `Start` resumes it; after a
    /// `Relisted` a new window starts.
    Ended { at: Stamp, error: String },
    /// The watcher listed again (after 410 Gone): its state is the list at `revision`; the
    /// next `Start` must be from `revision`.
    Relisted { at: Stamp, revision: i64 },
}

/// Everything one watcher saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    pub watcher: u32,
    /// Only keys starting with this are in scope.
    pub prefix: String,
    pub deliveries: Vec<Delivery>,
}

/// A whole run's record.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub watches: Vec<WatchLog>,
    /// Every change to the workload's keys, in revision order, from a watch on the etcd
    /// endpoint started before the first write and never compacted past.
    pub canonical: Vec<Event>,
    /// The workload's keys at the end (a linearizable read after the cluster converged),
    /// with their mod revisions, and the revision of that read.
    pub final_state: Vec<Event>,
    pub final_revision: i64,
    /// The revision at which the canonical log starts (exclusive).
    pub canonical_from: i64,
    /// The controller probe: ReplicaSets it created and the pods the controllers made.
    #[serde(default)]
    pub controllers: ControllerLog,
}

/// What the controller probe saw: it creates a ReplicaSet of one replica now and then
/// and watches the namespace's pods, so the report can say when the controllers acted
/// after a fault and the checker can say whether two leaders ever acted at once (a
/// replica slot filled twice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerLog {
    /// (ReplicaSet name, replicas, when its create was acknowledged).
    pub created: Vec<(String, i32, Stamp)>,
    /// Every pod change seen, in watch order.
    pub pods: Vec<PodEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    pub at: Stamp,
    pub revision: i64,
    pub pod: String,
    /// The owning ReplicaSet (empty when none).
    pub owner: String,
    /// False once the pod is deleted or terminating.
    pub live: bool,
    /// `spec.nodeName` (empty until the scheduler binds it).
    #[serde(default)]
    pub node: String,
}
