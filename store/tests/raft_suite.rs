//! openraft's storage conformance suite against the RocksDB log store and state machine.

use std::sync::Arc;

use keelson_store::lease::Lessor;
use keelson_store::log_store::LogStore;
use keelson_store::sm::StateMachineStore;
use keelson_store::types::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

/// The suite's entries are led by node 0: as node 0 the log store takes its leader path
/// (fsync on the syncer thread), as any other node its follower path (synced in line).
struct Builder {
    id: NodeId,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft"), self.id).expect("open log store");
        let sm = StateMachineStore::open(dir.path(), Arc::new(Lessor::new())).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_leader_path() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder { id: 0 })
}

#[test]
fn openraft_storage_suite_follower_path() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder { id: 7 })
}
