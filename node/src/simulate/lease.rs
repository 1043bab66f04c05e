//! Node Leases (`coordination.k8s.io/v1`, namespace `kube-node-lease`): the object the
//! kubelet creates and the merge patch that renews it.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::retry::{is_conflict, is_not_found};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The owner reference the kubelet puts on its Lease (deleting the Node deletes it).
pub fn owner(node: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// A new Lease held by `node`, renewed `now`.
pub fn lease(node: &str, duration_seconds: i32, now: Timestamp, node_uid: Option<&str>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node_uid.map(|u| vec![owner(node, u)]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// The merge patch that renews `node`'s Lease (and, given the Node's uid, sets its owner).
pub fn renew_patch(node: &str, duration_seconds: i32, now: Timestamp, node_uid: Option<&str>) -> Value {
    let spec = json!({
        "holderIdentity": node,
        "leaseDurationSeconds": duration_seconds,
        "renewTime": MicroTime(now),
    });
    match node_uid {
        Some(u) => json!({"metadata": {"ownerReferences": [owner(node, u)]}, "spec": spec}),
        None => json!({ "spec": spec }),
    }
}

/// How a renewal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed (with the owner reference set if a uid was given).
    Patched,
    /// There was none: created.
    Created,
    /// There was none, and someone else created it meanwhile (renewed next time).
    Raced,
}

/// Renew `node`'s Lease, creating it if it does not exist (as the kubelet does).
pub async fn renew(
    api: &Api<Lease>,
    pp: &PatchParams,
    node: &str,
    duration_seconds: i32,
    node_uid: Option<&str>,
) -> Result<Renewed, kube::Error> {
    let now = Timestamp::now();
    match api.patch(node, pp, &Patch::Merge(&renew_patch(node, duration_seconds, now, node_uid))).await {
        Ok(_) => Ok(Renewed::Patched),
        Err(e) if is_not_found(&e) => {
            let post = PostParams { field_manager: pp.field_manager.clone(), ..Default::default() };
            match api.create(&post, &lease(node, duration_seconds, now, node_uid)).await {
                Ok(_) => Ok(Renewed::Created),
                Err(e) if is_conflict(&e) => Ok(Renewed::Raced),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_by_its_node_and_owned_by_it() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let l = lease("sim-1", 40, now, Some("u-1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(l.metadata.name.as_deref(), Some("sim-1"));
        let o = &l.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("v1", "Node", "sim-1", "u-1")
        );
        let s = l.spec.unwrap();
        assert_eq!(s.holder_identity.as_deref(), Some("sim-1"));
        assert_eq!(s.lease_duration_seconds, Some(40));
        assert_eq!(s.renew_time, Some(MicroTime(now)));
        assert!(lease("sim-1", 40, now, None).metadata.owner_references.is_none());
    }

    #[test]
    fn a_renewal_patch_carries_a_micro_time() {
        let now = Timestamp::from_second(1_700_000_000).unwrap() + jiff::SignedDuration::from_micros(123_456);
        let p = renew_patch("sim-1", 40, now, None);
        assert_eq!(
            p,
            json!({"spec": {"holderIdentity": "sim-1", "leaseDurationSeconds": 40, "renewTime": "2023-11-14T22:13:20.123456Z"}})
        );
        let p = renew_patch("sim-1", 40, now, Some("u"));
        assert_eq!(p.pointer("/metadata/ownerReferences/0/uid"), Some(&json!("u")));
    }
}
