//! Walk one message with the field table and build its JSON value.
//!
//! Go's protobuf marshaller writes every non-pointer field, zero or not, while Go's JSON
//! marshaller omits them (`omitempty`) and Go's defaulting treats zero as unset. The wire
//! cannot tell a pointer field from a value field, so zero scalars are dropped — what a
//! JSON client would have sent — except for the pointer fields named below, whose zero
//! means something different from unset (`replicas: 0`, `backoffLimit: 0`,
//! `runAsUser: 0`, `automountServiceAccountToken: false`, `storageClassName: ""` …).

use base64::Engine;
use serde_json::{Map, Number, Value};

use super::wire::{Reader, Wire};
use super::{fields_of, ProtoError, C, F, T};

/// Deeper than any Kubernetes object; bounds recursion on hostile input.
pub const MAX_DEPTH: usize = 64;

/// Pointer integer fields where 0 differs from unset.
const KEEP_ZERO_INT: &[&str] = &[
    "replicas",
    "minReplicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "parallelism",
    "completions",
    "ttlSecondsAfterFinished",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "deletionGracePeriodSeconds",
    "gracePeriodSeconds",
    "expirationSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "defaultMode",
    "mode",
    "priority",
    "partition",
];

/// Pointer booleans whose unset value is true (or means "unknown").
const KEEP_FALSE: &[&str] = &[
    "automountServiceAccountToken",
    "enableServiceLinks",
    "allowPrivilegeEscalation",
    "hostUsers",
    "ready",
    "serving",
    "terminating",
];

/// Pointer strings where "" differs from unset.
const KEEP_EMPTY_STR: &[&str] = &["storageClassName"];

pub struct Envelope<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
    pub content_encoding: String,
}

fn expect(field: &'static str, got: Wire, expected: Wire) -> Result<(), ProtoError> {
    if got == expected {
        Ok(())
    } else {
        Err(ProtoError::Mismatch { field, got, expected })
    }
}

fn utf8(field: &'static str, b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Utf8(field))
}

