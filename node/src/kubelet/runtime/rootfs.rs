//! A container's root filesystem: an overlay whose lower layer is the image's unpacked
//! root (shared, never written) and whose upper layer is the container's own.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::RuntimeError;

#[derive(Debug, Clone)]
pub struct Overlay {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl Overlay {
    pub fn under(dir: &Path) -> Overlay {
        Overlay { upper: dir.join("upper"), work: dir.join("work"), merged: dir.join("rootfs") }
    }

    /// Mount it over `lower` (idempotent: an existing mount is kept).
    pub fn mount(&self, lower: &Path) -> Result<(), RuntimeError> {
        for d in [&self.upper, &self.work, &self.merged] {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::io(d, e))?;
        }
        if is_mountpoint(&self.merged) {
            return Ok(());
        }
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", lower.display(), self.upper.display(), self.work.display());
        let data =
            std::ffi::CString::new(opts).map_err(|_| RuntimeError::Bundle("overlay options have a NUL".into()))?;
        rustix::mount::mount("overlay", &self.merged, "overlay", rustix::mount::MountFlags::empty(), data.as_c_str())
            .map_err(|e| RuntimeError::io(&self.merged, std::io::Error::from(e)))
    }

    /// Unmount it (if mounted).
    pub fn unmount(&self) -> Result<(), RuntimeError> {
        unmount(&self.merged)
    }
}

/// Detach-unmount `path` if something is mounted there.
pub fn unmount(path: &Path) -> Result<(), RuntimeError> {
    if !is_mountpoint(path) {
        return Ok(());
    }
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(RuntimeError::io(path, std::io::Error::from(e))),
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m).as_slice() == want))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every mount point at or under `dir` (deepest first), to clean a pod directory.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(m))))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self/nonexistent-dir")));
    }
}
