//! Tests of `check_structural`: structural invariants and the CRD-API rules.

use serde_json::{json, Map, Value};

use super::super::values::drop_deep;
use super::*;

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

    let errs = check_structural(&json!({"type": "object", "properties": {"l": {"type": "array", "items": {}}}}), "r");
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
        fe("FieldValueForbidden", "r.properties[metadata].default", "Forbidden: must not be set in top-level metadata"),
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
        pattern_err
            .message
            .starts_with("Invalid value: \"a(\": must be a valid regular expression, but isn't: error parsing regexp:"),
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
