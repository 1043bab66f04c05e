//! What the store measures of itself, as Prometheus collectors (unregistered: the API
//! server's `/metrics` registers them next to its own). One set per store, so several
//! stores in one process (tests) keep separate figures.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, Opts};

#[derive(Clone)]
pub struct StoreMetrics {
    /// Seconds per log fsync (`flush_wal(true)`), leader and follower paths alike.
    pub fsync_seconds: Histogram,
    /// Client commands per proposed Raft entry (the group commit).
    pub batch_commands: Histogram,
    /// Batches whose proposal failed (no leader, lost leadership, shutdown, …).
    pub proposal_failures: IntCounter,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        // Names and buckets as etcd's `etcd_disk_wal_fsync_duration_seconds` (1 ms … 8 s).
        let fsync = HistogramOpts::new("keelson_raft_fsync_duration_seconds", "Seconds per Raft log fsync")
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).unwrap_or_default());
        let batch =
            HistogramOpts::new("keelson_raft_group_commit_batch_size", "Client commands per proposed Raft entry")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]);
        let failures = Opts::new("keelson_raft_proposal_failures_total", "Group-commit batches whose proposal failed");
        // Literal, valid options: these constructors cannot fail.
        StoreMetrics {
            fsync_seconds: Histogram::with_opts(fsync).expect("literal histogram options"),
            batch_commands: Histogram::with_opts(batch).expect("literal histogram options"),
            proposal_failures: IntCounter::with_opts(failures).expect("literal counter options"),
        }
    }
}

impl StoreMetrics {
    /// Every collector, for registering.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.fsync_seconds.clone()),
            Box::new(self.batch_commands.clone()),
            Box::new(self.proposal_failures.clone()),
        ]
    }
}
