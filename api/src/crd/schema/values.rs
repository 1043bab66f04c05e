//! Bounded helpers on JSON values: depth checks, iterative dropping,
//! bounded copies and Go reflect.DeepEqual-style comparison.

use std::fmt::Write as _;

use serde_json::Value;

use super::number::{num_of, Num};
use super::MAX_DEPTH;

/// Whether any value in `v` sits deeper than `limit` (root has depth 0).
/// Iterative, so it is safe on arbitrarily deep input.
pub(super) fn depth_exceeds(v: &Value, limit: usize) -> bool {
    too_deep_path(v, limit).is_some()
}

/// The path of the first value deeper than `limit`, if any.
pub(super) fn too_deep_path(v: &Value, limit: usize) -> Option<String> {
    let mut segs: Vec<String> = Vec::new();
    let mut stack: Vec<(&Value, usize, Option<String>)> = vec![(v, 0, None)];
    while let Some((v, d, seg)) = stack.pop() {
        segs.truncate(d.saturating_sub(1));
        if let Some(s) = seg {
            segs.push(s);
        }
        if d > limit {
            let joined = segs.concat();
            return Some(joined.strip_prefix('.').unwrap_or(&joined).to_string());
        }
        match v {
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate().rev() {
                    stack.push((c, d + 1, Some(format!("[{i}]"))));
                }
            }
            Value::Object(m) => {
                let children: Vec<(&String, &Value)> = m.iter().collect();
                for (k, c) in children.into_iter().rev() {
                    stack.push((c, d + 1, Some(format!(".{k}"))));
                }
            }
            _ => {}
        }
    }
    None
}

/// Drops a value without recursion (serde_json's drop glue recurses).
pub(super) fn drop_deep(v: Value) {
    let mut stack = vec![v];
    while let Some(mut v) = stack.pop() {
        match &mut v {
            Value::Array(a) => stack.append(a),
            Value::Object(m) => {
                let taken = std::mem::take(m);
                stack.extend(taken.into_iter().map(|(_, x)| x));
            }
            _ => {}
        }
    }
}

/// A deep copy of a (schema supplied) value, refused when it is too deep.
pub(super) fn bounded_clone(v: &Value) -> Option<Value> {
    if depth_exceeds(v, MAX_DEPTH) {
        None
    } else {
        Some(v.clone())
    }
}

/// A string identifying a value up to Go's reflect.DeepEqual on decoded JSON
/// (int64 and float64 differ, map key order is irrelevant).
fn canon(v: &Value, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH {
        out.push('~');
        return;
    }
    match v {
        Value::Null => out.push('n'),
        Value::Bool(b) => out.push(if *b { 'T' } else { 'F' }),
        Value::Number(n) => match num_of(n) {
            Num::Int(i) => {
                let _ = write!(out, "i{i};");
            }
            Num::Float(f) => {
                let _ = write!(out, "f{};", f.to_bits());
            }
        },
        Value::String(s) => {
            let _ = write!(out, "s{}:{s}", s.len());
        }
        Value::Array(a) => {
            out.push('[');
            for x in a {
                canon(x, depth + 1, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                let _ = write!(out, "{}:{k}", k.len());
                if let Some(x) = m.get(k) {
                    canon(x, depth + 1, out);
                }
            }
            out.push('}');
        }
    }
}

pub(super) fn canon_string(v: &Value) -> String {
    let mut s = String::new();
    canon(v, 0, &mut s);
    s
}

/// Go's reflect-based enum match: numbers compare numerically, everything
/// else must be deeply equal.
pub(super) fn enum_matches(data: &Value, e: &Value) -> bool {
    match (data, e) {
        (Value::Null, _) => false,
        (Value::Number(a), Value::Number(b)) => match (num_of(a), num_of(b)) {
            (Num::Int(x), Num::Int(y)) => x == y,
            (x, y) => x.as_f64() == y.as_f64(),
        },
        _ => canon_string(data) == canon_string(e),
    }
}

pub(super) fn is_zeroish(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) => false,
    }
}
