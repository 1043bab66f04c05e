//! Kubernetes CustomResourceDefinition structural-schema handling for custom
//! resource objects: structural checks of a CRD schema, defaulting, pruning and
//! validation of objects.
//!
//! The semantics follow k8s.io/apiextensions-apiserver (`pkg/apiserver/schema`
//! with its `pruning`, `defaulting` and `listtype` packages, and
//! `pkg/apis/apiextensions/validation`) and the kube-openapi `validate` package
//! as the apiserver wires it up (formats stripped to the supported set, errors
//! converted to field errors). Error wording follows those packages, including
//! `apimachinery/pkg/util/validation/field` value rendering (Go `%q`, `%v`,
//! `%#v`).
//!
//! All traversals are bounded: schemas and objects nested deeper than
//! [`MAX_DEPTH`] levels are refused (or left untouched where no error can be
//! returned), and values that are removed are dropped iteratively.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use base64::Engine as _;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Maximum nesting depth of schemas and objects that is processed.
pub const MAX_DEPTH: usize = 64;

/// Compiled-size limit for user supplied `pattern` regular expressions.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";
const MAP_TYPE: &str = "x-kubernetes-map-type";
const VALIDATIONS: &str = "x-kubernetes-validations";
const V3_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
const NIL_FIELD: &str = "<nil>";

/// Formats validated by the apiserver for CRDs (normalized: dashes removed).
/// Every other format (e.g. int32, int64, float, double) is stripped before
/// validation and therefore ignored.
const SUPPORTED_FORMATS: [&str; 24] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// A validation failure, reported as Kubernetes reports field errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The metav1.CauseType, e.g. "FieldValueRequired", "FieldValueInvalid",
    /// "FieldValueNotSupported", "FieldValueTypeInvalid", "FieldValueTooLong",
    /// "FieldValueTooMany", "FieldValueDuplicate", "FieldValueForbidden".
    pub reason: &'static str,
    /// The field path, e.g. "spec.replicas" or "spec.ports[0].name"
    /// ("<nil>" for errors Kubernetes reports without a path).
    pub field: String,
    /// The error body as Kubernetes prints it after "<field>: ".
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

// ---------------------------------------------------------------------------
// Field errors
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrType {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Duplicate,
}

impl ErrType {
    fn reason(self) -> &'static str {
        match self {
            ErrType::Required => "FieldValueRequired",
            ErrType::Invalid => "FieldValueInvalid",
            ErrType::TypeInvalid => "FieldValueTypeInvalid",
            ErrType::NotSupported => "FieldValueNotSupported",
            ErrType::Forbidden => "FieldValueForbidden",
            ErrType::TooLong => "FieldValueTooLong",
            ErrType::TooMany => "FieldValueTooMany",
            ErrType::Duplicate => "FieldValueDuplicate",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrType::Required => "Required value",
            ErrType::Invalid | ErrType::TypeInvalid => "Invalid value",
            ErrType::NotSupported => "Unsupported value",
            ErrType::Forbidden => "Forbidden",
            ErrType::TooLong => "Too long",
            ErrType::TooMany => "Too many",
            ErrType::Duplicate => "Duplicate value",
        }
    }

    /// Whether the bad value is printed (field.Error.ErrorBody).
    fn shows_value(self) -> bool {
        !matches!(self, ErrType::Required | ErrType::Forbidden | ErrType::TooLong)
    }
}

/// Builds a field error; `bad` is the already rendered bad value.
fn mk(t: ErrType, field: &str, bad: &str, detail: &str) -> FieldError {
    let mut message = t.text().to_string();
    if t.shows_value() {
        message.push_str(": ");
        message.push_str(bad);
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    FieldError { reason: t.reason(), field: field.to_string(), message }
}

fn e_required(field: &str, detail: &str) -> FieldError {
    mk(ErrType::Required, field, "", detail)
}

fn e_forbidden(field: &str, detail: &str) -> FieldError {
    mk(ErrType::Forbidden, field, "", detail)
}

fn e_invalid(field: &str, bad: &str, detail: &str) -> FieldError {
    mk(ErrType::Invalid, field, bad, detail)
}

fn e_not_supported<S: AsRef<str>>(field: &str, bad: &str, valid: &[S]) -> FieldError {
    let detail = if valid.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v.as_ref())).collect();
        format!("supported values: {}", quoted.join(", "))
    };
    mk(ErrType::NotSupported, field, bad, &detail)
}

// ---------------------------------------------------------------------------
// Field paths
// ---------------------------------------------------------------------------

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn is_meta_field(k: &str) -> bool {
    matches!(k, "apiVersion" | "kind" | "metadata")
}

// ---------------------------------------------------------------------------
// Go-compatible rendering of values
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Kubernetes decodes JSON integers that fit into int64 as int64, all other
/// numbers as float64.
fn num_of(n: &serde_json::Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn render_num(n: Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => go_float(f),
    }
}

/// Go's strconv.Quote (approximating unicode.IsPrint).
fn go_quote(s: &str) -> String {
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
fn go_float(f: f64) -> String {
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
fn go_json_float(f: f64) -> String {
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
fn go_json(v: &Value, depth: usize, out: &mut String) {
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

fn go_json_string(s: &str, out: &mut String) {
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

fn to_go_json(v: &Value) -> String {
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

fn sharp_map<K: AsRef<str>>(entries: &[(K, &Value)], depth: usize, out: &mut String) {
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
fn render_value(v: &Value) -> String {
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

fn render_string_slice(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// swag.IsFloat64AJSONInteger.
fn is_json_integer(f: f64) -> bool {
    const MAX_JSON_FLOAT: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    if !f.is_finite() || !(-MAX_JSON_FLOAT..=MAX_JSON_FLOAT).contains(&f) {
        return false;
    }
    if f.fract() == 0.0 {
        return true;
    }
    let g = f.trunc();
    let diff = (f - g).abs();
    if g == 0.0 {
        return diff < 1e-9 * f64::MIN_POSITIVE;
    }
    diff / (f.abs() + g.abs()) < 1e-9
}

/// An integral float that fits into int64, as an int64.
fn int_bound(f: f64) -> Option<i64> {
    if f.is_finite() && f.fract() == 0.0 && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Bounded helpers on JSON values
// ---------------------------------------------------------------------------

/// Whether any value in `v` sits deeper than `limit` (root has depth 0).
/// Iterative, so it is safe on arbitrarily deep input.
fn depth_exceeds(v: &Value, limit: usize) -> bool {
    too_deep_path(v, limit).is_some()
}

/// The path of the first value deeper than `limit`, if any.
fn too_deep_path(v: &Value, limit: usize) -> Option<String> {
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
fn drop_deep(v: Value) {
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
fn bounded_clone(v: &Value) -> Option<Value> {
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

fn canon_string(v: &Value) -> String {
    let mut s = String::new();
    canon(v, 0, &mut s);
    s
}

/// Go's reflect-based enum match: numbers compare numerically, everything
/// else must be deeply equal.
fn enum_matches(data: &Value, e: &Value) -> bool {
    match (data, e) {
        (Value::Null, _) => false,
        (Value::Number(a), Value::Number(b)) => match (num_of(a), num_of(b)) {
            (Num::Int(x), Num::Int(y)) => x == y,
            (x, y) => x.as_f64() == y.as_f64(),
        },
        _ => canon_string(data) == canon_string(e),
    }
}

fn is_zeroish(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Schema view
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Sch<'a>(&'a Map<String, Value>);

enum Additional<'a> {
    Absent,
    Bool(bool),
    Schema(Sch<'a>),
}

fn sch(v: &Value) -> Option<Sch<'_>> {
    v.as_object().map(Sch)
}

impl<'a> Sch<'a> {
    fn get(self, k: &str) -> Option<&'a Value> {
        self.0.get(k)
    }

    fn flag(self, k: &str) -> bool {
        matches!(self.0.get(k), Some(Value::Bool(true)))
    }

    fn str(self, k: &str) -> &'a str {
        self.0.get(k).and_then(Value::as_str).unwrap_or("")
    }

    fn opt_str(self, k: &str) -> Option<&'a str> {
        self.0.get(k).and_then(Value::as_str)
    }

    fn ty(self) -> &'a str {
        self.str("type")
    }

    fn nullable(self) -> bool {
        self.flag("nullable")
    }

    fn props(self) -> Option<&'a Map<String, Value>> {
        self.get("properties").and_then(Value::as_object)
    }

    fn has_props(self) -> bool {
        self.props().is_some_and(|p| !p.is_empty())
    }

    fn prop(self, k: &str) -> Option<Sch<'a>> {
        self.props().and_then(|p| p.get(k)).and_then(sch)
    }

    fn items(self) -> Option<Sch<'a>> {
        self.get("items").and_then(sch)
    }

    fn additional(self) -> Additional<'a> {
        match self.get("additionalProperties") {
            Some(Value::Bool(b)) => Additional::Bool(*b),
            Some(Value::Object(m)) => Additional::Schema(Sch(m)),
            _ => Additional::Absent,
        }
    }

    fn additional_schema(self) -> Option<Sch<'a>> {
        match self.additional() {
            Additional::Schema(s) => Some(s),
            _ => None,
        }
    }

    /// The default value; a JSON null default counts as no default.
    fn default_value(self) -> Option<&'a Value> {
        self.get("default").filter(|v| !v.is_null())
    }

    fn f64(self, k: &str) -> Option<f64> {
        self.get(k).and_then(Value::as_f64)
    }

    fn i64(self, k: &str) -> Option<i64> {
        self.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().and_then(int_bound)))
    }

    fn arr(self, k: &str) -> Option<&'a Vec<Value>> {
        self.get(k).and_then(Value::as_array)
    }

    fn strings(self, k: &str) -> Vec<&'a str> {
        self.arr(k).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }
}

/// The schema applying to field `k` of an object (property or
/// additionalProperties schema).
fn field_schema<'a>(s: Sch<'a>, k: &str) -> Option<Sch<'a>> {
    s.prop(k).or_else(|| s.additional_schema())
}

// ---------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------

/// Remove fields the schema does not specify (unless
/// x-kubernetes-preserve-unknown-fields: true at that node, or
/// x-kubernetes-embedded-resource where apiVersion/kind/metadata are kept),
/// returning the JSON paths of what was pruned, like "spec.foo" or
/// "spec.items[2].bar". The root's apiVersion, kind and metadata are never
/// pruned (metadata is checked elsewhere).
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut p = Pruner::default();
    p.node(obj, sch(schema), true, 0);
    for dead in p.graveyard.drain(..) {
        drop_deep(dead);
    }
    p.pruned
}

#[derive(Default)]
struct Pruner {
    path: String,
    pruned: Vec<String>,
    graveyard: Vec<Value>,
}

impl Pruner {
    fn record(&mut self, k: &str) {
        self.pruned.push(child(&self.path, k));
    }

