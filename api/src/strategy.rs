//! Per-kind strategies, in one place per kind: Kubernetes' defaults, validation, what a
//! create resets, what an update keeps (`pkg/registry/*/strategy.go`,
//! `pkg/apis/*/v1/defaults.go`).

use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;
use crate::status::ApiError;

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: labels joined by dots, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Names that must be DNS labels (Kubernetes' `ValidateNamespaceName`, services, …).
fn name_is_label(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.plural.as_str()),
        ("", "namespaces") | ("", "services") | ("", "replicationcontrollers")
    )
}

fn set_default(map: &mut Map<String, Value>, key: &str, v: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), v);
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let root = v.as_object_mut()?;
    let e = root.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if e.is_null() {
        *e = Value::Object(Map::new());
    }
    e.as_object_mut()
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                    let last = i.rsplit('/').next().unwrap_or(i);
                    !last.contains(':') && !i.contains('@') || i.ends_with(":latest")
                });
                set_default(c, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// A workload's update strategy, field by field as `SetDefaults_Deployment` (and the
/// StatefulSet and DaemonSet ones): type RollingUpdate when empty, and for RollingUpdate
/// each missing rollingUpdate parameter.
fn default_rolling(spec: &mut Map<String, Value>, field: &str, rolling: Value) {
    let Some(strategy) = spec.entry(field).or_insert_with(|| json!({})).as_object_mut() else { return };
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    let Some(params) = strategy.entry("rollingUpdate").or_insert_with(|| json!({})).as_object_mut() else { return };
    if let Value::Object(defaults) = rolling {
        for (k, v) in defaults {
            set_default(params, &k, v);
        }
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
        default_pod_spec(spec);
    }
}

/// autoscaling/v2's behavior defaults (only when a behavior is given): scale up by
/// 4 pods or 100% per 15 s, at once; scale down by 100% per 15 s after 300 s of calm.
fn default_hpa_behavior(spec: &mut serde_json::Map<String, Value>) {
    let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) else { return };
    let rules = [
        (
            "scaleUp",
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        ),
        ("scaleDown", 300, json!([{"type": "Percent", "value": 100, "periodSeconds": 15}])),
    ];
    for (dir, window, policies) in rules {
        let r = b.entry(dir).or_insert_with(|| json!({}));
        if let Some(r) = r.as_object_mut() {
            set_default(r, "stabilizationWindowSeconds", json!(window));
            set_default(r, "selectPolicy", json!("Max"));
            set_default(r, "policies", policies);
        }
    }
}

/// Kubernetes' defaulting for a new or updated object of this kind.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => {
            let name = crate::meta::name(obj).unwrap_or_default().to_string();
            let meta = crate::meta::metadata_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        ("", "Pod") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec);
                // `serviceAccount` is the deprecated alias: either names the account, and
                // both are written (ServiceAccount admission picks `default` when neither does).
                let named = ["serviceAccountName", "serviceAccount"]
                    .iter()
                    .find_map(|f| spec.get(*f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string));
                if let Some(n) = named {
                    spec.insert("serviceAccountName".into(), json!(n));
                    spec.insert("serviceAccount".into(), json!(n));
                }
                set_default(spec, "enableServiceLinks", json!(true));
                set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
                set_default(spec, "priority", json!(0));
            }
        }
        ("", "Service") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        ("", "Secret") => {
            if let Some(o) = obj.as_object_mut() {
                set_default(o, "type", json!("Opaque"));
            }
        }
        ("", "ReplicationController") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
            }
            default_template(obj);
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                default_rolling(spec, "strategy", json!({"maxUnavailable": "25%", "maxSurge": "25%"}));
            }
            default_template(obj);
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            default_template(obj);
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                default_rolling(spec, "updateStrategy", json!({"partition": 0}));
            }
            default_template(obj);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                default_rolling(spec, "updateStrategy", json!({"maxUnavailable": 1, "maxSurge": 0}));
            }
            default_template(obj);
        }
        ("batch", "Job") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                if spec.get("completions").is_none_or(Value::is_null)
                    && spec.get("parallelism").is_none_or(Value::is_null)
                {
                    spec.insert("completions".into(), json!(1));
                }
                if spec.get("parallelism").is_none_or(Value::is_null) {
                    spec.insert("parallelism".into(), json!(1));
                }
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
            default_template(obj);
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crate::crd::apply_defaults(obj),
        // Stored as autoscaling/v2 (v1 bodies are converted first).
        ("autoscaling", "HorizontalPodAutoscaler") => {
            crate::convert::drop_round_trip_annotations(obj);
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "minReplicas", json!(1));
                if spec.get("metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
                    spec.insert(
                        "metrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                    );
                }
                default_hpa_behavior(spec);
            }
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec").and_then(Value::as_object_mut) {
                default_pod_spec(spec);
            }
        }
        _ => {}
    }
}

/// A new Job's generated selector (Kubernetes' `generateSelector`, unless
/// `spec.manualSelector`): its uid and name as labels on the pod template, and a selector
/// on the uid. Needs the uid, so it runs after the object is stamped.
pub fn generate_job_selector(def: &ResourceDef, obj: &mut Value) {
    if def.group != "batch" || def.kind != "Job" {
        return;
    }
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    // A selector the client wrote is kept (Kubernetes refuses it without manualSelector;
    // keelson treats it as manual).
    let given = obj.pointer("/spec/selector").and_then(Value::as_object).is_some_and(|s| !s.is_empty());
    if given {
        return;
    }
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let name = crate::meta::name(obj).unwrap_or_default().to_string();
    let labels = [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", name.as_str()),
        ("controller-uid", uid.as_str()),
        ("job-name", name.as_str()),
    ];
    if let Some(tmeta) = obj.pointer_mut("/spec/template").and_then(Value::as_object_mut) {
        let meta = tmeta.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let l = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = l.as_object_mut() {
                for (k, v) in labels {
                    l.entry(k).or_insert_with(|| json!(v));
                }
            }
        }
    }
    if let Some(spec) = obj_mut(obj, "spec") {
        spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
    }
}

