//! autoscaling/v1 HorizontalPodAutoscaler ⇄ autoscaling/v2 (the stored form), as
//! Kubernetes' `pkg/apis/autoscaling/v1` conversions: v1 has one CPU target; every
//! other metric, the current metrics, the conditions and the behavior ride in
//! `autoscaling.alpha.kubernetes.io/*` annotations (in v1's metric shapes) so a v1 client's
//! read-modify-write loses nothing.

use serde_json::{json, Map, Value};

use super::{put, take};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// The CPU target v1 implies when it names none.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// Per metric source: its `type`, its field, and (v1 field, v2 pointer) pairs for the
/// spec and for the status.
struct Source {
    kind: &'static str,
    field: &'static str,
    spec: &'static [(&'static str, &'static str)],
    status: &'static [(&'static str, &'static str)],
}

const SOURCES: &[Source] = &[
    Source {
        kind: "Object",
        field: "object",
        spec: &[
            ("target", "/describedObject"),
            ("metricName", "/metric/name"),
            ("selector", "/metric/selector"),
            ("targetValue", "/target/value"),
            ("averageValue", "/target/averageValue"),
        ],
        status: &[
            ("target", "/describedObject"),
            ("metricName", "/metric/name"),
            ("selector", "/metric/selector"),
            ("currentValue", "/current/value"),
            ("averageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "Pods",
        field: "pods",
        spec: &[
            ("metricName", "/metric/name"),
            ("selector", "/metric/selector"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("metricName", "/metric/name"),
            ("selector", "/metric/selector"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "Resource",
        field: "resource",
        spec: &[
            ("name", "/name"),
            ("targetAverageUtilization", "/target/averageUtilization"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("name", "/name"),
            ("currentAverageUtilization", "/current/averageUtilization"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "ContainerResource",
        field: "containerResource",
        spec: &[
            ("name", "/name"),
            ("container", "/container"),
            ("targetAverageUtilization", "/target/averageUtilization"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("name", "/name"),
            ("container", "/container"),
            ("currentAverageUtilization", "/current/averageUtilization"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
    Source {
        kind: "External",
        field: "external",
        spec: &[
            ("metricName", "/metric/name"),
            ("metricSelector", "/metric/selector"),
            ("targetValue", "/target/value"),
            ("targetAverageValue", "/target/averageValue"),
        ],
        status: &[
            ("metricName", "/metric/name"),
            ("metricSelector", "/metric/selector"),
            ("currentValue", "/current/value"),
            ("currentAverageValue", "/current/averageValue"),
        ],
    },
];

fn source(kind: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.kind == kind)
}

/// Set `obj` at a `/a/b` pointer, creating objects on the way.
fn set_at(obj: &mut Value, pointer: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(m) = cur.as_object_mut() else { return };
        if i + 1 == parts.len() {
            m.insert((*p).to_string(), v);
            return;
        }
        cur = m.entry((*p).to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A v2 metric (spec or status) in v1's shape.
fn metric_to_v1(m: &Value, status: bool) -> Value {
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    if let Some(s) = source(kind) {
        let inner = m.get(s.field).cloned().unwrap_or(Value::Null);
        let mut v1 = Map::new();
        for (f, p) in if status { s.status } else { s.spec } {
            put(&mut v1, f, inner.pointer(p).cloned());
        }
        out.insert(s.field.into(), Value::Object(v1));
    }
    Value::Object(out)
}

/// A v1 metric (spec or status) in v2's shape.
fn metric_from_v1(m: &Value, status: bool) -> Value {
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = json!({"type": kind});
    let Some(s) = source(kind) else { return out };
    let inner = m.get(s.field).cloned().unwrap_or(Value::Null);
    let mut v2 = json!({});
    for (f, p) in if status { s.status } else { s.spec } {
        if let Some(v) = inner.get(*f).filter(|v| !v.is_null()) {
            set_at(&mut v2, p, v.clone());
        }
    }
    if !status {
        let has = |f: &str| inner.get(f).is_some_and(|v| !v.is_null());
        let target_type = match kind {
            "Object" if has("averageValue") => "AverageValue",
            "Object" => "Value",
            "Pods" => "AverageValue",
            "External" if has("targetValue") => "Value",
            "External" => "AverageValue",
            _ if has("targetAverageUtilization") => "Utilization",
            _ => "AverageValue",
        };
        set_at(&mut v2, "/target/type", json!(target_type));
    }
    out[s.field] = v2;
    out
}

fn is_cpu_resource(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
}

fn cpu_target(utilization: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": utilization}}})
}

/// Drop the round-trip annotations (never stored; a v2 client's copy means nothing).
pub fn drop_round_trip_annotations(obj: &mut Value) {
    let Some(ann) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else { return };
    for k in [METRICS, CURRENT_METRICS, CONDITIONS, BEHAVIOR] {
        ann.remove(k);
    }
    if ann.is_empty() {
        if let Some(meta) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            meta.remove("annotations");
        }
    }
}

/// Stored autoscaling/v2 → autoscaling/v1.
pub fn to_v1(mut obj: Value) -> Value {
    drop_round_trip_annotations(&mut obj);
    let spec = take(&mut obj, "spec").unwrap_or(Value::Null);
    let status = take(&mut obj, "status");
    let metrics = spec.get("metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut v1spec = Map::new();
    for f in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        put(&mut v1spec, f, spec.get(f).cloned());
    }
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_resource(m)) {
        put(&mut v1spec, "targetCPUUtilizationPercentage", cpu.pointer("/resource/target/averageUtilization").cloned());
    }
    let others: Vec<Value> = metrics
        .iter()
        .filter(|m| !(is_cpu_resource(m) && m.pointer("/resource/target/averageUtilization").is_some()))
        .map(|m| metric_to_v1(m, false))
        .collect();
    let mut notes: Vec<(&str, String)> = Vec::new();
    if !others.is_empty() {
        notes.push((METRICS, Value::Array(others).to_string()));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.push((BEHAVIOR, b.to_string()));
    }
    let mut v1status = Map::new();
    if let Some(st) = &status {
        for f in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            put(&mut v1status, f, st.get(f).cloned());
        }
        let current = st.get("currentMetrics").and_then(Value::as_array).cloned().unwrap_or_default();
        for m in current.iter().filter(|m| is_cpu_resource(m)) {
            put(
                &mut v1status,
                "currentCPUUtilizationPercentage",
                m.pointer("/resource/current/averageUtilization").cloned(),
            );
        }
        if !current.is_empty() {
            let v1: Vec<Value> = current.iter().map(|m| metric_to_v1(m, true)).collect();
            notes.push((CURRENT_METRICS, Value::Array(v1).to_string()));
        }
        if let Some(c) = st.get("conditions").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            notes.push((CONDITIONS, Value::Array(c.clone()).to_string()));
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!("autoscaling/v1"));
        m.insert("kind".into(), json!("HorizontalPodAutoscaler"));
        m.insert("spec".into(), Value::Object(v1spec));
        if status.is_some() {
            m.insert("status".into(), Value::Object(v1status));
        }
    }
    if !notes.is_empty() {
        let meta = crate::meta::metadata_mut(&mut obj);
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            for (k, v) in notes {
                a.insert(k.into(), Value::String(v));
            }
        }
    }
    obj
}

/// One round-trip annotation, parsed and removed.
fn take_note(obj: &mut Value, key: &str) -> Result<Option<Value>, String> {
    let Some(ann) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let Some(text) = ann.remove(key) else { return Ok(None) };
    if ann.is_empty() {
        if let Some(meta) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            meta.remove("annotations");
        }
    }
    let text = text.as_str().ok_or_else(|| format!("metadata.annotations[{key}]: must be a string"))?.to_string();
    serde_json::from_str(&text).map(Some).map_err(|e| format!("metadata.annotations[{key}]: {e}"))
}

fn array_note(obj: &mut Value, key: &str) -> Result<Option<Vec<Value>>, String> {
    match take_note(obj, key)? {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(format!("metadata.annotations[{key}]: must be a JSON array")),
    }
}

/// autoscaling/v1 → the stored autoscaling/v2.
pub fn from_v1(mut obj: Value) -> Result<Value, String> {
    if !obj.is_object() {
        return Err("a HorizontalPodAutoscaler must be a JSON object".into());
    }
    let spec = take(&mut obj, "spec").unwrap_or(Value::Null);
    let status = take(&mut obj, "status");
    let mut v2spec = Map::new();
    for f in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        put(&mut v2spec, f, spec.get(f).cloned());
    }
    let mut metrics: Vec<Value> =
        array_note(&mut obj, METRICS)?.unwrap_or_default().iter().map(|m| metric_from_v1(m, false)).collect();
    if let Some(cpu) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        metrics.push(cpu_target(cpu.clone()));
    }
    if metrics.is_empty() {
        metrics.push(cpu_target(json!(DEFAULT_CPU_UTILIZATION)));
    }
    v2spec.insert("metrics".into(), Value::Array(metrics));
    put(&mut v2spec, "behavior", take_note(&mut obj, BEHAVIOR)?);
    let current = array_note(&mut obj, CURRENT_METRICS)?;
    let conditions = array_note(&mut obj, CONDITIONS)?;
    let m = obj.as_object_mut().ok_or("a HorizontalPodAutoscaler must be a JSON object")?;
    m.insert("apiVersion".into(), json!("autoscaling/v2"));
    m.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    m.insert("spec".into(), Value::Object(v2spec));
    if let Some(st) = status {
        let mut v2status = Map::new();
        for f in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            put(&mut v2status, f, st.get(f).cloned());
        }
        let current = match current {
            Some(c) => c.iter().map(|m| metric_from_v1(m, true)).collect(),
            None => match st.get("currentCPUUtilizationPercentage").filter(|v| !v.is_null()) {
                Some(u) => {
                    vec![json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}})]
                }
                None => vec![],
            },
        };
        if !current.is_empty() {
            v2status.insert("currentMetrics".into(), Value::Array(current));
        }
        put(&mut v2status, "conditions", conditions.map(Value::Array));
        m.insert("status".into(), Value::Object(v2status));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 10,
                "metrics": [
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "x"}}}, "target": {"type": "Value", "value": "30"}}},
                    {"type": "Object", "object": {"describedObject": {"kind": "Ingress", "name": "i", "apiVersion": "networking.k8s.io/v1"}, "metric": {"name": "rps"}, "target": {"type": "Value", "value": "2k"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {
                "currentReplicas": 3, "desiredReplicas": 4, "observedGeneration": 1,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70, "averageValue": "700m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "12"}}}
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]
            }
        })
    }

    #[test]
    fn v1_shows_the_cpu_target_and_keeps_everything_else_in_annotations() {
        let v1 = to_v1(v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(v1["spec"]["minReplicas"], 2);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 70);
        let ann = &v1["metadata"]["annotations"];
        assert_eq!(ann["team"], "a");
        let others: Value = serde_json::from_str(ann[METRICS].as_str().unwrap()).unwrap();
        assert_eq!(others.as_array().unwrap().len(), 4);
        assert_eq!(others[0], json!({"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}}));
        assert_eq!(others[1]["external"]["targetValue"], "30");
        assert_eq!(others[2]["object"]["target"]["kind"], "Ingress");
        assert_eq!(others[3]["containerResource"]["container"], "app");
    }

    #[test]
    fn a_v1_round_trip_gives_back_the_stored_v2_object() {
        let back = from_v1(to_v1(v2())).unwrap();
        let mut want = v2();
        // v1 lists the CPU target last (Kubernetes' order).
        let metrics = want["spec"]["metrics"].as_array_mut().unwrap();
        let cpu = metrics.remove(1);
        metrics.push(cpu);
        assert_eq!(back, want);
    }

    #[test]
    fn a_plain_v1_object_gets_the_default_cpu_target() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}});
        let v2 = from_v1(v1).unwrap();
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert!(v2.pointer("/metadata/annotations").is_none());
        let v1 = json!({"metadata": {"name": "x", "annotations": {METRICS: "{nope"}}, "spec": {"maxReplicas": 3}});
        assert!(from_v1(v1).unwrap_err().contains("autoscaling.alpha.kubernetes.io/metrics"));
    }
}
