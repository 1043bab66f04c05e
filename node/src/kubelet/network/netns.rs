//! Named network namespaces, one per pod sandbox, made and removed the way
//! `ip netns add/delete` does: a file under `/run/netns` bind-mounted from the namespace,
//! so the namespace outlives every process in it and plugins can enter it by path.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ip::{run_ip, IpCommandError};

/// Where named network namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors from managing network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The name cannot be a file name under `/run/netns`.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A namespace of that name exists already.
    #[error("network namespace {name:?} already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// No namespace of that name.
    #[error("network namespace {name:?} does not exist")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The file exists but no namespace is mounted on it (a half-made or
    /// half-removed one; [`NetNs::delete_by_name`] removes it).
    #[error("{} is not a mounted network namespace", .path.display())]
    NotANamespace {
        /// The file.
        path: PathBuf,
    },
    /// Reading `/run/netns` or the namespace file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `ip netns …` failed.
    #[error(transparent)]
    Command(#[from] IpCommandError),
}

/// A named network namespace under `/run/netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates namespace `name` (`ip netns add NAME`). It has only `lo`, down; the
    /// loopback CNI plugin brings it up. A leftover file of that name with no namespace
    /// mounted on it (a crash halfway through an earlier add or delete) is replaced.
    #[tracing::instrument]
    pub fn create(name: &str) -> Result<NetNs, NetNsError> {
        let path = path_for(name)?;
        match Self::open_existing(name) {
            Ok(_) => return Err(NetNsError::AlreadyExists { name: name.to_string() }),
            Err(NetNsError::NotFound { .. }) => {}
            Err(NetNsError::NotANamespace { .. }) => {
                tracing::warn!(path = %path.display(), "replacing a stale network namespace file");
                Self::delete_by_name(name)?;
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = run_ip(&["netns", "add", name]) {
            // Lost a race with another creator: report that, not ip's message.
            if matches!(e, IpCommandError::Failed { ref stderr, .. } if stderr.contains("File exists")) {
                return Err(NetNsError::AlreadyExists { name: name.to_string() });
            }
            return Err(e.into());
        }
        tracing::debug!(path = %path.display(), "network namespace created");
        Ok(NetNs { name: name.to_string(), path })
    }

    /// The existing namespace `name`; [`NetNsError::NotFound`] when there is none,
    /// [`NetNsError::NotANamespace`] when the file is there but nothing is mounted on it.
    pub fn open_existing(name: &str) -> Result<NetNs, NetNsError> {
        let path = path_for(name)?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetNsError::NotFound { name: name.to_string() })
            }
            Err(source) => return Err(NetNsError::Io { path, source }),
        };
        // A mounted namespace file is an nsfs inode, on the same device as our own
        // /proc/self/ns/net; the bare file under /run/netns is on tmpfs.
        let ours = std::fs::metadata("/proc/self/ns/net")
            .map_err(|source| NetNsError::Io { path: "/proc/self/ns/net".into(), source })?;
        if meta.dev() != ours.dev() {
            return Err(NetNsError::NotANamespace { path });
        }
        Ok(NetNs { name: name.to_string(), path })
    }

    /// Deletes the namespace (`ip netns delete NAME`). The namespace itself goes once
    /// no process is left in it (with it, the veth ends inside).
    pub fn delete(self) -> Result<(), NetNsError> {
        Self::delete_by_name(&self.name)
    }

    /// Deletes namespace `name`, e.g. an orphan found by [`NetNs::list_with_prefix`]. A
    /// missing namespace is not an error.
    #[tracing::instrument]
    pub fn delete_by_name(name: &str) -> Result<(), NetNsError> {
        let path = path_for(name)?;
        if !exists(&path)? {
            return Ok(());
        }
        match run_ip(&["netns", "delete", name]) {
            Ok(_) => {}
            // Deleted by someone else meanwhile: the outcome asked for.
            Err(_) if !exists(&path)? => {}
            Err(e) => return Err(e.into()),
        }
        tracing::debug!("network namespace deleted");
        Ok(())
    }

    /// The names of the namespaces starting with `prefix`, sorted — after a kubelet
    /// restart, the ones no sandbox claims are orphans to delete. An unreadable
    /// `/run/netns` is logged and lists nothing (a missing one is simply empty).
    pub fn list_with_prefix(prefix: &str) -> Vec<String> {
        let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(dir = NETNS_RUN_DIR, error = %e, "cannot list network namespaces");
                return Vec::new();
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| match entry {
                Ok(entry) => entry.file_name().into_string().ok(),
                Err(e) => {
                    tracing::warn!(dir = NETNS_RUN_DIR, error = %e, "cannot list network namespaces");
                    None
                }
            })
            .filter(|name| name.starts_with(prefix))
            .collect();
        names.sort();
        names
    }

    /// The name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: what runtimes join and `CNI_NETNS` is set to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn path_for(name: &str) -> Result<PathBuf, NetNsError> {
    let invalid = |reason| NetNsError::InvalidName { name: name.to_string(), reason };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 200 {
        return Err(invalid("longer than 200 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not names"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(invalid("only letters, digits, '_', '.' and '-' are allowed"));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

fn exists(path: &Path) -> Result<bool, NetNsError> {
    path.try_exists().map_err(|source| NetNsError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(path_for("kp-0a1b.c_d").unwrap(), Path::new("/run/netns/kp-0a1b.c_d"));
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "a\0b", &"x".repeat(201)] {
            assert!(matches!(path_for(bad), Err(NetNsError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn invalid_names_fail_before_running_anything() {
        assert!(matches!(NetNs::create("a/b"), Err(NetNsError::InvalidName { .. })));
        assert!(matches!(NetNs::delete_by_name(".."), Err(NetNsError::InvalidName { .. })));
        assert!(NetNs::delete_by_name("keelson-unit-test-no-such-netns").is_ok());
        assert!(matches!(NetNs::open_existing("keelson-unit-test-no-such-netns"), Err(NetNsError::NotFound { .. })));
    }
}
