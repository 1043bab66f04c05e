//! The taints the node lifecycle controller owns, from the node's conditions: `NoSchedule`
//! ones for every unhealthy condition and for `spec.unschedulable` (upstream's
//! `doNoScheduleTaintingPass`), and the `NoExecute` `not-ready` / `unreachable` ones that
//! evict pods (`processTaintBaseEviction`). Pure.

use k8s_openapi::{
    api::core::v1::{Node, Taint},
    apimachinery::pkg::apis::meta::v1::Time,
};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// (condition type, status) → the taint key it calls for.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", MEMORY_PRESSURE),
    ("DiskPressure", "True", DISK_PRESSURE),
    ("NetworkUnavailable", "True", NETWORK_UNAVAILABLE),
    ("PIDPressure", "True", PID_PRESSURE),
];

/// Whether the controller owns this taint (adds and removes it).
pub fn is_managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        NO_SCHEDULE => t.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key),
        NO_EXECUTE => t.key == NOT_READY || t.key == UNREACHABLE,
        _ => false,
    }
}

/// The managed taints the node should have, as (key, effect).
pub fn desired(node: &Node) -> Vec<(&'static str, &'static str)> {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let mut out = vec![];
    for c in conds {
        if let Some((_, _, key)) = CONDITION_TAINTS.iter().find(|(t, s, _)| *t == c.type_ && *s == c.status) {
            out.push((*key, NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        out.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    match conds.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str()) {
        Some("False") => out.push((NOT_READY, NO_EXECUTE)),
        Some("Unknown") => out.push((UNREACHABLE, NO_EXECUTE)),
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The node's new taint list if its managed taints are not as [`desired`]: others kept,
/// managed ones still wanted kept as they are (their `timeAdded` too), new ones added now.
pub fn reconcile(node: &Node, now: &Time) -> Option<Vec<Taint>> {
    let want = desired(node);
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let wanted = |t: &Taint| want.iter().any(|(k, e)| t.key == *k && t.effect == *e);
    let mut out: Vec<Taint> = current.iter().filter(|t| !is_managed(t) || wanted(t)).cloned().collect();
    let removed = out.len() != current.len();
    let mut added = false;
    for (key, effect) in &want {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                time_added: Some(now.clone()),
                value: None,
            });
            added = true;
        }
    }
    (removed || added).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::health::tests::{node, t};
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec};

    fn keys(ts: &[Taint]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = ts.iter().map(|t| (t.key.clone(), t.effect.clone())).collect();
        v.sort();
        v
    }

    #[test]
    fn unreachable_node_gets_both_unreachable_taints() {
        let n = node(Some(("Unknown", 0)));
        let taints = reconcile(&n, &Time(t(5))).unwrap();
        assert_eq!(
            keys(&taints),
            vec![(UNREACHABLE.into(), NO_EXECUTE.into()), (UNREACHABLE.into(), NO_SCHEDULE.into())]
        );
        assert!(taints.iter().all(|t| t.time_added.is_some()));
    }

    #[test]
    fn not_ready_swaps_for_unreachable_and_healthy_clears() {
        let mut n = node(Some(("Unknown", 0)));
        n.spec = Some(NodeSpec {
            taints: Some(vec![
                Taint { key: UNREACHABLE.into(), effect: NO_EXECUTE.into(), time_added: Some(Time(t(1))), value: None },
                Taint { key: "user/keep".into(), effect: NO_EXECUTE.into(), time_added: None, value: Some("x".into()) },
            ]),
            ..Default::default()
        });
        // Still unreachable: only the NoSchedule one is missing; the NoExecute keeps its time.
        let taints = reconcile(&n, &Time(t(5))).unwrap();
        let ne = taints.iter().find(|x| x.key == UNREACHABLE && x.effect == NO_EXECUTE).unwrap();
        assert_eq!(ne.time_added, Some(Time(t(1))));
        n.spec.as_mut().unwrap().taints = Some(taints);
        assert_eq!(reconcile(&n, &Time(t(6))), None);

        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let taints = reconcile(&n, &Time(t(7))).unwrap();
        assert_eq!(
            keys(&taints),
            vec![
                (NOT_READY.into(), NO_EXECUTE.into()),
                (NOT_READY.into(), NO_SCHEDULE.into()),
                ("user/keep".into(), NO_EXECUTE.into())
            ]
        );
        n.spec.as_mut().unwrap().taints = Some(taints);
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let taints = reconcile(&n, &Time(t(8))).unwrap();
        assert_eq!(keys(&taints), vec![("user/keep".into(), NO_EXECUTE.into())]);
    }

    #[test]
    fn pressure_and_unschedulable_are_no_schedule() {
        let mut n = node(Some(("True", 0)));
        n.status.as_mut().unwrap().conditions.as_mut().unwrap().push(NodeCondition {
            type_: "DiskPressure".into(),
            status: "True".into(),
            ..Default::default()
        });
        n.spec = Some(NodeSpec { unschedulable: Some(true), ..Default::default() });
        let taints = reconcile(&n, &Time(t(1))).unwrap();
        assert_eq!(
            keys(&taints),
            vec![(DISK_PRESSURE.into(), NO_SCHEDULE.into()), (UNSCHEDULABLE.into(), NO_SCHEDULE.into())]
        );
        // A node that never posted a status gets nothing yet.
        assert_eq!(reconcile(&node(None), &Time(t(1))), None);
    }
}
