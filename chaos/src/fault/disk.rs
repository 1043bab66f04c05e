//! A full disk for one master: stop it, move its data dir aside, mount a small tmpfs
//! (what the data uses plus 32–64 MiB) in its place, copy the data in and restart it
//! there; after a while under traffic fill the tmpfs with a filler file until writes fail
//! with ENOSPC, hold it full for a few election timeouts, delete the filler and watch
//! whether the master recovers by itself. Then heal: stop it, copy the data back to disk,
//! unmount, restart it on disk. The heal runs on every path; `Cluster::down` also
//! unmounts a tmpfs a run interrupted midway left behind. Needs root (mount).
//!
//! Shared with `fsync`: the target choice, the log scan and the "does it still serve"
//! probe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::RangeRequest;
use rand::rngs::StdRng;
use rand::Rng;

use super::FaultError;
use crate::cluster::Cluster;

const MIB: u64 = 1 << 20;
/// The filler file, in the root of the tmpfs (the master's data dir).
const FILLER: &str = "chaos-disk-full.filler";
/// Log lines that say a write failed for want of space.
pub(super) const NO_SPACE: [&str; 3] = ["No space left on device", "NoSpace", "ENOSPC"];
/// Log lines that say Raft (or the master) gave up.
pub(super) const GAVE_UP: [&str; 4] = ["raft stopped", "Raft stopped", "Fatal", "panicked at"];

/// The target: the leader about half the time, else any master. Consumes the same
/// random numbers whatever `leader` is, so the schedule after it does not depend on it.
pub(super) fn pick_target(n: usize, leader: Option<usize>, rng: &mut StdRng) -> Option<usize> {
    let coin = rng.gen_bool(0.5);
    let any = rng.gen_range(0..n.max(1));
    match leader {
        _ if n == 0 => None,
        Some(l) if coin && l < n => Some(l),
        _ => Some(any),
    }
}

/// A random duration of `lo..=hi` election timeouts, at least `floor_ms`.
pub(super) fn timeouts(rng: &mut StdRng, election_ms: u64, lo: u64, hi: u64, floor_ms: u64) -> Duration {
    let e = election_ms.max(1);
    let (lo, hi) = (e.saturating_mul(lo.min(hi)), e.saturating_mul(hi.max(lo)));
    Duration::from_millis(rng.gen_range(lo..=hi).max(floor_ms))
}

/// The tmpfs size for data using `usage` bytes and `headroom_mib` MiB more, in whole MiB.
pub fn tmpfs_size(usage: u64, headroom_mib: u64) -> u64 {
    let want = usage.saturating_add(headroom_mib.saturating_mul(MIB));
    want.div_ceil(MIB).clamp(1, u64::MAX / MIB) * MIB
}

/// The bytes the files under `dir` take, each rounded up to 4 KiB pages (as on a tmpfs).
pub fn dir_usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
                total = total.saturating_add(4096);
            } else {
                total = total.saturating_add(meta.len().div_ceil(4096).max(1) * 4096);
            }
        }
    }
    Ok(total)
}

