//! Field ownership (`metadata.managedFields`) and the merge of server-side apply.
//!
//! A field set is a set of paths; a path step is a field (`f:name`), an element of an
//! associative list by its keys (`k:{"name":"c"}`) or a member of a set (`v:"x"`) — the
//! `FieldsV1` format. Lists with a merge key (Kubernetes' `patchMergeKey`, or a CRD's
//! `x-kubernetes-list-map-keys`) are associative, `finalizers` (and CRD `set` lists) are
//! sets, every other list is atomic (owned whole).
//!
//! Updates (create, PUT, PATCH) give their manager the fields they change; apply gives
//! its manager exactly the fields of its configuration, reports a conflict when it would
//! change a field another manager owns (unless forced), and removes the fields it stopped
//! applying that nobody else owns.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Field(String),
    /// An associative list element: its key fields as a JSON object (sorted keys).
    Key(String),
    /// A set member, as JSON.
    Value(String),
}

pub type Path = Vec<Step>;
pub type FieldSet = BTreeSet<Path>;

/// How a list is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    Map(Vec<String>),
    Set,
    Atomic,
}

/// Where list kinds come from: the built-in merge keys, or a CRD schema.
pub enum Lists<'a> {
    Builtin,
    Schema(&'a Value),
}

fn field_names(path: &[Step]) -> Vec<String> {
    path.iter()
        .filter_map(|s| match s {
            Step::Field(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

impl Lists<'_> {
    fn kind(&self, path: &[Step], field: &str) -> ListKind {
        match self {
            Lists::Builtin => {
                if field == "finalizers" {
                    return ListKind::Set;
                }
                let names = field_names(path);
                match crate::rest::merge_key_at(&names, field) {
                    Some(k) => ListKind::Map(vec![k.to_string()]),
                    None => ListKind::Atomic,
                }
            }
            Lists::Schema(root) => {
                if path.is_empty() && field == "metadata" {
                    return ListKind::Atomic;
                }
                let mut s = *root;
                for step in path.iter().chain(std::iter::once(&Step::Field(field.to_string()))) {
                    s = match step {
                        Step::Field(f) => match s
                            .pointer(&format!("/properties/{f}"))
                            .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                        {
                            Some(x) => x,
                            None => {
                                return if path.first() == Some(&Step::Field("metadata".into())) {
                                    Lists::Builtin.kind(path, field)
                                } else {
                                    ListKind::Atomic
                                }
                            }
                        },
                        Step::Key(_) | Step::Value(_) => match s.get("items") {
                            Some(x) => x,
                            None => return ListKind::Atomic,
                        },
                    };
                }
                match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListKind::Map(
                        s.get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                            .unwrap_or_default(),
                    ),
                    Some("set") => ListKind::Set,
                    _ => ListKind::Atomic,
                }
            }
        }
    }
}

/// Fields no manager owns (Kubernetes resets or ignores them).
fn ignored(path: &[Step], field: &str, status_too: bool) -> bool {
    match path {
        [] => matches!(field, "apiVersion" | "kind") || (status_too && field == "status"),
        [Step::Field(m)] if m == "metadata" => {
            !matches!(field, "labels" | "annotations" | "finalizers" | "ownerReferences")
        }
        _ => false,
    }
}

fn key_of(elem: &Value, keys: &[String]) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in keys {
        m.insert(k.clone(), elem.get(k)?.clone());
    }
    serde_json::to_string(&m).ok()
}

/// The field set of an object (`status_too`: leave `status` out, as the main resource's
/// managers do not own it).
pub fn of_object(obj: &Value, lists: &Lists<'_>, status_too: bool) -> FieldSet {
    let mut out = FieldSet::new();
    walk(obj, &mut Vec::new(), lists, status_too, &mut out, 0);
    out
}

fn walk(v: &Value, path: &mut Path, lists: &Lists<'_>, status_too: bool, out: &mut FieldSet, depth: usize) {
    let Value::Object(m) = v else { return };
    if depth > 64 {
        return;
    }
    for (k, val) in m {
        if ignored(path, k, status_too) {
            continue;
        }
        path.push(Step::Field(k.clone()));
        match val {
            Value::Object(o) if !o.is_empty() => walk(val, path, lists, status_too, out, depth + 1),
            Value::Array(items) => {
                let kind = lists.kind(&path[..path.len() - 1], k);
                match kind {
                    ListKind::Map(keys) if !keys.is_empty() && items.iter().all(|e| key_of(e, &keys).is_some()) => {
                        for e in items {
                            if let Some(key) = key_of(e, &keys) {
                                path.push(Step::Key(key));
                                out.insert(path.clone());
                                walk(e, path, lists, status_too, out, depth + 1);
                                path.pop();
                            }
                        }
                    }
                    ListKind::Set if items.iter().all(|e| !e.is_object() && !e.is_array()) => {
                        for e in items {
                            path.push(Step::Value(e.to_string()));
                            out.insert(path.clone());
                            path.pop();
                        }
                    }
                    _ => {
                        out.insert(path.clone());
                    }
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Step::Field(f) => cur.get(f)?,
            Step::Key(k) => {
                let want: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?.iter().find(|e| want.iter().all(|(kk, vv)| e.get(kk) == Some(vv)))?
            }
            Step::Value(j) => {
                let want: Value = serde_json::from_str(j).ok()?;
                cur.as_array()?.iter().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

/// `.spec.containers[name="c"].image`, as Kubernetes prints a conflicting field.
pub fn path_text(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Step::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

fn step_key(step: &Step) -> String {
    match step {
        Step::Field(f) => format!("f:{f}"),
        Step::Key(k) => format!("k:{k}"),
        Step::Value(v) => format!("v:{v}"),
    }
}

/// FieldsV1 JSON of a set: a member that also has members below it is marked with `"."`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut cur = &mut root;
        for step in path {
            let Value::Object(m) = cur else { break };
            cur = m.entry(step_key(step)).or_insert_with(|| json!({}));
        }
    }
    for path in set {
        let keys: Vec<String> = path.iter().map(step_key).collect();
        let pointer: String = keys.iter().map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1"))).collect();
        if let Some(Value::Object(m)) = root.pointer_mut(&pointer) {
            if !m.is_empty() {
                m.insert(".".into(), json!({}));
            }
        }
    }
    root
}

/// The set a FieldsV1 JSON names.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, out: &mut FieldSet, depth: usize) {
        let Value::Object(m) = v else { return };
        if depth > 64 {
            return;
        }
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            let step = if let Some(f) = k.strip_prefix("f:") {
                Step::Field(f.to_string())
            } else if let Some(j) = k.strip_prefix("k:") {
                Step::Key(j.to_string())
            } else if let Some(j) = k.strip_prefix("v:") {
                Step::Value(j.to_string())
            } else {
                continue;
            };
            path.push(step);
            go(child, path, out, depth + 1);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out, 0);
    out
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Value,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e.get("operation").and_then(Value::as_str).unwrap_or("Update").to_string(),
                api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                time: e.get("time").cloned().unwrap_or(Value::Null),
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            })
        })
        .collect()
}

