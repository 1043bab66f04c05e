//! The Raft log on its own RocksDB instance (`<data>/raft`): entries by big-endian index,
//! plus the vote, the committed log id and the last purged log id.
//!
//! Durability: entries are reported flushed only after a WAL fdatasync covers them. A
//! follower appends the leader's entries with one synced write, in line (nothing else
//! waits on its Raft core meanwhile, and it saves two thread hand-offs). The leader
//! writes its own new entries unsynced — so replication can read and send them at once —
//! and hands the flush to a syncer thread that fsyncs once for every append queued
//! behind it (group fsync); its fsync then overlaps the followers'. Group commit also
//! happens above (many client commands per entry) and in openraft (many entries per
//! append). Votes are written synced before `save_vote` returns. `purge` records `last_purged` in the same
//! atomic batch that deletes the entries. The committed log id is not written on its
//! own: it rides along in the next append's batch (openraft only needs a committed id
//! that is not ahead of the truth, and a stale one only means re-learning it).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::keys::{be, from_be};
use crate::types::{NodeId, TypeConfig};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// Counters describing the log's disk work (the fsync histogram is exported on /metrics).
#[derive(Debug, Default)]
pub struct LogStats {
    pub appends: AtomicU64,
    pub entries: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_micros_total: AtomicU64,
    pub fsync_micros_max: AtomicU64,
    pub metrics: crate::metrics::StoreMetrics,
}

/// The log store; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// This master's node id: entries it leads are flushed by the syncer thread.
    id: NodeId,
    syncer: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// The latest committed log id, persisted with the next append.
    committed: Arc<Mutex<Option<LogId<NodeId>>>>,
    stats: Arc<LogStats>,
}

type SResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl LogStore {
    /// Open (or create) the log of master `id` at `dir`.
    pub fn open(dir: &Path, id: NodeId) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // Log entries are short-lived; keep the memtable roomy and skip compression.
        opts.set_write_buffer_size(64 << 20);
        let cfs = [CF_LOGS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        let stats = Arc::new(LogStats::default());
        let (syncer, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let (sync_db, sync_stats) = (db.clone(), stats.clone());
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(sync_db, rx, sync_stats))
            .map_err(StoreError::storage)?;
        let mut store = LogStore { db, id, syncer, committed: Arc::default(), stats };
        let committed = store.get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED).map_err(StoreError::storage)?.flatten();
        store.committed = Arc::new(Mutex::new(committed));
        Ok(store)
    }

    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    fn cf(&self, name: &str) -> SResult<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| read_err(format!("missing column family {name}")))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> SResult<Option<T>> {
        let cf = self.cf(CF_META)?;
        match self.db.get_cf(cf, key).map_err(read_err)? {
            None => Ok(None),
            Some(b) => Ok(Some(decode(&b).map_err(read_err)?)),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T, sync: bool) -> SResult<()> {
        let cf = self.cf(CF_META)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let bytes = encode(v).map_err(write_err)?;
        self.db.put_cf_opt(cf, key, bytes, &wo).map_err(write_err)
    }
}

impl LogStats {
    fn fsync(&self, micros: u64) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.fsync_micros_max.fetch_max(micros, Ordering::Relaxed);
        self.metrics.fsync_seconds.observe(micros as f64 / 1e6);
    }
}

/// The syncer thread: drain every queued callback, fsync the WAL once, report them all.
fn sync_loop(db: Arc<DB>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>, stats: Arc<LogStats>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let started = Instant::now();
        let res = db.flush_wal(true);
        stats.fsync(started.elapsed().as_micros() as u64);
        for cb in batch {
            cb.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.cf(CF_LOGS)?;
        let mut out = Vec::new();
        let from = be(start);
        for item in self.db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(read_err)?;
            let idx = from_be(&k).ok_or_else(|| read_err("bad log key"))?;
            if !range.contains(&idx) {
                break;
            }
            out.push(decode::<Entry<TypeConfig>>(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(KEY_PURGED)?;
        let cf = self.cf(CF_LOGS)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                Some(decode::<Entry<TypeConfig>>(&v).map_err(read_err)?.log_id)
            }
        };
        let last_log_id = last.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        self.put_meta(KEY_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(&std::io::Error::other(e.to_string())).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        Ok(*self.committed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        crate::failpoint!("store::log::append", write_err("failpoint store::log::append"));
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        let mut last_leader = None;
        for e in entries {
            batch.put_cf(cf, be(e.log_id.index), encode(&e).map_err(write_err)?);
            last_leader = Some(e.log_id.leader_id.node_id);
            n += 1;
        }
        let committed = *self.committed.lock().unwrap_or_else(|e| e.into_inner());
        batch.put_cf(self.cf(CF_META)?, KEY_COMMITTED, encode(&committed).map_err(write_err)?);
        // Our own entries (we lead): write now, fsync on the syncer thread. The leader's
        // entries on a follower: one synced write, in line.
        let leading = last_leader == Some(self.id);
        let mut wo = WriteOptions::default();
        wo.set_sync(!leading);
        let started = Instant::now();
        self.db.write_opt(batch, &wo).map_err(write_err)?;
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.stats.entries.fetch_add(n, Ordering::Relaxed);
        if leading {
            self.syncer.send(callback).map_err(|_| write_err("log syncer stopped"))?;
        } else {
            self.stats.fsync(started.elapsed().as_micros() as u64);
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, be(log_id.index), be(u64::MAX));
        batch.delete_cf(cf, be(u64::MAX));
        self.db.write(batch).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        crate::failpoint!("store::log::purge", write_err("failpoint store::log::purge"));
        let logs = self.cf(CF_LOGS)?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, KEY_PURGED, encode(&log_id).map_err(write_err)?);
        batch.delete_range_cf(logs, be(0), be(log_id.index + 1));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(write_err)
    }
}
