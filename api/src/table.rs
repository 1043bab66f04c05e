//! `kubectl get` output: Tables with the columns Kubernetes prints for each built-in kind
//! (`pkg/printers/internalversion/printers.go`); other kinds get Name and Created At, as
//! Kubernetes' default table convertor gives them.

use serde_json::{json, Value};

use crate::meta::{age_seconds, human_duration, partial_object_metadata};
use crate::resources::ResourceDef;

type Cells = fn(&Value) -> Vec<Value>;
/// (name, type, priority) of each column.
type Columns = &'static [(&'static str, &'static str, i32)];

/// The columns of a kind, and the function filling a row.
fn printer(def: &ResourceDef) -> Option<(Columns, Cells)> {
    Some(match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => (&[("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)], |o| {
            vec![name(o), s(o, "/status/phase"), age(o)]
        }),
        ("", "Pod") => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        ("", "Service") => (
            &[
                ("Name", "string", 0),
                ("Type", "string", 0),
                ("Cluster-IP", "string", 0),
                ("External-IP", "string", 0),
                ("Port(s)", "string", 0),
                ("Age", "string", 0),
                ("Selector", "string", 1),
            ],
            |o| {
                let ports: Vec<String> = arr(o, "/spec/ports")
                    .iter()
                    .map(|p| {
                        let port = p.get("port").map(num_text).unwrap_or_default();
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        match p.get("nodePort") {
                            Some(np) => format!("{port}:{}/{proto}", num_text(np)),
                            None => format!("{port}/{proto}"),
                        }
                    })
                    .collect();
                let external = match o.pointer("/spec/type").and_then(Value::as_str) {
                    Some("LoadBalancer") => "<pending>".to_string(),
                    _ => "<none>".to_string(),
                };
                vec![
                    name(o),
                    s(o, "/spec/type"),
                    json!(str_or(o, "/spec/clusterIP", "<none>")),
                    json!(external),
                    json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
                    age(o),
                    json!(selector_text(o.pointer("/spec/selector"))),
                ]
            },
        ),
        ("", "ConfigMap") => (&[("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)], |o| {
            let n = obj_len(o, "/data") + obj_len(o, "/binaryData");
            vec![name(o), json!(n), age(o)]
        }),
        ("", "Secret") => {
            (&[("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)], |o| {
                vec![name(o), s(o, "/type"), json!(obj_len(o, "/data")), age(o)]
            })
        }
        ("", "ServiceAccount") => (&[("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)], |o| {
            vec![name(o), json!(arr(o, "/secrets").len()), age(o)]
        }),
        ("", "Endpoints") => (&[("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)], |o| {
            let mut eps = Vec::new();
            for subset in arr(o, "/subsets") {
                let ports = subset.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
                for a in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
                    if ports.is_empty() {
                        eps.push(ip.to_string());
                    }
                    for p in &ports {
                        eps.push(format!("{ip}:{}", p.get("port").map(num_text).unwrap_or_default()));
                    }
                }
            }
            let text = if eps.is_empty() {
                "<none>".to_string()
            } else if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name(o), json!(text), age(o)]
        }),
        ("", "Node") => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Roles", "string", 0),
                ("Age", "string", 0),
                ("Version", "string", 0),
                ("Internal-IP", "string", 1),
                ("External-IP", "string", 1),
                ("OS-Image", "string", 1),
                ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1),
            ],
            node_cells,
        ),
        ("" | "events.k8s.io", "Event") => (
            &[
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Subobject", "string", 1),
                ("Source", "string", 1),
                ("Message", "string", 0),
                ("First Seen", "string", 1),
                ("Count", "string", 1),
                ("Name", "string", 1),
            ],
            |o| {
                let last = o
                    .get("lastTimestamp")
                    .and_then(Value::as_str)
                    .or_else(|| o.get("eventTime").and_then(Value::as_str))
                    .and_then(age_seconds)
                    .map(human_duration)
                    .unwrap_or_else(|| "<unknown>".into());
                let first = o.get("firstTimestamp").and_then(Value::as_str).and_then(age_seconds).map(human_duration);
                let kind = o.pointer("/involvedObject/kind").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                let obj_name = o.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or("");
                vec![
                    json!(last),
                    s(o, "/type"),
                    s(o, "/reason"),
                    json!(format!("{kind}/{obj_name}")),
                    s(o, "/involvedObject/fieldPath"),
                    s(o, "/source/component"),
                    s(o, "/message"),
                    json!(first.unwrap_or_else(|| "<unknown>".into())),
                    json!(o.get("count").map(num_text).unwrap_or_else(|| "1".into())),
                    name(o),
                ]
            },
        ),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let mut v = vec![
                    name(o),
                    int(o, "/spec/replicas"),
                    int(o, "/status/replicas"),
                    int(o, "/status/readyReplicas"),
                    age(o),
                ];
                v.extend(template_cells(o));
                v.push(json!(selector_text(o.pointer("/spec/selector"))));
                v
            },
        ),
        ("apps", "Deployment") => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let ready = format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"));
                let mut v = vec![
                    name(o),
                    json!(ready),
                    int(o, "/status/updatedReplicas"),
                    int(o, "/status/availableReplicas"),
                    age(o),
                ];
                v.extend(template_cells(o));
                v.push(json!(selector_text(o.pointer("/spec/selector"))));
                v
            },
        ),
        ("apps", "StatefulSet") => (
            &[
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
            ],
            |o| {
                let ready = format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"));
                let mut v = vec![name(o), json!(ready), age(o)];
                v.extend(template_cells(o));
                v
            },
        ),
        ("apps", "DaemonSet") => (
            &[
                ("Name", "string", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Node Selector", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let ns = o
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<none>".into());
                let mut v = vec![
                    name(o),
                    int(o, "/status/desiredNumberScheduled"),
                    int(o, "/status/currentNumberScheduled"),
                    int(o, "/status/numberReady"),
                    int(o, "/status/updatedNumberScheduled"),
                    int(o, "/status/numberAvailable"),
                    json!(ns),
                    age(o),
                ];
                v.extend(template_cells(o));
                v.push(json!(selector_text(o.pointer("/spec/selector"))));
                v
            },
        ),
        ("batch", "Job") => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                ("Age", "string", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            |o| {
                let conditions = arr(o, "/status/conditions");
                let has = |t: &str| {
                    conditions.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some(t)
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                };
                let status = if has("Complete") {
                    "Complete"
                } else if has("Failed") {
                    "Failed"
                } else if has("Suspended") {
                    "Suspended"
                } else {
                    "Running"
                };
                let completions = match o.pointer("/spec/completions") {
                    Some(c) => format!("{}/{}", i(o, "/status/succeeded"), num_text(c)),
                    None => format!("{}/1", i(o, "/status/succeeded")),
                };
                let duration = match (
                    o.pointer("/status/startTime").and_then(Value::as_str).and_then(age_seconds),
                    o.pointer("/status/completionTime").and_then(Value::as_str).and_then(age_seconds),
                ) {
                    (Some(start), Some(end)) => human_duration(start - end),
                    (Some(start), None) => human_duration(start),
                    _ => String::new(),
                };
                let mut v = vec![name(o), json!(status), json!(completions), json!(duration), age(o)];
                v.extend(template_cells(o));
                v.push(json!(selector_text(o.pointer("/spec/selector"))));
                v
            },
        ),
        ("batch", "CronJob") => (
            &[
                ("Name", "string", 0),
                ("Schedule", "string", 0),
                ("Timezone", "string", 0),
                ("Suspend", "boolean", 0),
                ("Active", "integer", 0),
                ("Last Schedule", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let last = o
                    .pointer("/status/lastScheduleTime")
                    .and_then(Value::as_str)
                    .and_then(age_seconds)
                    .map(human_duration)
                    .unwrap_or_else(|| "<none>".into());
                vec![
                    name(o),
                    s(o, "/spec/schedule"),
                    json!(str_or(o, "/spec/timeZone", "<none>")),
                    json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)),
                    json!(arr(o, "/status/active").len()),
                    json!(last),
                    age(o),
                ]
            },
        ),
        ("coordination.k8s.io", "Lease") => {
            (&[("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)], |o| {
                vec![name(o), s(o, "/spec/holderIdentity"), age(o)]
            })
        }
        ("apps", "ControllerRevision") => (
            &[("Name", "string", 0), ("Controller", "string", 0), ("Revision", "integer", 0), ("Age", "string", 0)],
            |o| {
                let owner = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|r| r.get("controller") == Some(&Value::Bool(true))))
                    .map(|r| {
                        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                        let group = r
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .and_then(|a| a.split_once('/'))
                            .map(|(g, _)| format!(".{g}"))
                            .unwrap_or_default();
                        format!("{kind}{group}/{}", r.get("name").and_then(Value::as_str).unwrap_or(""))
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![name(o), json!(owner), int(o, "/revision"), age(o)]
            },
        ),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding" | "RoleBinding") => (
            &[
                ("Name", "string", 0),
                ("Role", "string", 0),
                ("Age", "string", 0),
                ("Users", "string", 1),
                ("Groups", "string", 1),
                ("ServiceAccounts", "string", 1),
            ],
            |o| {
                let role = format!("{}/{}", str_or(o, "/roleRef/kind", ""), str_or(o, "/roleRef/name", ""));
                let subjects = arr(o, "/subjects");
                let of = |k: &str| {
                    subjects
                        .iter()
                        .filter(|s| s.get("kind").and_then(Value::as_str) == Some(k))
                        .map(|s| {
                            let n = s.get("name").and_then(Value::as_str).unwrap_or("");
                            match (k, s.get("namespace").and_then(Value::as_str)) {
                                ("ServiceAccount", Some(ns)) => format!("{ns}/{n}"),
                                _ => n.to_string(),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                vec![name(o), json!(role), age(o), json!(of("User")), json!(of("Group")), json!(of("ServiceAccount"))]
            },
        ),
        ("", "PersistentVolumeClaim") => (
            &[
                ("Name", "string", 0),
                ("Status", "string", 0),
                ("Volume", "string", 0),
                ("Capacity", "string", 0),
                ("Access Modes", "string", 0),
                ("StorageClass", "string", 0),
                ("VolumeAttributesClass", "string", 0),
                ("Age", "string", 0),
                ("VolumeMode", "string", 1),
            ],
            |o| {
                vec![
                    name(o),
                    s(o, "/status/phase"),
                    s(o, "/spec/volumeName"),
                    s(o, "/status/capacity/storage"),
                    json!(access_modes(o, "/status/accessModes")),
                    s(o, "/spec/storageClassName"),
                    json!(str_or(o, "/spec/volumeAttributesClassName", "<unset>")),
                    age(o),
                    s(o, "/spec/volumeMode"),
                ]
            },
        ),
        ("storage.k8s.io", "StorageClass") => (
            &[
                ("Name", "string", 0),
                ("Provisioner", "string", 0),
                ("ReclaimPolicy", "string", 0),
                ("VolumeBindingMode", "string", 0),
                ("AllowVolumeExpansion", "string", 0),
                ("Age", "string", 0),
            ],
            |o| {
                let default =
                    ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                        .iter()
                        .any(|k| {
                            o.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
                                .and_then(Value::as_str)
                                == Some("true")
                        });
                let n = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                vec![
                    json!(if default { format!("{n} (default)") } else { n.to_string() }),
                    s(o, "/provisioner"),
                    json!(str_or(o, "/reclaimPolicy", "Delete")),
                    json!(str_or(o, "/volumeBindingMode", "Immediate")),
                    json!(o.pointer("/allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
                    age(o),
                ]
            },
        ),
        ("", "PersistentVolume") => (
            &[
                ("Name", "string", 0),
                ("Capacity", "string", 0),
                ("Access Modes", "string", 0),
                ("Reclaim Policy", "string", 0),
                ("Status", "string", 0),
                ("Claim", "string", 0),
                ("StorageClass", "string", 0),
                ("VolumeAttributesClass", "string", 0),
                ("Reason", "string", 0),
                ("Age", "string", 0),
                ("VolumeMode", "string", 1),
            ],
            |o| {
                let claim = match (
                    o.pointer("/spec/claimRef/namespace").and_then(Value::as_str),
                    o.pointer("/spec/claimRef/name").and_then(Value::as_str),
                ) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => String::new(),
                };
                vec![
                    name(o),
                    s(o, "/spec/capacity/storage"),
                    json!(access_modes(o, "/spec/accessModes")),
                    s(o, "/spec/persistentVolumeReclaimPolicy"),
                    s(o, "/status/phase"),
                    json!(claim),
                    s(o, "/spec/storageClassName"),
                    json!(str_or(o, "/spec/volumeAttributesClassName", "<unset>")),
                    s(o, "/status/reason"),
                    age(o),
                    s(o, "/spec/volumeMode"),
                ]
            },
        ),
        ("autoscaling", "HorizontalPodAutoscaler") => (
            &[
                ("Name", "string", 0),
                ("Reference", "string", 0),
                ("Targets", "string", 0),
                ("MinPods", "string", 0),
                ("MaxPods", "integer", 0),
                ("Replicas", "integer", 0),
                ("Age", "string", 0),
            ],
            crate::printers::hpa_cells,
        ),
        ("policy", "PodDisruptionBudget") => (
            &[
                ("Name", "string", 0),
                ("Min Available", "string", 0),
                ("Max Unavailable", "string", 0),
                ("Allowed Disruptions", "integer", 0),
                ("Age", "string", 0),
            ],
            crate::printers::pdb_cells,
        ),
        ("discovery.k8s.io", "EndpointSlice") => (
            &[
                ("Name", "string", 0),
                ("AddressType", "string", 0),
                ("Ports", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "string", 0),
            ],
            crate::printers::endpoint_slice_cells,
        ),
        ("", "ResourceQuota") => (
            &[("Name", "string", 0), ("Age", "string", 0), ("Request", "string", 0), ("Limit", "string", 0)],
            crate::printers::quota_cells,
        ),
        _ => return None,
    })
}

const DEFAULT_COLUMNS: &[(&str, &str, i32)] = &[("Name", "string", 0), ("Created At", "date", 0)];

fn default_cells(o: &Value) -> Vec<Value> {
    vec![name(o), o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)]
}

fn column_defs(cols: &[(&str, &str, i32)]) -> Vec<Value> {
    cols.iter()
        .map(|(n, t, p)| {
            let format = if *n == "Name" { "name" } else { "" };
            json!({"name": n, "type": t, "format": format, "description": description(n), "priority": p})
        })
        .collect()
}

fn description(col: &str) -> &'static str {
    match col {
        "Name" => "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "Age" => "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
        _ => "",
    }
}

