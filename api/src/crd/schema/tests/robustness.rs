//! Odd, random and deeply nested input: no panics, no stack overflows, bounded work.

use serde_json::{json, Map, Value};

use super::super::values::drop_deep;
use super::*;

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
