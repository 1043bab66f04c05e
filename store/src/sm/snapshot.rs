//! Snapshots on disk: each is a RocksDB checkpoint of the state machine plus a
//! `snapshot.meta` file, in `<data>/snapshots/<id>/`. Building hard-links SST files;
//! sending streams the directory's files; installing clones a snapshot into a fresh
//! state-machine generation.

use std::path::{Path, PathBuf};

use openraft::SnapshotMeta;

use crate::codec::{decode, encode};
use crate::error::{Result, StoreError};
use crate::types::{Member, NodeId};

pub(crate) const META_FILE: &str = "snapshot.meta";
const INCOMING_PREFIX: &str = "incoming-";
const BUILDING_PREFIX: &str = "building-";

/// A snapshot's data: the directory that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDir {
    pub path: PathBuf,
}

impl SnapshotDir {
    /// Every regular file of the snapshot (name, size), the meta file last.
    pub fn files(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let md = entry.metadata()?;
            if md.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                out.push((name, md.len()));
            }
        }
        out.sort_by_key(|(n, _)| (n == META_FILE, n.clone()));
        Ok(out)
    }
}

pub(crate) fn write_meta(dir: &Path, meta: &SnapshotMeta<NodeId, Member>) -> Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    std::fs::write(&tmp, encode(meta)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    Ok(())
}

pub(crate) fn read_meta(dir: &Path) -> Result<SnapshotMeta<NodeId, Member>> {
    decode(&std::fs::read(dir.join(META_FILE))?)
}

/// A fresh directory for a snapshot being received from the leader.
pub(crate) fn incoming_dir(root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    let dir = root.join(format!("{INCOMING_PREFIX}{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A directory name for a snapshot being built (checkpoint target: must not exist).
pub(crate) fn building_dir(root: &Path, id: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root)?;
    Ok(root.join(format!("{BUILDING_PREFIX}{id}")))
}

/// Move a complete snapshot directory to its final name `<root>/<id>`.
pub(crate) fn finalize(root: &Path, from: &Path, id: &str) -> Result<SnapshotDir> {
    let to = root.join(id);
    if to.exists() {
        std::fs::remove_dir_all(&to)?;
    }
    std::fs::rename(from, &to)?;
    Ok(SnapshotDir { path: to })
}

/// The newest complete snapshot under `root`.
pub(crate) fn latest(root: &Path) -> Result<Option<(SnapshotMeta<NodeId, Member>, SnapshotDir)>> {
    let Ok(rd) = std::fs::read_dir(root) else { return Ok(None) };
    let mut best: Option<(SnapshotMeta<NodeId, Member>, SnapshotDir)> = None;
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(INCOMING_PREFIX) || name.starts_with(BUILDING_PREFIX) || !entry.path().is_dir() {
            continue;
        }
        let Ok(meta) = read_meta(&entry.path()) else { continue };
        if best.as_ref().is_none_or(|(b, _)| meta.last_log_id > b.last_log_id) {
            best = Some((meta, SnapshotDir { path: entry.path() }));
        }
    }
    Ok(best)
}

/// Remove every complete snapshot except `keep`; with `stale`, also leftovers of
/// interrupted builds and transfers (only safe when none is in progress).
pub(crate) fn prune(root: &Path, keep: &Path, stale: bool) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else { return Ok(()) };
    for entry in rd {
        let entry = entry?;
        let path = entry.path();
        if path == keep || !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let partial = name.starts_with(INCOMING_PREFIX) || name.starts_with(BUILDING_PREFIX);
        if partial && !stale {
            continue;
        }
        std::fs::remove_dir_all(&path)?;
    }
    Ok(())
}

/// Populate `dest` (new) with the snapshot's database files: SST files are immutable
/// and hard-linked, the rest copied.
pub(crate) fn clone_db(snapshot: &SnapshotDir, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for (name, _) in snapshot.files()? {
        if name == META_FILE {
            continue;
        }
        let from = snapshot.path.join(&name);
        let to = dest.join(&name);
        if name.ends_with(".sst") {
            if std::fs::hard_link(&from, &to).is_ok() {
                continue;
            }
        }
        std::fs::copy(&from, &to).map_err(|e| StoreError::Storage(format!("copy {}: {e}", from.display())))?;
    }
    Ok(())
}
