//! Label selectors (equality- and set-based) and field selectors, parsed as Kubernetes
//! parses them (`apimachinery/pkg/labels/selector.go`, `fields/selector.go`).

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelReq {
    key: String,
    op: LabelOp,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| {
        ApiError::bad_request(format!("unable to parse requirement: {whole:?}: expected a (value, …) set"))
    })?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        if !valid_label_value(v) {
            return Err(ApiError::bad_request(format!("unable to parse requirement: invalid label value {v:?}")));
        }
    }
    Ok(vals)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let bad = |why: &str| ApiError::bad_request(format!("unable to parse requirement: {p:?}: {why}"));
            let req = if let Some(k) = p.strip_prefix('!') {
                LabelReq { key: k.trim().to_string(), op: LabelOp::NotExists }
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelReq { key: k.trim().to_string(), op: LabelOp::NotEq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once("==") {
                LabelReq { key: k.trim().to_string(), op: LabelOp::Eq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once('=') {
                LabelReq { key: k.trim().to_string(), op: LabelOp::Eq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once('>') {
                LabelReq {
                    key: k.trim().to_string(),
                    op: LabelOp::Gt(v.trim().parse().map_err(|_| bad("not an integer"))?),
                }
            } else if let Some((k, v)) = p.split_once('<') {
                LabelReq {
                    key: k.trim().to_string(),
                    op: LabelOp::Lt(v.trim().parse().map_err(|_| bad("not an integer"))?),
                }
            } else if let Some(i) = p.find(" notin ").or_else(|| p.find(" notin(")) {
                LabelReq { key: p[..i].trim().to_string(), op: LabelOp::NotIn(parse_set(&p[i + 6..], p)?) }
            } else if let Some(i) = p.find(" in ").or_else(|| p.find(" in(")) {
                LabelReq { key: p[..i].trim().to_string(), op: LabelOp::In(parse_set(&p[i + 3..], p)?) }
            } else {
                LabelReq { key: p.to_string(), op: LabelOp::Exists }
            };
            if !valid_label_key(&req.key) {
                return Err(bad("invalid label key"));
            }
            if let LabelOp::Eq(v) | LabelOp::NotEq(v) = &req.op {
                if !valid_label_value(v) {
                    return Err(bad("invalid label value"));
                }
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = crate::meta::labels(obj);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match &r.op {
            LabelOp::Exists => get(&r.key).is_some(),
            LabelOp::NotExists => get(&r.key).is_none(),
            LabelOp::Eq(v) => get(&r.key) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(&r.key) != Some(v.as_str()),
            LabelOp::In(vs) => get(&r.key).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelOp::NotIn(vs) => get(&r.key).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelOp::Gt(n) => get(&r.key).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            LabelOp::Lt(n) => get(&r.key).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

/// The fields each kind can be selected on, beyond `metadata.name` and
/// `metadata.namespace` (the kinds' `GetAttrs`/field label conversion functions).
fn kind_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") | ("events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, group: &str, resource: &str) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{part}'; can't understand '{part}'")));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !kind_fields(group, resource).contains(&field)
            {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            reqs.push(FieldReq { field: field.to_string(), value: value.trim().to_string(), negate });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The name this selector pins (`metadata.name=x`), used to narrow a list to one key.
    pub fn pinned_name(&self) -> Option<&str> {
        self.reqs.iter().find(|r| r.field == "metadata.name" && !r.negate).map(|r| r.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negate
        })
    }
}

/// A field's value as a selector compares it: strings as-is, booleans and numbers as text,
/// missing as "" (so `spec.nodeName=` selects unscheduled pods).
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => {
                // Kubernetes defaults these when absent.
                return match path {
                    "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
                    "status.replicas" | "status.successful" => "0".into(),
                    _ => String::new(),
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_of_every_form() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front", "n": "5"}}});
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier,app=web", true),
            ("!missing", true),
            ("missing", false),
            ("n>3", true),
            ("n<3", false),
            ("app in (db),tier", false),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&obj), want, "{sel}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors_know_each_kinds_fields() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("metadata.name=p,spec.nodeName=n1,status.phase!=Failed", "", "pods").unwrap();
        assert!(s.matches(&pod));
        assert_eq!(s.pinned_name(), Some("p"));
        assert!(!FieldSelector::parse("spec.nodeName=", "", "pods").unwrap().matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=x", "", "configmaps").is_err());
        assert!(FieldSelector::parse("metadata.namespace=d", "", "configmaps").unwrap().matches(&pod));
    }
}