    fn enter_key(&mut self, k: &str) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(k);
        len
    }

    fn enter_index(&mut self, i: usize) -> usize {
        let len = self.path.len();
        let _ = write!(self.path, "[{i}]");
        len
    }

    /// Prunes `x` against `s`; `resource_root` makes the node behave as an
    /// embedded resource (apiVersion, kind and metadata are kept).
    fn node(&mut self, x: &mut Value, s: Option<Sch<'_>>, resource_root: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(s) = s else {
            if resource_root {
                if let Value::Object(m) = x {
                    self.retain_meta_only(m);
                }
            } else {
                self.prune_all(x);
            }
            return;
        };
        if s.flag(PRESERVE) {
            self.skip(x, s, resource_root, depth);
            return;
        }
        match x {
            Value::Object(m) => {
                let meta = resource_root || s.flag(EMBEDDED);
                m.retain(|k, v| {
                    if meta && is_meta_field(k) {
                        return true;
                    }
                    let sub = match s.props().and_then(|p| p.get(k.as_str())) {
                        Some(pv) => Some(sch(pv)),
                        None => match s.additional() {
                            Additional::Absent => None,
                            Additional::Bool(_) => Some(None),
                            Additional::Schema(a) => Some(Some(a)),
                        },
                    };
                    match sub {
                        None => {
                            self.record(k);
                            self.graveyard.push(std::mem::take(v));
                            false
                        }
                        Some(child_schema) => {
                            let len = self.enter_key(k);
                            self.node(v, child_schema, false, depth + 1);
                            self.path.truncate(len);
                            true
                        }
                    }
                });
            }
            Value::Array(a) => {
                let items = s.items();
                for (i, v) in a.iter_mut().enumerate() {
                    let len = self.enter_index(i);
                    self.node(v, items, false, depth + 1);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn retain_meta_only(&mut self, m: &mut Map<String, Value>) {
        m.retain(|k, v| {
            if is_meta_field(k) {
                return true;
            }
            self.record(k);
            self.graveyard.push(std::mem::take(v));
            false
        });
    }

    /// Pruning under x-kubernetes-preserve-unknown-fields: unknown fields are
    /// kept, specified ones are pruned by their schema.
    fn skip(&mut self, x: &mut Value, s: Sch<'_>, resource_root: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match x {
            Value::Object(m) => {
                let meta = resource_root || s.flag(EMBEDDED);
                for (k, v) in m.iter_mut() {
                    if meta && is_meta_field(k) {
                        continue;
                    }
                    let sub = match s.props().and_then(|p| p.get(k.as_str())) {
                        Some(pv) => Some(sch(pv)),
                        None => match s.additional() {
                            Additional::Absent => None,
                            Additional::Bool(_) => Some(None),
                            Additional::Schema(a) => Some(Some(a)),
                        },
                    };
                    if let Some(child_schema) = sub {
                        let len = self.enter_key(k);
                        self.node(v, child_schema, false, depth + 1);
                        self.path.truncate(len);
                    }
                }
            }
            Value::Array(a) => {
                if let Some(items) = s.items() {
                    for (i, v) in a.iter_mut().enumerate() {
                        let len = self.enter_index(i);
                        self.skip(v, items, false, depth + 1);
                        self.path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    /// Pruning without a schema: every object field is removed, arrays are
    /// descended into. Iterative, because arrays may nest arbitrarily deep.
    fn prune_all(&mut self, x: &mut Value) {
        let base = self.path.len();
        let mut stack: Vec<(&mut Value, usize, Option<usize>)> = vec![(x, base, None)];
        while let Some((v, parent_len, idx)) = stack.pop() {
            self.path.truncate(parent_len);
            if let Some(i) = idx {
                let _ = write!(self.path, "[{i}]");
            }
            match v {
                Value::Object(m) => {
                    let taken = std::mem::take(m);
                    for (k, dead) in taken {
                        self.record(&k);
                        self.graveyard.push(dead);
                    }
                }
                Value::Array(a) => {
                    let len = self.path.len();
                    for (i, c) in a.iter_mut().enumerate().rev() {
                        stack.push((c, len, Some(i)));
                    }
                }
                _ => {}
            }
        }
        self.path.truncate(base);
    }
}

// ---------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------

/// Apply `default` values (Kubernetes defaulting: for each property with a
/// default that is absent in the object, set it — deep-copied; also defaults
/// inside array items and additionalProperties).
///
/// As the apiserver does right before defaulting, `null` values of
/// non-nullable fields without a default are removed, and `null` values of
/// non-nullable fields with a default are replaced by the default.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    let Some(s) = sch(schema) else {
        return;
    };
    prune_non_nullable_nulls(obj, s, 0);
    default_node(obj, s, 0);
}

fn is_non_nullable_null(x: &Value, s: Option<Sch<'_>>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable())
}

fn prune_non_nullable_nulls(x: &mut Value, s: Sch<'_>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(m) => m.retain(|k, v| {
            let fs = field_schema(s, k);
            if is_non_nullable_null(v, fs) && fs.is_some_and(|f| f.default_value().is_none()) {
                return false;
            }
            if let Some(f) = fs {
                prune_non_nullable_nulls(v, f, depth + 1);
            }
            true
        }),
        Value::Array(a) => {
            if let Some(items) = s.items() {
                for v in a.iter_mut() {
                    prune_non_nullable_nulls(v, items, depth + 1);
                }
            }
        }
        _ => {}
    }
}

fn default_node(x: &mut Value, s: Sch<'_>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(m) => {
            if let Some(props) = s.props() {
                for (k, pv) in props {
                    let Some(ps) = sch(pv) else { continue };
                    let Some(d) = ps.default_value() else {
                        continue;
                    };
                    let needs_default = match m.get(k) {
                        None => true,
                        Some(v) => is_non_nullable_null(v, Some(ps)),
                    };
                    if needs_default {
                        if let Some(c) = bounded_clone(d) {
                            m.insert(k.clone(), c);
                        }
                    }
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(ps) = s.prop(k) {
                    default_node(v, ps, depth + 1);
                } else if let Some(ap) = s.additional_schema() {
                    fill_null(v, ap);
                    default_node(v, ap, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items() {
                for v in a.iter_mut() {
                    fill_null(v, items);
                    default_node(v, items, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Replaces a non-nullable null by the schema's default, if there is one.
fn fill_null(v: &mut Value, s: Sch<'_>) {
    if is_non_nullable_null(v, Some(s)) {
        if let Some(c) = s.default_value().and_then(bounded_clone) {
            *v = c;
        }
    }
}

// ---------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------

/// The format the apiserver validates: unsupported formats are stripped.
fn effective_format(format: &str) -> &str {
    let normalized = format.replace('-', "");
    if SUPPORTED_FORMATS.contains(&normalized.as_str()) {
        format
    } else {
        ""
    }
}

fn static_regex(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

fn matches_static(cell: &'static OnceLock<Option<Regex>>, pattern: &str, s: &str) -> bool {
    // A pattern that failed to compile (impossible for the constants used)
    // accepts everything rather than rejecting valid data.
    static_regex(cell, pattern).is_none_or(|r| r.is_match(s))
}

/// Validates a string against a (normalized) supported format. Formats not
/// implemented here (uri, email, isbn*, creditcard, rgbcolor, duration) are
/// accepted.
fn format_valid(normalized: &str, s: &str) -> bool {
    static UUID: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID3: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID4: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID5: OnceLock<Option<Regex>> = OnceLock::new();
    static HOSTNAME: OnceLock<Option<Regex>> = OnceLock::new();
    static HEXCOLOR: OnceLock<Option<Regex>> = OnceLock::new();
    static SSN: OnceLock<Option<Regex>> = OnceLock::new();
    match normalized {
        "byte" => is_base64(s),
        "date" => is_date(s),
        "datetime" => is_date_time(s),
        "uuid" => matches_static(&UUID, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s),
        "uuid3" => {
            matches_static(&UUID3, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s)
        }
        "uuid4" => {
            matches_static(&UUID4, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", s)
        }
        "uuid5" => {
            matches_static(&UUID5, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", s)
        }
        "hostname" => {
            matches_static(
                &HOSTNAME,
                r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
                s,
            ) && s.len() <= 255
                && s.split('.').all(|l| l.len() <= 63)
        }
        "ipv4" => s.contains('.') && parse_ip_sloppy(s),
        "ipv6" => s.contains(':') && parse_ip_sloppy(s),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "hexcolor" => matches_static(&HEXCOLOR, r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", s),
        "ssn" => matches_static(&SSN, r"^\d{3}[- ]?\d{2}[- ]?\d{4}$", s),
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => true,
    }
}

fn is_base64(s: &str) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    !s.is_empty() && engine.decode(s).is_ok()
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, c] if a.is_ascii_digit() && c.is_ascii_digit() => Some(u32::from(a - b'0') * 10 + u32::from(c - b'0')),
        _ => None,
    }
}

/// RFC 3339 full-date ("2006-01-02") with calendar checks, as Go's time.Parse.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return false;
    }
    let year = match b.get(0..4) {
        Some(y) if y.iter().all(u8::is_ascii_digit) => y.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        _ => return false,
    };
    let (Some(month), Some(day)) = (b.get(5..7).and_then(two_digits), b.get(8..10).and_then(two_digits)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// strfmt.IsDateTime.
fn is_date_time(s: &str) -> bool {
    static TIME: OnceLock<Option<Regex>> = OnceLock::new();
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let Some(re) = static_regex(&TIME, r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
    else {
        return true;
    };
    match re.captures(time) {
        Some(c) => {
            let get = |i: usize| c.get(i).map_or("", |m| m.as_str());
            get(1) <= "23" && get(2) <= "59" && get(3) <= "59"
        }
        None => false,
    }
}

/// IPv4 that tolerates leading zeros (netutils.ParseIPSloppy).
fn parse_ipv4_sloppy(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn parse_ip_sloppy(s: &str) -> bool {
    parse_ipv4_sloppy(s) || s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok()
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(n) = bits.parse::<u32>() else {
        return false;
    };
    if parse_ipv4_sloppy(ip) {
        n <= 32
    } else {
        ip.parse::<Ipv6Addr>().is_ok() && n <= 128
    }
}

/// net.ParseMAC: 6, 8 or 20 octets separated by ':' or '-', or dotted
/// groups of four hex digits.
fn is_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() > 1 {
            return matches!(parts.len(), 6 | 8 | 20) && parts.iter().all(|p| hex(p, 2));
        }
    }
    let parts: Vec<&str> = s.split('.').collect();
    matches!(parts.len(), 3 | 4 | 10) && parts.iter().all(|p| hex(p, 4))
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Validate an object against the schema (after defaulting and pruning):
/// types, nullable, x-kubernetes-int-or-string, required, enum, pattern,
/// numeric bounds, multipleOf, string lengths (unicode characters), item and
/// property counts, uniqueItems, supported string formats,
/// additionalProperties, allOf/anyOf/oneOf/not, and x-kubernetes-list-type
/// set/map uniqueness. The root's apiVersion, kind and metadata are not
/// validated. Paths are relative to the object root, e.g. "spec.replicas".
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    if let Some(p) = too_deep_path(obj, MAX_DEPTH) {
        let field = if p.is_empty() { NIL_FIELD.to_string() } else { p };
        return vec![e_invalid(&field, "\"\"", &format!("must not be nested deeper than {MAX_DEPTH} levels"))];
    }
    let Some(s) = sch(schema) else {
        return Vec::new();
    };
    let mut v = Validator::new(None);
    let mut errs = v.node(obj, s, "", 0, true).errs;
    list_types_object_value(obj, s, "", 0, true, &mut errs);
    errs
}

#[derive(Default)]
struct Res {
    errs: Vec<FieldError>,
    matches: usize,
}

impl Res {
    fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }

    fn merge(&mut self, other: Res) {
        self.errs.extend(other.errs);
        self.matches += other.matches;
    }

    fn ok(&self) -> bool {
        self.errs.is_empty()
    }
}

fn compile_pattern(p: &str) -> Result<Regex, String> {
    RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| match e {
        regex::Error::Syntax(msg) => {
            let reason = msg.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or("invalid syntax").to_string();
            format!("error parsing regexp: {reason}: `{p}`")
        }
        regex::Error::CompiledTooBig(_) => "error parsing regexp: expression too large".to_string(),
        other => format!("error parsing regexp: {other}"),
    })
}

struct Validator {
    /// Compiled `pattern`s of this call.
    regexes: HashMap<String, Result<Regex, String>>,
    /// Field path prefix for errors (None: paths are relative to the root
    /// and path-less errors are reported as "<nil>").
    field_root: Option<String>,
}

impl Validator {
    fn new(field_root: Option<String>) -> Self {
        Validator { regexes: HashMap::new(), field_root }
    }

    fn field_for(&self, name: &str) -> String {
        let name = name.strip_prefix('.').unwrap_or(name);
        match (&self.field_root, name.is_empty()) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => format!("{r}.{name}"),
            (None, true) => NIL_FIELD.to_string(),
            (None, false) => name.to_string(),
        }
    }

    fn verr(&self, t: ErrType, name: &str, bad: &str, detail: &str) -> FieldError {
        mk(t, &self.field_for(name), bad, detail)
    }

    /// Errors that kube-openapi reports without a field (composite errors):
    /// Kubernetes renders them as Invalid on the root path with value "".
    fn composite(&self, detail: &str) -> FieldError {
        mk(ErrType::Invalid, &self.field_for(""), "\"\"", detail)
    }

    fn type_error(&self, path: &str, type_name: &str, actual: &str) -> FieldError {
        let bad = go_quote(actual);
        self.verr(ErrType::TypeInvalid, path, &bad, &format!("{path} in body must be of type {type_name}: {bad}"))
    }

    fn pattern_matches(&mut self, pattern: &str, s: &str) -> Result<bool, String> {
        let compiled = self.regexes.entry(pattern.to_string()).or_insert_with(|| compile_pattern(pattern));
        match compiled {
            Ok(r) => Ok(r.is_match(s)),
            Err(e) => Err(e.clone()),
        }
    }

    fn node(&mut self, data: &Value, s: Sch<'_>, path: &str, depth: usize, root: bool) -> Res {
        let mut res = Res::default();
        if depth > MAX_DEPTH {
            res.push(self.verr(
                ErrType::Invalid,
                path,
                "\"\"",
                &format!("schema must not be nested deeper than {MAX_DEPTH} levels"),
            ));
            return res;
        }
        let ty = s.ty();
        let types: Vec<&str> = if s.flag(INT_OR_STRING) {
            vec!["integer", "string"]
        } else if ty.is_empty() {
            Vec::new()
        } else {
            vec![ty]
        };
        let format = effective_format(s.str("format"));
        res.matches += 1;
        if data.is_null() {
            if !types.is_empty() && !s.nullable() {
                res.push(self.type_error(path, &types.join(","), "null"));
            }
            self.check_enum(data, s, path, &mut res);
            return res;
        }
        if let Some(e) = self.check_type(data, &types, format, path) {
            res.push(e);
        }
        self.check_junctors(data, s, path, depth, &mut res);
        match data {
            Value::String(st) => {
                self.check_string(st, s, path, &mut res);
                if !format.is_empty() && !format_valid(&format.replace('-', ""), st) {
                    let bad = go_quote(st);
                    res.push(self.verr(
                        ErrType::TypeInvalid,
                        path,
                        &bad,
                        &format!("{path} in body must be of type {format}: {bad}"),
                    ));
                }
            }
            Value::Number(n) => self.check_number(num_of(n), s, &types, path, &mut res),
            Value::Array(a) => self.check_array(a, s, path, depth, &mut res),
            _ => {}
        }
        self.check_enum(data, s, path, &mut res);
        if let Value::Object(m) = data {
            self.check_object(m, s, path, depth, root, &mut res);
        }
        res
    }

    /// kube-openapi's type validator.
    fn check_type(&self, data: &Value, types: &[&str], format: &str, path: &str) -> Option<FieldError> {
        if types.is_empty() && format.is_empty() {
            return None;
        }
        let (sch_type, data_format, float) = match data {
            Value::Bool(_) => ("boolean", "", None),
            Value::String(_) => ("string", "", None),
            Value::Number(n) => match num_of(n) {
                Num::Int(_) => ("integer", "int64", None),
                Num::Float(f) => ("number", "float64", Some(f)),
            },
            Value::Array(_) => ("array", "", None),
            Value::Object(_) => ("object", "", None),
            Value::Null => return None,
        };
        let has = |t: &str| types.contains(&t);
        let is_float_int = float.is_some_and(is_json_integer) && has("integer");
        let is_int_float = sch_type == "integer" && has("number");
        let str_or_slice = matches!(data, Value::String(_) | Value::Array(_));
        let type_matches = has(sch_type) || is_float_int || is_int_float;
        if !(str_or_slice || format.is_empty() || type_matches || data_format == format) {
            return Some(self.type_error(path, format, data_format));
        }
        let numeric = has("number") || has("integer");
        if str_or_slice && !format.is_empty() && !numeric {
            return None;
        }
        if !type_matches {
            return Some(self.type_error(path, &types.join(","), sch_type));
        }
        None
    }

    fn sub(&mut self, data: &Value, v: &Value, path: &str, depth: usize) -> Res {
        match sch(v) {
            Some(s) => self.node(data, s, path, depth + 1, false),
            None => Res { errs: Vec::new(), matches: 1 },
        }
    }

    /// allOf, anyOf, oneOf and not.
    fn check_junctors(&mut self, data: &Value, s: Sch<'_>, path: &str, depth: usize, res: &mut Res) {
        let qpath = go_quote(path);
        if let Some(list) = s.arr("anyOf").filter(|l| !l.is_empty()) {
            let mut best: Option<Res> = None;
            let mut succeeded = false;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    succeeded = true;
                    best = None;
                    break;
                }
                if best.as_ref().is_none_or(|b| r.matches > b.matches) {
                    best = Some(r);
                }
            }
            if !succeeded {
                res.push(self.composite(&format!("{qpath} must validate at least one schema (anyOf)")));
                if let Some(b) = best {
                    res.merge(b);
                }
            }
        }
        if let Some(list) = s.arr("oneOf").filter(|l| !l.is_empty()) {
            let mut best: Option<Res> = None;
            let mut validated = 0usize;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    validated += 1;
                    best = None;
                    continue;
                }
                if validated == 0 && best.as_ref().is_none_or(|b| r.matches > b.matches) {
                    best = Some(r);
                }
            }
            if validated != 1 {
                let additional = if validated == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {validated} valid alternatives")
                };
                res.push(
                    self.composite(&format!("{qpath} must validate one and only one schema (oneOf). {additional}")),
                );
                if let Some(b) = best {
                    res.merge(b);
                }
            }
        }
        if let Some(list) = s.arr("allOf").filter(|l| !l.is_empty()) {
            let mut validated = 0usize;
            for v in list {
                let r = self.sub(data, v, path, depth);
                if r.ok() {
                    validated += 1;
                }
                res.merge(r);
            }
            if validated != list.len() {
                let additional = if validated == 0 { ". None validated" } else { "" };
                res.push(self.composite(&format!("{qpath} must validate all the schemas (allOf){additional}")));
            }
        }
        if let Some(not) = s.get("not").filter(|v| !v.is_null()) {
            if self.sub(data, not, path, depth).ok() {
                res.push(self.composite(&format!("{qpath} must not validate the schema (not)")));
            }
        }
    }

    fn check_string(&mut self, st: &str, s: Sch<'_>, path: &str, res: &mut Res) {
        res.matches += 1;
        let len = i64::try_from(st.chars().count()).unwrap_or(i64::MAX);
        if let Some(max) = s.i64("maxLength") {
            if len > max {
                res.push(self.verr(ErrType::TooLong, path, "", &format!("may not be longer than {max}")));
                return;
            }
        }
        if let Some(min) = s.i64("minLength") {
            if len < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &go_quote(st),
                    &format!("{path} in body should be at least {min} chars long"),
                ));
                return;
            }
        }
        if let Some(pattern) = s.opt_str("pattern").filter(|p| !p.is_empty()) {
            let detail = match self.pattern_matches(pattern, st) {
                Ok(true) => return,
                Ok(false) => format!("{path} in body should match '{pattern}'"),
                Err(e) => {
                    format!("{path} in body should match '{pattern}, but pattern is invalid: {e}'")
                }
            };
            res.push(self.verr(ErrType::Invalid, path, &go_quote(st), &detail));
        }
    }

    fn check_number(&mut self, n: Num, s: Sch<'_>, types: &[&str], path: &str, res: &mut Res) {
        res.matches += 1;
        let type_name = match types {
            [single] => *single,
            _ => "",
        };
        if type_name == "integer" {
            if let Num::Float(f) = n {
                if int_bound(f).is_none() {
                    res.push(
                        self.composite(&format!("Checked value must be of type integer (default format) in {path}")),
                    );
                }
            }
        }
        let bad = render_num(n);
        if let Some(factor) = s.f64("multipleOf") {
            match (n, int_bound(factor)) {
                (Num::Int(i), Some(fi)) => {
                    if fi <= 0 {
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &fi.to_string(),
                            &format!("factor MultipleOf declared for {path} must be positive: {fi}"),
                        ));
                    } else if i.checked_rem(fi).is_some_and(|r| r != 0) {
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &bad,
                            &format!("{path} in body should be a multiple of {fi}"),
                        ));
                    }
                }
                _ => {
                    let d = n.as_f64();
                    if factor <= 0.0 {
                        let f = go_float(factor);
                        res.push(self.verr(
                            ErrType::Invalid,
                            path,
                            &f,
                            &format!("factor MultipleOf declared for {path} must be positive: {f}"),
                        ));
                    } else {
                        let mult = if factor < 1.0 { 1.0 / factor * d } else { d / factor };
                        if !is_json_integer(mult) {
                            res.push(self.verr(
                                ErrType::Invalid,
                                path,
                                &bad,
                                &format!("{path} in body should be a multiple of {}", go_float(factor)),
                            ));
                        }
                    }
                }
            }
        }
        let bounds = [
            ("minimum", "exclusiveMinimum", "should be greater than or equal to", "should be greater than"),
            ("maximum", "exclusiveMaximum", "should be less than or equal to", "should be less than"),
        ];
        for (i, (key_name, exclusive_key, inclusive_msg, exclusive_msg)) in bounds.into_iter().enumerate() {
            let Some(bound) = s.f64(key_name) else {
                continue;
            };
            let exclusive = s.flag(exclusive_key);
            let is_min = i == 0;
            let (fails, shown) = match (n, int_bound(bound)) {
                (Num::Int(x), Some(b)) => (int_fails(x, b, is_min, exclusive), b.to_string()),
                _ => (compare_fails(n.as_f64(), bound, is_min, exclusive), go_float(bound)),
            };
            if fails {
                let msg = if exclusive { exclusive_msg } else { inclusive_msg };
                res.push(self.verr(ErrType::Invalid, path, &bad, &format!("{path} in body {msg} {shown}")));
            }
        }
    }

    fn check_array(&mut self, a: &[Value], s: Sch<'_>, path: &str, depth: usize, res: &mut Res) {
        res.matches += 1;
        match s.get("items") {
            Some(items @ Value::Object(_)) => {
                for (i, v) in a.iter().enumerate() {
                    let r = self.sub(v, items, &index(path, i), depth);
                    res.merge(r);
                }
            }
            Some(Value::Array(tuple)) => {
                for (i, (v, items)) in a.iter().zip(tuple.iter()).enumerate() {
                    let r = self.sub(v, items, &index(path, i), depth);
                    res.merge(r);
                }
            }
            _ => {}
        }
        let size = i64::try_from(a.len()).unwrap_or(i64::MAX);
        if let Some(min) = s.i64("minItems") {
            if size < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &size.to_string(),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        if let Some(max) = s.i64("maxItems") {
            if size > max {
                res.push(self.verr(
                    ErrType::TooMany,
                    path,
                    &size.to_string(),
                    &format!("must have at most {max} items"),
                ));
            }
        }
        if s.flag("uniqueItems") {
            let mut seen = HashSet::with_capacity(a.len());
            if !a.iter().all(|v| seen.insert(canon_string(v))) {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    "\"\"",
                    &format!("{path} in body shouldn't contain duplicates"),
                ));
            }
        }
    }

    fn check_enum(&self, data: &Value, s: Sch<'_>, path: &str, res: &mut Res) {
        let Some(list) = s.arr("enum").filter(|l| !l.is_empty()) else {
            return;
        };
        res.matches += 1;
        let usable = |e: &&Value| !depth_exceeds(e, MAX_DEPTH);
        if list.iter().filter(usable).any(|e| enum_matches(data, e)) {
            return;
        }
        let values: Vec<String> = list
            .iter()
            .filter(usable)
            .map(|e| match e {
                Value::String(st) => st.clone(),
                other => to_go_json(other),
            })
            .collect();
        let field = self.field_for(path);
        res.push(e_not_supported(&field, &render_value(data), &values));
    }

    fn check_object(
        &mut self,
        m: &Map<String, Value>,
        s: Sch<'_>,
        path: &str,
        depth: usize,
        root: bool,
        res: &mut Res,
    ) {
        res.matches += 1;
        let skip = |k: &str| root && is_meta_field(k);
        let count = i64::try_from(m.len()).unwrap_or(i64::MAX);
        if let Some(min) = s.i64("minProperties") {
            if count < min {
                res.push(self.verr(
                    ErrType::Invalid,
                    path,
                    &count.to_string(),
                    &format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        if let Some(max) = s.i64("maxProperties") {
            if count > max {
                res.push(self.verr(
                    ErrType::TooMany,
                    path,
                    &count.to_string(),
                    &format!("must have at most {max} items"),
                ));
            }
        }
        let props = s.props();
        let known = |k: &str| props.is_some_and(|p| p.contains_key(k));
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                for k in m.keys().filter(|k| !known(k) && !skip(k)) {
                    res.push(self.verr(
                        ErrType::Invalid,
                        path,
                        &go_quote(k),
                        &format!("{} in body is a forbidden property", child(path, k)),
                    ));
                }
            }
            Some(ap @ Value::Object(_)) => {
                for (k, v) in m.iter().filter(|(k, _)| !known(k) && !skip(k)) {
                    let r = self.sub(v, ap, &child(path, k), depth);
                    res.merge(r);
                }
            }
            _ => {}
        }
        if let Some(props) = props {
            for (name, ps) in props {
                if skip(name) {
                    continue;
                }
                if let Some(v) = m.get(name) {
                    let r = self.sub(v, ps, &child(path, name), depth);
                    res.merge(r);
                }
            }
        }
        for k in s.strings("required") {
            if !skip(k) && !m.contains_key(k) {
                res.push(e_required(&self.field_for(&child(path, k)), ""));
            }
        }
    }
}

fn compare_fails(x: f64, bound: f64, is_min: bool, exclusive: bool) -> bool {
    match (is_min, exclusive) {
        (true, false) => x < bound,
        (true, true) => x <= bound,
        (false, false) => x > bound,
        (false, true) => x >= bound,
    }
}

fn int_fails(x: i64, bound: i64, is_min: bool, exclusive: bool) -> bool {
    match (is_min, exclusive) {
        (true, false) => x < bound,
        (true, true) => x <= bound,
        (false, false) => x > bound,
        (false, true) => x >= bound,
    }
}

// ---------------------------------------------------------------------------
// x-kubernetes-list-type validation
// ---------------------------------------------------------------------------

fn list_types_object_value(x: &Value, s: Sch<'_>, path: &str, depth: usize, root: bool, errs: &mut Vec<FieldError>) {
    let Value::Object(m) = x else { return };
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(ap) = s.additional_schema() {
        for (k, v) in m {
            list_types_value(v, ap, &key(path, k), depth + 1, errs);
        }
    }
    if let Some(props) = s.props() {
        for (k, v) in m {
            if root && is_meta_field(k) {
                continue;
            }
            if let Some(ps) = props.get(k).and_then(sch) {
                list_types_value(v, ps, &child(path, k), depth + 1, errs);
            }
        }
    }
}

fn list_types_value(x: &Value, s: Sch<'_>, path: &str, depth: usize, errs: &mut Vec<FieldError>) {
    if depth > MAX_DEPTH {
        return;
    }
    match x {
        Value::Object(_) => list_types_object_value(x, s, path, depth, false, errs),
        Value::Array(a) => {
            match s.opt_str(LIST_TYPE) {
                Some("set") => {
                    for i in first_duplicates(a.iter().map(set_key)) {
                        if let Some(v) = a.get(i) {
                            errs.push(mk(ErrType::Duplicate, &index(path, i), &render_value(v), ""));
                        }
                    }
                }
                Some("map") => validate_list_map(a, s, path, errs),
                _ => {}
            }
            if let Some(items) = s.items() {
                for (i, v) in a.iter().enumerate() {
                    list_types_value(v, items, &index(path, i), depth + 1, errs);
                }
            }
        }
        _ => {}
    }
}

/// Identity of a list-type=set element: scalars by type and value, compound
/// values by their JSON encoding (as Kubernetes compares them).
fn set_key(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => format!("c{}", to_go_json(v)),
        other => canon_string(other),
    }
}

