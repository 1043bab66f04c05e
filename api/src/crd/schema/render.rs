//! Go-compatible rendering of values: strconv.Quote (`%q`), `%v` and `%#v`
//! of decoded JSON values and encoding/json output, as field errors print
//! bad values.

use std::fmt::Write as _;

use serde_json::Value;

use super::number::{num_of, Num};
use super::MAX_DEPTH;

pub(super) fn render_num(n: Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => go_float(f),
    }
}

/// Go's strconv.Quote (approximating unicode.IsPrint).
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !format_or_private
}

/// Shortest round-trip decimal digits of a finite, non-zero |f| and the
/// decimal exponent of the first digit.
fn shortest_digits(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (mantissa, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

fn fixed_notation(digits: &str, exp: i32) -> String {
    let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let dp = exp.saturating_add(1);
    let mut out = String::new();
    if dp <= 0 {
        out.push_str("0.");
        for _ in 0..(-dp) {
            out.push('0');
        }
        out.push_str(digits);
    } else if dp >= nd {
        out.push_str(digits);
        for _ in 0..(dp - nd) {
            out.push('0');
        }
    } else {
        let (a, b) = digits.split_at(usize::try_from(dp).unwrap_or(0));
        out.push_str(a);
        out.push('.');
        out.push_str(b);
    }
    out
}

fn exp_notation(digits: &str, exp: i32, min_exp_digits: usize) -> String {
    let mut out = String::new();
    let mut chars = digits.chars();
    if let Some(first) = chars.next() {
        out.push(first);
    }
    let rest: String = chars.collect();
    if !rest.is_empty() {
        out.push('.');
        out.push_str(&rest);
    }
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs().to_string();
    for _ in e.len()..min_exp_digits {
        out.push('0');
    }
    out.push_str(&e);
    out
}

fn special_float(f: f64) -> Option<String> {
    if f.is_nan() {
        Some("NaN".into())
    } else if f.is_infinite() {
        Some(if f > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else if f == 0.0 {
        Some(if f.is_sign_negative() { "-0" } else { "0" }.into())
    } else {
        None
    }
}

/// Go's `%v` for a float64: shortest digits, exponent notation when the
/// decimal exponent is < -4 or >= 6 (e.g. `1e+06`).
pub(super) fn go_float(f: f64) -> String {
    if let Some(s) = special_float(f) {
        return s;
    }
    let (digits, exp) = shortest_digits(f);
    let body = if !(-4..6).contains(&exp) { exp_notation(&digits, exp, 2) } else { fixed_notation(&digits, exp) };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

/// Go's encoding/json float formatting.
pub(super) fn go_json_float(f: f64) -> String {
    if let Some(s) = special_float(f) {
        return s;
    }
    let abs = f.abs();
    let (digits, exp) = shortest_digits(f);
    let body = if !(1e-6..1e21).contains(&abs) { exp_notation(&digits, exp, 1) } else { fixed_notation(&digits, exp) };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

/// Go's json.Marshal of a decoded JSON value (sorted keys, HTML escaping).
pub(super) fn go_json(v: &Value, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH {
        out.push_str("null");
        return;
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match num_of(n) {
            Num::Int(i) => out.push_str(&i.to_string()),
            Num::Float(f) => out.push_str(&go_json_float(f)),
        },
        Value::String(s) => go_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, depth + 1, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                if let Some(x) = m.get(k) {
                    go_json(x, depth + 1, out);
                }
            }
            out.push('}');
        }
    }
}

pub(super) fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(super) fn to_go_json(v: &Value) -> String {
    let mut s = String::new();
    go_json(v, 0, &mut s);
    s
}

/// Go's `%#v` of a decoded JSON value (interface{} holding maps/slices).
fn go_sharp_v(v: &Value, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    match v {
        Value::Null => out.push_str("interface {}(nil)"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&render_num(num_of(n))),
        Value::String(s) => out.push_str(&go_quote(s)),
        Value::Array(a) => {
            out.push_str("[]interface {}{");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                go_sharp_v(x, depth + 1, out);
            }
            out.push('}');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            sharp_map(&entries, depth, out);
        }
    }
}

pub(super) fn sharp_map<K: AsRef<str>>(entries: &[(K, &Value)], depth: usize, out: &mut String) {
    out.push_str("map[string]interface {}{");
    for (i, (k, x)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&go_quote(k.as_ref()));
        out.push(':');
        go_sharp_v(x, depth + 1, out);
    }
    out.push('}');
}

/// Renders a bad value as field.Error.ErrorBody does.
pub(super) fn render_value(v: &Value) -> String {
    match v {
        Value::Null => go_quote("null"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => render_num(num_of(n)),
        Value::String(s) => go_quote(s),
        Value::Array(_) | Value::Object(_) => {
            let mut s = String::new();
            go_sharp_v(v, 0, &mut s);
            s
        }
    }
}

pub(super) fn render_string_slice(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}
