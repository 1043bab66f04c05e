//! Applying layer tars onto a root filesystem, with OCI whiteouts.
//!
//! Synchronous on purpose (the caller runs it under `spawn_blocking`): a layer is a tar
//! stream applied entry by entry in order. Rules, after the OCI image spec's
//! "Applying changesets" and containerd's `archive.Apply`:
//!
//! - `dir/.wh.name` deletes `dir/name` as it came from lower layers;
//! - `dir/.wh..wh..opq` makes `dir` opaque: everything lower layers put under it goes,
//!   what this layer puts there stays (whatever the order of entries in the tar);
//! - an entry replacing an existing path removes it first unless both are directories,
//!   so a file never writes through a symlink left by a lower layer;
//! - paths with `..` or a leading `/` are refused, and the `tar` crate's `unpack_in`
//!   refuses to create anything whose parent resolves (through symlinks) outside the
//!   root, or hard links to targets outside it. Whiteouts resolve their parent the same
//!   way before deleting anything.
//!
//! Device nodes and FIFOs are skipped: containers get their `/dev` from the runtime.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Prefix of a whiteout file's name.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's path is absolute, has `..`, or resolves outside the root.
    #[error("layer entry {path:?} points outside the image root filesystem; refusing to unpack it")]
    Escape {
        /// The entry's path as written in the tar.
        path: PathBuf,
    },
    /// Reading the archive or writing one of its entries failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the entry's path.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
        let what = what.into();
        move |source| UnpackError::Io { what, source }
    }
}

/// Applies one uncompressed layer tar read from `layer` onto `root` (a directory).
///
/// Returns the layer's diff ID, `sha256:<hex>` of the whole uncompressed stream, for the
/// caller to check against the image config's `rootfs.diff_ids`.
pub(crate) fn apply_layer<R: Read>(root: &Path, layer: R) -> Result<String, UnpackError> {
    let canonical_root = root.canonicalize().map_err(UnpackError::io(format!("resolving {}", root.display())))?;
    let mut hashing = HashingReader { inner: layer, hasher: Sha256::new() };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        let mut applier = Applier { root, canonical_root: &canonical_root, this_layer: HashSet::new() };
        let entries = archive.entries().map_err(UnpackError::io("reading the layer archive"))?;
        for entry in entries {
            let mut entry = entry.map_err(UnpackError::io("reading the layer archive"))?;
            applier.apply(&mut entry)?;
        }
    }
    // The tar reader stops at the end-of-archive marker; the diff ID covers any padding after.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::io("reading the layer archive"))?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

struct Applier<'a> {
    root: &'a Path,
    canonical_root: &'a Path,
    /// Paths (relative to the root) this layer created, and all their ancestors: what an
    /// opaque marker or whiteout in this same layer must not remove.
    this_layer: HashSet<PathBuf>,
}

