//! openraft's storage conformance suite against the RocksDB log store and state machine.

use std::sync::{Arc, Mutex};

use keelson_store::lease::Lessor;
use keelson_store::log_store::LogStore;
use keelson_store::sm::StateMachineStore;
use keelson_store::types::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

/// The suite's entries are led by node 0: as node 0 the log store takes its leader path
/// (fsync on the syncer thread), as any other node its follower path (synced in line).
/// The directories live as long as the builder: the suite drops its guard before the
/// stores, and a directory removed under an open RocksDB is left half-deleted.
struct Builder {
    id: NodeId,
    dirs: Mutex<Vec<TempDir>>,
}

impl Builder {
    fn new(id: NodeId) -> Builder {
        Builder { id, dirs: Mutex::new(Vec::new()) }
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft"), self.id).expect("open log store");
        let sm = StateMachineStore::open(dir.path(), Arc::new(Lessor::new())).expect("open state machine");
        self.dirs.lock().expect("dirs").push(dir);
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_storage_suite_leader_path() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder::new(0))
}

#[test]
fn openraft_storage_suite_follower_path() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder::new(7))
}
