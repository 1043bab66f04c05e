//! Schema view: typed, lenient read access to a schema node (a JSON object).

use serde_json::{Map, Value};

use super::number::int_bound;

#[derive(Clone, Copy)]
pub(super) struct Sch<'a>(pub(super) &'a Map<String, Value>);

pub(super) enum Additional<'a> {
    Absent,
    Bool(bool),
    Schema(Sch<'a>),
}

pub(super) fn sch(v: &Value) -> Option<Sch<'_>> {
    v.as_object().map(Sch)
}

impl<'a> Sch<'a> {
    pub(super) fn get(self, k: &str) -> Option<&'a Value> {
        self.0.get(k)
    }

    pub(super) fn flag(self, k: &str) -> bool {
        matches!(self.0.get(k), Some(Value::Bool(true)))
    }

    pub(super) fn str(self, k: &str) -> &'a str {
        self.0.get(k).and_then(Value::as_str).unwrap_or("")
    }

    pub(super) fn opt_str(self, k: &str) -> Option<&'a str> {
        self.0.get(k).and_then(Value::as_str)
    }

    pub(super) fn ty(self) -> &'a str {
        self.str("type")
    }

    pub(super) fn nullable(self) -> bool {
        self.flag("nullable")
    }

    pub(super) fn props(self) -> Option<&'a Map<String, Value>> {
        self.get("properties").and_then(Value::as_object)
    }

    pub(super) fn has_props(self) -> bool {
        self.props().is_some_and(|p| !p.is_empty())
    }

    pub(super) fn prop(self, k: &str) -> Option<Sch<'a>> {
        self.props().and_then(|p| p.get(k)).and_then(sch)
    }

    pub(super) fn items(self) -> Option<Sch<'a>> {
        self.get("items").and_then(sch)
    }

    pub(super) fn additional(self) -> Additional<'a> {
        match self.get("additionalProperties") {
            Some(Value::Bool(b)) => Additional::Bool(*b),
            Some(Value::Object(m)) => Additional::Schema(Sch(m)),
            _ => Additional::Absent,
        }
    }

    pub(super) fn additional_schema(self) -> Option<Sch<'a>> {
        match self.additional() {
            Additional::Schema(s) => Some(s),
            _ => None,
        }
    }

    /// The default value; a JSON null default counts as no default.
    pub(super) fn default_value(self) -> Option<&'a Value> {
        self.get("default").filter(|v| !v.is_null())
    }

    pub(super) fn f64(self, k: &str) -> Option<f64> {
        self.get(k).and_then(Value::as_f64)
    }

    pub(super) fn i64(self, k: &str) -> Option<i64> {
        self.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().and_then(int_bound)))
    }

    pub(super) fn arr(self, k: &str) -> Option<&'a Vec<Value>> {
        self.get(k).and_then(Value::as_array)
    }

    pub(super) fn strings(self, k: &str) -> Vec<&'a str> {
        self.arr(k).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }
}

/// The schema applying to field `k` of an object (property or
/// additionalProperties schema).
pub(super) fn field_schema<'a>(s: Sch<'a>, k: &str) -> Option<Sch<'a>> {
    s.prop(k).or_else(|| s.additional_schema())
}
