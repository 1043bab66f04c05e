//! Applying committed commands: one RocksDB write batch per `apply` call, with an
//! in-memory overlay so later commands in the batch read the effects of earlier ones.
//! Every successful write bumps the revision exactly once (all of a transaction's
//! changes share one revision); failed compares and no-op deletes leave no gap.

use std::collections::BTreeMap;

use openraft::{LogId, StoredMembership};
use rocksdb::WriteBatch;

use super::db::{
    attachment, KvRecord, RevEvents, SmDb, SmMeta, CF_HIST, CF_KV, CF_LEASES, CF_LEASE_KEYS, CF_META, CF_REVS,
    META_APPLIED, META_COMPACT, META_MEMBERSHIP, META_REV,
};
use crate::codec::encode;
use crate::error::{Result, StoreError};
use crate::keys::{be, history_key, KeyRange};
use crate::types::{
    Command, CommandResult, Compare, CompareOp, CompareTarget, DeleteRequest, Event, EventKind, KeyValue, Member,
    NodeId, Op, OpResult, PutRequest, RangeRequest, RangeResult, Request, Txn, TxnResult,
};

/// A lease change the leader's lessor must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked { id: i64 },
}

/// What one `apply` call produced, for the watch hub and the lessor.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub events: Vec<RevEvents>,
    pub lease_changes: Vec<LeaseChange>,
    pub compacted: bool,
}

pub(crate) struct Applier<'a> {
    db: &'a SmDb,
    meta: &'a mut SmMeta,
    batch: WriteBatch,
    /// Latest-value changes not yet in the database (None = deleted).
    overlay: BTreeMap<Vec<u8>, Option<KvRecord>>,
    /// Lease attachments added (true) or removed (false) in this batch.
    attach_overlay: BTreeMap<Vec<u8>, bool>,
    out: Applied,
    meta_dirty: bool,
}

impl<'a> Applier<'a> {
    pub fn new(db: &'a SmDb, meta: &'a mut SmMeta) -> Self {
        Applier {
            db,
            meta,
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            attach_overlay: BTreeMap::new(),
            out: Applied::default(),
            meta_dirty: false,
        }
    }

    pub fn set_applied(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.meta.applied = Some(log_id);
        self.batch.put_cf(self.db.cf(CF_META)?, META_APPLIED, encode(&Some(log_id))?);
        Ok(())
    }

    pub fn set_membership(&mut self, m: StoredMembership<NodeId, Member>) -> Result<()> {
        self.batch.put_cf(self.db.cf(CF_META)?, META_MEMBERSHIP, encode(&m)?);
        self.meta.membership = m;
        Ok(())
    }

    /// Write the batch; the caller publishes what it returns.
    pub fn commit(mut self) -> Result<Applied> {
        if self.meta_dirty {
            let meta = self.db.cf(CF_META)?;
            self.batch.put_cf(meta, META_REV, encode(&self.meta.rev)?);
            self.batch.put_cf(meta, META_COMPACT, encode(&self.meta.compact)?);
        }
        self.db.write(self.batch)?;
        Ok(self.out)
    }

    /// Apply one request committed in `term`. Failures are results, not errors: only a
    /// storage fault is an `Err`.
    pub fn apply(&mut self, req: &Request, term: u64) -> Result<CommandResult> {
        if let Some(expected) = req.fence_term {
            if expected != term {
                return Ok(CommandResult::Failed(StoreError::TermMismatch { expected, actual: term }));
            }
        }
        match &req.command {
            Command::Txn(txn) => self.txn(txn),
            Command::Compact { revision } => self.compact(*revision),
            Command::LeaseGrant { id, ttl } => self.lease_grant(*id, *ttl),
            Command::LeaseRevoke { id } => self.lease_revoke(*id),
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KvRecord>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.db.get_latest(key),
        }
    }

