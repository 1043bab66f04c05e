//! History checkers, run after a workload on its recorded [`History`]. Each returns a
//! [`Verdict`]; a checker that cannot decide (the linearizability search ran out of time)
//! says so and counts as a failure.
//!
//! - [`linearizable`]: the per-key register histories are linearizable (Wing & Gong search
//!   with Lowe's memoization, as in Porcupine).
//! - [`acked`]: every acknowledged write is in the canonical log, and the canonical log
//!   replays to the final state.
//! - [`watch`]: every watcher's stream is the canonical log of its prefix: ordered, unique,
//!   without gaps, atomic per revision, resumable, with honest bookmarks.
//! - [`revisions`]: the revisions each client sees never go backwards.
//! - [`controllers`]: one acting leader — no replica slot filled twice.

use std::time::Duration;

use serde::Serialize;

use crate::history::History;

pub mod acked;
pub mod controllers;
pub mod linearizable;
pub mod revisions;
pub mod watch;

/// How many violations a verdict lists (the total is still counted in its summary).
pub const MAX_VIOLATIONS: usize = 20;

/// One checker's result.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub name: &'static str,
    pub ok: bool,
    /// How many items (operations, writes, events) the checker verified.
    pub checked: usize,
    /// Human-readable, the first [`MAX_VIOLATIONS`] at most.
    pub violations: Vec<String>,
    /// One line.
    pub summary: String,
}

/// Every checker on one history.
pub fn all(history: &History, linearizability_budget: Duration) -> Vec<Verdict> {
    vec![
        linearizable::check(history, linearizability_budget),
        acked::check(history),
        watch::check(history),
        revisions::check(history),
        controllers::check(history),
        controllers::check_binding(history),
    ]
}

/// Collects violations: keeps the first [`MAX_VIOLATIONS`], counts them all.
#[derive(Debug, Default)]
pub(crate) struct Violations {
    first: Vec<String>,
    total: usize,
}

impl Violations {
    pub(crate) fn new() -> Violations {
        Violations::default()
    }

