//! The linearizability checker on hand-made and simulated histories, and against a
//! brute-force search on small random ones.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::history::{Op, Stamp};

fn at(t: u64) -> Stamp {
    Stamp { mono: t, wall_ms: 0 }
}

fn put(client: u32, key: &str, value: &str, invoke: u64, complete: u64) -> Op {
    Op {
        client,
        master: None,
        kind: OpKind::Put { key: key.into(), value: value.into() },
        invoke: at(invoke),
        complete: Some(at(complete)),
        outcome: Outcome::Ok { revision: 0, value: Some(value.into()) },
    }
}

fn unknown_put(client: u32, key: &str, value: &str, invoke: u64, complete: Option<u64>) -> Op {
    Op {
        client,
        master: None,
        kind: OpKind::Put { key: key.into(), value: value.into() },
        invoke: at(invoke),
        complete: complete.map(at),
        outcome: Outcome::Unknown { error: "timeout".into() },
    }
}

fn failed_put(client: u32, key: &str, value: &str, invoke: u64, complete: u64) -> Op {
    Op {
        client,
        master: None,
        kind: OpKind::Put { key: key.into(), value: value.into() },
        invoke: at(invoke),
        complete: Some(at(complete)),
        outcome: Outcome::Fail { error: "refused".into() },
    }
}

fn get(client: u32, key: &str, value: Option<&str>, invoke: u64, complete: u64) -> Op {
    Op {
        client,
        master: None,
        kind: OpKind::Get { key: key.into() },
        invoke: at(invoke),
        complete: Some(at(complete)),
        outcome: Outcome::Ok { revision: 0, value: value.map(str::to_string) },
    }
}

fn run(ops: Vec<Op>) -> Verdict {
    let history = History { ops, ..Default::default() };
    check(&history, Duration::from_secs(10))
}

#[test]
fn passes_a_simple_concurrent_history() {
    let v = run(vec![
        get(1, "k", None, 0, 5),
        put(1, "k", "a", 10, 40),
        put(2, "k", "b", 20, 50),
        // Concurrent with both puts: may see either, or neither.
        get(3, "k", Some("b"), 15, 30),
        get(4, "k", None, 12, 25),
        get(3, "k", Some("a"), 35, 60),
        get(4, "k", Some("a"), 70, 80),
        // Another key is independent.
        put(2, "j", "x", 60, 70),
        get(1, "j", Some("x"), 65, 90),
    ]);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 9);
    assert!(v.summary.contains("9 ops on 2 keys: linearizable"), "{}", v.summary);
}

#[test]
fn fails_a_stale_read() {
    let v = run(vec![put(1, "k", "a", 0, 10), put(1, "k", "b", 20, 30), get(2, "k", Some("a"), 40, 50)]);
    assert!(!v.ok, "{v:?}");
    assert!(v.summary.contains("key k"), "{}", v.summary);
    assert!(v.summary.contains("get by client 2"), "{}", v.summary);
    assert!(v.summary.contains("\"a\""), "{}", v.summary);
    assert!(v.summary.contains("register \"b\""), "{}", v.summary);
}

#[test]
fn fails_a_read_of_a_value_never_written() {
    let v = run(vec![put(1, "k", "a", 0, 10), get(2, "k", Some("zzz"), 20, 30)]);
    assert!(!v.ok, "{v:?}");
    assert!(v.summary.contains("no put wrote"), "{}", v.summary);
    // Nor one whose put was refused for sure.
    let v = run(vec![put(1, "k", "a", 0, 10), failed_put(1, "k", "b", 20, 30), get(2, "k", Some("b"), 40, 50)]);
    assert!(!v.ok, "{v:?}");
    assert!(v.summary.contains("only a refused put wrote"), "{}", v.summary);
    // A refused put is dropped: reading the previous value is fine.
    let v = run(vec![put(1, "k", "a", 0, 10), failed_put(1, "k", "b", 20, 30), get(2, "k", Some("a"), 40, 50)]);
    assert!(v.ok, "{v:?}");
}

#[test]
fn fails_a_lost_write() {
    let v = run(vec![put(1, "k", "a", 0, 10), get(2, "k", None, 20, 30)]);
    assert!(!v.ok, "{v:?}");
    assert!(v.summary.contains("returning absent"), "{}", v.summary);
}

