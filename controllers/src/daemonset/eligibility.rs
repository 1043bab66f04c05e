//! Which nodes a DaemonSet's pod belongs on (upstream `NodeShouldRunDaemonPod` and its
//! helpers), pure: the pod's `nodeName`, `nodeSelector` and required node affinity must
//! match the node, and its tolerations — the template's plus the DaemonSet defaults — must
//! tolerate the node's `NoSchedule`/`NoExecute` taints. Also the pieces of a daemon pod that
//! pin it to its node: the `metadata.name` node affinity, and reading it back.

use crate::pods::tolerates;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint,
    Toleration,
};

/// `metav1.ObjectNameField`, the one field a node selector's `matchFields` may use.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether a node should run the DaemonSet's pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fit {
    /// A pod should be started there if there is none.
    pub should_run: bool,
    /// A pod already there may stay (it tolerates the node's `NoExecute` taints).
    pub should_continue: bool,
}

/// `FindMatchingUntoleratedTaint`: the first taint passing `filter` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints.iter().filter(|t| filter(t)).find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

/// `Toleration.MatchToleration`: same key, operator, value and effect.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    s(&a.key) == s(&b.key)
        && s(&a.operator) == s(&b.operator)
        && s(&a.value) == s(&b.value)
        && s(&a.effect) == s(&b.effect)
}

/// `AddOrUpdateTolerationInPodSpec`: replace a matching toleration (e.g. one with a
/// `tolerationSeconds`) by `t`, or append `t`.
fn add_or_update_toleration(spec: &mut PodSpec, t: Toleration) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    let mut updated = false;
    for existing in list.iter_mut() {
        if same_toleration(existing, &t) {
            *existing = t.clone();
            updated = true;
        }
    }
    if !updated {
        list.push(t);
    }
}

fn exists(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    }
}

/// `AddOrUpdateDaemonPodTolerations`: daemon pods survive node problems (not-ready and
/// unreachable `NoExecute`) and are placed despite the node-condition `NoSchedule` taints.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    add_or_update_toleration(spec, exists("node.kubernetes.io/not-ready", "NoExecute"));
    add_or_update_toleration(spec, exists("node.kubernetes.io/unreachable", "NoExecute"));
    add_or_update_toleration(spec, exists("node.kubernetes.io/disk-pressure", "NoSchedule"));
    add_or_update_toleration(spec, exists("node.kubernetes.io/memory-pressure", "NoSchedule"));
    add_or_update_toleration(spec, exists("node.kubernetes.io/pid-pressure", "NoSchedule"));
    add_or_update_toleration(spec, exists("node.kubernetes.io/unschedulable", "NoSchedule"));
    if spec.host_network == Some(true) {
        add_or_update_toleration(spec, exists("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
}

/// One node selector requirement, checked against a value (`None`: no such label).
/// `None` when the requirement is invalid (as `nodeSelectorRequirementsAsSelector`).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> Option<bool> {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |v: &str| v.parse::<i64>().ok();
    Some(match r.operator.as_str() {
        "In" if !values.is_empty() => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" if values.is_empty() => value.is_some(),
        "DoesNotExist" if values.is_empty() => value.is_none(),
        "Gt" | "Lt" => {
            let [bound] = values else { return None };
            let bound = int(bound)?;
            match value.and_then(int) {
                None => false,
                Some(n) if r.operator == "Gt" => n > bound,
                Some(n) => n < bound,
            }
        }
        _ => return None,
    })
}

/// One node selector term: every label expression and `metadata.name` field expression
/// holds. A term without requirements, or with an invalid one, matches no node.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels_ok = exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)) == Some(true));
    // Field selectors: only metadata.name, In/NotIn with exactly one value.
    let fields_ok = fields.iter().all(|r| {
        r.key == NODE_NAME_FIELD
            && matches!(r.operator.as_str(), "In" | "NotIn")
            && r.values.as_ref().is_some_and(|v| v.len() == 1)
            && requirement_matches(r, Some(node_name)) == Some(true)
    });
    labels_ok && fields_ok
}