/// A Table of `objs` (`with_columns` false for watch events after the first).
pub fn table(def: &ResourceDef, objs: &[Value], list_meta: Value, with_columns: bool) -> Value {
    let (columns, rows): (Vec<Value>, Vec<Value>) = match &def.custom {
        Some(c) => (
            crate::crd::table_columns(&c.printer_columns),
            objs.iter()
                .map(|o| json!({"cells": crate::crd::table_cells(&c.printer_columns, o), "object": partial_object_metadata(o)}))
                .collect(),
        ),
        None => {
            let (cols, cells): (Columns, Cells) = printer(def).unwrap_or((DEFAULT_COLUMNS, default_cells));
            (column_defs(cols), objs.iter().map(|o| json!({"cells": cells(o), "object": partial_object_metadata(o)})).collect())
        }
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { Value::Array(columns) } else { Value::Null },
        "rows": rows,
    })
}

// ---- cell helpers ----

pub(crate) fn name(o: &Value) -> Value {
    json!(o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))
}

pub(crate) fn age(o: &Value) -> Value {
    json!(o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(age_seconds)
        .map(human_duration)
        .unwrap_or_else(|| "<unknown>".into()))
}

fn s(o: &Value, p: &str) -> Value {
    json!(o.pointer(p).and_then(Value::as_str).unwrap_or(""))
}

