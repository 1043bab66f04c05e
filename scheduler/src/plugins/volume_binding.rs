//! VolumeBinding: a pod's PersistentVolumeClaims decide where it may go, like upstream's
//! plugin with dynamic provisioning (no static volume matching: nothing here binds
//! pre-made volumes to claims).
//!
//! - PreFilter: every claim must exist and not be being deleted (or lost); a claim not yet
//!   bound must be of a WaitForFirstConsumer class — other unbound claims wait for
//!   something else to bind them, and the pod is unschedulable until then.
//! - Filter: a bound claim's volume must exist and its node affinity match the node; an
//!   unbound claim must be provisionable there (its class provisions volumes and allows
//!   the node's topology), and if a node was already selected for it, only that node fits.
//! - Before binding the pod the chosen node is written to each unbound claim
//!   ([`ANN_SELECTED_NODE`]): the provisioner of that node then makes its volume.

use std::sync::Arc;

use crate::{
    framework::{FilterResult, Rejection},
    node_info::NodeData,
    pod_info::PodInfo,
    volumes::{ClaimData, ClassData, VolumeCache, VolumeData},
};

pub use crate::volumes::ANN_SELECTED_NODE;

/// A bound claim's volume cannot be used from the node (`ErrReasonNodeConflict`).
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// An unbound claim cannot get a volume on the node (`ErrReasonBindConflict`).
pub const ERR_REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A bound claim's volume does not exist (`ErrReasonPVNotExist`).
pub const ERR_REASON_PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// PreFilter: an unbound claim that this scheduler cannot bind.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// A bound claim and its volume (`None`: the volume does not exist).
#[derive(Debug, Clone)]
pub struct BoundClaim {
    pub claim: Arc<ClaimData>,
    pub volume: Option<Arc<VolumeData>>,
}

/// An unbound claim of a WaitForFirstConsumer class, and that class.
#[derive(Debug, Clone)]
pub struct DelayedClaim {
    pub claim: Arc<ClaimData>,
    pub class: Option<Arc<ClassData>>,
}

/// What PreFilter found, for Filter to check against each node.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub bound: Vec<BoundClaim>,
    pub delayed: Vec<DelayedClaim>,
}

/// PreFilter: `Ok(None)` when the pod uses no claims; `Err(message)` when no node can fit.
pub fn pre_filter(pod: &PodInfo, cache: &VolumeCache) -> Result<Option<State>, String> {
    if pod.claims.is_empty() {
        return Ok(None);
    }
    let mut state = State::default();
    let mut immediate = false;
    for pc in &pod.claims {
        let key = format!("{}/{}", pod.namespace, pc.name);
        let Some(claim) = cache.claim(&key) else {
            return Err(if pc.ephemeral {
                format!("waiting for ephemeral volume controller to create the persistentvolumeclaim {:?}", pc.name)
            } else {
                format!("persistentvolumeclaim {:?} not found", pc.name)
            });
        };
        if claim.lost {
            return Err(format!(
                "persistentvolumeclaim {:?} bound to non-existent persistentvolume {:?}",
                claim.name, claim.volume_name
            ));
        }
        if claim.deleting {
            return Err(format!("persistentvolumeclaim {:?} is being deleted", claim.name));
        }
        if pc.ephemeral && claim.controller_uid.as_deref() != Some(pod.uid.as_str()) {
            return Err(format!("PVC {} was not created for pod {} (pod is not owner)", claim.key, pod.key));
        }
        if claim.bound {
            let volume = cache.volume(&claim.volume_name).cloned();
            state.bound.push(BoundClaim { claim, volume });
            continue;
        }
        // `IsDelayBindingMode`: no class, or an unknown one, binds immediately.
        let class = if claim.class.is_empty() { None } else { cache.class(&claim.class).cloned() };
        match class {
            Some(c) if c.wait_for_first_consumer && claim.volume_name.is_empty() => {
                state.delayed.push(DelayedClaim { claim, class: Some(c) })
            }
            _ => immediate = true,
        }
    }
    if immediate {
        return Err(ERR_UNBOUND_IMMEDIATE.to_string());
    }
    Ok(Some(state))
}

/// Filter (`FindPodVolumes`): whether the pod's claims can be used (or provisioned) on `node`.
pub fn filter(state: &State, node: &NodeData) -> FilterResult {
    let (mut bound_ok, mut volumes_found, mut unbound_ok) = (true, true, true);
    for b in &state.bound {
        match &b.volume {
            None => {
                volumes_found = false;
                break;
            }
            Some(v) if !v.fits(&node.name, &node.labels) => {
                bound_ok = false;
                break;
            }
            Some(_) => {}
        }
    }
    for d in &state.delayed {
        let placed_elsewhere = d.claim.selected_node.as_ref().is_some_and(|n| *n != node.name);
        let provisionable = d.class.as_ref().is_some_and(|c| c.provisions() && c.allows(&node.labels));
        if placed_elsewhere || !provisionable {
            unbound_ok = false;
            break;
        }
    }
    let mut reasons = Vec::new();
    if !bound_ok {
        reasons.push(ERR_REASON_NODE_CONFLICT.into());
    }
    if !unbound_ok {
        reasons.push(ERR_REASON_BIND_CONFLICT.into());
    }
    if !volumes_found {
        reasons.push(ERR_REASON_PV_NOT_EXIST.into());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection { code: crate::framework::Code::UnschedulableAndUnresolvable, reasons })
    }
}

