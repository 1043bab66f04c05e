//! The replicated state machine: MVCC key-value data, revisions, leases and the
//! per-revision change log, in RocksDB; applied by openraft, read by everyone else
//! through [`SmShared`].

pub(crate) mod apply;
pub(crate) mod db;
pub mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::sync::{oneshot, Notify};

use crate::error::{Result, StoreError};
use crate::lease::Lessor;
use crate::types::{
    CommandResult, Member, NodeId, OpResult, ProposalResult, RangeRequest, RangeResult, RequestId, TypeConfig,
};
use crate::watch::WatchHub;
use apply::Applier;
pub use db::RevEvents;
use db::{SmDb, SmMeta};
use snapshot::SnapshotDir;

const CURRENT_FILE: &str = "CURRENT";

/// The state machine's on-disk locations.
#[derive(Debug, Clone)]
pub(crate) struct SmDirs {
    /// `<data>/sm`: generations of the database plus `CURRENT`.
    pub sm_root: PathBuf,
    /// `<data>/snapshots`.
    pub snap_root: PathBuf,
}

impl SmDirs {
    pub fn new(data_dir: &Path) -> Self {
        SmDirs { sm_root: data_dir.join("sm"), snap_root: data_dir.join("snapshots") }
    }
}

/// What readers, watchers and the lessor share with the applying state machine.
pub struct SmShared {
    db: RwLock<Arc<SmDb>>,
    generation: AtomicU64,
    rev: AtomicI64,
    compact: AtomicI64,
    applied_index: AtomicU64,
    pub(crate) hub: WatchHub,
    pub(crate) lessor: Arc<Lessor>,
    /// Woken when the logical compact revision moves (the compactor waits on it).
    pub(crate) compacted: Notify,
    /// Commands whose proposer waits for this master's apply of them (writes forwarded
    /// to the leader, and the leader's own).
    pub(crate) waiters: Waiters,
    /// This master's apply-span context of recent traced writes, by revision.
    pub(crate) write_traces: crate::trace::WriteTraces,
    dirs: SmDirs,
}

/// Results of commands tagged with a [`RequestId`], delivered by the local apply.
#[derive(Default)]
pub(crate) struct Waiters {
    count: AtomicUsize,
    map: Mutex<HashMap<RequestId, oneshot::Sender<CommandResult>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, oneshot::Sender<CommandResult>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, id: RequestId) -> oneshot::Receiver<CommandResult> {
        let (tx, rx) = oneshot::channel();
        let mut m = self.lock();
        m.insert(id, tx);
        self.count.store(m.len(), Ordering::Release);
        rx
    }

    pub fn forget(&self, ids: impl IntoIterator<Item = RequestId>) {
        let mut m = self.lock();
        for id in ids {
            m.remove(&id);
        }
        self.count.store(m.len(), Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    fn deliver(&self, results: Vec<(RequestId, CommandResult)>) {
        let mut m = self.lock();
        for (id, r) in results {
            if let Some(tx) = m.remove(&id) {
                let _ = tx.send(r);
            }
        }
        self.count.store(m.len(), Ordering::Release);
    }
}

impl SmShared {
    pub(crate) fn db(&self) -> Arc<SmDb> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current store revision on this master.
    pub fn revision(&self) -> i64 {
        self.rev.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact.load(Ordering::Acquire)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// A range read of this master's applied state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResult> {
        let db = self.db();
        let view = db.view();
        view.range(req)
    }

    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        self.db().lease_keys(id)
    }

    pub fn leases(&self) -> Result<std::collections::BTreeMap<i64, i64>> {
        Ok(self.db().load_meta()?.leases)
    }

    /// Events of revisions `from..=to` from the database (at most `max` revisions).
    pub fn read_events(&self, from: i64, to: i64, max: usize) -> Result<Vec<RevEvents>> {
        self.db().read_events(from, to, max)
    }

    pub fn db_size(&self) -> u64 {
        self.db().size()
    }

    /// Physically compact up to the logical compact revision, in bounded steps.
    /// Returns the number of history versions removed.
    pub(crate) fn compact_step(&self, max_revs: i64) -> Result<u64> {
        crate::failpoint!("store::compact", StoreError::Storage("failpoint store::compact".into()));
        let db = self.db();
        let meta = db.load_meta()?;
        if meta.phys_compact >= meta.compact {
            return Ok(0);
        }
        let to = meta.compact.min(meta.phys_compact.max(0) + max_revs.max(1));
        db.compact_physical(meta.phys_compact, to)
    }

    pub(crate) fn needs_compaction(&self) -> Result<bool> {
        let meta = self.db().load_meta()?;
        Ok(meta.phys_compact < meta.compact)
    }
}