pub fn set_entries(obj: &mut Value, list: &[Entry]) {
    let v: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)});
            if let Some(s) = &e.subresource {
                m["subresource"] = json!(s);
            }
            m
        })
        .collect();
    let meta = crate::meta::metadata_mut(obj);
    if v.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(v));
    }
}

/// Record an update by `manager` from `old` (None: a create) to `new`: it owns what it
/// changed; others lose what changed or went away. `managedFields` in `new` is replaced.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    lists: &Lists<'_>,
) {
    let main = subresource.is_none();
    let mut list = old.map(entries).unwrap_or_default();
    let new_set = of_object(new, lists, main);
    let old_set = old.map(|o| of_object(o, lists, main)).unwrap_or_default();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p) || !old_set.contains(*p))
        .cloned()
        .collect();
    let gone: FieldSet = old_set.difference(&new_set).cloned().collect();
    if changed.is_empty() && gone.is_empty() && old.is_some() {
        set_entries(new, &list);
        return;
    }
    for e in list.iter_mut() {
        e.fields.retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    let now = json!(crate::meta::now_rfc3339());
    let sub = subresource.map(str::to_string);
    match list.iter_mut().find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub) {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now;
            e.api_version = api_version.to_string();
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now,
            subresource: sub,
            fields: changed,
        }),
    }
    set_entries(new, &list);
}

/// A conflict of an apply: the field and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// Merge `applied` into `live` as server-side apply does for `manager` and return the
/// result, or the conflicts (when not forced).
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    lists: &Lists<'_>,
) -> Result<Value, Vec<Conflict>> {
    let mut list = entries(live);
    let applied_set = of_object(applied, lists, true);
    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.subresource.is_none())
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Conflicts: fields it sets to a new value that another manager owns.
    let mut conflicts = Vec::new();
    for e in list.iter().filter(|e| !(e.manager == manager && e.operation == "Apply") && e.subresource.is_none()) {
        for p in e.fields.intersection(&applied_set) {
            let is_leaf = !matches!(p.last(), Some(Step::Key(_)));
            if is_leaf && value_at(live, p) != value_at(applied, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut out = live.clone();
    // What it stopped applying, and nobody else owns, goes.
    let others: FieldSet = list
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&Path> = previous.difference(&applied_set).filter(|p| !others.contains(*p)).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut out, p);
    }
    merge(&mut out, applied, &mut Vec::new(), lists, 0);
    // Ownership: the applier owns its set; forced conflicts leave their old owners.
    let taken: BTreeSet<&Path> = conflicts.iter().map(|c| &c.path).collect();
    for e in list.iter_mut() {
        e.fields.retain(|p| !taken.contains(p));
    }
    list.retain(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource.is_none()));
    list.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time: json!(crate::meta::now_rfc3339()),
        subresource: None,
        fields: applied_set,
    });
    set_entries(&mut out, &list);
    Ok(out)
}