/// The claims (keys) to annotate with [`ANN_SELECTED_NODE`] before binding the pod to
/// `node` (`AssumePodVolumes`): its unbound claims that do not name the node yet.
pub fn claims_to_select(state: &State, node: &str) -> Vec<String> {
    state
        .delayed
        .iter()
        .filter(|d| d.claim.selected_node.as_deref() != Some(node))
        .map(|d| d.claim.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{framework::Code, testutil::*, volumes::TopologyTerm};
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimVolumeSource, Pod,
        Volume,
    };

    fn with_claims(claims: &[&str]) -> Pod {
        let mut p = pod("d", "p", &[]);
        spec_mut(&mut p).volumes = Some(
            claims
                .iter()
                .map(|c| Volume {
                    name: format!("v-{c}"),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: c.to_string(),
                        read_only: None,
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        p
    }

    fn claim(name: &str, class: &str) -> ClaimData {
        ClaimData {
            key: format!("d/{name}"),
            name: name.into(),
            uid: format!("uid-{name}"),
            class: class.into(),
            ..Default::default()
        }
    }

    fn bound_to(name: &str, pv: &str) -> ClaimData {
        ClaimData { volume_name: pv.into(), bound: true, ..claim(name, "local") }
    }

    fn on_node(name: &str, node: &str) -> VolumeData {
        VolumeData {
            name: name.into(),
            node_affinity: Some(vec![crate::node_selector::Term::parse(&NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
                match_fields: None,
            })]),
        }
    }

    fn class(name: &str, wffc: bool) -> ClassData {
        ClassData {
            name: name.into(),
            provisioner: "keelson.io/local-path".into(),
            wait_for_first_consumer: wffc,
            allowed_topologies: vec![],
        }
    }

    fn cache(claims: Vec<ClaimData>, volumes: Vec<VolumeData>, classes: Vec<ClassData>) -> VolumeCache {
        let mut c = VolumeCache::new();
        claims.into_iter().for_each(|x| {
            c.upsert_claim(x);
        });
        volumes.into_iter().for_each(|x| {
            c.upsert_volume(x);
        });
        classes.into_iter().for_each(|x| {
            c.upsert_class(x);
        });
        c
    }

    fn node(name: &str) -> NodeData {
        node_data(&std_node(name, &[("zone", "a")]))
    }

    #[test]
    fn pods_without_claims_are_skipped() {
        assert!(pre_filter(&info(&pod("d", "p", &[])), &VolumeCache::new()).unwrap().is_none());
    }

    #[test]
    fn missing_deleted_lost_and_immediate_claims_fail_prefilter_with_upstreams_messages() {
        let p = info(&with_claims(&["data"]));
        assert_eq!(pre_filter(&p, &VolumeCache::new()).unwrap_err(), "persistentvolumeclaim \"data\" not found");
        let deleting = ClaimData { deleting: true, ..claim("data", "local") };
        assert_eq!(
            pre_filter(&p, &cache(vec![deleting], vec![], vec![class("local", true)])).unwrap_err(),
            "persistentvolumeclaim \"data\" is being deleted"
        );
        let lost = ClaimData { lost: true, volume_name: "pv1".into(), ..claim("data", "local") };
        assert_eq!(
            pre_filter(&p, &cache(vec![lost], vec![], vec![])).unwrap_err(),
            "persistentvolumeclaim \"data\" bound to non-existent persistentvolume \"pv1\""
        );
        // Immediate class, unknown class, no class: someone else must bind them first.
        for (c, classes) in [
            (claim("data", "fast"), vec![class("fast", false)]),
            (claim("data", "nosuch"), vec![]),
            (claim("data", ""), vec![class("", true)]),
        ] {
            assert_eq!(pre_filter(&p, &cache(vec![c], vec![], classes)).unwrap_err(), ERR_UNBOUND_IMMEDIATE);
        }
        // Prebound (a volume name without a completed binding) is immediate too.
        let prebound = ClaimData { volume_name: "pv1".into(), ..claim("data", "local") };
        assert_eq!(
            pre_filter(&p, &cache(vec![prebound], vec![], vec![class("local", true)])).unwrap_err(),
            ERR_UNBOUND_IMMEDIATE
        );
    }

    #[test]
    fn ephemeral_claims_must_exist_and_belong_to_the_pod() {
        let mut p = pod("d", "p", &[]);
        spec_mut(&mut p).volumes = Some(vec![Volume {
            name: "scratch".into(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        }]);
        let p = info(&p);
        assert_eq!(
            pre_filter(&p, &VolumeCache::new()).unwrap_err(),
            "waiting for ephemeral volume controller to create the persistentvolumeclaim \"p-scratch\""
        );
        let foreign = ClaimData { controller_uid: Some("other".into()), ..claim("p-scratch", "local") };
        assert_eq!(
            pre_filter(&p, &cache(vec![foreign], vec![], vec![class("local", true)])).unwrap_err(),
            "PVC d/p-scratch was not created for pod d/p (pod is not owner)"
        );
        let owned = ClaimData { controller_uid: Some("uid-d-p".into()), ..claim("p-scratch", "local") };
        let s = pre_filter(&p, &cache(vec![owned], vec![], vec![class("local", true)])).unwrap().unwrap();
        assert_eq!(s.delayed.len(), 1);
    }

    #[test]
    fn bound_claims_follow_their_volumes_node_affinity() {
        let p = info(&with_claims(&["data"]));
        let c = cache(vec![bound_to("data", "pv1")], vec![on_node("pv1", "n1")], vec![]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert!(filter(&s, &node("n1")).is_ok());
        let err = filter(&s, &node("n2")).unwrap_err();
        assert_eq!(
            (err.code, err.reasons),
            (Code::UnschedulableAndUnresolvable, vec![ERR_REASON_NODE_CONFLICT.into()])
        );
        // A volume without node affinity fits anywhere; a missing one nowhere.
        let c =
            cache(vec![bound_to("data", "pv1")], vec![VolumeData { name: "pv1".into(), node_affinity: None }], vec![]);
        assert!(filter(&pre_filter(&p, &c).unwrap().unwrap(), &node("n2")).is_ok());
        let c = cache(vec![bound_to("data", "gone")], vec![], vec![]);
        let err = filter(&pre_filter(&p, &c).unwrap().unwrap(), &node("n1")).unwrap_err();
        assert_eq!(err.reasons, vec![ERR_REASON_PV_NOT_EXIST]);
    }

    #[test]
    fn unbound_wait_for_first_consumer_claims_fit_any_node_that_can_provision() {
        let p = info(&with_claims(&["a", "b"]));
        let c = cache(vec![claim("a", "local"), claim("b", "local")], vec![], vec![class("local", true)]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert!(filter(&s, &node("n1")).is_ok() && filter(&s, &node("n2")).is_ok());
        assert_eq!(claims_to_select(&s, "n2"), ["d/a", "d/b"]);
        // A node was selected already: only that one fits, and only the other claim needs it.
        let a = ClaimData { selected_node: Some("n1".into()), ..claim("a", "local") };
        let c = cache(vec![a, claim("b", "local")], vec![], vec![class("local", true)]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert!(filter(&s, &node("n1")).is_ok());
        assert_eq!(filter(&s, &node("n2")).unwrap_err().reasons, vec![ERR_REASON_BIND_CONFLICT]);
        assert_eq!(claims_to_select(&s, "n1"), ["d/b"]);
        // A class that does not provision, or not for this node's topology.
        let mut none = class("local", true);
        none.provisioner = crate::volumes::NOT_SUPPORTED_PROVISIONER.into();
        let c = cache(vec![claim("a", "local"), claim("b", "local")], vec![], vec![none]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert_eq!(filter(&s, &node("n1")).unwrap_err().reasons, vec![ERR_REASON_BIND_CONFLICT]);
        let mut zoned = class("local", true);
        zoned.allowed_topologies = vec![TopologyTerm { expressions: vec![("zone".into(), vec!["b".into()])] }];
        let c = cache(vec![claim("a", "local"), claim("b", "local")], vec![], vec![zoned]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert_eq!(filter(&s, &node("n1")).unwrap_err().reasons, vec![ERR_REASON_BIND_CONFLICT]);
    }

    #[test]
    fn both_kinds_of_conflict_are_reported_together() {
        let p = info(&with_claims(&["a", "b"]));
        let b = ClaimData { selected_node: Some("n1".into()), ..claim("b", "local") };
        let c = cache(vec![bound_to("a", "pv1"), b], vec![on_node("pv1", "n1")], vec![class("local", true)]);
        let s = pre_filter(&p, &c).unwrap().unwrap();
        assert!(filter(&s, &node("n1")).is_ok());
        assert_eq!(
            filter(&s, &node("n2")).unwrap_err().reasons,
            vec![ERR_REASON_NODE_CONFLICT, ERR_REASON_BIND_CONFLICT]
        );
        // The binding completes: the claim counts as bound.
        let done = ClaimData { bound: true, volume_name: "pv1".into(), ..claim("a", "local") };
        let c = cache(vec![done, claim("b", "local")], vec![on_node("pv1", "n1")], vec![class("local", true)]);
        assert_eq!(pre_filter(&p, &c).unwrap().unwrap().bound.len(), 1);
    }
}