fn gen_name(n: u64) -> String {
    format!("gen-{n:016}")
}

/// The state machine that openraft drives.
pub struct StateMachineStore {
    shared: Arc<SmShared>,
    meta: SmMeta,
}

impl StateMachineStore {
    /// Open the state machine under `data_dir`, reusing the current generation.
    pub fn open(data_dir: &Path, lessor: Arc<Lessor>) -> Result<Self> {
        let dirs = SmDirs::new(data_dir);
        std::fs::create_dir_all(&dirs.sm_root)?;
        let generation = match std::fs::read_to_string(dirs.sm_root.join(CURRENT_FILE)) {
            Ok(s) => s
                .trim()
                .strip_prefix("gen-")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Config(format!("corrupt {}/CURRENT: {s:?}", dirs.sm_root.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_current(&dirs.sm_root, 1)?;
                1
            }
            Err(e) => return Err(e.into()),
        };
        // Leftover generations from an interrupted install are garbage.
        for entry in std::fs::read_dir(&dirs.sm_root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("gen-") && name != gen_name(generation) {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        if let Some((_, snap)) = snapshot::latest(&dirs.snap_root)? {
            snapshot::prune(&dirs.snap_root, &snap.path, true)?;
        } else {
            snapshot::prune(&dirs.snap_root, Path::new(""), true)?;
        }
        let db = SmDb::open(&dirs.sm_root.join(gen_name(generation)))?;
        let meta = db.load_meta()?;
        let shared = Arc::new(SmShared {
            db: RwLock::new(Arc::new(db)),
            generation: AtomicU64::new(generation),
            rev: AtomicI64::new(meta.rev),
            compact: AtomicI64::new(meta.compact),
            applied_index: AtomicU64::new(meta.applied.map_or(0, |l| l.index)),
            hub: WatchHub::new(meta.rev),
            lessor,
            compacted: Notify::new(),
            waiters: Waiters::default(),
            write_traces: Default::default(),
            dirs,
        });
        Ok(StateMachineStore { shared, meta })
    }

    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }

    fn publish(&self, applied: apply::Applied) {
        let s = &self.shared;
        s.rev.store(self.meta.rev, Ordering::Release);
        s.compact.store(self.meta.compact, Ordering::Release);
        s.applied_index.store(self.meta.applied.map_or(0, |l| l.index), Ordering::Release);
        s.hub.publish(applied.events, self.meta.rev);
        if !applied.lease_changes.is_empty() {
            s.lessor.on_applied(&applied.lease_changes);
        }
        if applied.compacted {
            s.compacted.notify_one();
        }
    }

    fn install(&mut self, meta: &SnapshotMeta<NodeId, Member>, snap: &SnapshotDir) -> Result<()> {
        let dirs = self.shared.dirs.clone();
        // Keep the snapshot as our current one (it may come from outside `snap_root`).
        let kept = if snap.path.starts_with(&dirs.snap_root) {
            snapshot::write_meta(&snap.path, meta)?;
            snapshot::finalize(&dirs.snap_root, &snap.path, &meta.snapshot_id)?
        } else {
            let tmp = snapshot::incoming_dir(&dirs.snap_root)?;
            snapshot::clone_db(snap, &tmp)?;
            snapshot::write_meta(&tmp, meta)?;
            snapshot::finalize(&dirs.snap_root, &tmp, &meta.snapshot_id)?
        };
        snapshot::prune(&dirs.snap_root, &kept.path, false)?;

        let next = self.shared.generation.load(Ordering::Acquire) + 1;
        let dest = dirs.sm_root.join(gen_name(next));
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        snapshot::clone_db(&kept, &dest)?;
        let db = Arc::new(SmDb::open(&dest)?);
        let mut loaded = db.load_meta()?;
        loaded.applied = meta.last_log_id;
        loaded.membership = meta.last_membership.clone();
        write_current(&dirs.sm_root, next)?;
        let old = {
            let mut guard = self.shared.db.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *guard, db)
        };
        self.shared.generation.store(next, Ordering::Release);
        retire(old);
        self.meta = loaded;
        let s = &self.shared;
        s.rev.store(self.meta.rev, Ordering::Release);
        s.compact.store(self.meta.compact, Ordering::Release);
        s.applied_index.store(self.meta.applied.map_or(0, |l| l.index), Ordering::Release);
        s.hub.reset(self.meta.rev);
        s.lessor.reload(&self.meta.leases);
        s.compacted.notify_one();
        tracing::info!(snapshot = %meta.snapshot_id, revision = self.meta.rev, "installed snapshot");
        Ok(())
    }
}

fn write_current(sm_root: &Path, generation: u64) -> Result<()> {
    let tmp = sm_root.join("CURRENT.tmp");
    std::fs::write(&tmp, gen_name(generation))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, sm_root.join(CURRENT_FILE))?;
    Ok(())
}

