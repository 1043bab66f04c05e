//! keelson's store: an openraft-replicated RocksDB MVCC key-value store with etcd's
//! semantics (revisions, CAS transactions, paged ranges at a revision, gap-free
//! watches, compaction, leases) and a subset of etcd's v3 gRPC API.
//!
//! Start at [`Store`] (`node.rs`): it opens a data directory, starts Raft and the
//! master-to-master service, and is the contract the API server uses. The replicated
//! state machine lives in `sm/` (apply in `sm/apply.rs`, reads in `sm/db.rs`), the Raft
//! log in `log_store.rs`, group commit in `proposer.rs`, batched read index in
//! `read_index.rs`, watches in `watch.rs`, and the etcd endpoint in `etcd/`.

pub mod codec;
pub mod config;
mod election_gate;
pub mod error;
pub mod etcd;
pub mod failpoints;
pub mod keys;
pub mod lease;
pub mod log_store;
pub mod metrics;
mod mux;
mod network;
mod node;
mod peer;
mod pool;
mod proposer;
mod read_index;
mod router;
pub mod sm;
pub(crate) mod stand;
pub mod trace;
pub mod types;
mod validate;
pub mod watch;
mod wire;

/// Generated protobuf and gRPC code: etcd's v3 subset and the peer service.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod peer {
        tonic::include_proto!("keelson.peer");
    }
}

pub use config::{ClusterState, StoreConfig};
pub use error::StoreError;
pub use keys::KeyRange;
pub use node::{Store, MAX_LEASE_TTL};
pub use types::{
    Command, Compare, CompareOp, CompareTarget, Consistency, DeleteRequest, Event, EventKind, KeyValue, Leadership,
    Member, MemberInfo, NodeId, Op, OpResult, PutRequest, RangeRequest, RangeResult, StoreStatus, Txn, TxnResult,
};
pub use validate::check_txn;
pub use watch::{WatchRequest, WatchUpdate, Watcher};
