//! Table cells of the autoscaling, policy, quota and discovery kinds, as Kubernetes'
//! `pkg/printers/internalversion/printers.go` fills them (the column lists are in
//! `table.rs`). Objects arrive in their stored form (HPAs as autoscaling/v2).

use serde_json::{json, Value};

use crate::table::{age, arr, int, name, num_text};

/// `2` metrics shown, then "+ N more...".
const SHOWN_METRICS: usize = 2;
/// `3` ports or addresses shown, then "+ N more...".
const SHOWN_ITEMS: usize = 3;

fn text(v: Option<&Value>) -> String {
    v.map(num_text).unwrap_or_default()
}

fn more(list: Vec<String>, count: usize, shown: usize) -> String {
    if count > shown {
        format!("{} + {} more...", list[..shown].join(", "), count - shown)
    } else {
        list.join(", ")
    }
}

/// One metric's `current/target` text.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("");
    let field = match kind {
        "External" => "external",
        "Pods" => "pods",
        "Object" => "object",
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        _ => return "<unknown type>".into(),
    };
    let src = spec.get(field).cloned().unwrap_or(Value::Null);
    let cur = status.and_then(|s| s.get(field));
    let current = |p: &str| cur.and_then(|c| c.pointer(p)).map(num_text).unwrap_or_else(|| "<unknown>".into());
    let target = |p: &str| text(src.pointer(p));
    let avg = src.pointer("/target/averageValue").is_some();
    match kind {
        "External" | "Object" if avg => {
            format!("{}/{} (avg)", current("/current/averageValue"), target("/target/averageValue"))
        }
        "External" | "Object" => format!("{}/{}", current("/current/value"), target("/target/value")),
        "Pods" => format!("{}/{}", current("/current/averageValue"), target("/target/averageValue")),
        _ => {
            let res = text(src.get("name"));
            if avg {
                format!("{res}: {}/{}", current("/current/averageValue"), target("/target/averageValue"))
            } else {
                let now = cur
                    .and_then(|c| c.pointer("/current/averageUtilization"))
                    .map(|u| format!("{}%", num_text(u)))
                    .unwrap_or_else(|| "<unknown>".into());
                let want = src
                    .pointer("/target/averageUtilization")
                    .map(|u| format!("{}%", num_text(u)))
                    .unwrap_or_else(|| "<auto>".into());
                format!("{res}: {now}/{want}")
            }
        }
    }
}

/// Name, Reference, Targets, MinPods, MaxPods, Replicas, Age.
pub(crate) fn hpa_cells(o: &Value) -> Vec<Value> {
    let specs = arr(o, "/spec/metrics");
    let statuses = arr(o, "/status/currentMetrics");
    let targets = if specs.is_empty() {
        "<none>".to_string()
    } else {
        let list: Vec<String> = specs.iter().enumerate().map(|(i, m)| hpa_metric(m, statuses.get(i))).collect();
        more(list, specs.len(), SHOWN_METRICS)
    };
    let reference =
        format!("{}/{}", text(o.pointer("/spec/scaleTargetRef/kind")), text(o.pointer("/spec/scaleTargetRef/name")));
    let min = o.pointer("/spec/minReplicas").map(num_text).unwrap_or_else(|| "<unset>".into());
    vec![
        name(o),
        json!(reference),
        json!(targets),
        json!(min),
        int(o, "/spec/maxReplicas"),
        int(o, "/status/currentReplicas"),
        age(o),
    ]
}

/// Name, Min Available, Max Unavailable, Allowed Disruptions, Age.
pub(crate) fn pdb_cells(o: &Value) -> Vec<Value> {
    let or_na = |p: &str| o.pointer(p).map(num_text).unwrap_or_else(|| "N/A".into());
    vec![
        name(o),
        json!(or_na("/spec/minAvailable")),
        json!(or_na("/spec/maxUnavailable")),
        int(o, "/status/disruptionsAllowed"),
        age(o),
    ]
}

/// Kubernetes' `listWithMoreString`: comma-joined (no space), `<unset>` when empty.
fn list_with_more(list: Vec<String>) -> String {
    let count = list.len();
    if count > SHOWN_ITEMS {
        format!("{} + {} more...", list[..SHOWN_ITEMS].join(","), count - SHOWN_ITEMS)
    } else if count == 0 {
        "<unset>".into()
    } else {
        list.join(",")
    }
}

/// Name, AddressType, Ports, Endpoints, Age.
pub(crate) fn endpoint_slice_cells(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = arr(o, "/ports")
        .iter()
        .map(|p| p.get("port").or_else(|| p.get("name")).map(num_text).unwrap_or_else(|| "*".into()))
        .collect();
    let addrs: Vec<String> =
        arr(o, "/endpoints").iter().flat_map(|e| arr(e, "/addresses").iter().map(num_text)).collect();
    vec![name(o), json!(text(o.get("addressType"))), json!(list_with_more(ports)), json!(list_with_more(addrs)), age(o)]
}

/// Name, Age, Request, Limit: `resource: used/hard` in name order, `limits.*` apart.
pub(crate) fn quota_cells(o: &Value) -> Vec<Value> {
    let hard = o.pointer("/status/hard").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for r in names {
        let used =
            o.pointer("/status/used").and_then(|u| u.get(r.as_str())).map(num_text).unwrap_or_else(|| "0".into());
        let line = format!("{r}: {used}/{}", num_text(&hard[r.as_str()]));
        if r.split('.').next() == Some("limits") && r.contains('.') {
            limits.push(line);
        } else {
            requests.push(line);
        }
    }
    vec![name(o), age(o), json!(requests.join(", ")), json!(limits.join(", "))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_targets_read_like_kubectl() {
        let o = json!({"metadata": {"name": "web"}, "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "3"}}}
        ]}, "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}
        ]}});
        let c = hpa_cells(&o);
        assert_eq!(c[1], "Deployment/web");
        assert_eq!(c[2], "cpu: 12%/50%, <unknown>/10 + 1 more...");
        assert_eq!(c[3], "<unset>");
        assert_eq!(c[4], 5);
        assert_eq!(c[5], 2);
    }

    #[test]
    fn quota_splits_requests_and_limits() {
        let o = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "3", "limits.cpu": "500m"}}});
        let c = quota_cells(&o);
        assert_eq!(c[2], "pods: 3/10, requests.cpu: 0/1");
        assert_eq!(c[3], "limits.cpu: 500m/2");
    }

    #[test]
    fn slices_and_budgets() {
        let s = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        let c = endpoint_slice_cells(&s);
        assert_eq!(c[2], "80");
        assert_eq!(c[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...");
        let empty =
            json!({"metadata": {"name": "e"}, "ports": [{"name": "http"}, {}], "endpoints": [{"addresses": []}]});
        let c = endpoint_slice_cells(&empty);
        assert_eq!((c[2].clone(), c[3].clone()), (json!("http,*"), json!("<unset>")));
        let p = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1}, "status": {"disruptionsAllowed": 0}});
        let c = pdb_cells(&p);
        assert_eq!((c[1].clone(), c[2].clone()), (json!("1"), json!("N/A")));
    }
}
