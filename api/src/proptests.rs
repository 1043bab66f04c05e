//! Property tests (proptest; failing cases are kept under proptest-regressions/): the
//! patch engines, server-side apply's merge, body decoders and CRD schema functions never
//! panic on arbitrary JSON, and a merge patch made of an object's own fields is a no-op.

use crate::body::media;
use crate::managed::{apply, of_object, record_update, Lists};
use crate::rest::apply_patch;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Arbitrary JSON, biased towards Kubernetes-looking keys so merges meet lists by key.
fn value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name".to_string()),
        Just("spec".to_string()),
        Just("containers".to_string()),
        Just("ports".to_string()),
        Just("metadata".to_string()),
        Just("finalizers".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9]{0,4}".prop_map(Value::String),
        Just(json!("delete")),
        Just(json!("replace")),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    value().prop_map(|v| match v {
        Value::Object(mut m) => {
            m.insert("apiVersion".into(), json!("v1"));
            Value::Object(m)
        }
        other => json!({"apiVersion": "v1", "spec": other}),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn patch_engines_never_panic(target in object(), patch in value()) {
        let bytes = serde_json::to_vec(&patch).unwrap();
        for m in ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"] {
            let mut t = target.clone();
            let _ = apply_patch(media(Some(m)).unwrap(), &mut t, &bytes);
        }
    }

    #[test]
    fn apply_and_update_tracking_never_panic(live in object(), cfg in object(), force in any::<bool>()) {
        let mut tracked = live.clone();
        record_update(None, &mut tracked, "creator", "v1", None, &Lists::Builtin);
        let _ = apply(&tracked, &cfg, "applier", "v1", force, &Lists::Builtin);
        let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let _ = apply(&tracked, &cfg, "applier", "v1", force, &Lists::Schema(&schema));
        let _ = of_object(&cfg, &Lists::Builtin, true);
    }

    #[test]
    fn crd_schema_functions_never_panic(schema in object(), obj in object()) {
        use crate::crd::schema;
        let _ = schema::check_structural(&schema, "spec.versions[0].schema.openAPIV3Schema");
        let mut o = obj.clone();
        schema::apply_defaults(&schema, &mut o);
        let _ = schema::prune(&schema, &mut o);
        let _ = schema::validate(&schema, &o);
    }

    /// Merging an object's own content is a no-op for the merge engines.
    #[test]
    fn merging_an_object_into_itself_changes_nothing(target in object()) {
        let bytes = serde_json::to_vec(&target).unwrap();
        let mut t = target.clone();
        if apply_patch(media(Some("application/merge-patch+json")).unwrap(), &mut t, &bytes).is_ok() && !has_null(&target) {
            prop_assert_eq!(t, target);
        }
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}
