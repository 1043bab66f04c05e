//! The store's error type. Every variant is something a caller can act on; the etcd layer
//! maps them to the gRPC statuses (and messages) real etcd returns.

use crate::types::NodeId;

/// What went wrong in a store operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// The requested revision is below the compact revision.
    #[error("mvcc: required revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: i64 },
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision (requested {requested}, current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("requested lease not found: {0:x}")]
    LeaseNotFound(i64),
    #[error("lease already exists: {0:x}")]
    LeaseExists(i64),
    #[error("too large lease TTL {0}")]
    LeaseTtlTooLarge(i64),
    #[error("key not found")]
    KeyNotFound,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("too many operations in txn request ({count} > {limit})")]
    TooManyOps { count: usize, limit: usize },
    #[error("request is too large ({size} bytes > {limit} bytes)")]
    RequestTooLarge { size: usize, limit: usize },
    #[error("key is not provided")]
    EmptyKey,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The cluster has no leader right now (election in progress or no quorum).
    #[error("no leader")]
    NoLeader,
    /// This master is not the leader; `leader` is who it believes is.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("request timed out: {0}")]
    Timeout(String),
    /// A fenced write reached the log in a term other than the one it was issued in.
    #[error("write fenced: issued in term {expected}, committed in term {actual}")]
    TermMismatch { expected: u64, actual: u64 },
    #[error("member not found: {0:x}")]
    MemberNotFound(u64),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("raft error: {0}")]
    Raft(String),
    #[error("peer error: {0}")]
    Peer(String),
    /// The outcome of a write is unknown (the connection broke after it was sent).
    #[error("the outcome of the request is unknown: {0}")]
    Unknown(String),
    #[error("the store is shutting down")]
    Shutdown,
    /// Refused start: the data directory or flags are inconsistent.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// Result alias used across the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
