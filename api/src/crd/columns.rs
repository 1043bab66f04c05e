//! Table columns of custom resources: Name, then the CRD's `additionalPrinterColumns`
//! (Age when it has none), each cell found by the column's JSONPath (the simple subset
//! Kubernetes allows: fields, `[n]` indices and `[?(@.field=="value")]` filters).

use serde_json::{json, Value};

use crate::meta::{age_seconds, human_duration};

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

fn columns(printer_columns: &[Value]) -> Vec<Value> {
    if printer_columns.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        printer_columns.to_vec()
    }
}

/// The column definitions.
pub fn definitions(printer_columns: &[Value]) -> Vec<Value> {
    let mut out = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0}),
    ];
    for c in columns(printer_columns) {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or_default();
        let description = c
            .get("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("Custom resource definition column (in JSONPath format): {path}"));
        out.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": description,
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    out
}

/// One object's cells.
pub fn cells(printer_columns: &[Value], obj: &Value) -> Vec<Value> {
    let mut out = vec![json!(obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))];
    for c in columns(printer_columns) {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or_default();
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
        out.push(match find(obj, path) {
            None | Some(Value::Null) => Value::Null,
            Some(v) => cell(ty, v),
        });
    }
    out
}

fn cell(ty: &str, v: &Value) -> Value {
    match (ty, v) {
        ("string", Value::String(s)) => json!(s),
        // jsonpath prints other values as their JSON text
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => {
            n.as_i64().map(Value::from).or_else(|| n.as_f64().map(|f| json!(f as i64))).unwrap_or(Value::Null)
        }
        ("number", Value::Number(n)) => n.as_f64().map(|f| json!(f)).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => json!(age_seconds(s).map(human_duration).unwrap_or_else(|| "<invalid>".into())),
        _ => Value::Null,
    }
}

/// Evaluate a simple JSONPath (`.a.b[0].c`, `.a[?(@.type=="Ready")].status`); the first
/// match.
pub fn find<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    let mut cur = root;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur.as_array()?.iter().find(|e| {
                    e.get(field.trim())
                        .is_some_and(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()) == want)
                })?;
            } else {
                let key = inner.trim_matches(|c| c == '"' || c == '\'');
                cur = match key.parse::<usize>() {
                    Ok(i) => cur.as_array()?.get(i)?,
                    Err(_) => cur.get(key)?,
                };
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cells_and_defaults() {
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "items": [{"n": "a"}, {"n": "b"}], "m": {"k": 1}},
            "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(find(&o, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(find(&o, ".spec.items[1].n"), Some(&json!("b")));
        assert_eq!(find(&o, r#".status.conditions[?(@.type=="Ready")].status"#), Some(&json!("True")));
        assert_eq!(find(&o, ".spec.nope"), None);
        let cols = vec![
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "M", "type": "string", "jsonPath": ".spec.m"}),
            json!({"name": "Missing", "type": "string", "jsonPath": ".spec.zzz"}),
        ];
        assert_eq!(cells(&cols, &o), vec![json!("x"), json!(3), json!("{\"k\":1}"), Value::Null]);
        let defs = definitions(&[]);
        assert_eq!(defs[1]["name"], "Age");
        assert_eq!(defs[1]["type"], "date");
        assert!(cells(&[], &o)[1].as_str().is_some_and(|a| a.ends_with('y') || a.ends_with('d')));
    }
}
