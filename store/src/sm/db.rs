//! The state machine's RocksDB instance (`<data>/sm/<generation>`) and every read of it.
//!
//! Column families:
//! - `kv`: raw key → latest [`KvRecord`] (deleted keys are absent);
//! - `hist`: encoded key ‖ !revision → `Option<KvRecord>` (None = tombstone), newest first;
//! - `revs`: revision → the events of that revision (watch catch-up, compaction input);
//! - `meta`: applied log id, membership, current/compact/physically-compacted revision;
//! - `leases`: lease id → TTL; `lease_keys`: lease id ‖ key → ().

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::{LogId, StoredMembership};
use rocksdb::{
    checkpoint::Checkpoint, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::{Result, StoreError};
use crate::keys::{be, from_be, history_key, history_lower, lease_key, split_history_key, KeyRange};
use crate::types::{Event, KeyValue, Member, NodeId, RangeRequest, RangeResult, SortOrder, SortTarget};

pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_HIST: &str = "hist";
pub(crate) const CF_REVS: &str = "revs";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_LEASES: &str = "leases";
pub(crate) const CF_LEASE_KEYS: &str = "lease_keys";
const ALL_CFS: [&str; 6] = [CF_KV, CF_HIST, CF_REVS, CF_META, CF_LEASES, CF_LEASE_KEYS];

pub(crate) const META_APPLIED: &[u8] = b"applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const META_REV: &[u8] = b"rev";
pub(crate) const META_COMPACT: &[u8] = b"compact";
pub(crate) const META_PHYS_COMPACT: &[u8] = b"phys_compact";

/// The stored form of a key's version (the key itself is the RocksDB key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvRecord {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl KvRecord {
    pub fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// The events of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// What the state machine persisted about itself, loaded on open.
#[derive(Debug, Clone, Default)]
pub(crate) struct SmMeta {
    pub applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Member>,
    pub rev: i64,
    pub compact: i64,
    pub phys_compact: i64,
    pub leases: BTreeMap<i64, i64>,
}

/// Block cache shared by the state machine's column families.
const BLOCK_CACHE_BYTES: usize = 256 << 20;

/// One generation of the state machine database.
pub(crate) struct SmDb {
    db: DB,
    path: PathBuf,
}

impl SmDb {
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(32 << 20);
        // No WAL (see `write`): column families must flush together so the applied log
        // id in `meta` always describes exactly the data beside it.
        opts.set_atomic_flush(true);
        // Every put reads the key's current record before writing it: keep blocks
        // cached (RocksDB's default is 8 MiB, so a store of a few hundred thousand keys
        // went to the page cache and LZ4 on every apply) and give `kv` a bloom filter.
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = ALL_CFS.map(|name| {
            let mut o = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            if name == CF_KV {
                table.set_bloom_filter(10.0, false);
            }
            o.set_block_based_table_factory(&table);
            if name == CF_KV || name == CF_HIST || name == CF_REVS {
                o.set_compression_type(DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(SmDb { db, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Storage(format!("missing column family {name}")))
    }

    /// Writes skip RocksDB's WAL, as etcd's backend commits bbolt only every 100 ms: the
    /// Raft log is the durable record. After a crash the state machine reopens at its
    /// last (atomic) flush and openraft re-applies the committed log after it; the log is
    /// purged only behind a snapshot, and taking one flushes the memtables first.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Flush every column family (atomically): a clean shutdown then reopens without
    /// re-applying the log.
    pub fn flush(&self) -> Result<()> {
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, key: &[u8], ro: Option<&ReadOptions>) -> Result<Option<T>> {
        let cf = self.cf(CF_META)?;
        let raw = match ro {
            Some(ro) => self.db.get_cf_opt(cf, key, ro)?,
            None => self.db.get_cf(cf, key)?,
        };
        raw.map(|b| decode(&b)).transpose()
    }

    pub fn load_meta(&self) -> Result<SmMeta> {
        let mut leases = BTreeMap::new();
        for item in self.db.iterator_cf(self.cf(CF_LEASES)?, IteratorMode::Start) {
            let (k, v) = item?;
            let id = from_be(&k).ok_or_else(|| StoreError::storage("bad lease key"))? as i64;
            leases.insert(id, decode::<i64>(&v)?);
        }
        Ok(SmMeta {
            applied: self.meta_get::<Option<LogId<NodeId>>>(META_APPLIED, None)?.flatten(),
            membership: self.meta_get(META_MEMBERSHIP, None)?.unwrap_or_default(),
            // Like etcd, an empty store is at revision 1; the first write makes 2.
            rev: self.meta_get(META_REV, None)?.unwrap_or(1),
            compact: self.meta_get(META_COMPACT, None)?.unwrap_or(0),
            phys_compact: self.meta_get(META_PHYS_COMPACT, None)?.unwrap_or(0),
            leases,
        })
    }

    /// Latest record of one key, straight from the database.
    pub fn get_latest(&self, key: &[u8]) -> Result<Option<KvRecord>> {
        self.db.get_cf(self.cf(CF_KV)?, key)?.map(|b| decode(&b)).transpose()
    }

    /// Every latest record in `range`, in key order.
    pub fn scan_latest(&self, range: &KeyRange) -> Result<BTreeMap<Vec<u8>, KvRecord>> {
        let mut out = BTreeMap::new();
        if range.is_single() {
            if let Some(r) = self.get_latest(&range.key)? {
                out.insert(range.key.clone(), r);
            }
            return Ok(out);
        }
        let mut ro = ReadOptions::default();
        if let Some(u) = range.upper() {
            ro.set_iterate_upper_bound(u);
        }
        for item in self.db.iterator_cf_opt(self.cf(CF_KV)?, ro, IteratorMode::From(range.lower(), Direction::Forward))
        {
            let (k, v) = item?;
            out.insert(k.to_vec(), decode(&v)?);
        }
        Ok(out)
    }

    /// Keys attached to a lease.
    pub fn lease_keys(&self, lease: i64) -> Result<Vec<Vec<u8>>> {
        let prefix = (lease as u64).to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LEASE_KEYS)?, IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(k[8..].to_vec());
        }
        Ok(out)
    }

    /// A consistent point-in-time view for reads.
    pub fn view(&self) -> ReadView<'_> {
        ReadView { db: self, snap: self.db.snapshot() }
    }

    /// Events of revisions `from..=to`, at most `max` revisions, in order. Stops early at a
    /// gap (a revision removed by compaction): the caller checks the first revision.
    pub fn read_events(&self, from: i64, to: i64, max: usize) -> Result<Vec<RevEvents>> {
        let mut out = Vec::new();
        let mut expect = from;
        let start = be(from as u64);
        for item in self.db.iterator_cf(self.cf(CF_REVS)?, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            let rev = from_be(&k).ok_or_else(|| StoreError::storage("bad revision key"))? as i64;
            if rev > to || rev != expect || out.len() >= max {
                break;
            }
            out.push(RevEvents { revision: rev, events: decode(&v)? });
            expect += 1;
        }
        Ok(out)
    }

    /// Number of entries in a column family (tests and diagnostics).
    #[cfg(test)]
    pub fn count(&self, cf: &str) -> Result<usize> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Approximate bytes on disk (SST files plus memtables).
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for name in ALL_CFS {
            if let Ok(cf) = self.cf(name) {
                for prop in ["rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables"] {
                    total += self.db.property_int_value_cf(cf, prop).ok().flatten().unwrap_or(0);
                }
            }
        }
        total
    }

    /// A RocksDB checkpoint (hard-linked SST files, memtables flushed) at `dir`.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Physical compaction of revisions `[from, to)` where `to` is the logical compact
    /// revision: drop every version superseded at or before `to`, tombstones that are the
    /// newest version at or before `to`, and the events below `to`. Returns the number of
    /// history entries removed.
    pub fn compact_physical(&self, from: i64, to: i64) -> Result<u64> {
        let revs = self.cf(CF_REVS)?;
        let hist = self.cf(CF_HIST)?;
        let mut keys = std::collections::BTreeSet::new();
        let start = be(from.max(0) as u64);
        for item in self.db.iterator_cf(revs, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            let rev = from_be(&k).ok_or_else(|| StoreError::storage("bad revision key"))? as i64;
            if rev >= to {
                break;
            }
            for ev in decode::<Vec<Event>>(&v)? {
                keys.insert(ev.kv.key);
            }
        }
        let mut batch = WriteBatch::default();
        let mut removed = 0u64;
        for key in &keys {
            let seek = history_key(key, to);
            let mut first = true;
            for item in self.db.iterator_cf(hist, IteratorMode::From(&seek, Direction::Forward)) {
                let (hk, v) = item?;
                let Some((k, _rev)) = split_history_key(&hk) else { break };
                if &k != key {
                    break;
                }
                let keep = first && decode::<Option<KvRecord>>(&v)?.is_some();
                first = false;
                if !keep {
                    batch.delete_cf(hist, &hk);
                    removed += 1;
                }
            }
        }
        batch.delete_range_cf(revs, be(from.max(0) as u64), be(to.max(0) as u64));
        batch.put_cf(self.cf(CF_META)?, META_PHYS_COMPACT, encode(&to)?);
        self.write(batch)?;
        Ok(removed)
    }
}

/// Reads against one RocksDB snapshot: the revision and the data agree.
pub(crate) struct ReadView<'a> {
    db: &'a SmDb,
    snap: rocksdb::Snapshot<'a>,
}

