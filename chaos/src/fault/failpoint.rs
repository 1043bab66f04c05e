//! A named store failpoint armed in one master: restart it with `KEELSON_FAILPOINTS`
//! (debug builds only; see `keelson_store::failpoints`), keep it under traffic for a few
//! election timeouts, then restart it without. A `return` failpoint fails a durable step
//! (log append, apply, snapshot, compaction) with a storage error; where Raft cannot go
//! on, the master exits (fail-stop) and comes back from its durable state at the heal. A
//! `panic` failpoint panics with [`INJECTED_PANIC`] in the message, which the no-panic
//! checker accepts; a `sleep` one is a slow disk.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::FaultError;
use crate::cluster::Cluster;

/// Every injected panic's message carries this.
pub const INJECTED_PANIC: &str = "injected failpoint panic";

/// The failpoints and actions the fault chooses from.
const CHOICES: [(&str, &str); 10] = [
    ("store::log::append", "return"),
    ("store::log::append", "20%return"),
    ("store::log::append", "sleep(150)"),
    ("store::apply", "10%return"),
    ("store::apply", "5%panic(PANIC)"),
    ("store::apply", "sleep(100)"),
    ("store::log::purge", "return"),
    ("store::snapshot::build", "return"),
    ("store::snapshot::install", "return"),
    ("store::compact", "return"),
];

/// The `KEELSON_FAILPOINTS` value for a choice.
pub fn spec(name: &str, actions: &str) -> String {
    format!("{name}={}", actions.replace("PANIC", &format!("{INJECTED_PANIC} {name}")))
}

/// How many times the failpoint fired, from the master's log after `offset`.
fn fired(log: &str) -> usize {
    log.lines().filter(|l| l.contains("failpoint fired") || l.contains(INJECTED_PANIC)).count()
}

pub async fn arm(
    cluster: &mut Cluster,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    let n = cluster.len();
    // Both draws always, so the schedule stays the seed's whether or not a leader is known.
    let (at_leader, any) = (rng.gen_bool(0.5), rng.gen_range(0..n));
    let t = match leader {
        Some(l) if at_leader => l,
        _ => any,
    };
    let (name, actions) = CHOICES[rng.gen_range(0..CHOICES.len())];
    let value = spec(name, actions);
    let hold = Duration::from_millis(rng.gen_range(election_ms * 3..=election_ms * 8));
    let log_path = cluster.log_path(t);
    let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);

    if cluster.is_running(t) {
        cluster.kill(t)?;
    }
    cluster.start_with_env(t, &[(keelson_store::failpoints::ENV.to_string(), value.clone())])?;
    tracing::info!(master = cluster.name(t), failpoint = %value, "fault: failpoint armed");
    let started = Instant::now();
    // Hold, noting when (if) the master stops by itself.
    let mut exited = None;
    while started.elapsed() < hold {
        if exited.is_none() && !cluster.is_running(t) {
            exited = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = read_from(&log_path, offset);
    if cluster.is_running(t) {
        cluster.kill(t)?;
    }
    cluster.start(t)?;
    tracing::info!(master = cluster.name(t), "fault healed: restarted without failpoints");
    let fired = fired(&log);
    let outcome = match exited {
        Some(after) => format!("it exited after {} ms", after.as_millis()),
        None => "it kept running".to_string(),
    };
    Ok((
        vec![t],
        format!(
            "{}{} restarted with {value} for {} ms: fired {fired}×, {outcome}; restarted without",
            cluster.name(t),
            if Some(t) == leader { " (leader)" } else { "" },
            hold.as_millis()
        ),
    ))
}

/// The log written after `offset` (lossy UTF-8).
fn read_from(path: &std::path::Path, offset: u64) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_is_a_valid_store_failpoint() {
        for (name, actions) in CHOICES {
            let parsed = keelson_store::failpoints::parse(&spec(name, actions)).expect("parses");
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].0, name);
        }
        assert_eq!(
            spec("store::apply", "5%panic(PANIC)"),
            format!("store::apply=5%panic({INJECTED_PANIC} store::apply)")
        );
    }

    #[test]
    fn counts_firings() {
        let log = "x\nERROR failpoint fired: failing this step failpoint=\"store::apply\"\ny\n\
                   thread 'w' panicked at src/lib.rs:1:1:\ninjected failpoint panic store::apply\n";
        assert_eq!(fired(log), 2);
        assert_eq!(fired("nothing here\n"), 0);
    }
}
