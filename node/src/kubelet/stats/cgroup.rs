//! Container usage from the cgroups the OCI runtime made (`linux.cgroupsPath`,
//! `/keelson/<container id>`), as cAdvisor reads them for the kubelet: cumulative CPU time
//! and the memory working set (usage less inactive file pages, never below zero).
//!
//! Both layouts are read: cgroup v1 (also the "hybrid" layout, whose v2 hierarchy holds no
//! controllers) through its `cpuacct` and `memory` hierarchies, and the unified v2 tree.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the controllers this module reads are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: the `cpuacct` and `memory` hierarchies' mount points.
    V1 { cpuacct: PathBuf, memory: PathBuf },
    /// The unified cgroup v2 tree's mount point.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of this host, from `/proc/self/mountinfo`.
    pub fn detect() -> Option<Layout> {
        std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|t| parse_mountinfo(&t))
    }
}

/// The layout a `mountinfo` text describes: v1 when both `cpuacct` and `memory` are
/// mounted as v1 hierarchies (a hybrid host's v2 tree has no controllers), else the first
/// cgroup2 mount (`/sys/fs/cgroup` preferred), else none.
pub fn parse_mountinfo(text: &str) -> Option<Layout> {
    let (mut cpuacct, mut memory, mut v2) = (None, None, None::<PathBuf>);
    for line in text.lines() {
        // `id parent major:minor root mountpoint options [optional…] - fstype source superoptions`
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = before.split(' ').nth(4) else { continue };
        let mount_point = PathBuf::from(OsStr::from_bytes(&crate::kubelet::runtime::rootfs::unescape(mount_point)));
        let mut after = after.split(' ');
        let (Some(fstype), Some(_source), Some(options)) = (after.next(), after.next(), after.next()) else { continue };
        match fstype {
            "cgroup" => {
                let options: Vec<&str> = options.split(',').collect();
                if options.contains(&"cpuacct") && cpuacct.is_none() {
                    cpuacct = Some(mount_point.clone());
                }
                if options.contains(&"memory") && memory.is_none() {
                    memory = Some(mount_point);
                }
            }
            "cgroup2" => {
                if v2.is_none() || mount_point == Path::new("/sys/fs/cgroup") {
                    v2 = Some(mount_point);
                }
            }
            _ => {}
        }
    }
    match (cpuacct, memory, v2) {
        (Some(cpuacct), Some(memory), _) => Some(Layout::V1 { cpuacct, memory }),
        (_, _, Some(root)) => Some(Layout::V2 { root }),
        _ => None,
    }
}

/// One container's usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
}

/// The usage of cgroup `path` (e.g. `/keelson/<id>`), or why it cannot be read (the cgroup
/// is gone: the container ended between listing and reading).
pub fn read(layout: &Layout, path: &str) -> Result<Usage, String> {
    let rel = path.trim_start_matches('/');
    let file = |dir: &Path, name: &str| {
        let p = dir.join(rel).join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let number = |text: String, what: &str| text.trim().parse::<u64>().map_err(|e| format!("{what}: {e}"));
    match layout {
        Layout::V1 { cpuacct, memory } => {
            let cpu_ns = number(file(cpuacct, "cpuacct.usage")?, "cpuacct.usage")?;
            let usage = number(file(memory, "memory.usage_in_bytes")?, "memory.usage_in_bytes")?;
            let inactive = stat_field(&file(memory, "memory.stat")?, "total_inactive_file").unwrap_or(0);
            Ok(Usage { cpu_ns, memory_bytes: usage.saturating_sub(inactive) })
        }
        Layout::V2 { root } => {
            let usec = stat_field(&file(root, "cpu.stat")?, "usage_usec").ok_or("cpu.stat has no usage_usec")?;
            let current = number(file(root, "memory.current")?, "memory.current")?;
            let inactive = stat_field(&file(root, "memory.stat")?, "inactive_file").unwrap_or(0);
            Ok(Usage { cpu_ns: usec.saturating_mul(1000), memory_bytes: current.saturating_sub(inactive) })
        }
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_reads_the_v1_hierarchies() {
        assert_eq!(
            parse_mountinfo(HYBRID),
            Some(Layout::V1 { cpuacct: "/sys/fs/cgroup/cpuacct".into(), memory: "/sys/fs/cgroup/memory".into() })
        );
    }

    #[test]
    fn co_mounted_controllers_and_the_unified_tree() {
        let comounted = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            parse_mountinfo(comounted),
            Some(Layout::V1 { cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(), memory: "/sys/fs/cgroup/memory".into() })
        );
        let unified = "30 23 0:26 / /run/other\\040cg rw - cgroup2 cgroup2 rw\n\
                       31 23 0:27 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
                       32 23 0:28 / /mnt/x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(unified), Some(Layout::V2 { root: "/sys/fs/cgroup".into() }));
        let spaced = "30 23 0:26 / /run/other\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(spaced), Some(Layout::V2 { root: "/run/other cg".into() }));
        assert_eq!(parse_mountinfo("garbage\n\n1 2 3\n - \n"), None);
    }

    #[test]
    fn usage_from_either_layout() {
        let dir = tempfile::tempdir().unwrap();
        let write = |p: &str, text: &str| {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("cpuacct/keelson/c/cpuacct.usage", "2500000000\n");
        write("memory/keelson/c/memory.usage_in_bytes", "10485760\n");
        write("memory/keelson/c/memory.stat", "cache 4096\ntotal_inactive_file 1048576\n");
        let v1 = Layout::V1 { cpuacct: dir.path().join("cpuacct"), memory: dir.path().join("memory") };
        assert_eq!(read(&v1, "/keelson/c").unwrap(), Usage { cpu_ns: 2_500_000_000, memory_bytes: 9 << 20 });

        write("v2/keelson/c/cpu.stat", "usage_usec 1500\nuser_usec 1000\n");
        write("v2/keelson/c/memory.current", "4096\n");
        // More inactive file pages than usage (the counters are read apart): zero, not a wrap.
        write("v2/keelson/c/memory.stat", "anon 0\ninactive_file 8192\n");
        let v2 = Layout::V2 { root: dir.path().join("v2") };
        assert_eq!(read(&v2, "/keelson/c").unwrap(), Usage { cpu_ns: 1_500_000, memory_bytes: 0 });

        let gone = read(&v2, "/keelson/gone").unwrap_err();
        assert!(gone.contains("keelson/gone/cpu.stat"), "{gone}");
        write("v2/keelson/bad/cpu.stat", "user_usec 1\n");
        assert!(read(&v2, "/keelson/bad").unwrap_err().contains("usage_usec"));
    }
}