fn remove_at(v: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut cur = v;
    for s in parent {
        let next = match s {
            Step::Field(f) => cur.get_mut(f),
            Step::Key(_) | Step::Value(_) => {
                let idx = index_of(cur, s);
                match (idx, cur.as_array_mut()) {
                    (Some(i), Some(a)) => a.get_mut(i),
                    _ => None,
                }
            }
        };
        let Some(n) = next else { return };
        cur = n;
    }
    match last {
        Step::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        s => {
            if let (Some(i), Some(a)) = (index_of(cur, s), cur.as_array()) {
                let _ = a;
                if let Some(a) = cur.as_array_mut() {
                    a.remove(i);
                }
            }
        }
    }
}

fn index_of(list: &Value, step: &Step) -> Option<usize> {
    let a = list.as_array()?;
    match step {
        Step::Key(k) => {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            a.iter().position(|e| want.iter().all(|(kk, vv)| e.get(kk) == Some(vv)))
        }
        Step::Value(j) => {
            let want: Value = serde_json::from_str(j).ok()?;
            a.iter().position(|e| *e == want)
        }
        Step::Field(_) => None,
    }
}

/// Merge an applied configuration into an object: maps by key, associative lists by
/// their keys, sets by member, everything else replaced.
fn merge(target: &mut Value, src: &Value, path: &mut Path, lists: &Lists<'_>, depth: usize) {
    let (Value::Object(t), Value::Object(s)) = (&mut *target, src) else {
        *target = src.clone();
        return;
    };
    if depth > 64 {
        return;
    }
    for (k, sv) in s {
        match (t.get_mut(k), sv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => {
                path.push(Step::Field(k.clone()));
                merge(tv, sv, path, lists, depth + 1);
                path.pop();
            }
            (Some(Value::Array(ta)), Value::Array(sa)) => match lists.kind(path, k) {
                ListKind::Map(keys) if !keys.is_empty() => {
                    path.push(Step::Field(k.clone()));
                    for se in sa {
                        let key = key_of(se, &keys);
                        match key
                            .as_ref()
                            .and_then(|key| ta.iter().position(|te| key_of(te, &keys).as_ref() == Some(key)))
                        {
                            Some(i) => {
                                if let Some(te) = ta.get_mut(i) {
                                    merge(te, se, path, lists, depth + 1);
                                }
                            }
                            None => ta.push(se.clone()),
                        }
                    }
                    path.pop();
                }
                ListKind::Set => {
                    for se in sa {
                        if !ta.contains(se) {
                            ta.push(se.clone());
                        }
                    }
                }
                _ => *ta = sa.clone(),
            },
            _ => {
                t.insert(k.clone(), sv.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set = of_object(&deploy(2, "nginx"), &Lists::Builtin, true);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn updates_take_changed_fields_and_apply_conflicts_unless_forced() {
        let lists = Lists::Builtin;
        let mut live = deploy(2, "nginx");
        record_update(None, &mut live, "kubectl-create", "apps/v1", None, &lists);
        // apply with another replica count: conflict with the creator on .spec.replicas
        let applied = deploy(3, "nginx");
        let err = apply(&live, &applied, "ssa", "apps/v1", false, &lists).unwrap_err();
        let texts: Vec<String> = err.iter().map(|c| path_text(&c.path)).collect();
        assert_eq!(texts, [".spec.replicas"]);
        assert_eq!(err[0].manager, "kubectl-create");
        // same values: shared ownership, no conflict
        let same = apply(&live, &deploy(2, "nginx"), "ssa", "apps/v1", false, &lists).unwrap();
        assert_eq!(entries(&same).len(), 2);
        // forced: the applier takes .spec.replicas
        let forced = apply(&live, &applied, "ssa", "apps/v1", true, &lists).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let es = entries(&forced);
        let creator = es.iter().find(|e| e.manager == "kubectl-create").unwrap();
        assert!(!creator.fields.contains(&vec![Step::Field("spec".into()), Step::Field("replicas".into())]));
        // applying again without the label removes it (only ssa... no: the creator owns it too)
        let mut cfg = deploy(3, "nginx");
        cfg["metadata"].as_object_mut().unwrap().remove("labels");
        let out = apply(&forced, &cfg, "ssa", "apps/v1", false, &lists).unwrap();
        assert_eq!(out["metadata"]["labels"]["app"], "web", "still owned by the creator");
        // a field only the applier owned goes away when it stops applying it
        let mut with_extra = cfg.clone();
        with_extra["spec"]["paused"] = json!(true);
        let a = apply(&out, &with_extra, "ssa", "apps/v1", false, &lists).unwrap();
        assert_eq!(a["spec"]["paused"], true);
        let b = apply(&a, &cfg, "ssa", "apps/v1", false, &lists).unwrap();
        assert!(b["spec"].get("paused").is_none(), "{b}");
        // containers merge by name
        let mut two = cfg.clone();
        two["spec"]["template"]["spec"]["containers"] = json!([{"name": "d", "image": "busybox"}]);
        let c = apply(&b, &two, "other", "apps/v1", false, &lists).unwrap();
        assert_eq!(c["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 2);
    }
}
