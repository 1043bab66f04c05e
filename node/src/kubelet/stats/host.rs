//! The node's own usage, from `/proc`: CPU time of every CPU except idle and iowait, and
//! the memory working set as cAdvisor computes it for the root cgroup (in use, less
//! inactive file pages).

/// `/proc/stat` counts in USER_HZ, which is 100 on every architecture the agent runs on.
const USER_HZ: f64 = 100.0;

/// Cumulative CPU seconds of all CPUs, from `/proc/stat`'s `cpu` line.
pub fn cpu_seconds(proc_stat: &str) -> Option<f64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_ascii_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| f.get(i).copied().unwrap_or(0)).sum::<u64>();
    (f.len() >= 4).then(|| busy as f64 / USER_HZ)
}

/// Working set bytes from `/proc/meminfo`: MemTotal − MemFree − Inactive(file).
pub fn working_set(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
    };
    let used = kib("MemTotal")?.saturating_sub(kib("MemFree")?);
    Some(used.saturating_sub(kib("Inactive(file)").unwrap_or(0)).saturating_mul(1024))
}

/// The node's CPU seconds and working set now.
pub fn read() -> Result<(f64, u64), String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let cpu = cpu_seconds(&stat).ok_or("/proc/stat has no readable cpu line")?;
    let mem = working_set(&meminfo).ok_or("/proc/meminfo lacks MemTotal or MemFree")?;
    Ok((cpu, mem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 50 10 15 2500 35 0 1 1 0 0\nintr 1\n";
        assert_eq!(cpu_seconds(stat), Some(1.56));
        assert_eq!(cpu_seconds("cpu0 1 2 3 4\n"), None);
        assert_eq!(cpu_seconds("cpu  1 x 3 4\n"), None);
        assert_eq!(cpu_seconds("cpu  1 2\n"), None);
    }

    #[test]
    fn working_set_is_used_less_inactive_file() {
        let m = "MemTotal:       24000000 kB\nMemFree:        20000000 kB\nMemAvailable: 22000000 kB\n\
                 Inactive(file):  1000000 kB\nInactive(anon): 5 kB\n";
        assert_eq!(working_set(m), Some(3_000_000 * 1024));
        assert_eq!(working_set("MemTotal: 10 kB\n"), None);
        assert_eq!(working_set("MemTotal: 10 kB\nMemFree: 8 kB\nInactive(file): 50 kB\n"), Some(0));
    }

    #[test]
    fn this_host_reads() {
        let (cpu, mem) = read().unwrap();
        assert!(cpu > 0.0 && mem > 0, "{cpu} {mem}");
    }
}
