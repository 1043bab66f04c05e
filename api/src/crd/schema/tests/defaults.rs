//! Tests of `apply_defaults`.

use serde_json::{json, Value};

use super::*;

#[test]
fn defaulting() {
    let schema = crontab_schema();
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "x"},
        "spec": {
            "cronSpec": "* * * * */5",
            "policy": "Forbid",
            "note": null,
            "image": null,
            "ports": [{"name": "http"}, {"name": "https", "port": 8443, "protocol": null}],
            "labels": {"a": null, "b": "set"}
        }
    });
    apply_defaults(&schema, &mut obj);
    assert_eq!(
        obj,
        json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "x"},
            "spec": {
                "cronSpec": "* * * * */5",
                "policy": "Forbid",
                "note": null,
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "https", "port": 8443, "protocol": "TCP"}
                ],
                "labels": {"a": "none", "b": "set"},
                "replicas": 1
            }
        })
    );
    // absent spec: nothing to default into
    let mut empty = json!({"kind": "CronTab"});
    apply_defaults(&schema, &mut empty);
    assert_eq!(empty, json!({"kind": "CronTab"}));
}

#[test]
fn defaulting_deep_copies_and_recurses_into_defaults() {
    let schema = json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "default": {},
        "properties": {"obj": {"type": "object", "default": {"list": [1]}, "properties": {
            "list": {"type": "array", "items": {"type": "integer"}},
            "n": {"type": "integer", "default": 3}
        }}}
    }}});
    let mut a = json!({});
    apply_defaults(&schema, &mut a);
    assert_eq!(a, json!({"spec": {"obj": {"list": [1], "n": 3}}}));
    if let Some(list) = a.pointer_mut("/spec/obj/list").and_then(Value::as_array_mut) {
        list.push(json!(2));
    }
    let mut b = json!({});
    apply_defaults(&schema, &mut b);
    assert_eq!(b, json!({"spec": {"obj": {"list": [1], "n": 3}}}));
}