    fn scan(&self, range: &KeyRange) -> Result<BTreeMap<Vec<u8>, KvRecord>> {
        let mut map = self.db.scan_latest(range)?;
        if range.is_single() {
            if let Some(v) = self.overlay.get(&range.key) {
                match v {
                    Some(r) => map.insert(range.key.clone(), r.clone()),
                    None => map.remove(&range.key),
                };
            }
            return Ok(map);
        }
        for (k, v) in self.overlay.range(range.lower().to_vec()..) {
            if range.upper().is_some_and(|u| k.as_slice() >= u.as_slice()) {
                break;
            }
            match v {
                Some(r) => map.insert(k.clone(), r.clone()),
                None => map.remove(k),
            };
        }
        Ok(map)
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let kvs = self.scan(&c.range)?;
        if kvs.is_empty() {
            // etcd: comparing the value of a missing key always fails; other targets
            // compare against zero values.
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_one(c, None));
        }
        Ok(kvs.values().all(|r| compare_one(c, Some(r))))
    }

    fn txn(&mut self, txn: &Txn) -> Result<CommandResult> {
        let mut succeeded = true;
        for c in &txn.compares {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &txn.success } else { &txn.failure };
        // Checks that depend on state, before anything is written.
        for op in ops {
            if let Op::Put(p) = op {
                if p.lease != 0 && !p.ignore_lease && !self.meta.leases.contains_key(&p.lease) {
                    return Ok(CommandResult::Failed(StoreError::LeaseNotFound(p.lease)));
                }
                if (p.ignore_value || p.ignore_lease) && self.latest(&p.key)?.is_none() {
                    return Ok(CommandResult::Failed(StoreError::KeyNotFound));
                }
            }
            if let Op::Range(r) = op {
                if r.revision > 0 && r.revision != self.meta.rev {
                    return Ok(CommandResult::Failed(StoreError::Unsupported(
                        "a range at a past revision inside a transaction".into(),
                    )));
                }
            }
        }
        let wrev = self.meta.rev + 1;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                Op::Range(r) => OpResult::Range(self.range(r)?),
                Op::Put(p) => self.put(p, wrev, &mut events)?,
                Op::Delete(d) => self.delete(d, wrev, &mut events)?,
            });
        }
        self.finish_revision(wrev, events)?;
        Ok(CommandResult::Txn(TxnResult { succeeded, responses, revision: self.meta.rev }))
    }

    /// Record the events of revision `wrev`; a no-op when nothing changed.
    fn finish_revision(&mut self, wrev: i64, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.batch.put_cf(self.db.cf(CF_REVS)?, be(wrev as u64), encode(&events)?);
        self.meta.rev = wrev;
        self.meta_dirty = true;
        self.out.events.push(RevEvents { revision: wrev, events });
        Ok(())
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResult> {
        let all = self.scan(&r.range)?;
        let count = all.len() as i64;
        let mut kvs: Vec<KeyValue> = all
            .iter()
            .filter(|(_, rec)| {
                (r.min_mod_revision <= 0 || rec.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision <= 0 || rec.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision <= 0 || rec.create_revision >= r.min_create_revision)
                    && (r.max_create_revision <= 0 || rec.create_revision <= r.max_create_revision)
            })
            .map(|(k, rec)| {
                let mut kv = rec.to_kv(k);
                if r.keys_only {
                    kv.value.clear();
                }
                kv
            })
            .collect();
        if r.count_only {
            kvs.clear();
        }
        let limit = if r.limit > 0 { r.limit as usize } else { usize::MAX };
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        Ok(RangeResult { kvs, more, count, revision: self.meta.rev })
    }

    fn set_latest(&mut self, key: &[u8], rec: Option<KvRecord>, wrev: i64) -> Result<()> {
        let kv = self.db.cf(CF_KV)?;
        match &rec {
            Some(r) => self.batch.put_cf(kv, key, encode(r)?),
            None => self.batch.delete_cf(kv, key),
        }
        self.batch.put_cf(self.db.cf(CF_HIST)?, history_key(key, wrev), encode(&rec)?);
        self.overlay.insert(key.to_vec(), rec);
        Ok(())
    }

    fn attach(&mut self, lease: i64, key: &[u8], on: bool) -> Result<()> {
        let cf = self.db.cf(CF_LEASE_KEYS)?;
        let ak = attachment(lease, key);
        if on {
            self.batch.put_cf(cf, &ak, []);
        } else {
            self.batch.delete_cf(cf, &ak);
        }
        self.attach_overlay.insert(ak, on);
        Ok(())
    }

    fn put(&mut self, p: &PutRequest, wrev: i64, events: &mut Vec<Event>) -> Result<OpResult> {
        let prev = self.latest(&p.key)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let rec = KvRecord {
            create_revision: prev.as_ref().map_or(wrev, |r| r.create_revision),
            mod_revision: wrev,
            version: prev.as_ref().map_or(1, |r| r.version + 1),
            lease,
            value,
        };
        let prev_lease = prev.as_ref().map_or(0, |r| r.lease);
        if prev_lease != lease {
            if prev_lease != 0 {
                self.attach(prev_lease, &p.key, false)?;
            }
            if lease != 0 {
                self.attach(lease, &p.key, true)?;
            }
        }
        let prev_kv = prev.map(|r| r.to_kv(&p.key));
        events.push(Event { kind: EventKind::Put, kv: rec.to_kv(&p.key), prev_kv: prev_kv.clone() });
        self.set_latest(&p.key, Some(rec), wrev)?;
        Ok(OpResult::Put { prev_kv: if p.prev_kv { prev_kv } else { None } })
    }

    fn delete(&mut self, d: &DeleteRequest, wrev: i64, events: &mut Vec<Event>) -> Result<OpResult> {
        let victims = self.scan(&d.range)?;
        let mut prev_kvs = Vec::new();
        for (key, rec) in &victims {
            self.delete_key(key, rec, wrev, events)?;
            if d.prev_kv {
                prev_kvs.push(rec.to_kv(key));
            }
        }
        Ok(OpResult::Delete { deleted: victims.len() as i64, prev_kvs })
    }

    fn delete_key(&mut self, key: &[u8], rec: &KvRecord, wrev: i64, events: &mut Vec<Event>) -> Result<()> {
        if rec.lease != 0 {
            self.attach(rec.lease, key, false)?;
        }
        events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue { key: key.to_vec(), mod_revision: wrev, ..Default::default() },
            prev_kv: Some(rec.to_kv(key)),
        });
        self.set_latest(key, None, wrev)
    }

    fn compact(&mut self, revision: i64) -> Result<CommandResult> {
        if revision <= self.meta.compact {
            return Ok(CommandResult::Failed(StoreError::Compacted { compact_revision: self.meta.compact }));
        }
        if revision > self.meta.rev {
            return Ok(CommandResult::Failed(StoreError::FutureRevision {
                requested: revision,
                current: self.meta.rev,
            }));
        }
        self.meta.compact = revision;
        self.meta_dirty = true;
        self.out.compacted = true;
        Ok(CommandResult::Compacted { revision: self.meta.rev })
    }

    fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<CommandResult> {
        if self.meta.leases.contains_key(&id) {
            return Ok(CommandResult::Failed(StoreError::LeaseExists(id)));
        }
        self.meta.leases.insert(id, ttl);
        self.batch.put_cf(self.db.cf(CF_LEASES)?, be(id as u64), encode(&ttl)?);
        self.out.lease_changes.push(LeaseChange::Granted { id, ttl });
        Ok(CommandResult::LeaseGranted { id, ttl, revision: self.meta.rev })
    }

    fn lease_revoke(&mut self, id: i64) -> Result<CommandResult> {
        if self.meta.leases.remove(&id).is_none() {
            return Ok(CommandResult::Failed(StoreError::LeaseNotFound(id)));
        }
        self.batch.delete_cf(self.db.cf(CF_LEASES)?, be(id as u64));
        // Attached keys: the database's list corrected by this batch's changes.
        let mut keys: std::collections::BTreeSet<Vec<u8>> = self.db.lease_keys(id)?.into_iter().collect();
        let prefix = (id as u64).to_be_bytes();
        for (ak, on) in self.attach_overlay.range(prefix.to_vec()..) {
            if !ak.starts_with(&prefix) {
                break;
            }
            if *on {
                keys.insert(ak[8..].to_vec());
            } else {
                keys.remove(&ak[8..]);
            }
        }
        let wrev = self.meta.rev + 1;
        let mut events = Vec::new();
        for key in keys {
            if let Some(rec) = self.latest(&key)? {
                self.delete_key(&key, &rec, wrev, &mut events)?;
            }
        }
        self.finish_revision(wrev, events)?;
        self.out.lease_changes.push(LeaseChange::Revoked { id });
        Ok(CommandResult::LeaseRevoked { revision: self.meta.rev })
    }
}

fn compare_one(c: &Compare, rec: Option<&KvRecord>) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => rec.map_or(0, |r| r.version).cmp(v),
        CompareTarget::Create(v) => rec.map_or(0, |r| r.create_revision).cmp(v),
        CompareTarget::Mod(v) => rec.map_or(0, |r| r.mod_revision).cmp(v),
        CompareTarget::Lease(v) => rec.map_or(0, |r| r.lease).cmp(v),
        CompareTarget::Value(v) => rec.map_or(&[][..], |r| r.value.as_slice()).cmp(v.as_slice()),
    };
    match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Greater => ord == Ordering::Greater,
        CompareOp::Less => ord == Ordering::Less,
    }
}
