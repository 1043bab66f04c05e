//! The on-disk layout of the image store.
//!
//! ```text
//! <root>/blobs/sha256/<hex>      manifests, configs and layers, by digest; written to
//!                                tmp/ and renamed here once the digest is verified
//! <root>/refs/<escaped ref>      JSON RefRecord: what a reference resolved to
//! <root>/rootfs/<config hex>/    an image's unpacked layers; built in tmp/ and renamed
//!                                here when complete
//! <root>/tmp/                    in-progress files; emptied when the store opens
//! ```
//!
//! Everything that lands outside `tmp/` arrives by `rename`, so a crash leaves either
//! nothing or a complete object.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::reference::escape;

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefRecord {
    /// The normalized reference.
    pub reference: String,
    /// Digest of what the reference points at in the registry (an index for
    /// multi-platform images): the image's repo digest.
    pub manifest_digest: String,
    /// Digest of the platform's image manifest (equal to `manifest_digest` for
    /// single-platform images).
    pub image_manifest_digest: String,
    /// Digest of the image config: the image ID.
    pub config_digest: String,
}

/// Paths under the store's root.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    /// Makes temporary names unique within this process.
    counter: AtomicU64,
}

impl Layout {
    /// Creates the directories and removes anything a previous run left in `tmp/`.
    pub fn open(root: PathBuf) -> io::Result<Layout> {
        let layout = Layout { root, counter: AtomicU64::new(0) };
        for dir in [layout.blob_dir(), layout.refs_dir(), layout.rootfs_dir(), layout.tmp_dir()] {
            fs::create_dir_all(&dir)?;
        }
        for entry in fs::read_dir(layout.tmp_dir())? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The blob with digest `sha256:<hex>` (`hex` already validated by [`sha256_hex`]).
    pub fn blob(&self, hex: &str) -> PathBuf {
        self.blob_dir().join(hex)
    }

    pub fn rootfs(&self, config_hex: &str) -> PathBuf {
        self.rootfs_dir().join(config_hex)
    }

    pub fn ref_file(&self, reference: &str) -> PathBuf {
        self.refs_dir().join(escape(reference))
    }

    /// A fresh path in `tmp/`, nothing there yet.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir().join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Writes `bytes` to `dest` through a synced temporary file and a rename.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = TempPath::new(self.tmp_path("write"));
        let mut file = fs::File::create(tmp.path())?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(tmp.path(), dest)?;
        tmp.keep();
        Ok(())
    }

    pub fn read_ref(&self, reference: &str) -> Option<RefRecord> {
        let path = self.ref_file(reference);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice::<RefRecord>(&bytes) {
            Ok(record) if record.reference == reference => Some(record),
            Ok(record) => {
                tracing::warn!(path = %path.display(), found = %record.reference, reference, "ref file names another reference; ignoring it");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable ref file; ignoring it");
                None
            }
        }
    }

    pub fn write_ref(&self, record: &RefRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        self.write_atomic(&self.ref_file(&record.reference), &bytes)
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest; `None` for anything else
/// (another algorithm, or a malformed digest that must never become a path).
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

/// A temporary file or directory, removed on drop unless [`TempPath::keep`] is called
/// (after it was renamed into place).
#[derive(Debug)]
pub(crate) struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path: Some(path) }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else { return };
        let result = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary image store file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        for bad in [
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:../../{}", &hex[6..]),
            hex.clone(),
        ] {
            assert_eq!(sha256_hex(&bad), None, "{bad}");
        }
    }

    #[test]
    fn open_clears_leftovers_and_refs_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("images");
        let layout = Layout::open(root.clone()).expect("open");
        fs::create_dir_all(layout.tmp_path("rootfs").join("half/unpacked")).expect("leftover dir");
        fs::write(layout.tmp_path("blob"), b"partial").expect("leftover file");
        let layout = Layout::open(root).expect("reopen");
        assert_eq!(fs::read_dir(layout.tmp_dir()).expect("tmp").count(), 0);

        let record = RefRecord {
            reference: "127.0.0.1:5000/busybox:latest".to_owned(),
            manifest_digest: "sha256:aa".to_owned(),
            image_manifest_digest: "sha256:aa".to_owned(),
            config_digest: "sha256:bb".to_owned(),
        };
        layout.write_ref(&record).expect("write ref");
        assert_eq!(layout.read_ref(&record.reference), Some(record));
        assert_eq!(layout.read_ref("127.0.0.1:5000/busybox:other"), None);
        assert_eq!(fs::read_dir(layout.tmp_dir()).expect("tmp").count(), 0);
    }
}