impl Applier<'_> {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::io("reading an entry's path"))?.into_owned();
        let rel = relative_path(&raw)?;
        let Some(name) = rel.file_name() else {
            // "." or "/": the root itself, which we own.
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name = name.as_bytes();
        if name == OPAQUE_MARKER {
            return self.make_opaque(&parent, &raw);
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            if target.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.*` names are aufs bookkeeping, meaningless here.
                return Ok(());
            }
            return self.whiteout(&parent.join(OsStr::from_bytes(target)), &raw);
        }

        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            tracing::debug!(path = %rel.display(), "skipping device node or fifo in layer");
            return Ok(());
        }
        self.clear_conflict(&rel, kind.is_dir(), &raw)?;
        let unpacked = entry.unpack_in(self.root).map_err(UnpackError::io(format!("unpacking {}", raw.display())))?;
        if !unpacked {
            return Err(UnpackError::Escape { path: raw });
        }
        for ancestor in rel.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.this_layer.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        Ok(())
    }

    /// Resolves `rel` (a directory relative to the root) through any symlinks, refusing
    /// anything that lands outside the root. `None` if it does not exist.
    fn resolve_dir(&self, rel: &Path, raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
        let joined = self.root.join(rel);
        match joined.canonicalize() {
            Ok(resolved) if resolved.starts_with(self.canonical_root) => Ok(Some(resolved)),
            Ok(_) => Err(UnpackError::Escape { path: raw.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UnpackError::Io { what: format!("resolving {}", joined.display()), source: e }),
        }
    }

    /// Removes what a lower layer left at `rel` unless the new entry and the old one are
    /// both directories (then the directory merges).
    fn clear_conflict(&self, rel: &Path, is_dir: bool, raw: &Path) -> Result<(), UnpackError> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(());
        };
        let Some(parent) = self.resolve_dir(parent, raw)? else {
            return Ok(());
        };
        let path = parent.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() && is_dir => Ok(()),
            Ok(meta) => remove(&path, meta.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(UnpackError::Io { what: format!("inspecting {}", path.display()), source: e }),
        }
    }

    /// `.wh.<name>`: deletes `rel` as lower layers left it.
    fn whiteout(&self, rel: &Path, raw: &Path) -> Result<(), UnpackError> {
        if self.this_layer.contains(rel) {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(UnpackError::Escape { path: raw.to_path_buf() });
        };
        let Some(parent) = self.resolve_dir(parent, raw)? else {
            return Ok(());
        };
        let path = parent.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) => remove(&path, meta.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(UnpackError::Io { what: format!("inspecting {}", path.display()), source: e }),
        }
    }

    /// `.wh..wh..opq` in `rel`: removes everything under it that this layer did not create.
    fn make_opaque(&self, rel: &Path, raw: &Path) -> Result<(), UnpackError> {
        let Some(dir) = self.resolve_dir(rel, raw)? else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Ok(());
        }
        self.clear_lower(&dir, rel)
    }

    fn clear_lower(&self, dir: &Path, rel: &Path) -> Result<(), UnpackError> {
        let children = fs::read_dir(dir).map_err(UnpackError::io(format!("listing {}", dir.display())))?;
        for child in children {
            let child = child.map_err(UnpackError::io(format!("listing {}", dir.display())))?;
            let path = child.path();
            let child_rel = rel.join(child.file_name());
            let is_dir = child.file_type().map_err(UnpackError::io(format!("inspecting {}", path.display())))?.is_dir();
            if !self.this_layer.contains(&child_rel) {
                remove(&path, is_dir)?;
            } else if is_dir {
                self.clear_lower(&path, &child_rel)?;
            }
        }
        Ok(())
    }
}

/// Removes a file, symlink (never its target) or directory tree.
fn remove(path: &Path, is_dir: bool) -> Result<(), UnpackError> {
    let result = if is_dir { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    result.map_err(UnpackError::io(format!("removing {}", path.display())))
}

/// The entry's path as a plain relative path: `.` components dropped, `..` and absolute
/// paths refused.
fn relative_path(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Escape { path: raw.to_path_buf() });
            }
        }
    }
    Ok(rel)
}

/// Passes bytes through while hashing them.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Builds layer tars in memory, owned by whoever runs the test (so ownership can be
    /// preserved without root).
    struct LayerBuilder {
        builder: tar::Builder<Vec<u8>>,
        uid: u64,
        gid: u64,
    }

    impl LayerBuilder {
        fn new(owner: &Path) -> Self {
            let meta = fs::metadata(owner).expect("stat the test dir");
            Self { builder: tar::Builder::new(Vec::new()), uid: u64::from(meta.uid()), gid: u64::from(meta.gid()) }
        }

        fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(size);
            header.set_uid(self.uid);
            header.set_gid(self.gid);
            header.set_mtime(1_700_000_000);
            header
        }

        /// Raw path bytes, so tests can write paths the safe setters refuse (`..`, `/x`).
        fn append(mut self, path: &str, mut header: tar::Header, data: &[u8]) -> Self {
            let name = &mut header.as_old_mut().name;
            name.fill(0);
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            self.builder.append(&header, data).expect("append to tar");
            self
        }

        fn dir(self, path: &str) -> Self {
            let header = self.header(tar::EntryType::Directory, 0o755, 0);
            self.append(path, header, &[])
        }

        fn file(self, path: &str, contents: &str) -> Self {
            let header = self.header(tar::EntryType::Regular, 0o644, contents.len() as u64);
            self.append(path, header, contents.as_bytes())
        }

        fn exec(self, path: &str, contents: &str) -> Self {
            let header = self.header(tar::EntryType::Regular, 0o755, contents.len() as u64);
            self.append(path, header, contents.as_bytes())
        }

        fn link(self, kind: tar::EntryType, path: &str, target: &str) -> Self {
            let mut header = self.header(kind, 0o777, 0);
            header.set_link_name(target).expect("link name");
            self.append(path, header, &[])
        }

        fn symlink(self, path: &str, target: &str) -> Self {
            self.link(tar::EntryType::Symlink, path, target)
        }

        fn hardlink(self, path: &str, target: &str) -> Self {
            self.link(tar::EntryType::Link, path, target)
        }

        fn whiteout(self, path: &str) -> Self {
            let header = self.header(tar::EntryType::Regular, 0, 0);
            self.append(path, header, &[])
        }

        fn build(self) -> Vec<u8> {
            self.builder.into_inner().expect("finish tar")
        }
    }

    fn must_apply(root: &Path, layer: &[u8]) -> String {
        apply_layer(root, layer).expect("apply layer")
    }

    fn read(root: &Path, rel: &str) -> Option<String> {
        fs::read_to_string(root.join(rel)).ok()
    }

    fn exists(root: &Path, rel: &str) -> bool {
        fs::symlink_metadata(root.join(rel)).is_ok()
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).expect("create rootfs");
        (dir, root)
    }

    #[test]
    fn files_dirs_links_and_modes_are_unpacked() {
        let (_dir, root) = setup();
        let layer = LayerBuilder::new(&root)
            .dir("./")
            .dir("./bin/")
            .exec("./bin/busybox", "#!/bin/true\n")
            .symlink("./bin/sh", "/bin/busybox")
            .hardlink("./bin/ls", "bin/busybox")
            .file("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
            .build();
        let diff_id = must_apply(&root, &layer);

        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&layer))));
        let busybox = fs::metadata(root.join("bin/busybox")).expect("busybox");
        assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(root.join("bin/sh")).expect("sh is a symlink"), Path::new("/bin/busybox"));
        let ls = fs::metadata(root.join("bin/ls")).expect("ls");
        assert_eq!(ls.ino(), busybox.ino(), "ls is a hard link to busybox");
        assert_eq!(read(&root, "etc/passwd").as_deref(), Some("root:x:0:0::/root:/bin/sh\n"));
    }

    #[test]
    fn whiteout_deletes_files_and_directories_from_lower_layers() {
        let (_dir, root) = setup();
        let lower = LayerBuilder::new(&root)
            .file("etc/gone", "x")
            .file("etc/kept", "x")
            .file("var/cache/a/b", "x")
            .symlink("etc/link", "/etc/passwd")
            .build();
        must_apply(&root, &lower);
        let upper = LayerBuilder::new(&root)
            .whiteout("etc/.wh.gone")
            .whiteout("var/.wh.cache")
            .whiteout("etc/.wh.link")
            .whiteout("etc/.wh.never-existed")
            .file("etc/new", "y")
            .build();
        must_apply(&root, &upper);

        assert!(!exists(&root, "etc/gone"));
        assert!(!exists(&root, "var/cache"));
        assert!(!exists(&root, "etc/link"));
        assert!(exists(&root, "var"));
        assert_eq!(read(&root, "etc/kept").as_deref(), Some("x"));
        assert_eq!(read(&root, "etc/new").as_deref(), Some("y"));
        assert!(!exists(&root, "etc/.wh.gone"), "whiteout markers are not unpacked");
        assert!(Path::new("/etc/passwd").exists(), "a whiteout removes the symlink, not its target");
    }

    #[test]
    fn opaque_directory_hides_lower_content_but_keeps_its_own() {
        let (_dir, root) = setup();
        let lower = LayerBuilder::new(&root)
            .file("opt/app/old", "lower")
            .file("opt/app/sub/old", "lower")
            .file("opt/app/sub/replaced", "lower")
            .file("opt/other", "lower")
            .build();
        must_apply(&root, &lower);
        // This layer writes some content before the marker and some after: both stay.
        let upper = LayerBuilder::new(&root)
            .dir("opt/app/")
            .file("opt/app/sub/replaced", "upper")
            .whiteout("opt/app/.wh..wh..opq")
            .file("opt/app/new", "upper")
            .build();
        must_apply(&root, &upper);

        assert!(!exists(&root, "opt/app/old"));
        assert!(!exists(&root, "opt/app/sub/old"), "opacity reaches lower content in subdirectories");
        assert_eq!(read(&root, "opt/app/sub/replaced").as_deref(), Some("upper"));
        assert_eq!(read(&root, "opt/app/new").as_deref(), Some("upper"));
        assert_eq!(read(&root, "opt/other").as_deref(), Some("lower"));
        assert!(!exists(&root, "opt/app/.wh..wh..opq"));
    }

    #[test]
    fn upper_entries_replace_lower_ones_of_another_kind() {
        let (_dir, root) = setup();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, "untouched").expect("write victim");
        let lower = LayerBuilder::new(&root)
            .symlink("etc/conf", victim.to_str().expect("utf-8 temp path"))
            .file("data", "a file")
            .dir("tree/")
            .file("tree/leaf", "x")
            .build();
        must_apply(&root, &lower);
        let upper = LayerBuilder::new(&root)
            .file("etc/conf", "new contents")
            .dir("data/")
            .file("data/inside", "now a dir")
            .file("tree", "now a file")
            .build();
        must_apply(&root, &upper);

        assert_eq!(fs::read_to_string(&victim).expect("victim"), "untouched");
        assert_eq!(read(&root, "etc/conf").as_deref(), Some("new contents"));
        assert!(!fs::symlink_metadata(root.join("etc/conf")).expect("conf").is_symlink());
        assert_eq!(read(&root, "data/inside").as_deref(), Some("now a dir"));
        assert_eq!(read(&root, "tree").as_deref(), Some("now a file"));
    }

    #[test]
    fn entries_escaping_the_root_are_refused() {
        type Case = (&'static str, fn(LayerBuilder, &str) -> LayerBuilder);
        let cases: [Case; 7] = [
            ("dot-dot", |l, _| l.file("../escaped", "x")),
            ("nested dot-dot", |l, _| l.file("a/../../escaped", "x")),
            ("absolute", |l, _| l.file("/escaped", "x")),
            ("through a symlink", |l, outside| l.symlink("evil", outside).file("evil/escaped", "x")),
            ("hard link to outside", |l, outside| l.hardlink("evil", &format!("{outside}/keep"))),
            ("whiteout through a symlink", |l, outside| l.symlink("evil", outside).whiteout("evil/.wh.keep")),
            ("opaque marker through a symlink", |l, outside| l.symlink("evil", outside).whiteout("evil/.wh..wh..opq")),
        ];
        let outside = tempfile::tempdir().expect("tempdir");
        let outside_path = outside.path().to_str().expect("utf-8 temp path");
        fs::write(outside.path().join("keep"), "keep").expect("write keep");
        for (name, build) in cases {
            let (dir, root) = setup();
            let layer = build(LayerBuilder::new(&root), outside_path).build();
            let result = apply_layer(&root, layer.as_slice());
            assert!(result.is_err(), "{name}: expected a refusal, got {result:?}");
            assert!(!dir.path().join("escaped").exists(), "{name}: wrote outside the root");
            assert!(!outside.path().join("escaped").exists(), "{name}: wrote through the symlink");
            assert!(outside.path().join("keep").exists(), "{name}: deleted outside the root");
            assert!(!root.join("evil").is_file(), "{name}: linked a file from outside the root");
        }
        let (_dir, root) = setup();
        let err = apply_layer(&root, LayerBuilder::new(&root).file("../x", "x").build().as_slice())
            .expect_err("dot-dot refused");
        assert!(matches!(err, UnpackError::Escape { .. }), "{err:?}");
        assert!(err.to_string().contains("../x"), "{err}");
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let (_dir, root) = setup();
        let layer = LayerBuilder::new(&root).file("big", &"x".repeat(4096)).build();
        let err = apply_layer(&root, &layer[..1024]).expect_err("truncated tar");
        assert!(matches!(err, UnpackError::Io { .. }), "{err:?}");
    }
}
