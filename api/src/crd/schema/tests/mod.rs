//! Unit tests of the schema module, by topic, and the fixtures they share.

mod defaults;
mod prune;
mod render;
mod robustness;
mod structural;
mod validate;

use serde_json::{json, Value};

use super::*;

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