/// Indices of the first repeated occurrence of each duplicated key.
fn first_duplicates<I: Iterator<Item = String>>(keys: I) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, k) in keys.enumerate() {
        let times = seen.entry(k).or_insert(0);
        *times += 1;
        if *times == 2 {
            out.push(i);
        }
    }
    out
}

fn validate_list_map(a: &[Value], s: Sch<'_>, path: &str, errs: &mut Vec<FieldError>) {
    for (i, x) in a.iter().enumerate() {
        if !x.is_null() && !x.is_object() {
            errs.push(e_invalid(&index(path, i), &render_value(x), "must be an object for an array of list-type map"));
            return;
        }
    }
    if a.len() <= 1 {
        return;
    }
    let key_fields = s.strings(LIST_MAP_KEYS);
    // Each element's key as (present key fields, identity string).
    let keys: Vec<Vec<(&str, &Value)>> = a
        .iter()
        .map(|x| key_fields.iter().filter_map(|f| x.as_object().and_then(|m| m.get(*f)).map(|v| (*f, v))).collect())
        .collect();
    let identity = |k: &Vec<(&str, &Value)>| -> String {
        if key_fields.len() == 1 {
            match k.first() {
                None => "u".to_string(),
                Some((_, v)) => set_key(v),
            }
        } else {
            let mut sorted = k.clone();
            sorted.sort_by(|x, y| x.0.cmp(y.0));
            let mut out = String::from("c{");
            for (i, (f, v)) in sorted.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(f, &mut out);
                out.push(':');
                go_json(v, 1, &mut out);
            }
            out.push('}');
            out
        }
    };
    for i in first_duplicates(keys.iter().map(identity)) {
        if let Some(k) = keys.get(i) {
            let mut sorted = k.clone();
            sorted.sort_by(|x, y| x.0.cmp(y.0));
            let mut rendered = String::new();
            sharp_map(&sorted, 0, &mut rendered);
            errs.push(mk(ErrType::Duplicate, &index(path, i), &rendered, ""));
        }
    }
}

