//! openraft's storage conformance suite against the RocksDB log store and state machine.

use std::sync::Arc;

use keelson_store::lease::Lessor;
use keelson_store::log_store::LogStore;
use keelson_store::sm::StateMachineStore;
use keelson_store::types::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft")).expect("open log store");
        let sm = StateMachineStore::open(dir.path(), Arc::new(Lessor::new())).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder)
}