/// What a create resets: status of kinds whose status is written by controllers.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    if def.has_status() && def.kind != "Namespace" && def.kind != "CustomResourceDefinition" {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    if def.kind == "Pod" && def.group.is_empty() {
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), json!({"phase": "Pending", "qosClass": "BestEffort"}));
        }
    }
    apply_defaults(def, obj);
}

/// Validation shared by create and update → 422 with causes.
pub fn validate(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let name = crate::meta::name(obj).unwrap_or_default();
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push((
            "metadata.name".to_string(),
            "FieldValueRequired".to_string(),
            "Required value: name or generateName is required".to_string(),
        ));
    } else if name_is_label(def) {
        if !is_dns1123_label(name) {
            causes.push((
                "metadata.name".to_string(),
                "FieldValueInvalid".to_string(),
                format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            ));
        }
    } else if !is_dns1123_subdomain(name) && def.group != "rbac.authorization.k8s.io" {
        causes.push((
            "metadata.name".to_string(),
            "FieldValueInvalid".to_string(),
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
    if let Some(labels) = crate::meta::labels(obj) {
        for (k, v) in labels {
            let ok = v.as_str().is_some_and(|s| {
                s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
            if !ok {
                causes.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid".to_string(),
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {k:?})"),
                ));
            }
        }
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => causes.extend(crate::crd::validate(obj)),
        ("", "Pod") => {
            let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
            if containers.is_none_or(|c| c.is_empty()) {
                causes.push(("spec.containers".into(), "FieldValueRequired".into(), "Required value".into()));
            }
            // Every container's name is a DNS label (it becomes a path segment on the kubelet).
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                let all = obj.pointer(&format!("/spec/{list}")).and_then(Value::as_array);
                for (i, c) in all.into_iter().flatten().enumerate() {
                    match c.get("name").and_then(Value::as_str) {
                        None | Some("") => causes.push((
                            format!("spec.{list}[{i}].name"),
                            "FieldValueRequired".into(),
                            "Required value".into(),
                        )),
                        Some(n) if !is_dns1123_label(n) => causes.push((
                            format!("spec.{list}[{i}].name"),
                            "FieldValueInvalid".into(),
                            format!("Invalid value: {}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')", Value::String(n.to_string())),
                        )),
                        Some(_) => {}
                    }
                    if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                        causes.push((
                            format!("spec.{list}[{i}].image"),
                            "FieldValueRequired".into(),
                            "Required value".into(),
                        ));
                    }
                }
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            if obj.pointer("/spec/selector").is_none() {
                causes.push(("spec.selector".into(), "FieldValueRequired".into(), "Required value".into()));
            }
            if obj.pointer("/spec/template/spec/containers").and_then(Value::as_array).is_none_or(|c| c.is_empty()) {
                causes.push((
                    "spec.template.spec.containers".into(),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ));
            }
            if let (Some(sel), labels) = (
                obj.pointer("/spec/selector/matchLabels").and_then(Value::as_object),
                obj.pointer("/spec/template/metadata/labels").and_then(Value::as_object),
            ) {
                let matches = sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !matches {
                    causes.push((
                        "spec.template.metadata.labels".into(),
                        "FieldValueInvalid".into(),
                        format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            labels.map(|l| Value::Object(l.clone())).unwrap_or(Value::Null)
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&def.kind, &def.group, name, causes))
    }
}

/// Fields Kubernetes refuses to change on update.
pub fn validate_update(def: &ResourceDef, new: &Value, old: &Value) -> Result<(), ApiError> {
    let name = crate::meta::name(new).unwrap_or_default();
    let mut causes = Vec::new();
    let immutable: &[&str] = match (def.group.as_str(), def.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => &["/spec/selector"],
        ("batch", "Job") => &["/spec/selector"],
        ("", "Secret" | "ConfigMap") if old.get("immutable") == Some(&Value::Bool(true)) => &["/data", "/binaryData"],
        _ => &[],
    };
    for p in immutable {
        if new.pointer(p) != old.pointer(p) {
            let field = p.trim_start_matches('/').replace('/', ".");
            causes.push((field, "FieldValueInvalid".into(), "Invalid value: field is immutable".into()));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&def.kind, &def.group, name, causes))
    }
}

/// Whether the kind tracks `metadata.generation` against spec changes.
pub fn tracks_generation(obj: &Value) -> bool {
    obj.get("spec").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn names_are_validated_like_kubernetes() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-a"));
        assert!(is_dns1123_subdomain("a.b-c"));
        let r = Registry::builtin();
        let cm = r.find("", "v1", "configmaps").unwrap();
        let e = validate(&cm, &json!({"metadata": {"name": "Bad_Name"}})).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.details.unwrap().causes[0].field.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let r = Registry::builtin();
        let d = r.find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        prepare_create(&d, &mut obj);
        assert_eq!(obj.pointer("/spec/replicas"), Some(&json!(1)));
        assert_eq!(obj.pointer("/spec/strategy/type"), Some(&json!("RollingUpdate")));
        assert_eq!(obj.pointer("/spec/template/spec/restartPolicy"), Some(&json!("Always")));
        assert_eq!(obj.pointer("/spec/template/spec/containers/0/imagePullPolicy"), Some(&json!("Always")));
    }
}