/// Close a replaced generation once no reader holds it, then delete its files.
fn retire(old: Arc<SmDb>) {
    let work = move || {
        let mut old = old;
        for _ in 0..6000 {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    let path = db.path().to_path_buf();
                    drop(db);
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove old state machine");
                    }
                    return;
                }
                Err(still_shared) => {
                    old = still_shared;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        tracing::warn!("old state machine generation still in use after 10 minutes; left on disk");
    };
    if let Err(e) = std::thread::Builder::new().name("sm-retire".into()).spawn(work) {
        tracing::warn!(error = %e, "could not start retire thread");
    }
}

type SResult<T> = std::result::Result<T, StorageError<NodeId>>;

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<ProposalResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        crate::failpoint!("store::apply", sm_err("failpoint store::apply"));
        let db = self.shared.db();
        let mut responses = Vec::new();
        let watched = !self.shared.waiters.is_empty();
        let mut waited = Vec::new();
        let mut applier = Applier::new(&db, &mut self.meta);
        for entry in entries {
            applier.set_applied(entry.log_id).map_err(sm_err)?;
            let term = entry.log_id.leader_id.term;
            match entry.payload {
                EntryPayload::Blank => responses.push(ProposalResult::default()),
                EntryPayload::Membership(m) => {
                    applier.set_membership(StoredMembership::new(Some(entry.log_id), m)).map_err(sm_err)?;
                    responses.push(ProposalResult::default());
                }
                EntryPayload::Normal(p) => {
                    let mut results = Vec::with_capacity(p.requests.len());
                    for req in &p.requests {
                        // A traced command's apply is a span of its trace, on every master.
                        let span = (!req.trace.is_empty()).then(|| {
                            let s =
                                tracing::info_span!("raft.apply", raft.term = term, raft.index = entry.log_id.index,);
                            crate::trace::adopt(&s, &req.trace);
                            s
                        });
                        let _entered = span.as_ref().map(|s| s.enter());
                        let r = applier.apply(req, term).map_err(sm_err)?;
                        if span.is_some() {
                            if let CommandResult::Txn(t) = &r {
                                // Only a write made this revision (a read-only txn reports the current one).
                                let wrote = t.responses.iter().any(|o| match o {
                                    OpResult::Put { .. } => true,
                                    OpResult::Delete { deleted, .. } => *deleted > 0,
                                    OpResult::Range(_) => false,
                                });
                                if wrote {
                                    self.shared.write_traces.record(t.revision, crate::trace::current());
                                }
                            }
                        }
                        if let (true, Some(origin)) = (watched, req.origin) {
                            waited.push((origin, r.clone()));
                        }
                        results.push(r);
                    }
                    responses.push(ProposalResult { results });
                }
            }
        }
        let applied = applier.commit().map_err(sm_err)?;
        self.publish(applied);
        if !waited.is_empty() {
            self.shared.waiters.deliver(waited);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The checkpoint is taken here, between applies, so data and meta agree.
        let prepared = (|| -> Result<(PathBuf, SnapshotMeta<NodeId, Member>)> {
            let last = self.meta.applied;
            let snapshot_id = format!(
                "{}-{}-{:x}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                rand::random::<u32>()
            );
            let dir = snapshot::building_dir(&self.shared.dirs.snap_root, &snapshot_id)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            self.shared.db().checkpoint(&dir)?;
            let meta = SnapshotMeta { last_log_id: last, last_membership: self.meta.membership.clone(), snapshot_id };
            snapshot::write_meta(&dir, &meta)?;
            Ok((dir, meta))
        })();
        SnapshotBuilder { snap_root: self.shared.dirs.snap_root.clone(), prepared: Some(prepared) }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<SnapshotDir>> {
        let dir = snapshot::incoming_dir(&self.shared.dirs.snap_root).map_err(snap_err)?;
        Ok(Box::new(SnapshotDir { path: dir }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<SnapshotDir>,
    ) -> SResult<()> {
        crate::failpoint!("store::snapshot::install", snap_err("failpoint store::snapshot::install"));
        self.install(meta, &snapshot).map_err(|e| {
            tracing::error!(error = %e, "snapshot install failed");
            snap_err(e)
        })
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let found = snapshot::latest(&self.shared.dirs.snap_root).map_err(snap_err)?;
        Ok(found.map(|(meta, dir)| Snapshot { meta, snapshot: Box::new(dir) }))
    }
}

/// Finishes a snapshot whose checkpoint was taken by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    snap_root: PathBuf,
    prepared: Option<Result<(PathBuf, SnapshotMeta<NodeId, Member>)>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        crate::failpoint!("store::snapshot::build", snap_err("failpoint store::snapshot::build"));
        let (dir, meta) =
            self.prepared.take().ok_or_else(|| snap_err("snapshot builder used twice"))?.map_err(snap_err)?;
        let kept = snapshot::finalize(&self.snap_root, &dir, &meta.snapshot_id).map_err(snap_err)?;
        snapshot::prune(&self.snap_root, &kept.path, false).map_err(snap_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(kept) })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::keys::KeyRange;
    use crate::types::{Command, Proposal, Request, Txn};

    fn entry(index: u64, requests: Vec<Request>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal { requests }),
        }
    }

    fn count_history(db: &SmDb) -> usize {
        db.count(db::CF_HIST).unwrap()
    }

    #[tokio::test]
    async fn physical_compaction_keeps_exactly_what_reads_at_or_above_it_need() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path(), Arc::new(Lessor::new())).unwrap();
        let mut index = 0;
        let mut apply = |reqs: Vec<Request>| {
            index += 1;
            entry(index, reqs)
        };
        // a: 5 versions; b: 2 versions then deleted; c: 1 version.
        let mut entries = Vec::new();
        for i in 0..5 {
            entries.push(apply(vec![Request::new(Command::Txn(Txn::put("a", format!("a{i}"))))]));
        }
        entries.push(apply(vec![Request::new(Command::Txn(Txn::put("b", "b0")))]));
        entries.push(apply(vec![Request::new(Command::Txn(Txn::put("b", "b1")))]));
        entries.push(apply(vec![Request::new(Command::Txn(Txn::delete(KeyRange::single("b"))))]));
        entries.push(apply(vec![Request::new(Command::Txn(Txn::put("c", "c0")))]));
        sm.apply(entries).await.unwrap();
        let shared = sm.shared();
        assert_eq!(shared.revision(), 10, "revision 1 is the empty store; nine writes follow");
        assert_eq!(count_history(&shared.db()), 9);
        // Compact at 9 (b's delete): a keeps its newest version (rev 6), b is gone
        // entirely, c (rev 10, above the compact revision) is untouched.
        sm.apply(vec![apply(vec![Request::new(Command::Compact { revision: 9 })])]).await.unwrap();
        while shared.needs_compaction().unwrap() {
            shared.compact_step(2).unwrap();
        }
        assert_eq!(count_history(&shared.db()), 2, "a@6 and c@10 remain");
        let mut r = crate::types::RangeRequest::new(KeyRange { key: vec![0], range_end: vec![0] });
        r.revision = 9;
        let at9 = shared.range(&r).unwrap();
        assert_eq!(at9.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"a".to_vec()]);
        assert_eq!(at9.kvs[0].value, b"a4");
        r.revision = 8;
        assert!(matches!(shared.range(&r), Err(StoreError::Compacted { compact_revision: 9 })));
        assert_eq!(shared.read_events(9, 10, 10).unwrap().iter().map(|e| e.revision).collect::<Vec<_>>(), vec![9, 10]);
        assert!(shared.read_events(1, 10, 10).unwrap().is_empty(), "events below the compact revision are gone");
    }
}
