//! A one-second fdatasync probe: how fast the data disk syncs right now. The disk
//! here swings tens of times between idle and busy, so every figure carries one.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Syncs per second and median sync latency over ~1 s of 4 KiB write+fdatasync.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub syncs_per_sec: f64,
    pub p50: Duration,
}

pub fn probe(dir: &Path) -> Result<Probe> {
    std::fs::create_dir_all(dir).with_context(|| format!("probe dir {}", dir.display()))?;
    let path = dir.join(format!(".keelson-fsync-probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let buf = vec![0x5au8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort();
    Ok(Probe { syncs_per_sec: lat.len() as f64 / total.as_secs_f64(), p50: lat[lat.len() / 2] })
}