#[test]
fn fails_a_value_going_back() {
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        put(1, "k", "b", 20, 30),
        get(2, "k", Some("b"), 25, 35),
        get(3, "k", Some("a"), 40, 50),
    ]);
    assert!(!v.ok, "{v:?}");
}

#[test]
fn touching_operations_are_concurrent() {
    // The put returns at the instant the get is invoked: either order is allowed.
    let v = run(vec![put(1, "k", "a", 0, 10), get(2, "k", None, 10, 20)]);
    assert!(v.ok, "{v:?}");
    let v = run(vec![put(1, "k", "a", 0, 10), get(2, "k", None, 11, 20)]);
    assert!(!v.ok, "{v:?}");
}

#[test]
fn an_unknown_put_may_take_effect_late() {
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        unknown_put(2, "k", "b", 20, Some(30)),
        get(3, "k", Some("a"), 40, 50),
        get(3, "k", Some("a"), 60, 70),
        get(1, "k", Some("b"), 100, 110),
        get(3, "k", Some("b"), 120, 130),
    ]);
    assert!(v.ok, "{v:?}");
    // Also one that never completed.
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        unknown_put(2, "k", "b", 20, None),
        get(3, "k", Some("a"), 40, 50),
        get(1, "k", Some("b"), 100, 110),
    ]);
    assert!(v.ok, "{v:?}");
}

#[test]
fn an_unknown_put_may_never_take_effect() {
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        unknown_put(2, "k", "b", 20, Some(30)),
        unknown_put(2, "k", "c", 40, None),
        get(3, "k", Some("a"), 40, 50),
        get(1, "k", Some("a"), 100, 110),
    ]);
    assert!(v.ok, "{v:?}");
    // An unknown put is never "absent": it cannot be ignored when its value shows up...
    let v = run(vec![unknown_put(2, "k", "b", 20, Some(30)), get(1, "k", Some("b"), 100, 110)]);
    assert!(v.ok, "{v:?}");
    // ...but it cannot take effect before it was invoked.
    let v = run(vec![get(1, "k", Some("b"), 0, 10), unknown_put(2, "k", "b", 20, Some(30))]);
    assert!(!v.ok, "{v:?}");
}

#[test]
fn fails_an_unknown_put_seen_then_undone() {
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        unknown_put(2, "k", "b", 20, Some(30)),
        get(3, "k", Some("b"), 40, 50),
        get(3, "k", Some("a"), 60, 70),
    ]);
    assert!(!v.ok, "{v:?}");
    assert!(v.summary.contains("get by client 3"), "{}", v.summary);
    // The same with the reads racing the put's invoke instead: still the value went back.
    let v = run(vec![
        put(1, "k", "a", 0, 10),
        unknown_put(2, "k", "b", 20, None),
        get(3, "k", Some("b"), 15, 50),
        get(4, "k", Some("a"), 55, 70),
    ]);
    assert!(!v.ok, "{v:?}");
}

#[test]
fn exceeding_the_budget_is_not_ok() {
    // 40 concurrent puts, each read by a concurrent get, then two reads that no order
    // can satisfy: the search has to try every subset of the puts before it can say
    // "no", far more than the budget allows.
    let mut ops: Vec<Op> = (0..40).map(|i| put(i, "k", &format!("v{i}"), 0, 1000)).collect();
    ops.extend((0..40).map(|i| get(50 + i, "k", Some(&format!("v{i}")), 0, 1000)));
    ops.push(get(100, "k", Some("v1"), 2000, 2100));
    ops.push(get(100, "k", Some("v2"), 2200, 2300));
    let history = History { ops, ..Default::default() };
    let started = Instant::now();
    let v = check(&history, Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.summary, "unknown: search exceeded budget");
    assert!(v.violations[0].contains("key k"), "{v:?}");
}

