//! The values that cross the store's boundary and travel in Raft entries.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::keys::KeyRange;

/// A master's Raft node id.
pub type NodeId = u64;

/// A master as the membership records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// host:port of the master-to-master gRPC endpoint.
    pub peer_addr: String,
    /// host:port of the etcd v3 endpoint (may be empty until the member has started).
    pub client_addr: String,
    /// Added as a future voter: it joins as a learner and whichever master leads promotes
    /// it once it has caught up. Recorded in the membership so a leader change does not
    /// strand it as a learner (the chaos harness's membership fault found that).
    #[serde(default)]
    pub voter: bool,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of keelson's store.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = crate::sm::snapshot::SnapshotDir,
);

/// A key-value pair as etcd reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key. For deletes, `kv` holds the key and the deleting revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// W3C trace context (`traceparent`, `tracestate`) carried from the caller into the log.
pub type TraceContext = BTreeMap<String, String>;

/// One client command as it travels through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    pub trace: TraceContext,
    /// When set, the command applies only if its entry was committed in this term.
    pub fence_term: Option<u64>,
    /// Set on commands a follower forwarded: the follower answers its client from its
    /// own apply of this command (as etcd does), not from the leader's reply.
    pub origin: Option<RequestId>,
}

/// Identifies a forwarded command across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub node: NodeId,
    pub seq: u64,
}

impl Request {
    pub fn new(command: Command) -> Self {
        Request { command, trace: TraceContext::new(), fence_term: None, origin: None }
    }
}

/// The payload of one Raft entry: a group-committed batch of commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<Request>,
}

/// The per-command results of one entry, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub results: Vec<CommandResult>,
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Txn(Txn),
    Compact { revision: i64 },
    LeaseGrant { id: i64, ttl: i64 },
    LeaseRevoke { id: i64 },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A range read (etcd `RangeRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0 = no limit.
    pub limit: i64,
    /// 0 = latest.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Serve from this master's applied state without a read index.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest { range, ..Default::default() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
    /// The store revision the range was served at.
    pub revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

/// A guard of a transaction (etcd `Compare`); over every key of `range` when it is a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// `mod_revision(key) == rev` — with `rev == 0` this means "key absent".
    pub fn mod_revision(key: impl Into<Vec<u8>>, rev: i64) -> Self {
        Compare { range: KeyRange::single(key), op: CompareOp::Equal, target: CompareTarget::Mod(rev) }
    }
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Txn {
            success: vec![Op::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })],
            ..Default::default()
        }
    }

    /// Put `value` if the key's mod revision is `expected` (0: the key must not exist);
    /// otherwise read the current value back.
    pub fn cas_put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, expected: i64) -> Self {
        let key = key.into();
        Txn {
            compares: vec![Compare::mod_revision(key.clone(), expected)],
            success: vec![Op::Put(PutRequest { key: key.clone(), value: value.into(), ..Default::default() })],
            failure: vec![Op::Range(RangeRequest::new(KeyRange::single(key)))],
        }
    }

    /// Delete the key if its mod revision is `expected`; otherwise read it back.
    pub fn cas_delete(key: impl Into<Vec<u8>>, expected: i64) -> Self {
        let key = key.into();
        Txn {
            compares: vec![Compare::mod_revision(key.clone(), expected)],
            success: vec![Op::Delete(DeleteRequest { range: KeyRange::single(key.clone()), prev_kv: true })],
            failure: vec![Op::Range(RangeRequest::new(KeyRange::single(key)))],
        }
    }

    pub fn delete(range: KeyRange) -> Self {
        Txn { success: vec![Op::Delete(DeleteRequest { range, prev_kv: false })], ..Default::default() }
    }

    /// True when some operation of either branch may write.
    pub fn has_writes(&self) -> bool {
        self.success.iter().chain(self.failure.iter()).any(|op| !matches!(op, Op::Range(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Range(RangeResult),
    Put { prev_kv: Option<KeyValue> },
    Delete { deleted: i64, prev_kvs: Vec<KeyValue> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    pub succeeded: bool,
    pub responses: Vec<OpResult>,
    /// The store revision after the transaction.
    pub revision: i64,
}

impl TxnResult {
    /// The first key-value returned by a range in the responses (what a failed CAS
    /// reads back), if any.
    pub fn current_kv(&self) -> Option<&KeyValue> {
        self.responses.iter().find_map(|r| match r {
            OpResult::Range(rr) => rr.kvs.first(),
            _ => None,
        })
    }
}

/// What applying one command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Txn(TxnResult),
    Compacted { revision: i64 },
    LeaseGranted { id: i64, ttl: i64, revision: i64 },
    LeaseRevoked { revision: i64 },
    Failed(StoreError),
}

/// Whether a read must reflect every write acknowledged before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Read index from the leader, then wait for the local apply (etcd's default).
    #[default]
    Linearizable,
    /// This master's applied state, possibly behind the leader.
    Serializable,
}

/// The leadership as seen by one master, for the layers above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leadership {
    pub is_leader: bool,
    pub term: u64,
    pub leader: Option<NodeId>,
}

/// A member as listed by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub member: Member,
    pub is_learner: bool,
}

/// A master's view of itself, for `etcdctl endpoint status` and `keelson cluster status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub cluster_id: u64,
    pub member_id: NodeId,
    pub name: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub db_size: u64,
    pub is_learner: bool,
}