fn str_or<'a>(o: &'a Value, p: &str, dflt: &'a str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(dflt)
}

fn i(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn int(o: &Value, p: &str) -> Value {
    json!(i(o, p))
}

pub(crate) fn arr<'a>(o: &'a Value, p: &str) -> &'a [Value] {
    o.pointer(p).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn obj_len(o: &Value, p: &str) -> usize {
    o.pointer(p).and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
}

pub(crate) fn num_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn access_modes(o: &Value, p: &str) -> String {
    arr(o, p)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `app=web,tier in (a,b)` from a selector (a map or a LabelSelector).
fn selector_text(sel: Option<&Value>) -> String {
    let Some(sel) = sel.and_then(Value::as_object) else { return "<none>".into() };
    let mut parts = Vec::new();
    let labels = sel.get("matchLabels").and_then(Value::as_object).unwrap_or(sel);
    for (k, v) in labels {
        if let Some(v) = v.as_str() {
            parts.push(format!("{k}={v}"));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let vals: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => parts.push(format!("{key} in ({})", vals.join(","))),
            Some("NotIn") => parts.push(format!("{key} notin ({})", vals.join(","))),
            Some("Exists") => parts.push(key.to_string()),
            Some("DoesNotExist") => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn template_cells(o: &Value) -> Vec<Value> {
    let cs = arr(o, "/spec/template/spec/containers");
    let names: Vec<&str> = cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c.get("image").and_then(Value::as_str)).collect();
    vec![json!(names.join(",")), json!(images.join(","))]
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let total = arr(o, "/spec/containers").len();
    let statuses = arr(o, "/status/containerStatuses");
    let ready = statuses.iter().filter(|c| c.get("ready") == Some(&Value::Bool(true))).count();
    let restarts: i64 = statuses.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).sum();
    let mut reason = o
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or_else(|| o.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    for c in statuses {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(r) = c.pointer("/state/terminated/reason").and_then(Value::as_str) {
            reason = r.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    let gates = arr(o, "/spec/readinessGates");
    let gates_text = if gates.is_empty() { "<none>".to_string() } else { format!("0/{}", gates.len()) };
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        age(o),
        json!(str_or(o, "/status/podIP", "<none>")),
        json!(str_or(o, "/spec/nodeName", "<none>")),
        json!(str_or(o, "/status/nominatedNodeName", "<none>")),
        json!(gates_text),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let ready = arr(o, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .map(|s| if s == "True" { "Ready" } else { "NotReady" })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if o.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = crate::meta::labels(o)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        arr(o, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        name(o),
        json!(status),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        age(o),
        s(o, "/status/nodeInfo/kubeletVersion"),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(str_or(o, "/status/nodeInfo/osImage", "<unknown>")),
        json!(str_or(o, "/status/nodeInfo/kernelVersion", "<unknown>")),
        json!(str_or(o, "/status/nodeInfo/containerRuntimeVersion", "<unknown>")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn deployments_print_kubectls_columns() {
        let r = Registry::builtin();
        let d = r.find("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "web", "creationTimestamp": crate::meta::now_rfc3339()},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(&d, &[obj], json!({"resourceVersion": "5"}), true);
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[1], json!("2/3"));
        assert_eq!(cells[7], json!("app=web"));
        assert_eq!(t["rows"][0]["object"]["kind"], json!("PartialObjectMetadata"));
    }

    #[test]
    fn kinds_without_a_printer_get_name_and_created_at() {
        let r = Registry::builtin();
        let d = r.find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        let t = table(
            &d,
            &[json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}})],
            json!({}),
            true,
        );
        assert_eq!(t["rows"][0]["cells"], json!(["x", "2026-01-01T00:00:00Z"]));
    }
}
