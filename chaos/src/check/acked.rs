//! Acknowledged writes are present at the end.
//!
//! Every acknowledged put, create or update is in the canonical log at the revision its
//! answer named, with the value it wrote (writes at or below `canonical_from` are before
//! the log and skipped). Every acknowledged delete is followed in the log by a delete of
//! its key after the revision it was conditional on. And replaying the log (key → its last
//! event) gives exactly the final state: same keys, values and revisions, deleted keys
//! absent — a lost or a phantom event fails this. Only keys in the workload's folders
//! (the parents of the final state's and the operations' keys) are compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{secs, show, Verdict, Violations};
use crate::history::{Event, History, Op, OpKind, Outcome};

const NAME: &str = "acked";

pub fn check(history: &History) -> Verdict {
    let mut violations = Violations::new();
    let mut by_rev_key: HashMap<(i64, &str), &Event> = HashMap::new();
    let mut deletes: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in &history.canonical {
        by_rev_key.insert((e.revision, e.key.as_str()), e);
        if e.value.is_none() {
            deletes.entry(e.key.as_str()).or_default().push(e.revision);
        }
    }

    let mut writes = 0;
    let mut skipped = 0;
    for op in &history.ops {
        let Outcome::Ok { revision, .. } = &op.outcome else { continue };
        match &op.kind {
            OpKind::Put { key, value } | OpKind::Create { key, value } | OpKind::Update { key, value, .. } => {
                if *revision <= history.canonical_from {
                    skipped += 1;
                    continue;
                }
                writes += 1;
                match by_rev_key.get(&(*revision, key.as_str())) {
                    None => violations.push(format!(
                        "lost write: {} acknowledged at revision {revision} is not in the canonical log",
                        describe(op, key, Some(value))
                    )),
                    Some(e) if e.value.as_deref() != Some(value.as_str()) => violations.push(format!(
                        "wrong value: {} acknowledged at revision {revision}, but the canonical log has {} there",
                        describe(op, key, Some(value)),
                        show(e.value.as_deref())
                    )),
                    Some(_) => {}
                }
            }
            OpKind::Delete { key, expected_rv } => {
                writes += 1;
                let deleted = deletes.get(key.as_str()).is_some_and(|revs| revs.iter().any(|r| r > expected_rv));
                if !deleted {
                    violations.push(format!(
                        "lost delete: {} (conditional on revision {expected_rv}) acknowledged, but the canonical log has no delete of it after revision {expected_rv}",
                        describe(op, key, None)
                    ));
                }
            }
            _ => {}
        }
    }

    // The workload's folders: what the final state and the operations name.
    let folders: BTreeSet<&str> = history
        .final_state
        .iter()
        .map(|e| e.key.as_str())
        .chain(history.ops.iter().filter_map(|o| o.kind.key()))
        .map(folder)
        .collect();
    let mut replay: BTreeMap<&str, &Event> = BTreeMap::new();
    for e in &history.canonical {
        if history.final_revision > 0 && e.revision > history.final_revision {
            continue;
        }
        if !folders.contains(folder(&e.key)) {
            continue;
        }
        match replay.get(e.key.as_str()) {
            Some(prev) if prev.revision > e.revision => {}
            _ => {
                replay.insert(e.key.as_str(), e);
            }
        }
    }
    let mut finals: BTreeMap<&str, &Event> = BTreeMap::new();
    for e in &history.final_state {
        if let Some(prev) = finals.insert(e.key.as_str(), e) {
            violations.push(format!(
                "final state lists key {} twice (revisions {} and {})",
                e.key, prev.revision, e.revision
            ));
        }
    }
    let mut keys = 0;
    for (key, last) in &replay {
        keys += 1;
        match (last.value.as_deref(), finals.get(key)) {
            (None, None) => {}
            (None, Some(f)) => violations.push(format!(
                "final state has key {key} = {} at revision {}, but the canonical log deleted it at revision {}",
                show(f.value.as_deref()),
                f.revision,
                last.revision
            )),
            (Some(v), None) => violations.push(format!(
                "key {key} is absent from the final state (revision {}), but the canonical log's last event for it is {} at revision {}",
                history.final_revision,
                show(Some(v)),
                last.revision
            )),
            (Some(v), Some(f)) => {
                if f.value.as_deref() != Some(v) || f.revision != last.revision {
                    violations.push(format!(
                        "final state has key {key} = {} at revision {}, but replaying the canonical log gives {} at revision {}",
                        show(f.value.as_deref()),
                        f.revision,
                        show(Some(v)),
                        last.revision
                    ));
                }
            }
        }
    }
    for (key, f) in &finals {
        if replay.contains_key(key) {
            continue;
        }
        if f.revision > history.canonical_from {
            keys += 1;
            violations.push(format!(
                "final state has key {key} = {} at revision {}, which the canonical log never saw",
                show(f.value.as_deref()),
                f.revision
            ));
        }
    }

    let summary = format!(
        "{writes} acknowledged writes in the canonical log ({skipped} skipped at or below revision {}); final state of {keys} keys equals the canonical replay",
        history.canonical_from
    );
    violations.verdict(NAME, writes + keys, summary)
}

/// The folder of a key: up to and including its last `/`.
fn folder(key: &str) -> &str {
    key.rfind('/').map(|i| &key[..=i]).unwrap_or("")
}