/// A linearizable register driven by `clients` sequential clients: each operation takes
/// effect at a random instant between its invoke and its completion; about 2% of the
/// writes get no answer and take effect later (after the client gave up) or never; 1%
/// are refused; a few reads get no answer.
fn simulate(seed: u64, n: usize, keys: usize, clients: usize) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut free = vec![0u64; clients];
    let mut ops = Vec::with_capacity(n);
    // (effect time, op index)
    let mut effects = Vec::new();
    for i in 0..n {
        let c = (0..clients).min_by_key(|&c| free[c]).unwrap_or(0);
        let invoke = free[c] + rng.gen_range(0..50_000);
        let lp = invoke + rng.gen_range(10_000..2_000_000);
        let complete = lp + rng.gen_range(10_000..2_000_000);
        let key = format!("/reg/k{}", rng.gen_range(0..keys));
        if rng.gen_bool(0.5) {
            let value = format!("{c}-{i}");
            let roll = rng.gen_range(0..1000);
            if roll < 20 {
                let timeout = invoke + 3_000_000;
                match rng.gen_range(0..3) {
                    0 => {}
                    1 => effects.push((lp, i)),
                    _ => effects.push((invoke + rng.gen_range(0..30_000_000), i)),
                }
                let done = if rng.gen_bool(0.25) { None } else { Some(timeout) };
                ops.push(unknown_put(c as u32, &key, &value, invoke, done));
                free[c] = timeout;
                continue;
            } else if roll < 30 {
                ops.push(failed_put(c as u32, &key, &value, invoke, complete));
            } else {
                effects.push((lp, i));
                ops.push(put(c as u32, &key, &value, invoke, complete));
            }
        } else {
            if rng.gen_range(0..1000) < 5 {
                let mut op = get(c as u32, &key, None, invoke, complete);
                op.outcome = Outcome::Unknown { error: "timeout".into() };
                ops.push(op);
            } else {
                effects.push((lp, i));
                ops.push(get(c as u32, &key, None, invoke, complete));
            }
        }
        free[c] = complete;
    }
    effects.sort();
    let mut register: HashMap<String, String> = HashMap::new();
    let mut revision = 1i64;
    for (_, i) in effects {
        let op = &mut ops[i];
        match &op.kind {
            OpKind::Put { key, value } => {
                revision += 1;
                register.insert(key.clone(), value.clone());
                if let Outcome::Ok { revision: r, .. } = &mut op.outcome {
                    *r = revision;
                }
            }
            OpKind::Get { key } => {
                op.outcome = Outcome::Ok { revision, value: register.get(key).cloned() };
            }
            _ => {}
        }
    }
    History { ops, ..Default::default() }
}

#[test]
fn a_large_linearizable_history_passes_within_budget() {
    let history = simulate(7, 20_000, 16, 8);
    let unknown = history.ops.iter().filter(|o| matches!(o.outcome, Outcome::Unknown { .. })).count();
    assert!(unknown > 100, "{unknown} unknown");
    let budget = Duration::from_secs(5);
    let started = Instant::now();
    let v = check(&history, budget);
    let took = started.elapsed();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 20_000);
    assert!(took < budget, "took {took:?}");
    eprintln!("{} in {took:?}", v.summary);
}

