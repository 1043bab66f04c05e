//! Tests of `prune`.

use serde_json::json;

use super::*;

#[test]
fn pruning_reports_paths() {
    let schema = crontab_schema();
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "x", "whatever": 1},
        "junk": true,
        "spec": {
            "cronSpec": "* * * * */5",
            "foo": {"deep": [1, 2]},
            "ports": [{"name": "a"}, {"name": "b", "bar": 1}],
            "extra": {"free": {"form": 1}, "known": {"a": "ok", "b": "gone"}},
            "labels": {"k": "v"},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": "1", "y": "2"}, "other": 1}
        },
        "status": {"ready": true, "phase": "Running"}
    });
    let pruned = prune(&schema, &mut obj);
    assert_eq!(
        pruned,
        vec![
            "junk",
            "spec.foo",
            "spec.ports[1].bar",
            "spec.extra.known.b",
            "spec.template.spec.y",
            "spec.template.other",
            "status.phase",
        ]
    );
    assert_eq!(
        obj,
        json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "x", "whatever": 1},
            "spec": {
                "cronSpec": "* * * * */5",
                "ports": [{"name": "a"}, {"name": "b"}],
                "extra": {"free": {"form": 1}, "known": {"a": "ok"}},
                "labels": {"k": "v"},
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": "1"}}
            },
            "status": {"ready": true}
        })
    );
}

#[test]
fn pruning_without_item_schema_and_additional_true() {
    let schema = json!({"type": "object", "properties": {
        "l": {"type": "array"},
        "m": {"type": "object", "additionalProperties": true}
    }});
    let mut obj = json!({"l": [[{"a": 1}], 3, {"b": 2}], "m": {"x": 1, "y": {"z": 1}}});
    let pruned = prune(&schema, &mut obj);
    assert_eq!(pruned, vec!["l[0][0].a", "l[2].b", "m.y.z"]);
    assert_eq!(obj, json!({"l": [[{}], 3, {}], "m": {"x": 1, "y": {}}}));
}