/// Write zeros to `w` until it fails with ENOSPC (or `limit` bytes are written): 1 MiB
/// at a time, then 4 KiB at a time for the last partial MiB. Returns the bytes written
/// and whether ENOSPC was reached; another error is returned as such.
pub fn fill_until_full(w: &mut impl Write, limit: u64) -> std::io::Result<(u64, bool)> {
    let big = vec![0u8; MIB as usize];
    let mut written = 0u64;
    for chunk in [MIB as usize, 4096] {
        loop {
            if written >= limit {
                return Ok((written, false));
            }
            let n = chunk.min(usize::try_from(limit - written).unwrap_or(chunk));
            match w.write(&big[..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => written += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_enospc(&e) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok((written, true))
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

/// What a log says, counted over its lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogScan {
    /// Lines containing any of the needles.
    pub lines: usize,
    /// The first such line (trimmed, at most 240 characters).
    pub first: Option<String>,
}

impl LogScan {
    pub fn describe(&self, what: &str) -> String {
        match &self.first {
            None => format!("no {what} line"),
            Some(l) => format!("{} {what} line(s), first: {l:?}", self.lines),
        }
    }
}

/// Count the lines of `text` containing any of `needles`.
pub fn scan_log(text: &str, needles: &[&str]) -> LogScan {
    let mut scan = LogScan::default();
    for line in text.lines().filter(|l| needles.iter().any(|n| l.contains(n))) {
        scan.lines += 1;
        if scan.first.is_none() {
            scan.first = Some(line.trim().chars().take(240).collect());
        }
    }
    scan
}

/// Master `i`'s log from byte `from` on.
pub(super) fn log_since(cluster: &Cluster, i: usize, from: u64) -> String {
    let bytes = std::fs::read(cluster.log_path(i)).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

pub(super) fn log_len(cluster: &Cluster, i: usize) -> u64 {
    std::fs::metadata(cluster.log_path(i)).map(|m| m.len()).unwrap_or(0)
}

/// Does master `i` serve a linearizable read (which needs its Raft) within 1.5 s?
pub(super) async fn serves(cluster: &Cluster, i: usize) -> Result<(), String> {
    if !cluster.is_running(i) {
        return Err("its process has exited".into());
    }
    let channel = cluster.etcd_channel(i).await.map_err(|e| e.to_string())?;
    let mut kv = KvClient::new(channel);
    let req = RangeRequest { key: b"/".to_vec(), count_only: true, ..Default::default() };
    match tokio::time::timeout(Duration::from_millis(1500), kv.range(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("no answer within 1.5 s".into()),
    }
}

/// "serves linearizable reads" or "alive, reads fail (…)" or "exited".
pub(super) async fn state_of(cluster: &Cluster, i: usize) -> String {
    if !cluster.is_running(i) {
        return "process exited".into();
    }
    match serves(cluster, i).await {
        Ok(()) => "alive, serves linearizable reads".into(),
        Err(e) => format!("alive, linearizable read fails ({e})"),
    }
}

/// Wait `for_`, watching master `i`: returns how long into it the process exited, if it did.
pub(super) async fn watch_exit(cluster: &Cluster, i: usize, for_: Duration) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let deadline = started.checked_add(for_).unwrap_or(started + Duration::from_secs(3600));
    while tokio::time::Instant::now() < deadline {
        if !cluster.is_running(i) {
            let at = started.elapsed();
            tokio::time::sleep_until(deadline).await;
            return Some(at);
        }
        tokio::time::sleep(
            Duration::from_millis(20).min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }
    None
}

/// "exited N ms in" or `otherwise`.
pub(super) fn exit_note(exited: Option<Duration>, otherwise: &str) -> String {
    match exited {
        Some(d) => format!("it exited {} ms in", d.as_millis()),
        None => otherwise.to_string(),
    }
}

/// Stop master `i` if it runs (SIGKILL, reaped); a master that already exited is fine.
pub(super) fn stop(cluster: &mut Cluster, i: usize) -> Result<(), FaultError> {
    if cluster.pid(i).is_none() {
        return Ok(());
    }
    Ok(cluster.kill(i)?)
}

pub fn available() -> Result<(), FaultError> {
    if !rustix::process::geteuid().is_root() {
        return Err(FaultError::Unavailable(
            "the disk-full fault mounts a tmpfs on a master's data dir: run as root".into(),
        ));
    }
    Ok(())
}

/// Move master `t`'s data aside, mount a tmpfs of `size` bytes on its data dir and copy
/// the data in. On failure the caller's heal ([`restore`]) puts everything back.
fn mount_tmpfs(cluster: &Cluster, t: usize, size: u64) -> Result<(), FaultError> {
    let data = cluster.data_dir(t).to_path_buf();
    let aside = cluster.data_aside_dir(t);
    if aside.exists() {
        return Err(FaultError::Unavailable(format!(
            "{} exists (left by an earlier disk-full fault?): not overwriting it",
            aside.display()
        )));
    }
    let io = |what: String| move |e: std::io::Error| FaultError::Unavailable(format!("{what}: {e}"));
    std::fs::rename(&data, &aside).map_err(io(format!("cannot move {} to {}", data.display(), aside.display())))?;
    std::fs::create_dir(&data).map_err(io(format!("cannot create {}", data.display())))?;
    let opts = std::ffi::CString::new(format!("size={}k,mode=0700", size / 1024))
        .map_err(|e| FaultError::Unavailable(e.to_string()))?;
    rustix::mount::mount("keelson-chaos", &data, "tmpfs", rustix::mount::MountFlags::empty(), opts.as_c_str())
        .map_err(|e| FaultError::Unavailable(format!("cannot mount a tmpfs on {}: {e}", data.display())))?;
    crate::cluster::tmpfs::copy_dir(&aside, &data)?;
    // From here on the tmpfs holds the live data: the heal copies it back.
    let marker = cluster.data_tmpfs_live_marker(t);
    std::fs::write(&marker, b"").map_err(io(format!("cannot create {}", marker.display())))?;
    Ok(())
}

/// Heal: stop the master, drop the filler, copy the data back to disk, unmount, restart
/// it on disk. Safe to run after any step of the fault.
fn restore(cluster: &mut Cluster, t: usize) -> Result<(), FaultError> {
    let stopped = stop(cluster, t);
    if cluster.data_on_tmpfs(t) {
        match std::fs::remove_file(cluster.data_dir(t).join(FILLER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FaultError::Unavailable(format!("cannot delete the filler: {e}")))
            }
            _ => {}
        }
    }
    stopped?;
    cluster.release_data_tmpfs(t, true)?;
    cluster.start(t)?;
    Ok(())
}

struct Plan {
    size: u64,
    usage: u64,
    headroom_mib: u64,
    warm: Duration,
    hold: Duration,
    observe: Duration,
}

pub async fn fill(
    cluster: &mut Cluster,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    available()?;
    let t = pick_target(cluster.len(), leader, rng).ok_or_else(|| FaultError::Unavailable("no masters".into()))?;
    let headroom_mib = rng.gen_range(32..=64);
    let warm = timeouts(rng, election_ms, 2, 4, 500);
    let hold = timeouts(rng, election_ms, 3, 8, 1000);
    let observe = timeouts(rng, election_ms, 3, 3, 1500);
    let name = cluster.name(t).to_string();
    let role = if leader == Some(t) { "leader" } else { "follower" };

    stop(cluster, t)?;
    let usage = match dir_usage(cluster.data_dir(t)) {
        Ok(u) => u,
        Err(e) => {
            cluster.start(t)?;
            return Err(FaultError::Unavailable(format!("cannot measure {}: {e}", cluster.data_dir(t).display())));
        }
    };
    let plan = Plan { size: tmpfs_size(usage, headroom_mib), usage, headroom_mib, warm, hold, observe };
    let log_from = log_len(cluster, t);
    let outcome = match mount_tmpfs(cluster, t, plan.size) {
        Ok(()) => run_full(cluster, t, &plan, log_from).await,
        Err(e) => Err(e),
    };
    let healed = restore(cluster, t);
    let log = log_since(cluster, t, log_from);
    match (&outcome, &healed) {
        (_, Err(e)) => tracing::error!(master = %name, error = %e, "disk-full heal failed"),
        _ => tracing::info!(master = %name, pid = ?cluster.pid(t), "fault healed: data back on disk, restarted"),
    }
    let detail = outcome?;
    healed?;
    let gave_up = scan_log(&log, &GAVE_UP);
    Ok((
        vec![t],
        format!(
            "{name} ({role}) on a {} MiB tmpfs ({:.1} MiB data + {} MiB headroom); {detail}; master log: {}; {}; then restarted on disk",
            plan.size / MIB,
            plan.usage as f64 / MIB as f64,
            plan.headroom_mib,
            scan_log(&log, &NO_SPACE).describe("no-space"),
            gave_up.describe("fatal/raft-stopped/panic"),
        ),
    ))
}

/// Run master `t` on its tmpfs: start, warm up, fill, hold, free, observe. Returns what
/// happened.
async fn run_full(cluster: &mut Cluster, t: usize, plan: &Plan, log_from: u64) -> Result<String, FaultError> {
    let name = cluster.name(t).to_string();
    cluster.start(t)?;
    tracing::info!(master = %name, size_mib = plan.size / MIB, pid = ?cluster.pid(t), "fault: restarted on a tmpfs");
    tokio::time::sleep(plan.warm).await;
    let before = state_of(cluster, t).await;

    let filler: PathBuf = cluster.data_dir(t).join(FILLER);
    let limit = plan.size;
    let filled = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, bool)> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&filler)?;
        fill_until_full(&mut f, limit)
    })
    .await
    .map_err(|e| FaultError::Unavailable(format!("the filler task failed: {e}")))?
    .map_err(|e| FaultError::Unavailable(format!("cannot write the filler: {e}")))?;
    if !filled.1 {
        return Err(FaultError::Unavailable(format!(
            "wrote {} MiB of filler without ENOSPC: is {} a tmpfs of {} MiB?",
            filled.0 / MIB,
            cluster.data_dir(t).display(),
            plan.size / MIB
        )));
    }
    tracing::info!(master = %name, filler_mib = filled.0 / MIB, hold_ms = plan.hold.as_millis() as u64, "fault: disk full");
    let exited = watch_exit(cluster, t, plan.hold).await;
    let full = state_of(cluster, t).await;
    let no_space = scan_log(&log_since(cluster, t, log_from), &NO_SPACE).lines;

    match std::fs::remove_file(cluster.data_dir(t).join(FILLER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(FaultError::Unavailable(format!("cannot delete the filler: {e}")))
        }
        _ => {}
    }
    tracing::info!(master = %name, "fault: filler deleted, space free again");
    tokio::time::sleep(plan.observe).await;
    let after = state_of(cluster, t).await;
    let verdict = match (full.contains("serves"), after.contains("serves")) {
        (true, true) => "kept serving throughout",
        (false, true) => "recovered by itself once space was free",
        (_, false) if exited.is_some() => "it had exited (fail-stop), nothing to recover by itself",
        (_, false) if after.contains("exited") => "it exited after space was free again",
        _ => "did not recover by itself",
    };
    Ok(format!(
        "after {} ms: {before}; filled with {:.1} MiB until ENOSPC and held {} ms ({}): {full}, {no_space} no-space log lines; {} ms after deleting the filler: {after} — {verdict}",
        plan.warm.as_millis(),
        filled.0 as f64 / MIB as f64,
        plan.hold.as_millis(),
        exit_note(exited, "it kept running"),
        plan.observe.as_millis(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn targets_the_leader_about_half_the_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let picks: Vec<usize> = (0..400).map(|_| pick_target(3, Some(1), &mut rng).unwrap()).collect();
        let leader = picks.iter().filter(|&&p| p == 1).count();
        // Half the time the leader, else uniform over 3: about 2/3 in all.
        assert!((220..=320).contains(&leader), "{leader} of 400");
        assert!(picks.contains(&0) && picks.contains(&2));
        assert!(picks.iter().all(|&p| p < 3));
        let mut rng = StdRng::seed_from_u64(7);
        assert!((0..100).all(|_| pick_target(3, None, &mut rng).unwrap() < 3));
        assert_eq!(pick_target(0, Some(0), &mut rng), None);
        assert!((0..20).all(|_| pick_target(2, Some(5), &mut rng).unwrap() < 2), "a bogus leader is ignored");
    }

    #[test]
    fn picks_are_reproducible_from_the_seed() {
        let run = |leader| {
            let mut rng = StdRng::seed_from_u64(42);
            let picks: Vec<_> = (0..20).map(|_| pick_target(5, leader, &mut rng)).collect();
            (picks, rng.gen::<u64>())
        };
        assert_eq!(run(Some(2)), run(Some(2)));
        // The leader changes the pick, not how many random numbers were used.
        assert_eq!(run(Some(2)).1, run(None).1);
    }

    #[test]
    fn sizes_tmpfs_in_whole_mib() {
        assert_eq!(tmpfs_size(0, 32), 32 * MIB);
        assert_eq!(tmpfs_size(1, 32), 33 * MIB);
        assert_eq!(tmpfs_size(10 * MIB, 64), 74 * MIB);
        assert_eq!(tmpfs_size(10 * MIB + 4096, 40), 51 * MIB);
        assert_eq!(tmpfs_size(0, 0), MIB);
        assert_eq!(tmpfs_size(u64::MAX, u64::MAX) % MIB, 0, "no overflow panic");
    }

    #[test]
    fn durations_scale_with_the_election_timeout() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let d = timeouts(&mut rng, 300, 3, 8, 1000).as_millis();
            assert!((1000..=2400).contains(&d), "{d}");
        }
        assert_eq!(timeouts(&mut rng, 0, 3, 3, 0), Duration::from_millis(3));
        let d = timeouts(&mut rng, 100, 6, 4, 0).as_millis();
        assert!((400..=600).contains(&d), "bounds in any order: {d}");
        assert_eq!(timeouts(&mut rng, u64::MAX, 3, 8, 0), Duration::from_millis(u64::MAX), "no overflow panic");
    }

    #[test]
    fn measures_usage_in_pages() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("raft")).unwrap();
        std::fs::write(d.path().join("raft/a"), vec![1u8; 5000]).unwrap();
        std::fs::write(d.path().join("b"), b"x").unwrap();
        std::fs::write(d.path().join("c"), b"").unwrap();
        // raft/ (4 KiB) + a (8 KiB) + b (4 KiB) + c (4 KiB)
        assert_eq!(dir_usage(d.path()).unwrap(), 20 * 1024);
        assert!(dir_usage(&d.path().join("none")).is_err());
    }

    /// A writer with room for `room` bytes, failing with ENOSPC after that.
    struct Disk {
        room: usize,
        got: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room - self.got);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()));
            }
            self.got += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fills_until_enospc() {
        let mut d = Disk { room: 3 * MIB as usize + 12345, got: 0 };
        assert_eq!(fill_until_full(&mut d, 100 * MIB).unwrap(), (3 * MIB + 12345, true));
        let mut d = Disk { room: 10 * MIB as usize, got: 0 };
        assert_eq!(fill_until_full(&mut d, 2 * MIB + 5).unwrap(), (2 * MIB + 5, false), "stops at the limit");
        // /dev/full: ENOSPC on the first write.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
            assert_eq!(fill_until_full(&mut f, MIB).unwrap(), (0, true));
        }
        // Another error is an error.
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("broken"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(fill_until_full(&mut Broken, MIB).is_err());
        // A writer that takes nothing is not a full disk.
        let mut nothing: &mut [u8] = &mut [];
        assert_eq!(fill_until_full(&mut nothing, MIB).unwrap_err().kind(), std::io::ErrorKind::WriteZero);
    }

    #[test]
    fn notes_exits() {
        assert_eq!(exit_note(Some(Duration::from_millis(120)), "x"), "it exited 120 ms in");
        assert_eq!(exit_note(None, "it kept running"), "it kept running");
    }

    #[test]
    fn scans_logs() {
        let log = "a ok\n2026 ERROR rocksdb: IO error: No space left on device: While appending\nb\n\
                   c NoSpace again\n";
        let s = scan_log(log, &NO_SPACE);
        assert_eq!(s.lines, 2);
        assert_eq!(s.first.as_deref(), Some("2026 ERROR rocksdb: IO error: No space left on device: While appending"));
        assert!(s.describe("no-space").starts_with("2 no-space line(s), first: "));
        let none = scan_log("all fine\n", &NO_SPACE);
        assert_eq!(none, LogScan::default());
        assert_eq!(none.describe("no-space"), "no no-space line");
        let long = format!("ENOSPC {}", "x".repeat(1000));
        assert_eq!(scan_log(&long, &NO_SPACE).first.unwrap().chars().count(), 240);
    }
}