#[test]
fn a_large_history_with_one_stale_read_fails() {
    let mut history = simulate(11, 20_000, 16, 8);
    // A get in the middle, the latest put completed before it, and a put completed
    // before that one: make the get return the older put's value.
    let key = "/reg/k3";
    let on_key: Vec<usize> = (0..history.ops.len()).filter(|&i| history.ops[i].kind.key() == Some(key)).collect();
    let acked = |op: &Op| matches!((&op.kind, &op.outcome), (OpKind::Put { .. }, Outcome::Ok { .. }));
    let done = |op: &Op| op.complete.map(|c| c.mono).unwrap_or(u64::MAX);
    let g = on_key[on_key.len() / 2..]
        .iter()
        .copied()
        .find(|&i| matches!((&history.ops[i].kind, &history.ops[i].outcome), (OpKind::Get { .. }, Outcome::Ok { .. })))
        .expect("a get");
    let g_invoke = history.ops[g].invoke.mono;
    let newer = on_key
        .iter()
        .copied()
        .filter(|&i| acked(&history.ops[i]) && done(&history.ops[i]) < g_invoke)
        .max_by_key(|&i| done(&history.ops[i]))
        .expect("a newer put");
    let newer_invoke = history.ops[newer].invoke.mono;
    let older = on_key
        .iter()
        .copied()
        .find(|&i| acked(&history.ops[i]) && done(&history.ops[i]) < newer_invoke)
        .expect("an older put");
    let OpKind::Put { value: stale, .. } = history.ops[older].kind.clone() else { unreachable!() };
    history.ops[g].outcome = Outcome::Ok { revision: 0, value: Some(stale.clone()) };
    let started = Instant::now();
    let v = check(&history, Duration::from_secs(5));
    assert!(!v.ok, "{v:?}");
    assert!(!v.summary.starts_with("unknown"), "{v:?}");
    assert!(v.summary.contains(key), "{}", v.summary);
    assert!(v.summary.contains(&format!("{stale:?}")), "{}", v.summary);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// Every order of the operations that respects real time, with each maybe-put in or out:
/// the definition, for small histories.
fn brute_force(history: &History) -> bool {
    // (call, return, is_put, value, optional)
    let mut ops: Vec<(u64, u64, bool, Option<String>, bool)> = Vec::new();
    for op in &history.ops {
        let call = op.invoke.mono;
        match (&op.kind, &op.outcome, op.complete) {
            (OpKind::Put { value, .. }, Outcome::Ok { .. }, Some(c)) => {
                ops.push((call, c.mono, true, Some(value.clone()), false))
            }
            (OpKind::Put { .. }, Outcome::Fail { .. }, _) => {}
            (OpKind::Put { value, .. }, _, _) => ops.push((call, u64::MAX, true, Some(value.clone()), true)),
            (OpKind::Get { .. }, Outcome::Ok { value, .. }, Some(c)) => {
                ops.push((call, c.mono, false, value.clone(), false))
            }
            _ => {}
        }
    }
    fn place(ops: &[(u64, u64, bool, Option<String>, bool)], left: &mut Vec<usize>, state: Option<String>) -> bool {
        if left.iter().all(|&i| ops[i].4) {
            return true;
        }
        for pos in 0..left.len() {
            let i = left[pos];
            // Some other remaining operation returned before this one was called.
            if left.iter().any(|&j| j != i && !ops[j].4 && ops[j].1 < ops[i].0) {
                continue;
            }
            let next = if ops[i].2 {
                ops[i].3.clone()
            } else if ops[i].3 == state {
                state.clone()
            } else {
                continue;
            };
            left.remove(pos);
            let found = place(ops, left, next);
            left.insert(pos, i);
            if found {
                return true;
            }
        }
        false
    }
    let mut left: Vec<usize> = (0..ops.len()).collect();
    place(&ops, &mut left, None)
}

#[test]
fn agrees_with_brute_force_on_small_histories() {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut yes, mut no) = (0, 0);
    for case in 0..600 {
        let n = rng.gen_range(1..=7);
        let mut ops = Vec::new();
        let mut written = vec![None];
        for i in 0..n {
            let invoke = rng.gen_range(0..20);
            let complete = invoke + rng.gen_range(0..10);
            let client = i as u32;
            if rng.gen_bool(0.5) {
                // Every other case with values written more than once.
                let value = if case % 2 == 0 { format!("v{i}") } else { format!("v{}", i % 3) };
                written.push(Some(value.clone()));
                ops.push(match rng.gen_range(0..10) {
                    0 => unknown_put(client, "k", &value, invoke, None),
                    1 => unknown_put(client, "k", &value, invoke, Some(complete)),
                    2 => failed_put(client, "k", &value, invoke, complete),
                    _ => put(client, "k", &value, invoke, complete),
                });
            } else {
                ops.push(get(client, "k", None, invoke, complete));
            }
        }
        for op in &mut ops {
            if let Outcome::Ok { value, .. } = &mut op.outcome {
                if matches!(op.kind, OpKind::Get { .. }) {
                    *value = written[rng.gen_range(0..written.len())].clone();
                }
            }
        }
        let history = History { ops, ..Default::default() };
        let expected = brute_force(&history);
        let v = check(&history, Duration::from_secs(10));
        assert_eq!(v.ok, expected, "case {case}: {v:?}\n{:#?}", history.ops);
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 100 && no > 100, "{yes} linearizable, {no} not");
}
