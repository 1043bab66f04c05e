//! Tests of `validate`: wording of the errors and the checks behind them.

use serde_json::{json, Value};

use super::*;

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
    assert_eq!(only(&errs).message, "Invalid value: \"string\": spec.tags in body must be of type array: \"string\"");
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
    assert_eq!(
        errs,
        vec![
            fe("FieldValueInvalid", "a", "Invalid value: 4: a in body should be greater than or equal to 5"),
            fe("FieldValueInvalid", "<nil>", "Invalid value: \"\": \"a\" must validate all the schemas (allOf)"),
            fe(
                "FieldValueInvalid",
                "<nil>",
                "Invalid value: \"\": \"o\" must validate one and only one schema (oneOf). Found 2 valid alternatives"
            ),
            fe("FieldValueInvalid", "<nil>", "Invalid value: \"\": \"n\" must not validate the schema (not)"),
        ]
    );
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
