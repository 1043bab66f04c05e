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
mod tests;
