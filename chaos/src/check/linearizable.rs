//! Linearizability of the per-key register histories (the etcd register workload's `Put`s
//! and `Get`s; every other kind of operation is ignored).
//!
//! A register is P-compositional, so each key is checked on its own. The model: the value
//! (`None` at first — keys are fresh per run); an acknowledged put sets it; an acknowledged
//! get must return it. An operation refused for sure (`Outcome::Fail`) never happened and
//! is dropped; a get without an answer tells nothing and is dropped; a put without an
//! answer (`Unknown`, or never completed) is "maybe": it may take effect at any point after
//! its invoke, or never, so its return time is +infinity. Two exact reductions keep the
//! search small: a maybe-put whose value no get returned is dropped (in a linearization
//! holding it, what follows it is a put or nothing, so without it every get still returns
//! the same), and one whose value (written by no other put) some get returned must
//! precede that get, so its return time becomes the earliest such get's return.
//!
//! The search is Wing & Gong's with Lowe's memoization, as in Porcupine (`checker.go`): a
//! doubly linked list of call and return entries in time order (a call before a return at
//! equal times, as Porcupine sorts them, so touching operations count as concurrent), an
//! undo stack, and a cache of (set of linearized operations, state) already explored. The
//! candidates are tried in an order that makes most steps forced (see `search`). It
//! stops at the budget; a search that did not finish is a failure ("unknown").

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use super::{secs, show, Verdict, Violations};
use crate::history::{History, OpKind, Outcome};

const NAME: &str = "linearizable";
/// The return time of an operation that may take effect at any time after its call.
const NEVER: u64 = u64::MAX;
/// The deadline is looked at once every this many search steps (a power of two).
const DEADLINE_EVERY: u64 = 2048;
/// The search also gives up ("unknown") when its cache would hold more than this many
/// 64-bit words (2 GiB), whatever the budget.
const MAX_CACHE_WORDS: usize = 1 << 28;
const NIL: usize = usize::MAX;
const HEAD: usize = 0;

pub fn check(history: &History, budget: Duration) -> Verdict {
    let started = Instant::now();
    let deadline = started.checked_add(budget);
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let OpKind::Put { key, .. } | OpKind::Get { key } = &op.kind {
            by_key.entry(key).or_default().push(i);
        }
    }
    let total: usize = by_key.values().map(Vec::len).sum();
    let mut violations = Violations::new();
    let mut checked = 0;
    let (mut unanswered, mut maybe) = (0, 0);
    let mut steps = 0u64;
    let mut done_keys = 0;
    let mut timed_out = None;
    for (key, indices) in &by_key {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = Some((*key, "the budget ran out"));
            break;
        }
        let Some(reg) = prepare(history, key, indices, &mut violations) else {
            checked += indices.len();
            done_keys += 1;
            continue;
        };
        unanswered += reg.unanswered;
        maybe += reg.maybe;
        match search(&reg, history, deadline, &mut steps) {
            Search::Linearizable => {}
            Search::Violation(v) => violations.push(v),
            Search::GaveUp(why) => {
                timed_out = Some((*key, why));
                break;
            }
        }
        checked += indices.len();
        done_keys += 1;
    }
    if let Some((key, why)) = timed_out {
        let detail = format!(
            "key {key}: search stopped after {steps} steps in {:?} ({why}; budget {budget:?}; {done_keys} of {} keys done)",
            started.elapsed(),
            by_key.len()
        );
        if violations.is_empty() {
            return Verdict {
                name: NAME,
                ok: false,
                checked,
                violations: vec![detail],
                summary: "unknown: search exceeded budget".to_string(),
            };
        }
        violations.push(detail);
    }
    let summary = format!(
        "{total} ops on {} keys: linearizable ({unanswered} unanswered writes taken as maybe, {maybe} of them read; {steps} search steps in {:?})",
        by_key.len(),
        started.elapsed()
    );
    violations.verdict(NAME, checked, summary)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// Sets the register to this value id.
    Put(u32),
    /// Returned this value id (0: absent).
    Get(u32),
}

#[derive(Clone, Copy, Debug)]
struct RegOp {
    /// Index in `History::ops`.
    index: usize,
    input: Input,
    call: u64,
    ret: u64,
    /// For a put: the earliest return among it and the gets that returned its value;
    /// `NEVER` when no get returned its value (a blind put).
    deadline: u64,
}

/// One key's operations, ready for the search.
struct Register<'a> {
    key: &'a str,
    ops: Vec<RegOp>,
    /// Value id → value; id 0 is "absent".
    values: Vec<Option<&'a str>>,
    /// Puts without an answer, and how many of them a get saw (those stay in the search).
    unanswered: usize,
    maybe: usize,
}