// ---------------------------------------------------------------------------
// Structural schema checks
// ---------------------------------------------------------------------------

/// Check that a CRD schema is structural enough to serve (returns problems as
/// FieldErrors with field paths under `prefix`, e.g.
/// "spec.versions[0].schema.openAPIV3Schema"): every node with
/// properties/items has a type (except under x-kubernetes-preserve-unknown-fields
/// or x-kubernetes-int-or-string), the root is type object, `type` values are
/// known, defaults are not allowed in top-level metadata/apiVersion/kind, in
/// nested value validations or under additionalProperties applying to
/// metadata, and defaults must validate and be pruned. Also checks the
/// CRD-API rules on unsupported keywords, list/map types and value
/// validations (allOf/anyOf/oneOf/not) being structural and complete.
pub fn check_structural(schema: &Value, prefix: &str) -> Vec<FieldError> {
    let mut c = Checker::default();
    if sch(schema).is_some_and(Sch::nullable) {
        c.errs.push(e_forbidden(&child(prefix, "nullable"), "nullable cannot be true at the root"));
    }
    c.api_node(schema, prefix, true, &ApiCtx::default(), 0);
    let mut errs = std::mem::take(&mut c.errs);
    if c.too_deep {
        return errs;
    }
    let Some(s) = sch(schema) else {
        return errs;
    };
    c.structural_node(s, Level::Root, prefix, 0);
    c.completeness(s, prefix, 0);
    let mut structural = std::mem::take(&mut c.errs);
    structural.sort_by_cached_key(|e| e.to_string());
    if structural.is_empty() {
        c.defaults_node(s, prefix, true, false, 0);
        errs.append(&mut c.errs);
    } else {
        errs.append(&mut structural);
    }
    errs
}

#[derive(Default)]
struct Checker {
    errs: Vec<FieldError>,
    too_deep: bool,
}

#[derive(Clone, Default)]
struct ApiCtx {
    inside_meta: bool,
    forbid_default: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// Exactly `{type: <t>}` (other keys zero-valued).
fn only_type(v: &Value, t: &str) -> bool {
    v.as_object().is_some_and(|m| {
        m.get("type").and_then(Value::as_str) == Some(t) && m.iter().all(|(k, x)| k == "type" || is_zeroish(x))
    })
}

fn is_int_or_string_any_of(list: Option<&Vec<Value>>) -> bool {
    matches!(list.map(Vec::as_slice), Some([a, b]) if only_type(a, "integer") && only_type(b, "string"))
}

impl Checker {
    fn depth_error(&mut self, path: &str) {
        self.too_deep = true;
        self.errs.push(e_forbidden(path, &format!("must not be nested deeper than {MAX_DEPTH} levels")));
    }

    /// The CRD API validation of one schema node and its subschemas.
    fn api_node(&mut self, v: &Value, path: &str, is_root: bool, ctx: &ApiCtx, depth: usize) {
        if depth > MAX_DEPTH {
            self.depth_error(path);
            return;
        }
        let Some(s) = sch(v) else {
            self.errs.push(e_invalid(path, &render_value(v), "must be a JSON object"));
            return;
        };
        let type_path = child(path, "type");
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => {
                if !t.is_empty() && !V3_TYPES.contains(&t.as_str()) {
                    self.errs.push(e_not_supported(&type_path, &go_quote(t), &V3_TYPES));
                }
                if t == "null" {
                    self.errs
                        .push(e_forbidden(&type_path, "type cannot be set to null, use nullable as an alternative"));
                }
            }
            Some(other) => self.errs.push(e_invalid(&type_path, &render_value(other), "must be a string")),
        }
        if s.get("default").is_some() {
            if let Some(reason) = &ctx.forbid_default {
                self.errs.push(e_forbidden(&child(path, "default"), &format!("must not be set {reason}")));
            }
        }
        if !s.str("id").is_empty() {
            self.errs.push(e_forbidden(&child(path, "id"), "id is not supported"));
        }
        for (k, non_empty_only) in [
            ("additionalItems", false),
            ("patternProperties", true),
            ("definitions", true),
            ("dependencies", false),
            ("$ref", false),
        ] {
            if let Some(x) = s.get(k) {
                let present = if non_empty_only { !is_zeroish(x) } else { !x.is_null() };
                if present {
                    self.errs.push(e_forbidden(&child(path, k), &format!("{k} is not supported")));
                }
            }
        }
        if s.arr("items").is_some_and(|a| !a.is_empty()) {
            self.errs.push(e_forbidden(&child(path, "items"), "items must be a schema object and not an array"));
        }
        if ctx.inside_meta && s.flag(EMBEDDED) {
            self.errs.push(e_forbidden(&child(path, EMBEDDED), "must not be used inside of resource meta"));
        }
        if s.flag("uniqueItems") {
            self.errs.push(e_forbidden(
                &child(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ));
        }
        match s.additional() {
            Additional::Absent => {}
            additional => {
                if s.has_props() && !matches!(additional, Additional::Bool(true)) {
                    self.errs.push(e_forbidden(
                        &child(path, "additionalProperties"),
                        "additionalProperties and properties are mutual exclusive",
                    ));
                }
                if let Some(ap) = s.get("additionalProperties").filter(|x| x.is_object()) {
                    let mut sub = ctx.clone();
                    if ctx.inside_meta {
                        sub.forbid_default = Some("inside additionalProperties applying to object metadata".into());
                    }
                    self.api_node(ap, &child(path, "additionalProperties"), false, &sub, depth + 1);
                }
            }
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                let mut sub = ctx.clone();
                if (is_root || s.flag(EMBEDDED)) && is_meta_field(k) {
                    sub.inside_meta = true;
                    if is_root {
                        sub.forbid_default = Some(format!("in top-level {k}"));
                    }
                }
                self.api_node(pv, &key(&child(path, "properties"), k), false, &sub, depth + 1);
            }
        }
        if let Some(not) = s.get("not").filter(|x| !x.is_null()) {
            self.api_node(not, &child(path, "not"), false, ctx, depth + 1);
        }
        for junctor in ["allOf", "oneOf", "anyOf"] {
            if let Some(list) = s.arr(junctor) {
                for (i, x) in list.iter().enumerate() {
                    self.api_node(x, &index(&child(path, junctor), i), false, ctx, depth + 1);
                }
            }
        }
        match s.get("items") {
            Some(items @ Value::Object(_)) => self.api_node(items, &child(path, "items"), false, ctx, depth + 1),
            Some(Value::Array(list)) => {
                for (i, x) in list.iter().enumerate() {
                    self.api_node(x, &index(&child(path, "items"), i), false, ctx, depth + 1);
                }
            }
            _ => {}
        }
        if matches!(s.get(PRESERVE), Some(Value::Bool(false))) {
            self.errs.push(e_invalid(&child(path, PRESERVE), "false", "must be true or undefined"));
        }
        self.api_list_map_types(s, path);
    }

