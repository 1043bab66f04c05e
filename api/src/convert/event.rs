//! events.k8s.io/v1 Event ⇄ core/v1 Event: the same object under other field names
//! (Kubernetes' `pkg/apis/events/v1` conversions).

use serde_json::Value;

use super::{put, take};

/// (events.k8s.io/v1, core/v1) field pairs.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(mut obj: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>, api_version: &str) -> Value {
    let moved: Vec<(&str, Option<Value>)> = pairs.map(|(from, to)| (to, take(&mut obj, from))).collect();
    if let Some(m) = obj.as_object_mut() {
        for (to, v) in moved {
            put(m, to, v);
        }
        m.insert("apiVersion".into(), Value::String(api_version.into()));
        m.insert("kind".into(), Value::String("Event".into()));
    }
    obj
}

pub fn to_events_v1(obj: Value) -> Value {
    let mut out = rename(obj, RENAMES.iter().map(|(v1, core)| (*core, *v1)), "events.k8s.io/v1");
    // core/v1 writes `count: 0`, `source: {}` where events.k8s.io omits them.
    if let Some(m) = out.as_object_mut() {
        if m.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
            m.remove("deprecatedCount");
        }
        if m.get("deprecatedSource").and_then(Value::as_object).is_some_and(|s| s.is_empty()) {
            m.remove("deprecatedSource");
        }
    }
    out
}

pub fn from_events_v1(obj: Value) -> Result<Value, String> {
    if !obj.is_object() {
        return Err("an Event must be a JSON object".into());
    }
    Ok(rename(obj, RENAMES.iter().copied(), "v1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_v1_fields_are_core_fields_under_other_names() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "regarding": {"kind": "Pod", "name": "p"},
            "note": "pulled", "reason": "Pulled", "type": "Normal", "action": "Pull",
            "reportingController": "kubelet", "reportingInstance": "n1", "deprecatedCount": 3});
        let core = from_events_v1(v1.clone()).unwrap();
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["count"], 3);
        assert!(core.get("note").is_none());
        assert_eq!(to_events_v1(core), v1);
    }
}
