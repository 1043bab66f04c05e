//! A master's data directory on a small tmpfs, for the disk-full fault: where its
//! on-disk copy waits meanwhile, and how any such mount is undone (at heal, at `cluster
//! down`, when a `Cluster` is dropped) without losing the data.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Cluster, ClusterError};

impl Cluster {
    /// Where a disk-full fault keeps master `i`'s on-disk data while a tmpfs is mounted
    /// on its data dir (`D/mI.aside`).
    pub fn data_aside_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.aside", self.name(i)))
    }

    /// Where [`Cluster::release_data_tmpfs`] copies a tmpfs's data before unmounting it.
    pub(super) fn data_saved_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.from-tmpfs", self.name(i)))
    }

    /// Present while the tmpfs on master `i`'s data dir holds its live data (the copy into
    /// it completed, so the master may have run there): only then is the tmpfs's data
    /// copied back; without it the aside copy is the data and the tmpfs is discarded.
    pub fn data_tmpfs_live_marker(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.tmpfs-live", self.name(i)))
    }

    /// Is a tmpfs mounted on master `i`'s data dir (per `/proc/self/mountinfo`)?
    pub fn data_on_tmpfs(&self, i: usize) -> bool {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let data = &self.state.masters[i].data_dir;
        data.starts_with(&self.dir) && tmpfs_mounted_at(&text, data)
    }

    /// Undo a disk-full fault's tmpfs on master `i`'s data dir (the master must not be
    /// running). When the tmpfs holds the live data ([`Cluster::data_tmpfs_live_marker`])
    /// and `keep`: copy it to disk, unmount, put the copy in place of the data dir and drop
    /// the aside copy ([`Cluster::data_aside_dir`]). Otherwise unmount, discarding the
    /// tmpfs. With no tmpfs there but the data dir moved aside and nothing (or an empty
    /// directory) in its place, move it back. Only a tmpfs mounted exactly on a data dir
    /// under the cluster's directory is touched. Returns whether a tmpfs was unmounted.
    pub fn release_data_tmpfs(&self, i: usize, keep: bool) -> Result<bool, ClusterError> {
        self.check(i)?;
        let data = self.state.masters[i].data_dir.clone();
        let aside = self.data_aside_dir(i);
        let marker = self.data_tmpfs_live_marker(i);
        if !self.data_on_tmpfs(i) {
            remove_path(&marker)?;
            if aside.is_dir() {
                // `remove_dir` removes only an empty directory.
                let _ = std::fs::remove_dir(&data);
            }
            if !data.exists() && aside.is_dir() {
                std::fs::rename(&aside, &data).map_err(|e| {
                    ClusterError::io(format!("cannot move {} back to {}", aside.display(), data.display()), e)
                })?;
            }
            return Ok(false);
        }
        if let Some(p) = self.procs[i].as_ref().filter(|p| p.is_running()) {
            return Err(ClusterError::Spec(format!(
                "{} (pid {}) still runs on the tmpfs at {}",
                self.name(i),
                p.pid,
                data.display()
            )));
        }
        let saved = self.data_saved_dir(i);
        let keep = keep && marker.exists();
        if keep {
            remove_path(&saved)?;
            copy_dir(&data, &saved)?;
        }
        // Stacked mounts (a fault retried over a leftover one) come off one by one.
        for _ in 0..8 {
            if !self.data_on_tmpfs(i) {
                break;
            }
            rustix::mount::unmount(&data, rustix::mount::UnmountFlags::empty()).map_err(|e| {
                ClusterError::io(format!("cannot unmount the tmpfs on {}", data.display()), std::io::Error::from(e))
            })?;
        }
        if self.data_on_tmpfs(i) {
            return Err(ClusterError::State(format!("a tmpfs is still mounted on {}", data.display())));
        }
        if keep {
            remove_path(&data)?;
            std::fs::rename(&saved, &data)
                .map_err(|e| ClusterError::io(format!("cannot move {} to {}", saved.display(), data.display()), e))?;
            remove_path(&aside)?;
        } else if aside.is_dir() {
            // The tmpfs never held the live data (or purging): the aside copy goes back.
            let _ = std::fs::remove_dir(&data);
            if !data.exists() {
                std::fs::rename(&aside, &data).map_err(|e| {
                    ClusterError::io(format!("cannot move {} back to {}", aside.display(), data.display()), e)
                })?;
            }
        }
        remove_path(&marker)?;
        Ok(true)
    }
}