/// Interns the key's values, drops what carries no information, applies the maybe-put
/// reductions and rejects reads of values no put wrote (`None`: the key already failed).
fn prepare<'a>(
    history: &'a History,
    key: &'a str,
    indices: &[usize],
    violations: &mut Violations,
) -> Option<Register<'a>> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut values: Vec<Option<&str>> = vec![None];
    let mut intern = |v: Option<&'a str>| -> u32 {
        match v {
            None => 0,
            Some(s) => *ids.entry(s).or_insert_with(|| {
                values.push(Some(s));
                (values.len() - 1) as u32
            }),
        }
    };
    let mut ops = Vec::new();
    let mut maybe_puts = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    for &index in indices {
        let op = &history.ops[index];
        let call = op.invoke.mono;
        match (&op.kind, &op.outcome, op.complete) {
            (OpKind::Put { value, .. }, Outcome::Ok { .. }, Some(done)) => {
                ops.push(RegOp {
                    index,
                    input: Input::Put(intern(Some(value))),
                    call,
                    ret: done.mono.max(call),
                    deadline: NEVER,
                });
            }
            (OpKind::Put { value, .. }, Outcome::Fail { .. }, _) => failed.push(value),
            (OpKind::Put { value, .. }, _, _) => {
                maybe_puts.push(RegOp {
                    index,
                    input: Input::Put(intern(Some(value))),
                    call,
                    ret: NEVER,
                    deadline: NEVER,
                });
            }
            (OpKind::Get { .. }, Outcome::Ok { value, .. }, Some(done)) => {
                ops.push(RegOp {
                    index,
                    input: Input::Get(intern(value.as_deref())),
                    call,
                    ret: done.mono.max(call),
                    deadline: NEVER,
                });
            }
            _ => {}
        }
    }
    let mut writers = vec![0usize; values.len()];
    // Earliest return of a get that returned each value.
    let mut first_read = vec![NEVER; values.len()];
    for op in ops.iter().chain(&maybe_puts) {
        match op.input {
            Input::Put(v) => writers[v as usize] += 1,
            Input::Get(v) => first_read[v as usize] = first_read[v as usize].min(op.ret),
        }
    }
    let mut bad = false;
    for op in &ops {
        if let Input::Get(v) = op.input {
            if v != 0 && writers[v as usize] == 0 {
                let what = if failed.contains(&values[v as usize].unwrap_or_default()) {
                    "only a refused put wrote"
                } else {
                    "no put wrote"
                };
                violations
                    .push(format!("key {key}: not linearizable: {}, a value {what}", describe(history, op, &values)));
                bad = true;
            }
        }
    }
    if bad {
        return None;
    }
    let unanswered = maybe_puts.len();
    let mut maybe = 0;
    for mut op in maybe_puts {
        let Input::Put(v) = op.input else { continue };
        let read = first_read[v as usize];
        if read == NEVER {
            continue;
        }
        if writers[v as usize] == 1 && read >= op.call {
            op.ret = read;
        }
        maybe += 1;
        ops.push(op);
    }
    for op in &mut ops {
        if let Input::Put(v) = op.input {
            // NEVER marks a blind put (no get returned its value).
            op.deadline = if first_read[v as usize] == NEVER { NEVER } else { op.ret.min(first_read[v as usize]) };
        }
    }
    // Operation ids in time order keep the sets of linearized operations compact.
    ops.sort_by_key(|o| (o.call, o.ret, o.index));
    Some(Register { key, ops, values, unanswered, maybe })
}

fn describe(history: &History, op: &RegOp, values: &[Option<&str>]) -> String {
    let o = &history.ops[op.index];
    let done = match o.complete {
        Some(c) if matches!(o.outcome, Outcome::Ok { .. }) => format!("complete {}", secs(c.mono)),
        Some(c) => format!("no answer at {}: maybe", secs(c.mono)),
        None => "never completed: maybe".to_string(),
    };
    match op.input {
        Input::Put(v) => {
            format!("put {} by client {} (invoke {}, {done})", show(values[v as usize]), o.client, secs(o.invoke.mono))
        }
        Input::Get(v) => format!(
            "get by client {} (invoke {}, {done}) returning {}",
            o.client,
            secs(o.invoke.mono),
            show(values[v as usize])
        ),
    }
}

enum Search {
    Linearizable,
    Violation(String),
    /// Not finished: why.
    GaveUp(&'static str),
}

/// One call or return entry of the linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index in `Register::ops`.
    op: usize,
    /// For a call: its return node. `NIL` for a return (and the head).
    ret: usize,
    prev: usize,
    next: usize,
}

/// Where the search got furthest before it was stuck.
struct Furthest {
    depth: usize,
    /// The operation whose return entry could not be passed.
    blocked: usize,
    state: u32,
    last: Option<usize>,
}

