//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded to the JSON
//! object the rest of the API server handles.
//!
//! kubectl 1.32+ typed commands (`create deployment|configmap|secret|token`, `auth can-i`,
//! `auth whoami`) send protobuf and never fall back to JSON. A body is the 4-byte magic
//! `k8s\0` and a `runtime.Unknown{typeMeta{apiVersion, kind}, raw, contentEncoding,
//! contentType}` whose `raw` is the object's message. Messages are walked with the
//! generated field table in [`fields`] (tag → JSON name → type, from the k8s-pb and
//! k8s-openapi crates; see `scripts/gen-proto-fields.py`), so no reflection is needed.

mod decode;
#[rustfmt::skip]
mod fields;
mod wire;

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

pub use wire::put_varint;

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T {
    Str,
    I32,
    I64,
    Bool,
    F64,
    Bytes,
    /// A message, by its k8s-pb path (`api.core.v1.PodSpec`).
    M(&'static str),
}

/// A field's cardinality: one value, repeated, or a `map<string, T>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C {
    One,
    Many,
    Map,
}

/// One field: tag, JSON name, value type, cardinality.
#[derive(Debug)]
pub struct F(pub u32, pub &'static str, pub T, pub C);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("the body does not start with the protobuf magic number k8s\\0")]
    Magic,
    #[error("the message ends in the middle of a field")]
    Truncated,
    #[error("a varint is longer than 64 bits")]
    VarintOverflow,
    #[error("invalid field number {0}")]
    BadTag(u64),
    #[error("field {tag} has unsupported wire type {wire}")]
    WireType { tag: u32, wire: u8 },
    #[error("field {field} has wire type {got:?}, expected {expected:?}")]
    Mismatch { field: &'static str, got: wire::Wire, expected: wire::Wire },
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("field {0} does not hold valid JSON")]
    RawJson(&'static str),
    #[error("objects nested deeper than {0} levels")]
    Depth(usize),
    #[error("no protobuf message is known for apiVersion {api_version:?} kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("content encoding {0:?} is not supported")]
    ContentEncoding(String),
    #[error("field {field}: {message}")]
    Value { field: &'static str, message: String },
}

/// The protobuf body's magic prefix.
pub const MAGIC: &[u8; 4] = b"k8s\0";

static INDEX: LazyLock<HashMap<String, &'static [F]>> =
    LazyLock::new(|| fields::MESSAGES.iter().map(|(name, f)| (name.to_ascii_lowercase(), *f)).collect());

/// The fields of a message, by k8s-pb path (case-insensitive: prost renames `HostIP` to
/// `HostIp`).
pub fn fields_of(name: &str) -> Option<&'static [F]> {
    INDEX.get(&name.to_ascii_lowercase()).copied()
}

/// The k8s-pb path of an object's message: `apps/v1` `Deployment` → `api.apps.v1.Deployment`.
pub fn message_name(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    format!("{package}.{version}.{kind}")
}

/// Decode a whole protobuf request body to its JSON object (with `apiVersion` and `kind`).
/// `expected` is the (apiVersion, kind) the route serves, used when the envelope leaves
/// its type empty.
pub fn decode_body(bytes: &[u8], expected: Option<(&str, &str)>) -> Result<Value, ProtoError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
    let env = decode::envelope(rest)?;
    if !env.content_encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(env.content_encoding));
    }
    let (api_version, kind) = match (env.api_version.is_empty() || env.kind.is_empty(), expected) {
        (true, Some((a, k))) => (a.to_string(), k.to_string()),
        _ => (env.api_version, env.kind),
    };
    // meta.k8s.io kinds (DeleteOptions …) may arrive under the route's group-version.
    let name = [message_name(&api_version, &kind), format!("apimachinery.pkg.apis.meta.v1.{kind}")]
        .into_iter()
        .find(|n| fields_of(n).is_some())
        .ok_or_else(|| ProtoError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let mut obj = serde_json::Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    if let Value::Object(m) = decode::message(&name, env.raw, 0)? {
        obj.extend(m);
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests;
