//! The run's report: faults with their timings, operation outcomes, availability around
//! each fault, failover times and the checkers' verdicts. Text for people, JSON for
//! machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::Verdict;
use crate::fault::{FaultKind, FaultRecord};
use crate::history::{Delivery, History, Op, OpKind, Outcome, Stamp};
use crate::run::monitor::LeaderObs;

const NS_PER_MS: f64 = 1e6;

/// Failover figures for one fault that took the leader out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Failover {
    /// Fault → a leader is observed again (a new one, or the old one restarted).
    pub new_leader_ms: Option<f64>,
    /// Fault → the first write invoked after it is acknowledged.
    pub first_write_ms: Option<f64>,
    /// Fault → every watcher has delivered the first Kubernetes object write acknowledged
    /// after it (or a later one).
    pub watches_resumed_ms: Option<f64>,
    /// Fault → the controllers made a pod for a ReplicaSet created after the fault.
    pub controllers_acting_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    #[serde(flatten)]
    pub fault: FaultRecord,
    pub failover: Option<Failover>,
    /// Share of writes acknowledged among those invoked in the 2 s before, during, and in
    /// the 2 s after the fault.
    pub availability: [Option<f64>; 3],
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub masters: usize,
    pub duration_s: f64,
    pub faults: Vec<FaultReport>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub leader_faults: usize,
    /// Per operation kind.
    pub ops: BTreeMap<String, Counts>,
    pub watch_events: usize,
    pub watch_restarts: usize,
    pub watch_relists: usize,
    pub leader_changes: usize,
    /// Writes acknowledged / invoked: before the first fault, while any fault was active,
    /// after the last heal.
    pub availability_before: Option<f64>,
    pub availability_during: Option<f64>,
    pub availability_after: Option<f64>,
    pub failover_new_leader: Percentiles,
    pub failover_first_write: Percentiles,
    pub failover_watches: Percentiles,
    pub failover_controllers: Percentiles,
    pub verdicts: Vec<Verdict>,
    pub ok: bool,
    pub dir: String,
}

fn kind_name(k: &OpKind) -> &'static str {
    match k {
        OpKind::Put { .. } => "put",
        OpKind::Get { .. } => "get",
        OpKind::Create { .. } => "create",
        OpKind::Update { .. } => "update",
        OpKind::Delete { .. } => "delete",
        OpKind::List => "list",
        OpKind::Compact { .. } => "compact",
    }
}

fn is_checked_write(op: &Op) -> bool {
    op.kind.is_write() && !matches!(op.kind, OpKind::Compact { .. })
}

/// Acknowledged share of the writes invoked in `[from, to)`; conflicts count as answers
/// (the cluster was available to refuse them).
pub fn availability(ops: &[Op], from: u64, to: u64) -> Option<f64> {
    let window: Vec<&Op> =
        ops.iter().filter(|o| is_checked_write(o) && o.invoke.mono >= from && o.invoke.mono < to).collect();
    if window.is_empty() {
        return None;
    }
    let answered = window.iter().filter(|o| !matches!(o.outcome, Outcome::Unknown { .. })).count();
    Some(answered as f64 / window.len() as f64)
}

/// Failover figures for a fault injected at `at` that removed the leader.
pub fn failover(history: &History, leaders: &[LeaderObs], at: Stamp) -> Failover {
    // A leader again: a new one, or the old one back (openraft restores a restarted leader
    // in its old term when no one else was elected meanwhile).
    let before = leaders.iter().rev().find(|l| l.at.mono <= at.mono).copied();
    let mut seen_none = false;
    let new_leader = leaders
        .iter()
        .filter(|l| l.at.mono > at.mono)
        .find(|l| {
            seen_none |= l.leader.is_none();
            l.leader.is_some() && (seen_none || before.map(|b| b.leader != l.leader || l.term > b.term).unwrap_or(true))
        })
        .map(|l| (l.at.mono - at.mono) as f64 / NS_PER_MS);
    let first_write = history
        .ops
        .iter()
        .filter(|o| is_checked_write(o) && o.invoke.mono >= at.mono)
        .filter_map(|o| match (&o.outcome, o.complete) {
            (Outcome::Ok { revision, .. }, Some(c)) if *revision > 0 => Some((c.mono, *revision)),
            _ => None,
        })
        .min();
    // Watchers see only the Kubernetes objects: measure against the first of those.
    let first_object_write = history
        .ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Create { .. } | OpKind::Update { .. }) && o.invoke.mono >= at.mono)
        .filter_map(|o| match (&o.outcome, o.complete) {
            (Outcome::Ok { revision, .. }, Some(c)) if *revision > 0 => Some((c.mono, *revision)),
            _ => None,
        })
        .min();
    let watches = first_object_write.and_then(|(_, rev)| {
        let mut worst = 0u64;
        for w in &history.watches {
            let seen = w.deliveries.iter().find_map(|d| match d {
                Delivery::Events { at: t, events } if t.mono >= at.mono && events.iter().any(|e| e.revision >= rev) => {
                    Some(t.mono)
                }
                _ => None,
            });
            worst = worst.max(seen?);
        }
        Some((worst.saturating_sub(at.mono)) as f64 / NS_PER_MS)
    });
    let controllers = history
        .controllers
        .created
        .iter()
        .filter(|(_, _, t)| t.mono >= at.mono)
        .filter_map(|(name, _, _)| {
            history.controllers.pods.iter().find(|p| p.live && &p.owner == name).map(|p| p.at.mono)
        })
        .min()
        .map(|t| t.saturating_sub(at.mono) as f64 / NS_PER_MS);
    Failover {
        controllers_acting_ms: controllers,
        new_leader_ms: new_leader,
        first_write_ms: first_write.map(|(c, _)| (c - at.mono) as f64 / NS_PER_MS),
        watches_resumed_ms: watches,
    }
}

pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
    };
    Percentiles { count: v.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: v.last().copied() }
}

const WINDOW_NS: u64 = 2_000_000_000;

#[allow(clippy::too_many_arguments)]
pub fn build(
    seed: u64,
    masters: usize,
    duration_s: f64,
    history: &History,
    faults: Vec<FaultRecord>,
    leaders: &[LeaderObs],
    verdicts: Vec<Verdict>,
    dir: String,
) -> Report {
    let mut ops: BTreeMap<String, Counts> = BTreeMap::new();
    for o in &history.ops {
        let c = ops.entry(kind_name(&o.kind).to_string()).or_default();
        match o.outcome {
            Outcome::Ok { .. } => c.ok += 1,
            Outcome::Fail { .. } => c.fail += 1,
            Outcome::Unknown { .. } => c.unknown += 1,
        }
    }
    let mut by_kind = BTreeMap::new();
    let mut reports = Vec::new();
    let (mut nl, mut fw, mut wr, mut ca) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in faults {
        *by_kind.entry(f.kind.name().to_string()).or_insert(0) += 1;
        let takes_leader = f.leader_was_target
            && matches!(
                f.kind,
                FaultKind::Kill
                    | FaultKind::KillLeader
                    | FaultKind::Pause
                    | FaultKind::PartitionLeader
                    | FaultKind::PartitionOneWay
            );
        let failover = takes_leader.then(|| failover(history, leaders, f.injected));
        if let Some(fo) = &failover {
            if matches!(f.kind, FaultKind::Kill | FaultKind::KillLeader) {
                nl.extend(fo.new_leader_ms);
                fw.extend(fo.first_write_ms);
                wr.extend(fo.watches_resumed_ms);
                ca.extend(fo.controllers_acting_ms);
            }
        }
        let (i, h) = (f.injected.mono, f.healed.mono);
        let availability = [
            availability(&history.ops, i.saturating_sub(WINDOW_NS), i),
            availability(&history.ops, i, h.max(i + 1)),
            availability(&history.ops, h, h + WINDOW_NS),
        ];
        reports.push(FaultReport { fault: f, failover, availability });
    }
    let first = reports.iter().map(|r| r.fault.injected.mono).min().unwrap_or(u64::MAX);
    let last = reports.iter().map(|r| r.fault.healed.mono).max().unwrap_or(0);
    let during = {
        let window: Vec<Op> = history
            .ops
            .iter()
            .filter(|o| {
                reports.iter().any(|r| o.invoke.mono >= r.fault.injected.mono && o.invoke.mono < r.fault.healed.mono)
            })
            .cloned()
            .collect();
        availability(&window, 0, u64::MAX)
    };
    let mut watch_events = 0;
    let mut restarts = 0usize;
    let mut relists = 0usize;
    for w in &history.watches {
        for d in &w.deliveries {
            match d {
                Delivery::Events { events, .. } => watch_events += events.len(),
                Delivery::Start { .. } => restarts += 1,
                Delivery::Relisted { .. } => relists += 1,
                _ => {}
            }
        }
    }
    let leader_faults = reports.iter().filter(|r| r.failover.is_some()).count();
    let ok = verdicts.iter().all(|v| v.ok);
    Report {
        seed,
        masters,
        duration_s,
        faults_by_kind: by_kind,
        leader_faults,
        ops,
        watch_events,
        watch_restarts: restarts.saturating_sub(history.watches.len()),
        watch_relists: relists.saturating_sub(history.watches.len()),
        leader_changes: leaders.len().saturating_sub(1),
        availability_before: availability(&history.ops, 0, first),
        availability_during: during,
        availability_after: availability(&history.ops, last, u64::MAX),
        failover_new_leader: percentiles(nl),
        failover_first_write: percentiles(fw),
        failover_watches: percentiles(wr),
        failover_controllers: percentiles(ca),
        faults: reports,
        verdicts,
        ok,
        dir,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "-".into())
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ =
            writeln!(s, "keelson chaos run: {} masters, {:.0} s, seed {}", self.masters, self.duration_s, self.seed);
        let _ = writeln!(s, "\nFaults ({} total, {} took the leader out):", self.faults.len(), self.leader_faults);
        let _ = writeln!(
            s,
            "  (times from the fault; availability = share of writes answered in the 2 s before, during, 2 s after; * = the leader was hit)"
        );
        for (k, n) in &self.faults_by_kind {
            let _ = writeln!(s, "  {k:<20} {n}");
        }
        let _ = writeln!(
            s,
            "\n  {:>9}  {:<18} {:<8} {:>11} {:>11} {:>11} {:>11}  {:>7} {:>7} {:>7}  detail",
            "at", "fault", "leader", "leader again", "1st write", "watches", "controllers", "before", "during", "after"
        );
        for r in &self.faults {
            let f = &r.fault;
            let fo = r.failover.clone().unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:>8.2}s  {:<18} {:<8} {:>11} {:>11} {:>11} {:>11}  {:>7} {:>7} {:>7}  {}",
                f.injected.mono as f64 / 1e9,
                f.kind.name(),
                f.leader_before
                    .map(|l| format!("m{}{}", l + 1, if f.leader_was_target { "*" } else { "" }))
                    .unwrap_or_else(|| "-".into()),
                ms(fo.new_leader_ms),
                ms(fo.first_write_ms),
                ms(fo.watches_resumed_ms),
                ms(fo.controllers_acting_ms),
                pct(r.availability[0]),
                pct(r.availability[1]),
                pct(r.availability[2]),
                f.detail
            );
        }
        let _ = writeln!(s, "\nOperations (ok / refused / unknown):");
        for (k, c) in &self.ops {
            let _ = writeln!(s, "  {k:<8} {:>7} / {:>6} / {:>6}", c.ok, c.fail, c.unknown);
        }
        let _ = writeln!(
            s,
            "  watch: {} events, {} resumes, {} relists; {} leader changes",
            self.watch_events, self.watch_restarts, self.watch_relists, self.leader_changes
        );
        let _ = writeln!(
            s,
            "\nAvailability (writes answered): before faults {}, during faults {}, after the last heal {}",
            pct(self.availability_before),
            pct(self.availability_during),
            pct(self.availability_after)
        );
        let _ = writeln!(
            s,
            "\nFailover after SIGKILL of the leader (p50 / p99 / max over {}):",
            self.failover_new_leader.count
        );
        for (name, p) in [
            ("leader again", &self.failover_new_leader),
            ("first acked write", &self.failover_first_write),
            ("watches resumed", &self.failover_watches),
            ("controllers acting", &self.failover_controllers),
        ] {
            let _ = writeln!(s, "  {name:<18} {} / {} / {}", ms(p.p50_ms), ms(p.p99_ms), ms(p.max_ms));
        }
        let _ = writeln!(s, "\nCheckers:");
        for v in &self.verdicts {
            let _ = writeln!(s, "  {:<4} {:<22} {}", if v.ok { "PASS" } else { "FAIL" }, v.name, v.summary);
            for x in v.violations.iter().take(10) {
                let _ = writeln!(s, "         - {x}");
            }
        }
        let _ = writeln!(s, "\n{}  (seed {}, data in {})", if self.ok { "PASS" } else { "FAIL" }, self.seed, self.dir);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, WatchLog};

    fn st(ms: u64) -> Stamp {
        Stamp { mono: ms * 1_000_000, wall_ms: ms }
    }

    fn put(client: u32, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client,
            master: None,
            kind: OpKind::Put { key: "k".into(), value: format!("{client}-{invoke}") },
            invoke: st(invoke),
            complete: Some(st(complete)),
            outcome,
        }
    }

    #[test]
    fn failover_times_from_the_history() {
        let ok = |rev| Outcome::Ok { revision: rev, value: None };
        let unknown = Outcome::Unknown { error: "timeout".into() };
        let history = History {
            ops: vec![
                put(1, 900, 950, ok(10)),
                put(1, 1000, 4000, unknown),
                put(2, 1500, 1900, ok(12)),
                Op {
                    kind: OpKind::Update { key: "o".into(), value: "v".into(), expected_rv: 0 },
                    ..put(3, 1800, 2100, ok(13))
                },
            ],
            watches: vec![WatchLog {
                watcher: 1,
                prefix: String::new(),
                deliveries: vec![
                    Delivery::Events {
                        at: st(2300),
                        events: vec![Event { revision: 12, key: "k".into(), value: None }],
                    },
                    Delivery::Events {
                        at: st(2400),
                        events: vec![Event { revision: 13, key: "o".into(), value: None }],
                    },
                ],
            }],
            ..Default::default()
        };
        let leaders = [
            LeaderObs { at: st(0), leader: Some(0), term: 1 },
            LeaderObs { at: st(1200), leader: None, term: 2 },
            LeaderObs { at: st(1400), leader: Some(1), term: 2 },
        ];
        let f = failover(&history, &leaders, st(1000));
        assert_eq!(f.new_leader_ms, Some(400.0));
        assert_eq!(f.first_write_ms, Some(900.0));
        // Watchers are measured against the first object write (revision 13).
        assert_eq!(f.watches_resumed_ms, Some(1400.0));
        assert_eq!(availability(&history.ops, st(1000).mono, st(2000).mono), Some(2.0 / 3.0));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let p = percentiles((1..=100).map(|v| v as f64).collect());
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(percentiles(vec![]).p50_ms, None);
    }
}