/// Copy the contents of directory `from` into `to` (created), keeping modes and times.
pub fn copy_dir(from: &Path, to: &Path) -> Result<(), ClusterError> {
    std::fs::create_dir_all(to).map_err(|e| ClusterError::io(format!("cannot create {}", to.display()), e))?;
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(|e| ClusterError::io("cannot run cp".into(), e))?;
    if !out.status.success() {
        return Err(ClusterError::State(format!(
            "cp -a {}/. {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Remove a file or directory tree; a missing one is fine.
fn remove_path(p: &Path) -> Result<(), ClusterError> {
    let res = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ClusterError::io(format!("cannot remove {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// A field of `/proc/PID/mountinfo` with its octal escapes (`\040` for a space…) decoded.
pub(super) fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        let octal = b.get(k + 1..k + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[k], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                k += 4;
            }
            (c, _) => {
                out.push(c);
                k += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is a tmpfs mounted exactly on `path`, per the `/proc/PID/mountinfo` text?
pub fn tmpfs_mounted_at(mountinfo: &str, path: &Path) -> bool {
    mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { return false };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else { return false };
        sep >= 6 && *fstype == "tmpfs" && Path::new(&unescape_mountinfo(point)) == path
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
41 22 0:40 / /tmp/kdf-run/m2 rw,relatime shared:20 - tmpfs keelson-chaos rw,size=49152k,mode=700
42 22 0:41 / /tmp/kdf\\040run/m1 rw,relatime - tmpfs keelson-chaos rw,size=1024k
43 22 0:42 / /tmp/kdf-run/m3 rw,relatime shared:21 - ext4 /dev/vdb rw
44 22 0:43 / /tmp/kdf-run/m4/sub rw - tmpfs none rw
garbage line
";

    #[test]
    fn finds_tmpfs_mounts_exactly() {
        assert!(tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf-run/m2")));
        assert!(tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf run/m1")), "octal escapes are decoded");
        assert!(!tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf-run/m3")), "ext4 is not a tmpfs");
        assert!(!tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf-run/m4")), "a mount below is not one on it");
        assert!(!tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf-run/m2/raft")));
        assert!(!tmpfs_mounted_at(MOUNTINFO, Path::new("/tmp/kdf-run")));
        assert!(!tmpfs_mounted_at("", Path::new("/")));
    }

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        // Not an escape: left as it is (and no panic at the end of the string).
        assert_eq!(unescape_mountinfo("/x\\09"), "/x\\09");
        assert_eq!(unescape_mountinfo("\\"), "\\");
        assert_eq!(unescape_mountinfo("/\\777"), "/?");
    }

    #[test]
    fn copies_and_removes_trees() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("raft")).unwrap();
        std::fs::write(src.join("raft/CURRENT"), "MANIFEST-1\n").unwrap();
        std::fs::write(src.join("top"), "x").unwrap();
        let dst = d.path().join("dst");
        copy_dir(&src, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("raft/CURRENT")).unwrap(), "MANIFEST-1\n");
        assert_eq!(std::fs::read_to_string(dst.join("top")).unwrap(), "x");
        assert!(!dst.join("src").exists(), "the contents are copied, not the directory");
        remove_path(&dst).unwrap();
        assert!(!dst.exists());
        remove_path(&dst).unwrap();
        remove_path(&src.join("top")).unwrap();
        assert!(!src.join("top").exists());
        assert!(copy_dir(&d.path().join("none"), &dst).is_err());
    }
}