/// `runtime.Unknown`: typeMeta (1), raw (2), contentEncoding (3), contentType (4).
pub fn envelope(bytes: &[u8]) -> Result<Envelope<'_>, ProtoError> {
    let mut env =
        Envelope { api_version: String::new(), kind: String::new(), raw: &[], content_encoding: String::new() };
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (tag, wire) = r.key()?;
        match tag {
            1 => {
                expect("typeMeta", wire, Wire::Len)?;
                let mut tm = Reader::new(r.bytes()?);
                while !tm.done() {
                    let (t, w) = tm.key()?;
                    match t {
                        1 => {
                            expect("apiVersion", w, Wire::Len)?;
                            env.api_version = utf8("apiVersion", tm.bytes()?)?;
                        }
                        2 => {
                            expect("kind", w, Wire::Len)?;
                            env.kind = utf8("kind", tm.bytes()?)?;
                        }
                        _ => tm.skip(w)?,
                    }
                }
            }
            2 => {
                expect("raw", wire, Wire::Len)?;
                env.raw = r.bytes()?;
            }
            3 => {
                expect("contentEncoding", wire, Wire::Len)?;
                env.content_encoding = utf8("contentEncoding", r.bytes()?)?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(env)
}

/// Field 1's bytes of a one-field wrapper message (RawExtension, FieldsV1, JSON, Quantity).
fn field_one(bytes: &[u8]) -> Result<&[u8], ProtoError> {
    let mut r = Reader::new(bytes);
    let mut out: &[u8] = &[];
    while !r.done() {
        let (tag, wire) = r.key()?;
        if tag == 1 && wire == Wire::Len {
            out = r.bytes()?;
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn raw_json(field: &'static str, b: &[u8]) -> Result<Value, ProtoError> {
    if b.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(b).map_err(|_| ProtoError::RawJson(field))
}

fn int_fields(bytes: &[u8]) -> Result<[i64; 3], ProtoError> {
    let mut out = [0i64; 3];
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (tag, wire) = r.key()?;
        match (tag, wire) {
            (1..=3, Wire::Varint) => out[tag as usize - 1] = r.varint()? as i64,
            _ => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn time(field: &'static str, bytes: &[u8], micros: bool) -> Result<Value, ProtoError> {
    let [seconds, nanos, _] = int_fields(bytes)?;
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let ts =
        jiff::Timestamp::new(seconds, nanos as i32).map_err(|e| ProtoError::Value { field, message: e.to_string() })?;
    Ok(Value::String(if micros {
        format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"))
    } else {
        format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }))
}

/// Go's `time.Duration.String()`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", trim(n as f64 / 1e3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", trim(n as f64 / 1e6));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = trim(rest as f64 / 1e9);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A message's JSON value; the well-known wrappers become the JSON Kubernetes prints.
pub fn message(name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::Depth(MAX_DEPTH));
    }
    match name {
        "apimachinery.pkg.apis.meta.v1.Time" => return time("time", bytes, false),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => return time("microTime", bytes, true),
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            return Ok(Value::String(go_duration(int_fields(bytes)?[0])));
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            return Ok(Value::String(utf8("quantity", field_one(bytes)?)?));
        }
        "apimachinery.pkg.runtime.RawExtension" => return raw_json("raw", field_one(bytes)?),
        "apimachinery.pkg.apis.meta.v1.FieldsV1" => return raw_json("fieldsV1", field_one(bytes)?),
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => return raw_json("JSON", field_one(bytes)?),
        "apimachinery.pkg.util.intstr.IntOrString" => return int_or_string(bytes),
        _ => {}
    }
    let fields = fields_of(name).unwrap_or(&[]);
    let mut out = Map::new();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (tag, wire) = r.key()?;
        let Some(f) = fields.iter().find(|f| f.0 == tag) else {
            r.skip(wire)?;
            continue;
        };
        match f.3 {
            C::One => {
                let v = scalar_or_message(f, &mut r, wire, depth)?;
                if keep(f, &v) {
                    out.insert(f.1.to_string(), v);
                } else {
                    out.remove(f.1);
                }
            }
            C::Many => {
                let arr = out.entry(f.1).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(arr) = arr else {
                    return Err(ProtoError::Value { field: f.1, message: "repeated and single values mixed".into() });
                };
                if wire == Wire::Len && matches!(f.2, T::I32 | T::I64 | T::Bool | T::F64) {
                    // A packed run of numbers.
                    let mut p = Reader::new(r.bytes()?);
                    while !p.done() {
                        let w = if f.2 == T::F64 { Wire::Fixed64 } else { Wire::Varint };
                        arr.push(scalar_or_message(f, &mut p, w, depth)?);
                    }
                } else {
                    arr.push(scalar_or_message(f, &mut r, wire, depth)?);
                }
            }
            C::Map => {
                expect(f.1, wire, Wire::Len)?;
                let mut e = Reader::new(r.bytes()?);
                let (mut key, mut value) = (String::new(), None);
                while !e.done() {
                    let (t, w) = e.key()?;
                    match t {
                        1 => {
                            expect(f.1, w, Wire::Len)?;
                            key = utf8(f.1, e.bytes()?)?;
                        }
                        2 => value = Some(scalar_or_message(f, &mut e, w, depth)?),
                        _ => e.skip(w)?,
                    }
                }
                let value = value.unwrap_or_else(|| zero(f.2));
                let map = out.entry(f.1).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = map {
                    m.insert(key, value);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// A map entry without its value field holds the type's zero value.
fn zero(t: T) -> Value {
    match t {
        T::Str | T::Bytes => Value::String(String::new()),
        T::I32 | T::I64 | T::F64 => Value::from(0),
        T::Bool => Value::Bool(false),
        T::M(_) => Value::Object(Map::new()),
    }
}

fn keep(f: &F, v: &Value) -> bool {
    match v {
        Value::String(s) if s.is_empty() => f.2 != T::Str || KEEP_EMPTY_STR.contains(&f.1),
        Value::Bool(false) => KEEP_FALSE.contains(&f.1),
        Value::Number(n) if f.2 != T::F64 => n.as_i64() != Some(0) || KEEP_ZERO_INT.contains(&f.1),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

fn scalar_or_message(f: &F, r: &mut Reader<'_>, wire: Wire, depth: usize) -> Result<Value, ProtoError> {
    Ok(match f.2 {
        T::Str => {
            expect(f.1, wire, Wire::Len)?;
            Value::String(utf8(f.1, r.bytes()?)?)
        }
        T::Bytes => {
            expect(f.1, wire, Wire::Len)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
        }
        T::I32 => {
            expect(f.1, wire, Wire::Varint)?;
            Value::from(r.varint()? as i64 as i32)
        }
        T::I64 => {
            expect(f.1, wire, Wire::Varint)?;
            Value::from(r.varint()? as i64)
        }
        T::Bool => {
            expect(f.1, wire, Wire::Varint)?;
            Value::Bool(r.varint()? != 0)
        }
        T::F64 => {
            expect(f.1, wire, Wire::Fixed64)?;
            let v = f64::from_bits(r.fixed64()?);
            Value::Number(
                Number::from_f64(v).ok_or(ProtoError::Value { field: f.1, message: format!("{v} is not a number") })?,
            )
        }
        T::M(name) => {
            expect(f.1, wire, Wire::Len)?;
            message(name, r.bytes()?, depth + 1)?
        }
    })
}

/// `IntOrString{type, intVal, strVal}` → a JSON number or string.
fn int_or_string(bytes: &[u8]) -> Result<Value, ProtoError> {
    let mut r = Reader::new(bytes);
    let (mut ty, mut int, mut s) = (0u64, 0i32, String::new());
    while !r.done() {
        let (tag, wire) = r.key()?;
        match (tag, wire) {
            (1, Wire::Varint) => ty = r.varint()?,
            (2, Wire::Varint) => int = r.varint()? as i64 as i32,
            (3, Wire::Len) => s = utf8("strVal", r.bytes()?)?,
            _ => r.skip(wire)?,
        }
    }
    Ok(if ty == 1 { Value::String(s) } else { Value::from(int) })
}

#[cfg(test)]
pub(super) fn duration_for_test(n: i64) -> String {
    go_duration(n)
}