impl ReadView<'_> {
    fn ro(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snap);
        ro
    }

    pub fn revision(&self) -> Result<i64> {
        Ok(self.db.meta_get(META_REV, Some(&self.ro()))?.unwrap_or(1))
    }

    pub fn compact_revision(&self) -> Result<i64> {
        Ok(self.db.meta_get(META_COMPACT, Some(&self.ro()))?.unwrap_or(0))
    }

    /// etcd's Range at a revision, with limit, count, sort and revision filters.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResult> {
        let current = self.revision()?;
        let compact = self.compact_revision()?;
        let rev = if req.revision <= 0 { current } else { req.revision };
        if rev > current {
            return Err(StoreError::FutureRevision { requested: rev, current });
        }
        if rev < compact {
            return Err(StoreError::Compacted { compact_revision: compact });
        }
        let sorted = req.sort_order != SortOrder::None || req.sort_target != SortTarget::Key;
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        let limit = if req.limit > 0 { req.limit as usize } else { usize::MAX };
        // Without sorting, only the first `limit` (+1 to know `more`) need their values.
        let keep = if sorted { usize::MAX } else { limit.saturating_add(1) };
        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut visit = |key: &[u8], rec: &KvRecord| {
            count += 1;
            if req.count_only {
                return;
            }
            if filtered && !passes_filters(req, rec) {
                return;
            }
            if kvs.len() < keep {
                let mut kv = rec.to_kv(key);
                if req.keys_only {
                    kv.value.clear();
                }
                kvs.push(kv);
            }
        };
        if rev == current {
            self.scan_kv(&req.range, &mut visit)?;
        } else {
            self.scan_hist(&req.range, rev, &mut visit)?;
        }
        if sorted {
            sort_kvs(&mut kvs, req.sort_target, req.sort_order);
        }
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        Ok(RangeResult { kvs, more, count, revision: current })
    }

    fn scan_kv(&self, range: &KeyRange, visit: &mut impl FnMut(&[u8], &KvRecord)) -> Result<()> {
        let cf = self.db.cf(CF_KV)?;
        if range.is_single() {
            if let Some(b) = self.db.db.get_cf_opt(cf, &range.key, &self.ro())? {
                visit(&range.key, &decode(&b)?);
            }
            return Ok(());
        }
        let mut ro = self.ro();
        if let Some(u) = range.upper() {
            ro.set_iterate_upper_bound(u);
        }
        for item in self.db.db.iterator_cf_opt(cf, ro, IteratorMode::From(range.lower(), Direction::Forward)) {
            let (k, v) = item?;
            visit(&k, &decode(&v)?);
        }
        Ok(())
    }

    /// The newest version at or before `rev` of every key in `range`.
    fn scan_hist(&self, range: &KeyRange, rev: i64, visit: &mut impl FnMut(&[u8], &KvRecord)) -> Result<()> {
        let cf = self.db.cf(CF_HIST)?;
        let upper = range.upper();
        let start = if range.is_single() { history_key(&range.key, rev) } else { history_lower(range.lower()) };
        let mut done: Option<Vec<u8>> = None;
        for item in self.db.db.iterator_cf_opt(cf, self.ro(), IteratorMode::From(&start, Direction::Forward)) {
            let (hk, v) = item?;
            let Some((key, krev)) = split_history_key(&hk) else {
                return Err(StoreError::storage("bad history key"));
            };
            if upper.as_ref().is_some_and(|u| key.as_slice() >= u.as_slice()) {
                break;
            }
            if done.as_ref() == Some(&key) || krev > rev {
                continue;
            }
            if let Some(rec) = decode::<Option<KvRecord>>(&v)? {
                visit(&key, &rec);
            }
            done = Some(key);
        }
        Ok(())
    }
}

fn passes_filters(req: &RangeRequest, rec: &KvRecord) -> bool {
    (req.min_mod_revision <= 0 || rec.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision <= 0 || rec.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision <= 0 || rec.create_revision >= req.min_create_revision)
        && (req.max_create_revision <= 0 || rec.create_revision <= req.max_create_revision)
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        ord.then_with(|| a.key.cmp(&b.key))
    });
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

/// The lease→key attachment key, re-exported for the applier.
pub(crate) fn attachment(lease: i64, key: &[u8]) -> Vec<u8> {
    lease_key(lease, key)
}
