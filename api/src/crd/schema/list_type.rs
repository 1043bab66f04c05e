//! x-kubernetes-list-type validation: uniqueness of set elements and map keys.

use std::collections::HashMap;

use serde_json::Value;

use super::render::{go_json, go_json_string, render_value, sharp_map, to_go_json};
use super::sch::{sch, Sch};
use super::values::canon_string;
use super::{
    child, e_invalid, index, is_meta_field, key, mk, ErrType, FieldError, LIST_MAP_KEYS, LIST_TYPE, MAX_DEPTH,
};

pub(super) fn list_types_object_value(
    x: &Value,
    s: Sch<'_>,
    path: &str,
    depth: usize,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
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