    pub(crate) fn push(&mut self, violation: String) {
        self.total += 1;
        if self.first.len() < MAX_VIOLATIONS {
            self.first.push(violation);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The verdict: ok with `ok_summary` when nothing was found, otherwise not ok with the
    /// first violation as the summary.
    pub(crate) fn verdict(self, name: &'static str, checked: usize, ok_summary: String) -> Verdict {
        if self.total == 0 {
            return Verdict { name, ok: true, checked, violations: Vec::new(), summary: ok_summary };
        }
        let mut summary = self.first[0].clone();
        if self.total > 1 {
            let more = self.total - 1;
            summary.push_str(&format!(" (and {more} more violation{})", if more == 1 { "" } else { "s" }));
        }
        Verdict { name, ok: false, checked, violations: self.first, summary }
    }
}

/// A monotonic instant (ns since the run's start) for a message: seconds with ns digits.
pub(crate) fn secs(mono_ns: u64) -> String {
    if mono_ns == u64::MAX {
        return "never".to_string();
    }
    format!("{}.{:09}s", mono_ns / 1_000_000_000, mono_ns % 1_000_000_000)
}

/// A value for a message: quoted (shortened when long), or `absent`.
pub(crate) fn show(value: Option<&str>) -> String {
    match value {
        None => "absent".to_string(),
        Some(v) if v.chars().count() > 60 => format!("{:?}…", v.chars().take(60).collect::<String>()),
        Some(v) => format!("{v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ControllerLog, Delivery, Event, Op, OpKind, Outcome, PodEvent, Stamp, WatchLog};

    fn at(t: u64) -> Stamp {
        Stamp { mono: t, wall_ms: 0 }
    }

    fn ok(client: u32, kind: OpKind, revision: i64, value: Option<&str>, t: u64) -> Op {
        Op {
            client,
            master: Some(0),
            kind,
            invoke: at(t),
            complete: Some(at(t + 5)),
            outcome: Outcome::Ok { revision, value: value.map(str::to_string) },
        }
    }

    fn ev(revision: i64, key: &str, value: Option<&str>) -> Event {
        Event { revision, key: key.into(), value: value.map(str::to_string) }
    }

    const A: &str = "/registry/configmaps/ns/a";
    const K: &str = "/reg/k0";

    fn good() -> History {
        History {
            ops: vec![
                ok(101, OpKind::Get { key: K.into() }, 10, None, 0),
                ok(101, OpKind::Put { key: K.into(), value: "a".into() }, 11, Some("a"), 10),
                ok(102, OpKind::Get { key: K.into() }, 11, Some("a"), 20),
                Op {
                    client: 102,
                    master: None,
                    kind: OpKind::Put { key: K.into(), value: "b".into() },
                    invoke: at(30),
                    complete: None,
                    outcome: Outcome::Unknown { error: "still outstanding when the run ended".into() },
                },
                ok(1, OpKind::Create { key: A.into(), value: "1".into() }, 12, Some("1"), 20),
                ok(1, OpKind::Update { key: A.into(), value: "2".into(), expected_rv: 12 }, 13, Some("2"), 30),
                ok(2, OpKind::List, 13, None, 35),
                ok(1, OpKind::Delete { key: A.into(), expected_rv: 13 }, 0, None, 40),
                ok(u32::MAX, OpKind::Compact { revision: 12 }, 14, None, 50),
            ],
            watches: vec![WatchLog {
                watcher: 1,
                prefix: "/registry/configmaps/ns/".into(),
                deliveries: vec![
                    Delivery::Relisted { at: at(1), revision: 10 },
                    Delivery::Start { at: at(2), from_revision: 10, master: Some(0) },
                    Delivery::Events { at: at(25), events: vec![ev(12, A, Some("1"))] },
                    Delivery::Events { at: at(35), events: vec![ev(13, A, Some("2"))] },
                    Delivery::Bookmark { at: at(36), revision: 13 },
                    Delivery::Ended { at: at(37), error: "stream closed".into() },
                    Delivery::Start { at: at(38), from_revision: 13, master: Some(1) },
                    Delivery::Events { at: at(45), events: vec![ev(14, A, None)] },
                ],
            }],
            canonical: vec![ev(11, K, Some("a")), ev(12, A, Some("1")), ev(13, A, Some("2")), ev(14, A, None)],
            final_state: vec![ev(11, K, Some("a"))],
            final_revision: 14,
            canonical_from: 10,
            controllers: ControllerLog {
                created: vec![("rs".into(), 1, at(5))],
                pods: vec![PodEvent {
                    at: at(6),
                    revision: 12,
                    pod: "rs-a".into(),
                    owner: "rs".into(),
                    live: true,
                    node: "n1".into(),
                }],
            },
        }
    }

    #[test]
    fn all_pass_on_a_good_history() {
        let verdicts = all(&good(), Duration::from_secs(5));
        let names: Vec<&str> = verdicts.iter().map(|v| v.name).collect();
        assert_eq!(names, ["linearizable", "acked", "watch", "revisions", "one-acting-leader", "one-node-per-pod"]);
        for v in &verdicts {
            assert!(v.ok, "{v:?}");
            assert!(v.checked > 0, "{v:?}");
            assert!(v.violations.is_empty(), "{v:?}");
        }
        // The verdicts serialize for the report.
        let json = serde_json::to_string(&verdicts).expect("json");
        assert!(json.contains("\"name\":\"watch\""), "{json}");
    }

    #[test]
    fn each_checker_fails_its_own_fault() {
        // A stale read: only the linearizability checker can see it.
        let mut h = good();
        h.ops.push(ok(103, OpKind::Get { key: K.into() }, 11, None, 100));
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["linearizable"]);
        // A watcher missing an event.
        let mut h = good();
        h.watches[0].deliveries.remove(3);
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["watch"]);
        // The canonical log lost the delete (the watcher's event for it is past the log's
        // end, so the watch checker cannot tell).
        let mut h = good();
        h.canonical.pop();
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["acked"]);
        // A list behind the client's own write.
        let mut h = good();
        h.ops.push(ok(1, OpKind::List, 12, None, 60));
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["revisions"]);
        // A second live pod for a one-replica slot.
        let mut h = good();
        h.controllers.pods.push(PodEvent {
            at: at(7),
            revision: 13,
            pod: "rs-b".into(),
            owner: "rs".into(),
            live: true,
            node: "n1".into(),
        });
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["one-acting-leader"]);
        // The one pod seen on a second node.
        let mut h = good();
        h.controllers.pods.push(PodEvent {
            at: at(7),
            revision: 13,
            pod: "rs-a".into(),
            owner: "rs".into(),
            live: true,
            node: "n2".into(),
        });
        let failed: Vec<&str> = all(&h, Duration::from_secs(5)).iter().filter(|v| !v.ok).map(|v| v.name).collect();
        assert_eq!(failed, ["one-node-per-pod"]);
    }

    #[test]
    fn violations_are_capped_and_counted() {
        let mut v = Violations::new();
        for i in 0..50 {
            v.push(format!("v{i}"));
        }
        let verdict = v.verdict("x", 1, String::new());
        assert!(!verdict.ok);
        assert_eq!(verdict.violations.len(), MAX_VIOLATIONS);
        assert_eq!(verdict.summary, "v0 (and 49 more violations)");
    }
}
