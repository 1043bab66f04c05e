//! Defaulting: `default` values and the apiserver's removal of non-nullable nulls.

use serde_json::Value;

use super::sch::{field_schema, sch, Sch};
use super::values::bounded_clone;
use super::MAX_DEPTH;

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