/// Keys of the cache are already well mixed.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Explored (state, set of linearized operations) pairs, by a hash of both. A set is kept
/// as the index of its first word that is not full and the words from there to its last
/// non-empty one.
type Cache = HashMap<u64, Vec<(u32, usize, Box<[u64]>)>, BuildHasherDefault<IdHasher>>;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn lift(nodes: &mut [Node], call: usize) {
    let (p, n) = (nodes[call].prev, nodes[call].next);
    nodes[p].next = n;
    nodes[n].prev = p;
    let ret = nodes[call].ret;
    let (p, n) = (nodes[ret].prev, nodes[ret].next);
    nodes[p].next = n;
    if n != NIL {
        nodes[n].prev = p;
    }
}

fn unlift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].ret;
    let (p, n) = (nodes[ret].prev, nodes[ret].next);
    nodes[p].next = ret;
    if n != NIL {
        nodes[n].prev = ret;
    }
    let (p, n) = (nodes[call].prev, nodes[call].next);
    nodes[p].next = call;
    nodes[n].prev = call;
}

/// Wing & Gong's search with Lowe's cache over one key's operations.
fn search(reg: &Register, history: &History, deadline: Option<Instant>, steps: &mut u64) -> Search {
    let n = reg.ops.len();
    if n == 0 {
        return Search::Linearizable;
    }
    // Entries in time order; a call before a return at equal times (as Porcupine does).
    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in reg.ops.iter().enumerate() {
        entries.push((op.call, false, i));
        entries.push((op.ret, true, i));
    }
    entries.sort_unstable();
    let mut ret_node = vec![NIL; n];
    for (pos, &(_, is_ret, op)) in entries.iter().enumerate() {
        if is_ret {
            ret_node[op] = pos + 1;
        }
    }
    let mut nodes = Vec::with_capacity(2 * n + 1);
    nodes.push(Node { op: NIL, ret: NIL, prev: NIL, next: 1 });
    for (pos, &(_, is_ret, op)) in entries.iter().enumerate() {
        let next = if pos + 1 < entries.len() { pos + 2 } else { NIL };
        nodes.push(Node { op, ret: if is_ret { NIL } else { ret_node[op] }, prev: pos, next });
    }

    let mut seen = Seen {
        zobrist: (0..n as u64).map(mix).collect(),
        linearized: vec![0u64; n.div_ceil(64)],
        hash: 0,
        cache: HashMap::default(),
        words: 0,
    };
    // The undo stack: (call node, state before it, whether it was a forced step).
    let mut calls: Vec<(usize, u32, bool)> = Vec::new();
    let mut state = 0u32;
    let mut furthest: Option<Furthest> = None;
    // The candidates (calls before the first return) are tried in this order:
    // - a get that returns the current value: it changes nothing and nothing remaining has
    //   to precede it (it was called before every remaining return), so whatever
    //   linearization exists from here also exists with it first — it is taken without
    //   trying anything else;
    // - failing that, a "blind" put (no get returned its value): the next operation of any
    //   linearization from here is a put, and a blind put can be moved to just before it
    //   (nothing remaining has to precede it, and nothing saw its value) — taken without
    //   trying anything else too;
    // - then the other puts, earliest deadline first: by the earliest return among the
    //   put and the gets that returned its value (a maybe-put's deadline is that first
    //   get), so that the put a pending get needs comes first and a maybe-put is linearized
    //   when its value is needed rather than as soon as it was invoked.
    // A forced step whose outcome was explored already fails like it did; any order of
    // the remaining choices is complete.
    let mut pass = Pass::Reads;
    loop {
        if nodes[HEAD].next == NIL {
            return Search::Linearizable;
        }
        *steps += 1;
        if *steps & (DEADLINE_EVERY - 1) == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Search::GaveUp("the budget ran out");
            }
            if seen.words > MAX_CACHE_WORDS {
                return Search::GaveUp("its cache outgrew 2 GiB");
            }
        }
        match pass {
            Pass::Reads => {
                let mut e = nodes[HEAD].next;
                let mut blind = None;
                while nodes[e].ret != NIL {
                    match reg.ops[nodes[e].op].input {
                        Input::Get(v) if v == state => break,
                        Input::Put(v) if blind.is_none() && reg.ops[nodes[e].op].deadline == NEVER => {
                            blind = Some((e, v))
                        }
                        _ => {}
                    }
                    e = nodes[e].next;
                }
                let (e, next_state) = match (nodes[e].ret != NIL, blind) {
                    (true, _) => (e, state),
                    (false, Some(b)) => b,
                    (false, None) => {
                        pass = Pass::Puts(None);
                        continue;
                    }
                };
                if seen.enter(nodes[e].op, next_state) {
                    calls.push((e, state, true));
                    state = next_state;
                    lift(&mut nodes, e);
                    continue;
                }
                // Explored already, and it failed: so does this.
            }
            Pass::Puts(after) => {
                // The next candidate put after `after` in deadline order.
                let mut best: Option<((u64, usize), usize, u32)> = None;
                let mut e = nodes[HEAD].next;
                while nodes[e].ret != NIL {
                    let op = nodes[e].op;
                    if let (Input::Put(v), true) = (reg.ops[op].input, reg.ops[op].deadline != NEVER) {
                        let key = (reg.ops[op].deadline, op);
                        if after.is_none_or(|a| key > a) && best.is_none_or(|(b, _, _)| key < b) {
                            best = Some((key, e, v));
                        }
                    }
                    e = nodes[e].next;
                }
                if let Some((key, e, v)) = best {
                    if seen.enter(nodes[e].op, v) {
                        calls.push((e, state, false));
                        state = v;
                        lift(&mut nodes, e);
                        pass = Pass::Reads;
                    } else {
                        pass = Pass::Puts(Some(key));
                    }
                    continue;
                }
            }
        }
        // Stuck: undo the last choice (and the forced steps above it), then try the next.
        if furthest.as_ref().is_none_or(|f| calls.len() > f.depth) {
            let mut e = nodes[HEAD].next;
            while nodes[e].ret != NIL {
                e = nodes[e].next;
            }
            furthest = Some(Furthest {
                depth: calls.len(),
                blocked: nodes[e].op,
                state,
                last: calls.last().map(|&(c, _, _)| nodes[c].op),
            });
        }
        loop {
            let Some((call, prev_state, forced)) = calls.pop() else {
                return Search::Violation(report(reg, history, furthest));
            };
            let op = nodes[call].op;
            seen.leave(op);
            state = prev_state;
            unlift(&mut nodes, call);
            if !forced {
                pass = Pass::Puts(Some((reg.ops[op].deadline, op)));
                break;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Looking for a forced step: a get of the current value, or a blind put.
    Reads,
    /// Trying the puts after this (deadline, op) key.
    Puts(Option<(u64, usize)>),
}

/// The set of linearized operations and the (state, set) pairs explored.
struct Seen {
    zobrist: Vec<u64>,
    linearized: Vec<u64>,
    /// The XOR of the linearized operations' `zobrist`.
    hash: u64,
    cache: Cache,
    /// Words held by the cache.
    words: usize,
}

impl Seen {
    /// Linearizes `op`, leaving the register at `state`; false (and nothing changed) when
    /// that pair was explored before.
    fn enter(&mut self, op: usize, state: u32) -> bool {
        let (word, bit) = (op / 64, 1u64 << (op % 64));
        self.linearized[word] |= bit;
        self.hash ^= self.zobrist[op];
        // The set without its leading full and trailing empty words.
        let l = &self.linearized;
        let lo = l.iter().position(|&w| w != u64::MAX).unwrap_or(l.len());
        let hi = l.iter().rposition(|&w| w != 0).map_or(lo, |i| (i + 1).max(lo));
        let trimmed = &l[lo..hi];
        let bucket = self.cache.entry(self.hash ^ mix(u64::from(state) ^ 0x5bd1_e995)).or_default();
        if bucket.iter().any(|(s, o, b)| *s == state && *o == lo && **b == *trimmed) {
            self.linearized[word] &= !bit;
            self.hash ^= self.zobrist[op];
            return false;
        }
        self.words += trimmed.len() + 4;
        bucket.push((state, lo, trimmed.into()));
        true
    }

    fn leave(&mut self, op: usize) {
        self.linearized[op / 64] &= !(1u64 << (op % 64));
        self.hash ^= self.zobrist[op];
    }
}

fn report(reg: &Register, history: &History, furthest: Option<Furthest>) -> String {
    let Some(f) = furthest else {
        return format!("key {}: not linearizable", reg.key);
    };
    let last = match f.last {
        Some(op) => format!(", the last {}", describe(history, &reg.ops[op], &reg.values)),
        None => String::new(),
    };
    format!(
        "key {}: not linearizable: {} cannot be linearized; the longest linearizable prefix has {} of {} ops{last}, leaving the register {}",
        reg.key,
        describe(history, &reg.ops[f.blocked], &reg.values),
        f.depth,
        reg.ops.len(),
        show(reg.values[f.state as usize]),
    )
}

#[cfg(test)]
mod tests {
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
            .find(|&i| {
                matches!((&history.ops[i].kind, &history.ops[i].outcome), (OpKind::Get { .. }, Outcome::Ok { .. }))
            })
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
}