fn describe(op: &Op, key: &str, value: Option<&String>) -> String {
    let what = match &op.kind {
        OpKind::Put { .. } => "put",
        OpKind::Create { .. } => "create",
        OpKind::Update { .. } => "update",
        OpKind::Delete { .. } => "delete",
        _ => "op",
    };
    let value = value.map(|v| format!(" = {}", show(Some(v)))).unwrap_or_default();
    let done = op.complete.map(|c| secs(c.mono)).unwrap_or_else(|| "never".into());
    format!("{what} of {key}{value} by client {} (invoke {}, complete {done})", op.client, secs(op.invoke.mono))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stamp;

    fn at(t: u64) -> Stamp {
        Stamp { mono: t, wall_ms: 0 }
    }

    fn write(kind: OpKind, revision: i64, t: u64) -> Op {
        let value = match &kind {
            OpKind::Put { value, .. } | OpKind::Create { value, .. } | OpKind::Update { value, .. } => {
                Some(value.clone())
            }
            _ => None,
        };
        Op {
            client: 1,
            master: None,
            kind,
            invoke: at(t),
            complete: Some(at(t + 5)),
            outcome: Outcome::Ok { revision, value },
        }
    }

    fn ev(revision: i64, key: &str, value: Option<&str>) -> Event {
        Event { revision, key: key.into(), value: value.map(str::to_string) }
    }

    const A: &str = "/registry/configmaps/ns/a";
    const B: &str = "/registry/configmaps/ns/b";

    fn good() -> History {
        History {
            ops: vec![
                write(OpKind::Create { key: A.into(), value: "1".into() }, 11, 10),
                write(OpKind::Create { key: B.into(), value: "2".into() }, 12, 20),
                write(OpKind::Update { key: A.into(), value: "3".into(), expected_rv: 11 }, 13, 30),
                write(OpKind::Delete { key: B.into(), expected_rv: 12 }, 0, 40),
                // Refused and unknown writes prove nothing.
                Op {
                    client: 2,
                    master: None,
                    kind: OpKind::Update { key: A.into(), value: "x".into(), expected_rv: 11 },
                    invoke: at(31),
                    complete: Some(at(35)),
                    outcome: Outcome::Fail { error: "409".into() },
                },
                Op {
                    client: 2,
                    master: None,
                    kind: OpKind::Put { key: "/reg/k0".into(), value: "y".into() },
                    invoke: at(31),
                    complete: None,
                    outcome: Outcome::Unknown { error: "timeout".into() },
                },
                write(OpKind::Put { key: "/reg/k1".into(), value: "z".into() }, 15, 50),
                // Before the canonical log: skipped.
                write(OpKind::Put { key: "/reg/k2".into(), value: "old".into() }, 9, 0),
            ],
            canonical: vec![
                ev(11, A, Some("1")),
                ev(12, B, Some("2")),
                ev(13, A, Some("3")),
                ev(14, B, None),
                ev(15, "/reg/k1", Some("z")),
                // A key outside the workload's folders is not compared.
                ev(16, "/registry/leases/x", Some("l")),
            ],
            final_state: vec![ev(13, A, Some("3")), ev(15, "/reg/k1", Some("z")), ev(9, "/reg/k2", Some("old"))],
            final_revision: 16,
            canonical_from: 10,
            ..Default::default()
        }
    }

    #[test]
    fn passes_a_good_history() {
        let v = check(&good());
        assert!(v.ok, "{v:?}");
        assert!(v.summary.contains("5 acknowledged writes"), "{}", v.summary);
        assert!(v.summary.contains("1 skipped"), "{}", v.summary);
    }

    #[test]
    fn fails_a_lost_write() {
        let mut h = good();
        h.canonical.retain(|e| e.revision != 15);
        h.final_state.retain(|e| e.revision != 15);
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.starts_with("lost write: put of /reg/k1 = \"z\" by client 1"), "{}", v.summary);
        assert!(v.summary.contains("revision 15"), "{}", v.summary);
    }

    #[test]
    fn fails_a_wrong_value() {
        let mut h = good();
        h.canonical[2].value = Some("other".into());
        h.final_state[0].value = Some("other".into());
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.starts_with("wrong value: update of"), "{}", v.summary);
    }

    #[test]
    fn fails_a_lost_delete() {
        let mut h = good();
        h.canonical.retain(|e| e.revision != 14);
        h.final_state.push(ev(12, B, Some("2")));
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.starts_with("lost delete: delete of /registry/configmaps/ns/b"), "{}", v.summary);
    }

    #[test]
    fn fails_a_final_state_differing_from_the_replay() {
        // A different value.
        let mut h = good();
        h.final_state[0].value = Some("9".into());
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.contains("replaying the canonical log gives \"3\" at revision 13"), "{}", v.summary);
        // A deleted key still there.
        let mut h = good();
        h.final_state.push(ev(12, B, Some("2")));
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.contains("deleted it at revision 14"), "{}", v.summary);
        // A key missing.
        let mut h = good();
        h.final_state.remove(1);
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.contains("absent from the final state"), "{}", v.summary);
        // A phantom key the canonical log never saw.
        let mut h = good();
        h.final_state.push(ev(16, "/reg/k7", Some("p")));
        let v = check(&h);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.contains("never saw"), "{}", v.summary);
    }
}