    fn api_list_map_types(&mut self, s: Sch<'_>, path: &str) {
        let ty = s.ty();
        let type_path = child(path, "type");
        let type_error = |detail: &str| {
            if ty.is_empty() {
                e_required(&type_path, detail)
            } else {
                e_invalid(&type_path, &go_quote(ty), detail)
            }
        };
        if let Some(map_type) = s.opt_str(MAP_TYPE) {
            if ty != "object" {
                self.errs.push(type_error("must be object if x-kubernetes-map-type is specified"));
            }
            if map_type != "atomic" && map_type != "granular" {
                self.errs.push(e_not_supported(&child(path, MAP_TYPE), &go_quote(map_type), &["atomic", "granular"]));
            }
        }
        let list_type = s.opt_str(LIST_TYPE);
        let items = s.items();
        let items_path = child(path, "items");
        if let Some(lt) = list_type {
            if ty != "array" {
                self.errs.push(type_error("must be array if x-kubernetes-list-type is specified"));
            } else if lt == "set" {
                if let Some(is) = items {
                    match is.ty() {
                        "array" => {
                            if let Some(x) = is.opt_str(LIST_TYPE).filter(|x| *x != "atomic") {
                                self.errs.push(e_invalid(
                                    &child(&items_path, LIST_TYPE),
                                    &go_quote(x),
                                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                                ));
                            }
                        }
                        "object" if is.opt_str(MAP_TYPE) != Some("atomic") => {
                            // Kubernetes shows the items' list type here.
                            let shown = is.opt_str(LIST_TYPE).map_or_else(|| go_quote("null"), go_quote);
                            self.errs.push(e_invalid(
                                &child(&items_path, MAP_TYPE),
                                &shown,
                                "must be atomic as item of a list with x-kubernetes-list-type=set",
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if !matches!(lt, "atomic" | "set" | "map") {
                self.errs.push(e_not_supported(&child(path, LIST_TYPE), &go_quote(lt), &["atomic", "set", "map"]));
            }
        }
        let map_keys = s.strings(LIST_MAP_KEYS);
        if !map_keys.is_empty() {
            match list_type {
                None => self.errs.push(e_required(
                    &child(path, LIST_TYPE),
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )),
                Some(lt) if lt != "map" => self.errs.push(e_invalid(
                    &child(path, LIST_TYPE),
                    &go_quote(lt),
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )),
                _ => {}
            }
        }
        if list_type == Some("map") {
            if map_keys.is_empty() {
                self.errs.push(e_required(
                    &child(path, LIST_MAP_KEYS),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            match s.get("items") {
                None => self.errs.push(e_required(&items_path, "must have a schema if x-kubernetes-list-type is map")),
                Some(x) if !x.is_object() => self.errs.push(e_invalid(
                    &items_path,
                    &render_value(x),
                    "must only have a single schema if x-kubernetes-list-type is map",
                )),
                _ => {}
            }
            if let Some(is) = items {
                if is.ty() != "object" {
                    self.errs.push(e_invalid(
                        &child(&items_path, "type"),
                        &go_quote(is.ty()),
                        "must be object if parent array's x-kubernetes-list-type is map",
                    ));
                } else {
                    let rendered_keys = render_string_slice(&map_keys);
                    let mut seen = HashSet::new();
                    for k in &map_keys {
                        match is.prop(k) {
                            Some(ks) => {
                                if matches!(ks.ty(), "array" | "object") {
                                    self.errs.push(e_invalid(
                                        &child(&key(&child(&items_path, "properties"), k), "type"),
                                        &go_quote(is.ty()),
                                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                    ));
                                }
                            }
                            None => self.errs.push(e_invalid(
                                &child(path, LIST_MAP_KEYS),
                                &rendered_keys,
                                "entries must all be names of item properties",
                            )),
                        }
                        if !seen.insert(*k) {
                            self.errs.push(e_invalid(
                                &child(path, LIST_MAP_KEYS),
                                &rendered_keys,
                                "must not contain duplicate entries",
                            ));
                        }
                    }
                }
            }
        }
        // set and map list items (and map keys) must not be nullable; map keys
        // must be required or defaulted.
        if let (Some(lt @ ("set" | "map")), Some(is)) = (list_type, items) {
            if is.nullable() {
                self.errs.push(e_forbidden(
                    &child(&items_path, "nullable"),
                    &format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
                ));
            }
            if lt == "map" {
                let required = is.strings("required");
                for k in &map_keys {
                    let Some(ks) = is.prop(k) else { continue };
                    let prop_path = key(&child(&items_path, "properties"), k);
                    if !required.contains(k) && ks.get("default").is_none() {
                        self.errs.push(e_required(
                            &child(&prop_path, "default"),
                            "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                        ));
                    }
                    if ks.nullable() {
                        self.errs.push(e_forbidden(
                            &child(&prop_path, "nullable"),
                            "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                        ));
                    }
                }
            }
        }
    }

    /// Structural invariants of a node of the structural part of the schema.
    fn structural_node(&mut self, s: Sch<'_>, lvl: Level, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let ty = s.ty();
        if ty == "array" && s.get("items").is_none() {
            self.errs.push(e_required(&child(path, "items"), "must be specified"));
        }
        if let Some(items) = s.items() {
            self.structural_node(items, Level::Item, &child(path, "items"), depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    self.structural_node(p, Level::Field, &key(&child(path, "properties"), k), depth + 1);
                }
            }
        }
        let additional = s.additional();
        if !matches!(additional, Additional::Absent) {
            if lvl == Level::Root {
                self.errs.push(e_forbidden(&child(path, "additionalProperties"), "must not be used at the root"));
            }
            if let Additional::Schema(ap) = additional {
                self.structural_node(ap, Level::Field, &child(path, "additionalProperties"), depth + 1);
            }
        }
        let int_or_string = s.flag(INT_OR_STRING);
        let preserve = s.flag(PRESERVE);
        let embedded = s.flag(EMBEDDED);
        if int_or_string && preserve {
            self.errs.push(e_invalid(
                &child(path, PRESERVE),
                "true",
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        if int_or_string && embedded {
            self.errs.push(e_invalid(
                &child(path, EMBEDDED),
                "true",
                "must be false if x-kubernetes-int-or-string is true",
            ));
        }
        let skip_any_of = is_int_or_string_any_of(s.arr("anyOf"));
        let skip_first_all_of_any_of = s
            .arr("allOf")
            .and_then(|l| l.first())
            .and_then(sch)
            .is_some_and(|first| is_int_or_string_any_of(first.arr("anyOf")));
        self.value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, depth);

        let type_path = child(path, "type");
        if embedded && ty != "object" {
            let detail = "must be object if x-kubernetes-embedded-resource is true";
            if ty.is_empty() {
                self.errs.push(e_required(&type_path, detail));
            } else {
                self.errs.push(e_invalid(&type_path, &go_quote(ty), detail));
            }
        } else if ty.is_empty() && !int_or_string && !preserve {
            let detail = match lvl {
                Level::Root => "must not be empty at the root",
                Level::Item => "must not be empty for specified array items",
                Level::Field => "must not be empty for specified object fields",
            };
            self.errs.push(e_required(&type_path, detail));
        }
        if embedded && !matches!(additional, Additional::Absent) {
            self.errs.push(e_forbidden(
                &child(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
        if lvl == Level::Root && !ty.is_empty() && ty != "object" {
            self.errs.push(e_invalid(&type_path, &go_quote(ty), "must be object at the root"));
        }
        let check_metadata = lvl == Level::Root || embedded;
        let props_path = child(path, "properties");
        if check_metadata {
            for meta in ["kind", "apiVersion"] {
                if let Some(ms) = s.prop(meta) {
                    if ms.ty() != "string" {
                        self.errs.push(e_invalid(
                            &child(&key(&props_path, meta), "type"),
                            &go_quote(ms.ty()),
                            "must be string",
                        ));
                    }
                }
            }
        }
        if let Some(md) = s.prop("metadata") {
            let md_path = key(&props_path, "metadata");
            if check_metadata && md.ty() != "object" {
                self.errs.push(e_invalid(&child(&md_path, "type"), &go_quote(md.ty()), "must be object"));
            }
            if lvl == Level::Root {
                let allowed = md.0.iter().all(|(k, x)| match k.as_str() {
                    "type" | "default" => true,
                    "properties" => x.as_object().is_some_and(|p| p.keys().all(|n| n == "name" || n == "generateName")),
                    _ => is_zeroish(x),
                });
                if !allowed {
                    self.errs.push(e_forbidden(
                        &md_path,
                        "must not specify anything other than name and generateName, but metadata is implicitly specified",
                    ));
                }
            }
        }
        if embedded && !preserve && !s.has_props() {
            self.errs.push(e_required(
                &props_path,
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            ));
        }
    }

    /// Checks the junctors (allOf/anyOf/oneOf/not) and pattern of a node.
    fn value_validation(
        &mut self,
        v: Sch<'_>,
        skip_any_of: bool,
        skip_first_all_of_any_of: bool,
        lvl: Level,
        path: &str,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        if !skip_any_of {
            if let Some(list) = v.arr("anyOf") {
                for (i, x) in list.iter().enumerate() {
                    self.nested(x, false, lvl, &index(&child(path, "anyOf"), i), depth + 1);
                }
            }
        }
        if let Some(list) = v.arr("allOf") {
            for (i, x) in list.iter().enumerate() {
                self.nested(x, skip_first_all_of_any_of && i == 0, lvl, &index(&child(path, "allOf"), i), depth + 1);
            }
        }
        if let Some(list) = v.arr("oneOf") {
            for (i, x) in list.iter().enumerate() {
                self.nested(x, false, lvl, &index(&child(path, "oneOf"), i), depth + 1);
            }
        }
        if let Some(not) = v.get("not") {
            self.nested(not, false, lvl, &child(path, "not"), depth + 1);
        }
        if let Some(p) = v.opt_str("pattern").filter(|p| !p.is_empty()) {
            if let Err(e) = compile_pattern(p) {
                self.errs.push(e_invalid(
                    &child(path, "pattern"),
                    &go_quote(p),
                    &format!("must be a valid regular expression, but isn't: {e}"),
                ));
            }
        }
    }

    /// A schema under a junctor may only carry value validations.
    fn nested(&mut self, x: &Value, skip_any_of: bool, lvl: Level, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(v) = sch(x) else { return };
        self.value_validation(v, skip_any_of, false, lvl, path, depth);
        if let Some(items) = v.get("items").filter(|i| i.is_object()) {
            self.nested(items, false, lvl, &child(path, "items"), depth + 1);
        }
        if let Some(props) = v.props() {
            for (k, p) in props {
                self.nested(p, false, Level::Field, &key(&child(path, "properties"), k), depth + 1);
            }
        }
        let non_empty = |k: &str| v.get(k).is_some_and(|x| !is_zeroish(x));
        let checks: [(&str, bool, &str); 13] = [
            ("type", non_empty("type"), "must be empty to be structural"),
            ("additionalProperties", v.get("additionalProperties").is_some(), "must be undefined to be structural"),
            ("default", v.default_value().is_some(), "must be undefined to be structural"),
            ("title", non_empty("title"), "must be empty to be structural"),
            ("description", non_empty("description"), "must be empty to be structural"),
            ("nullable", v.nullable(), "must be false to be structural"),
            (PRESERVE, v.flag(PRESERVE), "must be false to be structural"),
            (EMBEDDED, v.flag(EMBEDDED), "must be false to be structural"),
            (INT_OR_STRING, v.flag(INT_OR_STRING), "must be false to be structural"),
            (LIST_MAP_KEYS, non_empty(LIST_MAP_KEYS), "must be empty to be structural"),
            (LIST_TYPE, v.get(LIST_TYPE).is_some_and(|x| !x.is_null()), "must be undefined to be structural"),
            (MAP_TYPE, v.get(MAP_TYPE).is_some_and(|x| !x.is_null()), "must be undefined to be structural"),
            (VALIDATIONS, non_empty(VALIDATIONS), "must be empty to be structural"),
        ];
        for (k, bad, detail) in checks {
            if bad {
                self.errs.push(e_forbidden(&child(path, k), detail));
            }
        }
        if v.props().is_some_and(|p| p.contains_key("metadata")) {
            self.errs.push(e_forbidden(
                &key(&child(path, "properties"), "metadata"),
                "must not be specified in a nested context",
            ));
        }
    }

    /// Every field or array specified in a value validation must also be
    /// specified in the structural part (checked at every structural node).
    fn completeness(&mut self, s: Sch<'_>, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        self.junctors_complete(s, s, path, path, depth);
        if let Some(items) = s.items() {
            self.completeness(items, &child(path, "items"), depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    self.completeness(p, &key(&child(path, "properties"), k), depth + 1);
                }
            }
        }
        if let Some(ap) = s.additional_schema() {
            self.completeness(ap, &child(path, "additionalProperties"), depth + 1);
        }
    }

    fn junctors_complete(&mut self, v: Sch<'_>, s: Sch<'_>, s_path: &str, v_path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(not) = v.get("not") {
            self.nested_complete(not, Some(s), s_path, &child(v_path, "not"), depth + 1);
        }
        for junctor in ["allOf", "anyOf", "oneOf"] {
            if let Some(list) = v.arr(junctor) {
                for (i, x) in list.iter().enumerate() {
                    self.nested_complete(x, Some(s), s_path, &index(&child(v_path, junctor), i), depth + 1);
                }
            }
        }
    }

    fn nested_complete(&mut self, x: &Value, s: Option<Sch<'_>>, s_path: &str, v_path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(v) = sch(x) else { return };
        let Some(s) = s else {
            self.errs.push(e_required(s_path, &format!("because it is defined in {v_path}")));
            return;
        };
        self.junctors_complete(v, s, s_path, v_path, depth);
        if let Some(items) = v.get("items").filter(|i| i.is_object()) {
            self.nested_complete(items, s.items(), &child(s_path, "items"), &child(v_path, "items"), depth + 1);
        }
        if let Some(props) = v.props() {
            for (k, vf) in props {
                let sp = key(&child(s_path, "properties"), k);
                let vp = key(&child(v_path, "properties"), k);
                match s.prop(k) {
                    Some(sf) => self.nested_complete(vf, Some(sf), &sp, &vp, depth + 1),
                    None => self.errs.push(e_required(&sp, &format!("because it is defined in {vp}"))),
                }
            }
        }
    }

    /// Defaults must validate against their schema and be pruned. Defaults
    /// inside resource metadata and under additionalProperties are not
    /// checked here (as in Kubernetes).
    fn defaults_node(&mut self, s: Sch<'_>, path: &str, resource_root: bool, inside_meta: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let embedded = resource_root || s.flag(EMBEDDED);
        let inside_meta = inside_meta && !s.flag(EMBEDDED);
        if let Some(d) = s.default_value() {
            if !inside_meta {
                self.check_default(d, s, &child(path, "default"), embedded);
            }
        }
        if let Some(items) = s.items() {
            self.defaults_node(items, &child(path, "items"), false, inside_meta, depth + 1);
        }
        if let Some(props) = s.props() {
            for (k, pv) in props {
                if let Some(p) = sch(pv) {
                    let sub_meta = inside_meta || (embedded && is_meta_field(k));
                    self.defaults_node(p, &key(&child(path, "properties"), k), false, sub_meta, depth + 1);
                }
            }
        }
    }

    fn check_default(&mut self, d: &Value, s: Sch<'_>, path: &str, embedded: bool) {
        if depth_exceeds(d, MAX_DEPTH) {
            self.errs.push(e_invalid(path, "\"\"", &format!("must not be nested deeper than {MAX_DEPTH} levels")));
            return;
        }
        let mut pruned = d.clone();
        let mut p = Pruner::default();
        p.node(&mut pruned, Some(s), embedded, 0);
        if !p.pruned.is_empty() {
            self.errs.push(e_invalid(path, &render_value(d), "must not have unknown fields"));
        }
        drop_deep(pruned);
        for dead in p.graveyard {
            drop_deep(dead);
        }
        let mut v = Validator::new(Some(path.to_string()));
        let errs = v.node(d, s, "", 0, embedded).errs;
        self.errs.extend(errs);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CRON: &str = r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$";
    const PREFIX: &str = "spec.versions[0].schema.openAPIV3Schema";

    fn crontab_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": CRON},
                        "image": {"type": "string", "minLength": 2, "maxLength": 25},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1, "format": "int32"},
                        "policy": {"type": "string", "enum": ["Allow", "Forbid", "Replace"], "default": "Allow"},
                        "port": {
                            "x-kubernetes-int-or-string": true,
                            "anyOf": [{"type": "integer"}, {"type": "string"}]
                        },
                        "note": {"type": "string", "nullable": true},
                        "extra": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {
                                "known": {"type": "object", "properties": {"a": {"type": "string"}}}
                            }
                        },
                        "ports": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "port": {"type": "integer", "default": 80},
                                    "protocol": {"type": "string", "default": "TCP"}
                                }
                            }
                        },
                        "tags": {
                            "type": "array",
                            "x-kubernetes-list-type": "set",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {"type": "string"}
                        },
                        "labels": {
                            "type": "object",
                            "maxProperties": 2,
                            "additionalProperties": {"type": "string", "default": "none"}
                        },
                        "ratio": {"type": "number", "multipleOf": 0.5, "minimum": 0, "exclusiveMinimum": true},
                        "created": {"type": "string", "format": "date-time"},
                        "payload": {"type": "string", "format": "byte"},
                        "template": {
                            "type": "object",
                            "x-kubernetes-embedded-resource": true,
                            "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string"}}}}
                        }
                    }
                },
                "status": {
                    "type": "object",
                    "properties": {"ready": {"type": "boolean"}}
                }
            }
        })
    }

    fn valid_object() -> Value {
        json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "my-new-cron-object"},
            "spec": {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image"}
        })
    }

    fn errs_for(spec: Value) -> Vec<FieldError> {
        let mut obj = valid_object();
        if let (Some(s), Value::Object(extra)) = (obj.get_mut("spec").and_then(Value::as_object_mut), spec) {
            for (k, v) in extra {
                s.insert(k, v);
            }
        }
        validate(&crontab_schema(), &obj)
    }

    fn only(errs: &[FieldError]) -> &FieldError {
        assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
        &errs[0]
    }

    fn fe(reason: &'static str, field: &str, message: &str) -> FieldError {
        FieldError { reason, field: field.to_string(), message: message.to_string() }
    }

    // --- check_structural ------------------------------------------------

    #[test]
    fn crontab_schema_is_structural() {
        assert_eq!(check_structural(&crontab_schema(), PREFIX), vec![]);
    }

    #[test]
    fn structural_missing_types_and_root() {
        let schema = json!({
            "type": "array",
            "items": {"type": "string"},
            "properties": {"spec": {"properties": {"a": {"type": "string"}}}}
        });
        let errs = check_structural(&schema, PREFIX);
        assert!(
            errs.contains(&fe(
                "FieldValueRequired",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
                "Required value: must not be empty for specified object fields",
            )),
            "{errs:#?}"
        );
        assert!(
            errs.contains(&fe(
                "FieldValueInvalid",
                "spec.versions[0].schema.openAPIV3Schema.type",
                "Invalid value: \"array\": must be object at the root",
            )),
            "{errs:#?}"
        );

        let errs = check_structural(&json!({"properties": {}}), "root");
        assert_eq!(errs, vec![fe("FieldValueRequired", "root.type", "Required value: must not be empty at the root")]);

        let errs =
            check_structural(&json!({"type": "object", "properties": {"l": {"type": "array", "items": {}}}}), "r");
        assert_eq!(
            errs,
            vec![fe(
                "FieldValueRequired",
                "r.properties[l].items.type",
                "Required value: must not be empty for specified array items",
            )]
        );

        let errs = check_structural(&json!({"type": "object", "properties": {"l": {"type": "array"}}}), "r");
        assert_eq!(errs, vec![fe("FieldValueRequired", "r.properties[l].items", "Required value: must be specified")]);
    }

    #[test]
    fn structural_exemptions_for_preserve_and_int_or_string() {
        let schema = json!({"type": "object", "properties": {
            "any": {"x-kubernetes-preserve-unknown-fields": true},
            "ios": {"x-kubernetes-int-or-string": true},
            "ios2": {"x-kubernetes-int-or-string": true, "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^a"}]}
        }});
        assert_eq!(check_structural(&schema, "r"), vec![]);
    }

    #[test]
    fn structural_unknown_type_and_null_type() {
        let errs = check_structural(
            &json!({"type": "object", "properties": {"a": {"type": "strnig"}, "b": {"type": "null"}}}),
            "r",
        );
        assert!(errs.contains(&fe(
            "FieldValueNotSupported",
            "r.properties[a].type",
            "Unsupported value: \"strnig\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
        )), "{errs:#?}");
        assert!(
            errs.contains(&fe(
                "FieldValueForbidden",
                "r.properties[b].type",
                "Forbidden: type cannot be set to null, use nullable as an alternative",
            )),
            "{errs:#?}"
        );
    }

    #[test]
    fn structural_api_rules() {
        let schema = json!({
            "type": "object",
            "nullable": true,
            "properties": {
                "metadata": {"type": "object", "default": {"name": "x"}},
                "m": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
                "p": {"type": "object", "x-kubernetes-preserve-unknown-fields": false},
                "u": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
                "r": {"type": "string", "$ref": "#/definitions/x"},
                "lm": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}},
                "lt": {"type": "object", "x-kubernetes-list-type": "set"},
                "bad": {"type": "array", "x-kubernetes-list-type": "bag", "items": {"type": "string"}}
            }
        });
        let errs = check_structural(&schema, "r");
        let expected = [
            fe("FieldValueForbidden", "r.nullable", "Forbidden: nullable cannot be true at the root"),
            fe(
                "FieldValueForbidden",
                "r.properties[metadata].default",
                "Forbidden: must not be set in top-level metadata",
            ),
            fe(
                "FieldValueForbidden",
                "r.properties[m].additionalProperties",
                "Forbidden: additionalProperties and properties are mutual exclusive",
            ),
            fe(
                "FieldValueInvalid",
                "r.properties[p].x-kubernetes-preserve-unknown-fields",
                "Invalid value: false: must be true or undefined",
            ),
            fe(
                "FieldValueForbidden",
                "r.properties[u].uniqueItems",
                "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ),
            fe("FieldValueForbidden", "r.properties[r].$ref", "Forbidden: $ref is not supported"),
            fe(
                "FieldValueRequired",
                "r.properties[lm].x-kubernetes-list-map-keys",
                "Required value: must not be empty if x-kubernetes-list-type is map",
            ),
            fe(
                "FieldValueInvalid",
                "r.properties[lt].type",
                "Invalid value: \"object\": must be array if x-kubernetes-list-type is specified",
            ),
            fe(
                "FieldValueNotSupported",
                "r.properties[bad].x-kubernetes-list-type",
                "Unsupported value: \"bag\": supported values: \"atomic\", \"set\", \"map\"",
            ),
        ];
        for e in expected {
            assert!(errs.contains(&e), "missing {e:#?} in {errs:#?}");
        }
    }

    #[test]
    fn structural_list_map_keys() {
        let schema = json!({"type": "object", "properties": {"l": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name", "missing", "name"],
            "items": {"type": "object", "properties": {"name": {"type": "string", "nullable": true}}}
        }}});
        let errs = check_structural(&schema, "r");
        for e in [
            fe("FieldValueInvalid", "r.properties[l].x-kubernetes-list-map-keys", "Invalid value: []string{\"name\", \"missing\", \"name\"}: entries must all be names of item properties"),
            fe("FieldValueInvalid", "r.properties[l].x-kubernetes-list-map-keys", "Invalid value: []string{\"name\", \"missing\", \"name\"}: must not contain duplicate entries"),
            fe("FieldValueRequired", "r.properties[l].items.properties[name].default", "Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
            fe("FieldValueForbidden", "r.properties[l].items.properties[name].nullable", "Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable"),
        ] {
            assert!(errs.contains(&e), "missing {e:#?} in {errs:#?}");
        }
    }

    #[test]
    fn structural_value_validation_rules() {
        let schema = json!({"type": "object", "properties": {
            "a": {
                "type": "object",
                "properties": {"x": {"type": "string"}},
                "anyOf": [
                    {"type": "object", "properties": {"x": {"pattern": "^a"}}},
                    {"properties": {"y": {"minLength": 1}}}
                ],
                "not": {"default": "z", "description": "d"}
            },
            "p": {"type": "string", "pattern": "a("}
        }});
        let errs = check_structural(&schema, "r");
        let expected = [
            fe("FieldValueForbidden", "r.properties[a].anyOf[0].type", "Forbidden: must be empty to be structural"),
            fe("FieldValueForbidden", "r.properties[a].not.default", "Forbidden: must be undefined to be structural"),
            fe("FieldValueForbidden", "r.properties[a].not.description", "Forbidden: must be empty to be structural"),
            fe(
                "FieldValueRequired",
                "r.properties[a].properties[y]",
                "Required value: because it is defined in r.properties[a].anyOf[1].properties[y]",
            ),
        ];
        for e in expected {
            assert!(errs.contains(&e), "missing {e:#?} in {errs:#?}");
        }
        let pattern_err = errs.iter().find(|e| e.field == "r.properties[p].pattern").expect("pattern error");
        assert_eq!(pattern_err.reason, "FieldValueInvalid");
        assert!(
            pattern_err.message.starts_with(
                "Invalid value: \"a(\": must be a valid regular expression, but isn't: error parsing regexp:"
            ),
            "{pattern_err:?}"
        );
    }

    #[test]
    fn structural_metadata_and_embedded() {
        let schema = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "kind": {"type": "integer"},
            "emb": {"x-kubernetes-embedded-resource": true}
        }});
        let errs = check_structural(&schema, "r");
        for e in [
            fe("FieldValueForbidden", "r.properties[metadata]", "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"),
            fe("FieldValueInvalid", "r.properties[kind].type", "Invalid value: \"integer\": must be string"),
            fe("FieldValueRequired", "r.properties[emb].type", "Required value: must be object if x-kubernetes-embedded-resource is true"),
            fe("FieldValueRequired", "r.properties[emb].properties", "Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"),
        ] {
            assert!(errs.contains(&e), "missing {e:#?} in {errs:#?}");
        }
        // name/generateName restrictions are fine
        let ok = json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}});
        assert_eq!(check_structural(&ok, "r"), vec![]);
    }

    #[test]
    fn structural_default_validation() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "replicas": {"type": "integer", "maximum": 5, "default": "three"},
            "limit": {"type": "integer", "maximum": 5, "default": 7},
            "obj": {"type": "object", "properties": {"a": {"type": "string"}}, "default": {"a": "x", "b": 1}}
        }}}});
        let errs = check_structural(&schema, "r");
        assert_eq!(
            errs,
            vec![
                fe(
                    "FieldValueTypeInvalid",
                    "r.properties[spec].properties[replicas].default",
                    "Invalid value: \"string\":  in body must be of type integer: \"string\""
                ),
                fe(
                    "FieldValueInvalid",
                    "r.properties[spec].properties[limit].default",
                    "Invalid value: 7:  in body should be less than or equal to 5"
                ),
                fe(
                    "FieldValueInvalid",
                    "r.properties[spec].properties[obj].default",
                    "Invalid value: map[string]interface {}{\"a\":\"x\", \"b\":1}: must not have unknown fields"
                ),
            ]
        );
    }

    #[test]
    fn structural_refuses_deep_schemas() {
        let mut schema = json!({"type": "string"});
        for _ in 0..10_000 {
            let mut m = Map::new();
            m.insert("type".into(), json!("object"));
            let mut props = Map::new();
            props.insert("a".into(), schema);
            m.insert("properties".into(), Value::Object(props));
            schema = Value::Object(m);
        }
        let errs = check_structural(&schema, "r");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert!(errs[0].message.contains("must not be nested deeper than 64 levels"));
        // the runtime functions stay bounded on it as well
        let mut obj = json!({"a": {"a": {"a": {}}}});
        apply_defaults(&schema, &mut obj);
        assert_eq!(prune(&schema, &mut obj), Vec::<String>::new());
        assert_eq!(validate(&schema, &obj), vec![]);
        drop_deep(schema);
    }

    // --- apply_defaults ----------------------------------------------------

    #[test]
    fn defaulting() {
        let schema = crontab_schema();
        let mut obj = json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "x"},
            "spec": {
                "cronSpec": "* * * * */5",
                "policy": "Forbid",
                "note": null,
                "image": null,
                "ports": [{"name": "http"}, {"name": "https", "port": 8443, "protocol": null}],
                "labels": {"a": null, "b": "set"}
            }
        });
        apply_defaults(&schema, &mut obj);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "stable.example.com/v1",
                "kind": "CronTab",
                "metadata": {"name": "x"},
                "spec": {
                    "cronSpec": "* * * * */5",
                    "policy": "Forbid",
                    "note": null,
                    "ports": [
                        {"name": "http", "port": 80, "protocol": "TCP"},
                        {"name": "https", "port": 8443, "protocol": "TCP"}
                    ],
                    "labels": {"a": "none", "b": "set"},
                    "replicas": 1
                }
            })
        );
        // absent spec: nothing to default into
        let mut empty = json!({"kind": "CronTab"});
        apply_defaults(&schema, &mut empty);
        assert_eq!(empty, json!({"kind": "CronTab"}));
    }

    #[test]
    fn defaulting_deep_copies_and_recurses_into_defaults() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "default": {},
            "properties": {"obj": {"type": "object", "default": {"list": [1]}, "properties": {
                "list": {"type": "array", "items": {"type": "integer"}},
                "n": {"type": "integer", "default": 3}
            }}}
        }}});
        let mut a = json!({});
        apply_defaults(&schema, &mut a);
        assert_eq!(a, json!({"spec": {"obj": {"list": [1], "n": 3}}}));
        if let Some(list) = a.pointer_mut("/spec/obj/list").and_then(Value::as_array_mut) {
            list.push(json!(2));
        }
        let mut b = json!({});
        apply_defaults(&schema, &mut b);
        assert_eq!(b, json!({"spec": {"obj": {"list": [1], "n": 3}}}));
    }

    // --- prune -------------------------------------------------------------

    #[test]
    fn pruning_reports_paths() {
        let schema = crontab_schema();
        let mut obj = json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "x", "whatever": 1},
            "junk": true,
            "spec": {
                "cronSpec": "* * * * */5",
                "foo": {"deep": [1, 2]},
                "ports": [{"name": "a"}, {"name": "b", "bar": 1}],
                "extra": {"free": {"form": 1}, "known": {"a": "ok", "b": "gone"}},
                "labels": {"k": "v"},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": "1", "y": "2"}, "other": 1}
            },
            "status": {"ready": true, "phase": "Running"}
        });
        let pruned = prune(&schema, &mut obj);
        assert_eq!(
            pruned,
            vec![
                "junk",
                "spec.foo",
                "spec.ports[1].bar",
                "spec.extra.known.b",
                "spec.template.spec.y",
                "spec.template.other",
                "status.phase",
            ]
        );
        assert_eq!(
            obj,
            json!({
                "apiVersion": "stable.example.com/v1",
                "kind": "CronTab",
                "metadata": {"name": "x", "whatever": 1},
                "spec": {
                    "cronSpec": "* * * * */5",
                    "ports": [{"name": "a"}, {"name": "b"}],
                    "extra": {"free": {"form": 1}, "known": {"a": "ok"}},
                    "labels": {"k": "v"},
                    "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": "1"}}
                },
                "status": {"ready": true}
            })
        );
    }

    #[test]
    fn pruning_without_item_schema_and_additional_true() {
        let schema = json!({"type": "object", "properties": {
            "l": {"type": "array"},
            "m": {"type": "object", "additionalProperties": true}
        }});
        let mut obj = json!({"l": [[{"a": 1}], 3, {"b": 2}], "m": {"x": 1, "y": {"z": 1}}});
        let pruned = prune(&schema, &mut obj);
        assert_eq!(pruned, vec!["l[0][0].a", "l[2].b", "m.y.z"]);
        assert_eq!(obj, json!({"l": [[{}], 3, {}], "m": {"x": 1, "y": {}}}));
    }

    // --- validate ----------------------------------------------------------

    #[test]
    fn valid_object_has_no_errors() {
        let mut obj = valid_object();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("port".into(), json!("http"));
            spec.insert("note".into(), Value::Null);
            spec.insert("tags".into(), json!(["a", "b"]));
            spec.insert("ratio".into(), json!(1.5));
            spec.insert("created".into(), json!("2024-02-29T12:30:00.5+01:00"));
            spec.insert("payload".into(), json!("aGVsbG8="));
            spec.insert("ports".into(), json!([{"name": "a", "port": 1}, {"name": "b", "port": 1}]));
            spec.insert("extra".into(), json!({"anything": [1, {"goes": true}]}));
        }
        let schema = crontab_schema();
        apply_defaults(&schema, &mut obj);
        assert_eq!(prune(&schema, &mut obj), Vec::<String>::new());
        assert_eq!(validate(&schema, &obj), vec![]);
        // integral floats are integers; 1.0 passes
        assert_eq!(errs_for(json!({"replicas": 2.0})), vec![]);
    }

    #[test]
    fn type_error_wording() {
        let errs = errs_for(json!({"replicas": "string"}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueTypeInvalid",
                "spec.replicas",
                "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            )
        );
        let errs = errs_for(json!({"image": 5}));
        assert_eq!(
            only(&errs).message,
            "Invalid value: \"integer\": spec.image in body must be of type string: \"integer\""
        );
        let errs = errs_for(json!({"tags": "a"}));
        assert_eq!(
            only(&errs).message,
            "Invalid value: \"string\": spec.tags in body must be of type array: \"string\""
        );
    }

    #[test]
    fn integer_given_fraction() {
        let errs = errs_for(json!({"replicas": 1.5}));
        assert_eq!(
            errs,
            vec![
                fe(
                    "FieldValueTypeInvalid",
                    "spec.replicas",
                    "Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\""
                ),
                fe(
                    "FieldValueInvalid",
                    "<nil>",
                    "Invalid value: \"\": Checked value must be of type integer (default format) in spec.replicas"
                ),
            ]
        );
    }

    #[test]
    fn required_wording() {
        let mut obj = valid_object();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("cronSpec");
        }
        let errs = validate(&crontab_schema(), &obj);
        assert_eq!(only(&errs), &fe("FieldValueRequired", "spec.cronSpec", "Required value"));
        // required inside list items
        let errs = errs_for(json!({"ports": [{"port": 1}]}));
        assert_eq!(only(&errs), &fe("FieldValueRequired", "spec.ports[0].name", "Required value"));
    }

    #[test]
    fn pattern_wording() {
        let errs = errs_for(json!({"cronSpec": "every minute"}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueInvalid",
                "spec.cronSpec",
                r#"Invalid value: "every minute": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
            )
        );
    }

    #[test]
    fn bounds_wording() {
        let errs = errs_for(json!({"replicas": 11}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueInvalid",
                "spec.replicas",
                "Invalid value: 11: spec.replicas in body should be less than or equal to 10"
            )
        );
        let errs = errs_for(json!({"replicas": 0}));
        assert_eq!(only(&errs).message, "Invalid value: 0: spec.replicas in body should be greater than or equal to 1");
        let errs = errs_for(json!({"ratio": 0}));
        assert_eq!(only(&errs).message, "Invalid value: 0: spec.ratio in body should be greater than 0");
        let errs = errs_for(json!({"ratio": 0.3}));
        assert_eq!(only(&errs).message, "Invalid value: 0.3: spec.ratio in body should be a multiple of 0.5");
        let schema = json!({"type": "object", "properties": {
            "n": {"type": "number", "maximum": 1000000, "exclusiveMaximum": true},
            "m": {"type": "integer", "multipleOf": 5}
        }});
        let errs = validate(&schema, &json!({"n": 2e6, "m": 7}));
        assert_eq!(
            errs,
            vec![
                fe("FieldValueInvalid", "n", "Invalid value: 2e+06: n in body should be less than 1e+06"),
                fe("FieldValueInvalid", "m", "Invalid value: 7: m in body should be a multiple of 5"),
            ]
        );
    }

    #[test]
    fn enum_wording() {
        let errs = errs_for(json!({"policy": "Sometimes"}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueNotSupported",
                "spec.policy",
                "Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            )
        );
        let schema = json!({"type": "object", "properties": {"n": {"type": "number", "enum": [1, 2.5, "x"]}}});
        assert_eq!(validate(&schema, &json!({"n": 1.0})), vec![]);
        let errs = validate(&schema, &json!({"n": 3}));
        assert_eq!(only(&errs).message, "Unsupported value: 3: supported values: \"1\", \"2.5\", \"x\"");
    }

    #[test]
    fn string_length_wording_counts_chars() {
        let errs = errs_for(json!({"image": "a-very-long-image-name-indeed"}));
        assert_eq!(only(&errs), &fe("FieldValueTooLong", "spec.image", "Too long: may not be longer than 25"));
        let errs = errs_for(json!({"image": "a"}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueInvalid",
                "spec.image",
                "Invalid value: \"a\": spec.image in body should be at least 2 chars long"
            )
        );
        // 25 multi-byte characters are within maxLength 25
        assert_eq!(errs_for(json!({"image": "é".repeat(25)})), vec![]);
    }

    #[test]
    fn nullable_and_null() {
        assert_eq!(errs_for(json!({"note": null})), vec![]);
        let errs = errs_for(json!({"image": null}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueTypeInvalid",
                "spec.image",
                "Invalid value: \"null\": spec.image in body must be of type string: \"null\""
            )
        );
    }

    #[test]
    fn int_or_string() {
        assert_eq!(errs_for(json!({"port": 8080})), vec![]);
        assert_eq!(errs_for(json!({"port": "http"})), vec![]);
        let errs = errs_for(json!({"port": true}));
        assert_eq!(
            errs,
            vec![
                fe(
                    "FieldValueTypeInvalid",
                    "spec.port",
                    "Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""
                ),
                fe(
                    "FieldValueInvalid",
                    "<nil>",
                    "Invalid value: \"\": \"spec.port\" must validate at least one schema (anyOf)"
                ),
                fe(
                    "FieldValueTypeInvalid",
                    "spec.port",
                    "Invalid value: \"boolean\": spec.port in body must be of type integer: \"boolean\""
                ),
            ]
        );
    }

    #[test]
    fn list_type_map_and_set() {
        let errs = errs_for(json!({"ports": [{"name": "a"}, {"name": "b"}, {"name": "a"}, {"name": "a"}]}));
        assert_eq!(
            only(&errs),
            &fe("FieldValueDuplicate", "spec.ports[2]", "Duplicate value: map[string]interface {}{\"name\":\"a\"}")
        );
        let errs = errs_for(json!({"tags": ["x", "y", "x"]}));
        assert_eq!(only(&errs), &fe("FieldValueDuplicate", "spec.tags[2]", "Duplicate value: \"x\""));
        let schema = json!({"type": "object", "properties": {"l": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["a", "b"],
            "items": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
        }}});
        let errs = validate(&schema, &json!({"l": [{"b": 1, "a": "x"}, {"a": "x", "b": 2}, {"a": "x", "b": 1}]}));
        assert_eq!(
            only(&errs),
            &fe("FieldValueDuplicate", "l[2]", "Duplicate value: map[string]interface {}{\"a\":\"x\", \"b\":1}")
        );
        let errs = validate(&schema, &json!({"l": [{"a": "x"}, 5]}));
        assert_eq!(
            errs,
            vec![
                fe(
                    "FieldValueTypeInvalid",
                    "l[1]",
                    "Invalid value: \"integer\": l[1] in body must be of type object: \"integer\""
                ),
                fe("FieldValueInvalid", "l[1]", "Invalid value: 5: must be an object for an array of list-type map"),
            ]
        );
    }

    #[test]
    fn item_and_property_counts() {
        let errs = errs_for(json!({"tags": ["a", "b", "c", "d"]}));
        assert_eq!(only(&errs), &fe("FieldValueTooMany", "spec.tags", "Too many: 4: must have at most 3 items"));
        let errs = errs_for(json!({"tags": []}));
        assert_eq!(
            only(&errs),
            &fe("FieldValueInvalid", "spec.tags", "Invalid value: 0: spec.tags in body should have at least 1 items")
        );
        let errs = errs_for(json!({"labels": {"a": "1", "b": "2", "c": "3"}}));
        assert_eq!(only(&errs), &fe("FieldValueTooMany", "spec.labels", "Too many: 3: must have at most 2 items"));
        let errs = errs_for(json!({"labels": {"a": 1}}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueTypeInvalid",
                "spec.labels.a",
                "Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""
            )
        );
        let schema = json!({"type": "object", "properties": {
            "o": {"type": "object", "minProperties": 2, "additionalProperties": false, "properties": {"a": {"type": "string"}}},
            "u": {"type": "array", "uniqueItems": true, "items": {}}
        }});
        let errs = validate(&schema, &json!({"o": {"z": 1}, "u": [{"a": 1}, {"a": 1.0}, {"a": 1}]}));
        assert_eq!(
            errs,
            vec![
                fe("FieldValueInvalid", "o", "Invalid value: 1: o in body should have at least 2 properties"),
                fe("FieldValueInvalid", "o", "Invalid value: \"z\": o.z in body is a forbidden property"),
                fe("FieldValueInvalid", "u", "Invalid value: \"\": u in body shouldn't contain duplicates"),
            ]
        );
    }

    #[test]
    fn formats() {
        let errs = errs_for(json!({"created": "yesterday"}));
        assert_eq!(
            only(&errs),
            &fe(
                "FieldValueTypeInvalid",
                "spec.created",
                "Invalid value: \"yesterday\": spec.created in body must be of type date-time: \"yesterday\""
            )
        );
        assert_eq!(errs_for(json!({"created": "2024-02-30T00:00:00Z"})).len(), 1);
        assert_eq!(errs_for(json!({"created": "2024-01-02T24:00:00Z"})).len(), 1);
        let errs = errs_for(json!({"payload": "not base64!"}));
        assert_eq!(
            only(&errs).message,
            "Invalid value: \"not base64!\": spec.payload in body must be of type byte: \"not base64!\""
        );
        // int32/int64 are stripped by the apiserver: values beyond int32 are fine
        assert_eq!(errs_for(json!({"replicas": 5})), vec![]);
        let schema = json!({"type": "object", "properties": {
            "u": {"type": "string", "format": "uuid"},
            "i": {"type": "string", "format": "ipv4"},
            "c": {"type": "string", "format": "cidr"},
            "h": {"type": "string", "format": "hostname"},
            "d": {"type": "string", "format": "date"},
            "w": {"type": "string", "format": "whatever"}
        }});
        let good = json!({"u": "123e4567-e89b-12d3-a456-426614174000", "i": "10.0.0.1", "c": "10.0.0.0/8", "h": "example.com", "d": "2024-02-29", "w": "x"});
        assert_eq!(validate(&schema, &good), vec![]);
        let bad = json!({"u": "nope", "i": "10.0.0", "c": "10.0.0.0/33", "h": "-bad-", "d": "2023-02-29"});
        assert_eq!(validate(&schema, &bad).len(), 5);
    }

    #[test]
    fn junctors() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "integer", "allOf": [{"minimum": 5}, {"maximum": 10}]},
            "o": {"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]},
            "n": {"type": "string", "not": {"enum": ["forbidden"]}}
        }});
        let errs = validate(&schema, &json!({"a": 4, "o": "ab", "n": "forbidden"}));
        assert_eq!(errs, vec![
            fe("FieldValueInvalid", "a", "Invalid value: 4: a in body should be greater than or equal to 5"),
            fe("FieldValueInvalid", "<nil>", "Invalid value: \"\": \"a\" must validate all the schemas (allOf)"),
            fe("FieldValueInvalid", "<nil>", "Invalid value: \"\": \"o\" must validate one and only one schema (oneOf). Found 2 valid alternatives"),
            fe("FieldValueInvalid", "<nil>", "Invalid value: \"\": \"n\" must not validate the schema (not)"),
        ]);
        let errs = validate(&schema, &json!({"o": "zz"}));
        assert_eq!(
            errs,
            vec![
                fe(
                    "FieldValueInvalid",
                    "<nil>",
                    "Invalid value: \"\": \"o\" must validate one and only one schema (oneOf). Found none valid"
                ),
                fe("FieldValueInvalid", "o", "Invalid value: \"zz\": o in body should match '^a'"),
            ]
        );
    }

    #[test]
    fn root_meta_fields_are_not_validated() {
        let schema = json!({"type": "object", "required": ["metadata", "spec"], "properties": {
            "metadata": {"type": "string"},
            "kind": {"type": "integer"},
            "spec": {"type": "object"}
        }});
        let errs = validate(&schema, &json!({"kind": "CronTab", "metadata": {"name": "x"}}));
        assert_eq!(only(&errs), &fe("FieldValueRequired", "spec", "Required value"));
    }

    #[test]
    fn invalid_and_huge_patterns_do_not_panic() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "string", "pattern": "a("},
            "b": {"type": "string", "pattern": "(a{1000}){1000}"}
        }});
        let errs = validate(&schema, &json!({"a": "x", "b": "y"}));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].message.starts_with(
                "Invalid value: \"x\": a in body should match 'a(, but pattern is invalid: error parsing regexp:"
            ),
            "{errs:#?}"
        );
        assert!(errs[1].message.contains("expression too large"), "{errs:#?}");
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let schemas = [
            json!(null),
            json!(true),
            json!({"type": 5, "properties": [1], "items": "x", "enum": "y", "required": [1, null]}),
            json!({"type": "object", "properties": {"a": 3, "b": {"maxLength": -1, "minimum": "x"}}}),
            json!({"type": "array", "items": [{"type": "string"}], "maxItems": 1.5}),
        ];
        let objects = [json!(null), json!(1), json!("s"), json!([1, [2]]), json!({"a": {"b": 1}, "b": "x"})];
        for s in &schemas {
            let _ = check_structural(s, "");
            for o in &objects {
                let mut o = o.clone();
                let _ = validate(s, &o);
                apply_defaults(s, &mut o);
                let _ = prune(s, &mut o);
            }
        }
    }

    /// Small deterministic generator of schema-like JSON for a panic smoke test.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            let i = usize::try_from(self.next() % xs.len() as u64).unwrap_or(0);
            xs.get(i).copied().unwrap_or("")
        }

        fn value(&mut self, depth: usize) -> Value {
            const KEYS: [&str; 24] = [
                "type",
                "properties",
                "items",
                "additionalProperties",
                "default",
                "enum",
                "nullable",
                "required",
                "pattern",
                "minimum",
                "maximum",
                "multipleOf",
                "maxLength",
                "minItems",
                "anyOf",
                "allOf",
                "oneOf",
                "not",
                "format",
                "x-kubernetes-preserve-unknown-fields",
                "x-kubernetes-int-or-string",
                "x-kubernetes-list-type",
                "x-kubernetes-list-map-keys",
                "x-kubernetes-embedded-resource",
            ];
            const STRS: [&str; 14] = [
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
                "map",
                "set",
                "a",
                "name",
                "date-time",
                "byte",
                "^a+$",
                "(",
            ];
            match self.next() % if depth > 4 { 4 } else { 7 } {
                0 => Value::Null,
                1 => Value::Bool(self.next().is_multiple_of(2)),
                2 => json!(i64::try_from(self.next() % 21).unwrap_or(0) - 10),
                3 => Value::String(self.pick(&STRS).to_string()),
                4 => json!(f64::from(u32::try_from(self.next() % 100).unwrap_or(0)) / 8.0),
                5 => Value::Array((0..self.next() % 4).map(|_| self.value(depth + 1)).collect()),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..self.next() % 5 {
                        let k = if self.next().is_multiple_of(3) { self.pick(&STRS) } else { self.pick(&KEYS) };
                        m.insert(k.to_string(), self.value(depth + 1));
                    }
                    Value::Object(m)
                }
            }
        }
    }

    #[test]
    fn random_inputs_do_not_panic() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let schema = g.value(0);
            let mut obj = g.value(0);
            let _ = check_structural(&schema, "r");
            let _ = validate(&schema, &obj);
            apply_defaults(&schema, &mut obj);
            let _ = prune(&schema, &mut obj);
            let _ = validate(&schema, &obj);
        }
    }

    // --- deep input ------------------------------------------------------

    fn deep_value(depth: usize) -> Value {
        let mut v = json!({"leaf": 1});
        for i in 0..depth {
            if i % 2 == 0 {
                v = Value::Array(vec![v]);
            } else {
                let mut m = Map::new();
                m.insert("spec".into(), v);
                v = Value::Object(m);
            }
        }
        v
    }

    #[test]
    fn deeply_nested_input_is_refused_without_overflow() {
        let schema = crontab_schema();
        // (json! would serialize an interpolated value recursively)
        let mut obj = json!({"apiVersion": "v1", "kind": "CronTab", "spec": {"cronSpec": "* * * * *"}});
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("extra".into(), deep_value(10_000));
        }
        let errs = validate(&schema, &obj);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert!(errs[0].field.starts_with("spec.extra.spec[0].spec[0]"), "{}", errs[0].field);
        assert!(errs[0].message.ends_with("must not be nested deeper than 64 levels"));

        apply_defaults(&schema, &mut obj);
        assert_eq!(prune(&schema, &mut obj), Vec::<String>::new());

        // unknown deep subtree: pruned and dropped without recursion
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("junk".into(), deep_value(10_000));
        }
        assert_eq!(prune(&schema, &mut obj), vec!["spec.junk"]);

        // deep arrays below a schema-less array
        let list_schema = json!({"type": "object", "properties": {"l": {"type": "array"}}});
        let mut nested = json!({"x": 1});
        for _ in 0..10_000 {
            nested = Value::Array(vec![nested]);
        }
        let mut obj2 = json!({});
        if let Some(m) = obj2.as_object_mut() {
            m.insert("l".into(), nested);
        }
        let pruned = prune(&list_schema, &mut obj2);
        assert_eq!(pruned.len(), 1);
        assert!(pruned[0].starts_with("l[0][0]") && pruned[0].ends_with("].x"));
        assert_eq!(validate(&list_schema, &obj2).len(), 1);

        drop_deep(obj);
        drop_deep(obj2);
    }

    #[test]
    fn deep_default_and_enum_values_are_bounded() {
        let deep = deep_value(10_000);
        let schema = json!({"type": "object", "properties": {"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "e": {"type": "array", "items": {"type": "integer"}}}});
        let mut schema = schema;
        if let Some(a) = schema.pointer_mut("/properties/a").and_then(Value::as_object_mut) {
            a.insert("default".into(), deep);
        }
        if let Some(e) = schema.pointer_mut("/properties/e").and_then(Value::as_object_mut) {
            e.insert("enum".into(), Value::Array(vec![deep_value(10_000)]));
        }
        let mut obj = json!({"e": [1]});
        apply_defaults(&schema, &mut obj);
        assert!(obj.get("a").is_none());
        let errs = validate(&schema, &obj);
        assert_eq!(only(&errs).reason, "FieldValueNotSupported");
        let errs = check_structural(&schema, "r");
        assert!(errs.iter().any(|e| e.field == "r.properties[a].default"), "{errs:#?}");
        drop_deep(schema);
    }

    // --- rendering helpers -------------------------------------------------

    #[test]
    fn go_rendering() {
        assert_eq!(go_float(10.0), "10");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1.5e-5), "1.5e-05");
        assert_eq!(go_float(-0.0001), "-0.0001");
        assert_eq!(go_json_float(1.0), "1");
        assert_eq!(go_json_float(1e21), "1e+21");
        assert_eq!(go_json_float(1e-7), "1e-7");
        assert_eq!(go_json_float(123456789.0), "123456789");
        assert_eq!(go_quote("a\"b\\\n\u{1}é\u{200b}"), "\"a\\\"b\\\\\\n\\x01é\\u200b\"");
        assert_eq!(to_go_json(&json!({"b": [1, 2.5, "<"], "a": null})), r#"{"a":null,"b":[1,2.5,"\u003c"]}"#);
        assert_eq!(
            render_value(&json!([1, "x", {"k": null}])),
            "[]interface {}{1, \"x\", map[string]interface {}{\"k\":interface {}(nil)}}"
        );
        assert_eq!(
            FieldError { reason: "FieldValueRequired", field: "spec.a".into(), message: "Required value".into() }
                .to_string(),
            "spec.a: Required value"
        );
    }
}