/// `GetRequiredNodeAffinity(pod).Match(node)`: `nodeSelector` and the required node
/// affinity (any term).
pub fn affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, name, &labels)))
}

/// The spec a daemon pod would have: the template's, with the DaemonSet tolerations.
pub fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

/// `NodeShouldRunDaemonPod` for a DaemonSet whose daemon pod spec is `spec`
/// (see [`daemon_pod_spec`]).
pub fn node_fit(spec: &PodSpec, node: &Node) -> Fit {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let pinned = spec.node_name.as_deref().unwrap_or("");
    if !pinned.is_empty() && pinned != name {
        return Fit::default();
    }
    if !affinity_matches(spec, node) {
        return Fit::default();
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let fits_taints =
        untolerated(taints, tolerations, |t| t.effect == "NoExecute" || t.effect == "NoSchedule").is_none();
    if !fits_taints {
        // A running daemon pod stays unless a NoExecute taint evicts it.
        let evicted = untolerated(taints, tolerations, |t| t.effect == "NoExecute").is_some();
        return Fit { should_run: false, should_continue: !evicted };
    }
    Fit { should_run: true, should_continue: true }
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity becomes the single
/// term `metadata.name In [node]` (the scheduler then binds the pod there).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.to_string(),
                operator: "In".to_string(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

/// `GetTargetNodeName`: the node a daemon pod is bound to, or pinned to by its
/// `metadata.name In [node]` affinity (`None`: neither).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for r in term.match_fields.iter().flatten() {
            if r.key == NODE_NAME_FIELD && r.operator == "In" {
                return match r.values.as_deref() {
                    Some([v]) => Some(v.clone()),
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(v).unwrap()
    }

    fn ds_spec(v: serde_json::Value) -> PodSpec {
        let mut s = spec(v);
        add_daemon_tolerations(&mut s);
        s
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let taint = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), time_added: None };
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(&t(json!({"key": "k", "operator": "Equal", "value": "v"})), &taint));
        assert!(tolerates(&t(json!({"key": "k", "value": "v", "effect": "NoSchedule"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &taint));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "other", "operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Bogus"})), &taint));
    }

    #[test]
    fn default_tolerations_are_added_once_and_replace_timed_ones() {
        let mut s = spec(json!({"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "custom", "operator": "Exists"}
        ]}));
        add_daemon_tolerations(&mut s);
        add_daemon_tolerations(&mut s);
        let t = s.tolerations.as_ref().unwrap();
        assert_eq!(t.len(), 7);
        let nr = t.iter().find(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")).unwrap();
        assert_eq!(nr.toleration_seconds, None);
        assert!(!t.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
        let mut h = spec(json!({"hostNetwork": true}));
        add_daemon_tolerations(&mut h);
        assert!(h
            .tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
    }

    #[test]
    fn node_selector_and_required_affinity_must_match() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "cpus": "8"}}}));
        assert!(node_fit(&ds_spec(json!({})), &n).should_run);
        assert!(node_fit(&ds_spec(json!({"nodeSelector": {"disk": "ssd"}})), &n).should_run);
        assert_eq!(node_fit(&ds_spec(json!({"nodeSelector": {"disk": "hdd"}})), &n), Fit::default());
        let aff = |terms: serde_json::Value| {
            ds_spec(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            )
        };
        assert!(
            node_fit(&aff(json!([{"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["4"]}]}])), &n)
                .should_run
        );
        assert!(
            !node_fit(&aff(json!([{"matchExpressions": [{"key": "cpus", "operator": "Lt", "values": ["4"]}]}])), &n)
                .should_run
        );
        // Terms are ORed; an empty term matches nothing; expressions in a term are ANDed.
        assert!(
            node_fit(&aff(json!([{}, {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])), &n).should_run
        );
        assert!(!node_fit(&aff(json!([{}])), &n).should_run);
        assert!(!node_fit(&aff(json!([])), &n).should_run);
        assert!(!node_fit(
            &aff(json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}, {"key": "gpu", "operator": "Exists"}]}])),
            &n
        )
        .should_run);
        assert!(
            node_fit(&aff(json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])), &n).should_run
        );
        assert!(
            node_fit(
                &aff(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])),
                &n
            )
            .should_run
        );
        assert!(
            !node_fit(
                &aff(json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}])),
                &n
            )
            .should_run
        );
        // Invalid requirements match nothing.
        assert!(
            !node_fit(&aff(json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": []}]}])), &n)
                .should_run
        );
        assert!(
            !node_fit(
                &aff(json!([{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}])),
                &n
            )
            .should_run
        );
        // spec.nodeName pins the DaemonSet to one node.
        assert!(node_fit(&ds_spec(json!({"nodeName": "n1"})), &n).should_run);
        assert_eq!(node_fit(&ds_spec(json!({"nodeName": "n2"})), &n), Fit::default());
    }

    #[test]
    fn taints_decide_run_and_continue() {
        let tainted = |key: &str, effect: &str| {
            node(json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": key, "effect": effect}]}}))
        };
        let plain = ds_spec(json!({}));
        // Untolerated NoSchedule: don't start, but keep a running pod.
        assert_eq!(
            node_fit(&plain, &tainted("dedicated", "NoSchedule")),
            Fit { should_run: false, should_continue: true }
        );
        // Untolerated NoExecute: neither.
        assert_eq!(node_fit(&plain, &tainted("dedicated", "NoExecute")), Fit::default());
        // PreferNoSchedule is ignored.
        assert!(node_fit(&plain, &tainted("dedicated", "PreferNoSchedule")).should_run);
        // Default tolerations: node conditions don't keep daemon pods away...
        assert!(node_fit(&plain, &tainted("node.kubernetes.io/unschedulable", "NoSchedule")).should_run);
        assert!(node_fit(&plain, &tainted("node.kubernetes.io/memory-pressure", "NoSchedule")).should_run);
        assert!(node_fit(&plain, &tainted("node.kubernetes.io/unreachable", "NoExecute")).should_run);
        // ...but a not-ready NoSchedule taint does (as upstream), without evicting.
        assert_eq!(
            node_fit(&plain, &tainted("node.kubernetes.io/not-ready", "NoSchedule")),
            Fit { should_run: false, should_continue: true }
        );
        assert!(!node_fit(&plain, &tainted("node.kubernetes.io/network-unavailable", "NoSchedule")).should_run);
        assert!(
            node_fit(
                &ds_spec(json!({"hostNetwork": true})),
                &tainted("node.kubernetes.io/network-unavailable", "NoSchedule")
            )
            .should_run
        );
        let tolerant = ds_spec(json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        assert!(node_fit(&tolerant, &tainted("dedicated", "NoExecute")).should_run);
    }

    #[test]
    fn pinning_replaces_required_affinity_and_reads_back() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [{"key": "b", "operator": "Exists"}]}}]
        }}))
        .unwrap();
        let pinned = pin_to_node(Some(a), "n7");
        let na = pinned.node_affinity.as_ref().unwrap();
        assert_eq!(na.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap().len(), 1);
        let terms = &na.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
        let pod = Pod { spec: Some(PodSpec { affinity: Some(pinned), ..Default::default() }), ..Default::default() };
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
        let bound = Pod {
            spec: Some(PodSpec { node_name: Some("n8".into()), ..pod.spec.clone().unwrap() }),
            ..Default::default()
        };
        assert_eq!(target_node(&bound).as_deref(), Some("n8"));
        assert_eq!(target_node(&Pod { spec: Some(PodSpec::default()), ..Default::default() }), None);
        assert_eq!(
            pin_to_node(None, "x").node_affinity.unwrap().preferred_during_scheduling_ignored_during_execution,
            None
        );
    }
}
