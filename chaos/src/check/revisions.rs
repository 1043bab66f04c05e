//! The revisions (resourceVersions) a client sees never go backwards.
//!
//! A client is one sequential process, so its operations in invoke order are in real-time
//! order. An acknowledged write must get a revision above every revision the client saw
//! before it; an acknowledged read (get, list) must see at least the highest one. Deletes,
//! compactions and revision 0 (not known) are skipped.

use std::collections::BTreeMap;

use super::{secs, Verdict, Violations};
use crate::history::{History, Op, OpKind, Outcome};

const NAME: &str = "revisions";

pub fn check(history: &History) -> Verdict {
    let mut by_client: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_client.entry(op.client).or_default().push(op);
    }
    let mut violations = Violations::new();
    let mut checked = 0;
    for (client, ops) in &mut by_client {
        ops.sort_by_key(|o| o.invoke.mono);
        // The highest revision seen so far, and the operation that saw it.
        let mut seen: Option<(i64, &Op)> = None;
        for &op in ops.iter() {
            let Outcome::Ok { revision, .. } = op.outcome else { continue };
            let write = match op.kind {
                OpKind::Put { .. } | OpKind::Create { .. } | OpKind::Update { .. } => true,
                OpKind::Get { .. } | OpKind::List => false,
                OpKind::Delete { .. } | OpKind::Compact { .. } => continue,
            };
            if revision == 0 {
                continue;
            }
            checked += 1;
            if let Some((max, before)) = seen {
                if revision < max || (write && revision == max) {
                    let need = if write { "above" } else { "at least" };
                    violations.push(format!(
                        "client {client}: {} got revision {revision}, but it had already seen revision {max} ({}); a {} must get {need} it",
                        describe(op),
                        describe(before),
                        if write { "write" } else { "read" },
                    ));
                }
            }
            if seen.is_none_or(|(max, _)| revision > max) {
                seen = Some((revision, op));
            }
        }
    }
    let summary = format!("{checked} revisions of {} clients never go backwards", by_client.len());
    violations.verdict(NAME, checked, summary)
}

fn describe(op: &Op) -> String {
    let what = match &op.kind {
        OpKind::Put { key, .. } => format!("put of {key}"),
        OpKind::Get { key } => format!("get of {key}"),
        OpKind::Create { key, .. } => format!("create of {key}"),
        OpKind::Update { key, .. } => format!("update of {key}"),
        OpKind::Delete { key, .. } => format!("delete of {key}"),
        OpKind::List => "list".to_string(),
        OpKind::Compact { revision } => format!("compaction to {revision}"),
    };
    let done = op.complete.map(|c| secs(c.mono)).unwrap_or_else(|| "never".into());
    format!("{what} (invoke {}, complete {done})", secs(op.invoke.mono))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stamp;

    fn op(client: u32, kind: OpKind, revision: i64, t: u64) -> Op {
        Op {
            client,
            master: None,
            kind,
            invoke: Stamp { mono: t, wall_ms: 0 },
            complete: Some(Stamp { mono: t + 5, wall_ms: 0 }),
            outcome: Outcome::Ok { revision, value: None },
        }
    }

    fn put(client: u32, revision: i64, t: u64) -> Op {
        op(client, OpKind::Put { key: "k".into(), value: format!("{t}") }, revision, t)
    }

    fn get(client: u32, revision: i64, t: u64) -> Op {
        op(client, OpKind::Get { key: "k".into() }, revision, t)
    }

    fn run(ops: Vec<Op>) -> Verdict {
        check(&History { ops, ..Default::default() })
    }

    #[test]
    fn passes_a_good_history() {
        let v = run(vec![
            put(1, 10, 0),
            get(1, 10, 10),
            get(1, 12, 20),
            put(1, 13, 30),
            op(1, OpKind::List, 13, 40),
            // Deletes, compactions and unknown revisions are skipped.
            op(1, OpKind::Delete { key: "k".into(), expected_rv: 13 }, 0, 50),
            op(1, OpKind::Compact { revision: 5 }, 6, 55),
            get(1, 0, 57),
            op(1, OpKind::Create { key: "k".into(), value: "x".into() }, 15, 60),
            // Another client has its own view; recorded out of order, sorted by invoke.
            get(2, 14, 30),
            put(2, 11, 5),
        ]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 8);
    }

    #[test]
    fn fails_a_write_going_backwards() {
        let v = run(vec![put(1, 10, 0), get(1, 12, 10), put(1, 11, 20)]);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.starts_with("client 1: put of k (invoke 0.000000020s"), "{}", v.summary);
        assert!(v.summary.contains("revision 11, but it had already seen revision 12"), "{}", v.summary);
        // A write at the revision already seen is not new either.
        let v = run(vec![get(1, 12, 10), put(1, 12, 20)]);
        assert!(!v.ok, "{v:?}");
    }

    #[test]
    fn fails_a_read_going_backwards() {
        let v = run(vec![put(3, 10, 0), get(3, 9, 10)]);
        assert!(!v.ok, "{v:?}");
        assert!(v.summary.contains("a read must get at least it"), "{}", v.summary);
        let v = run(vec![get(3, 10, 0), op(3, OpKind::List, 10, 10), get(3, 10, 20)]);
        assert!(v.ok, "{v:?}");
    }
}
