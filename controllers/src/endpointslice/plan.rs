//! Which EndpointSlices to create, update and delete for a Service, from the pods it selects
//! and its current slices (k8s.io/endpointslice `Reconciler`, without topology hints).
//! Pure: the caller writes the plan.
//!
//! Endpoints are grouped by the ports their pod serves; each group fills slices of at most
//! `max_per_slice` endpoints, changing as few slices as it can: existing slices keep the
//! endpoints still wanted (updated in place), new endpoints go first into slices being
//! updated anyway, then into the unchanged slice they fit best, then into new slices.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
};
use kube::ResourceExt;

use super::endpoint::{
    address_types, endpoint_key, endpoint_ports, endpoints_equal_beyond_key, new_slice, owned_by, pod_to_endpoint,
    port_key, same_placeholder, slice_labels, EndpointKey, PortKey,
};
use crate::util_endpoints::should_pod_be_in_endpoints;

/// The writes that bring a Service's slices to the desired state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by the server from `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices to replace (they carry their name and resourceVersion).
    pub update: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// What is known of a pod's node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeInfo {
    /// The node exists; its zone label, if any.
    Known(Option<String>),
    /// The pod names a node that does not exist.
    Missing,
}

/// Plan `svc`'s slices. `node` describes the node a pod runs on (pods not yet on a node are
/// not asked about). Also returns the pods left out because their node is missing (upstream
/// retries the Service until the pod or the node is sorted out).
pub fn plan(
    svc: &Service,
    pods: &[&Pod],
    node: &dyn Fn(&str) -> NodeInfo,
    existing: &[EndpointSlice],
    max_per_slice: usize,
) -> (SlicePlan, Vec<String>) {
    let max_per_slice = max_per_slice.max(1);
    let types = address_types(svc);
    let mut out = SlicePlan::default();
    let mut skipped = BTreeSet::new();
    for t in &types {
        let of_type: Vec<&EndpointSlice> = existing.iter().filter(|s| s.address_type == *t).collect();
        let p = plan_address_type(svc, pods, node, &of_type, t, max_per_slice, &mut skipped);
        out.create.extend(p.create);
        out.update.extend(p.update);
        out.delete.extend(p.delete);
    }
    // Slices of an address type the Service no longer has.
    out.delete.extend(existing.iter().filter(|s| !types.contains(&s.address_type.as_str())).cloned());
    if svc.metadata.deletion_timestamp.is_some() {
        // The garbage collector is deleting the slices; do not race it with new ones.
        out.create.clear();
    }
    (out, skipped.into_iter().collect())
}

fn plan_address_type(
    svc: &Service,
    pods: &[&Pod],
    node: &dyn Fn(&str) -> NodeInfo,
    existing: &[&EndpointSlice],
    address_type: &str,
    max: usize,
    skipped: &mut BTreeSet<String>,
) -> SlicePlan {
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut delete: Vec<EndpointSlice> = vec![];
    let mut existing_by_ports: BTreeMap<PortKey, Vec<EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if owned_by(s, svc) {
            existing_by_ports.entry(port_key(s.ports.as_deref().unwrap_or_default())).or_default().push((*s).clone());
        } else {
            delete.push((*s).clone());
        }
    }

    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let zone = if node_name.is_empty() {
            None
        } else {
            match node(node_name) {
                NodeInfo::Known(zone) => zone,
                NodeInfo::Missing if publish => None,
                NodeInfo::Missing => {
                    skipped.insert(pod.name_any());
                    continue;
                }
            }
        };
        let ports = endpoint_ports(svc, pod);
        let ep = pod_to_endpoint(pod, zone.as_deref(), svc, address_type);
        if ep.addresses.is_empty() {
            continue;
        }
        let entry = desired.entry(port_key(&ports)).or_insert_with(|| (ports, BTreeMap::new()));
        entry.1.insert(endpoint_key(&ep), ep);
    }

    let mut create = vec![];
    let mut update = vec![];
    for (key, (ports, wanted)) in desired.iter_mut() {
        let slices = existing_by_ports.remove(key).unwrap_or_default();
        let (c, u, d) = plan_port_group(svc, slices, std::mem::take(wanted), ports, address_type, max);
        create.extend(c);
        update.extend(u);
        delete.extend(d);
    }
    // Port sets no pod has any more.
    delete.extend(existing_by_ports.into_values().flatten());

    // A Service without endpoints keeps one empty placeholder slice.
    if existing.len() == delete.len() && create.is_empty() {
        let placeholder = new_slice(svc, &[], address_type);
        if delete.len() == 1 && same_placeholder(&delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }

    // Rather than create one slice and delete another, update the doomed one in place.
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if delete[i].address_type == address_type && owned_by(&delete[i], svc) {
            let doomed = delete.remove(i);
            let mut slice = create.pop().unwrap_or_else(|| new_slice(svc, &[], address_type));
            slice.metadata.name = doomed.metadata.name.clone();
            slice.metadata.generate_name = doomed.metadata.generate_name.clone();
            slice.metadata.resource_version = doomed.metadata.resource_version.clone();
            slice.metadata.uid = doomed.metadata.uid.clone();
            update.push(slice);
        } else {
            i += 1;
        }
    }
    SlicePlan { create, update, delete }
}

/// `reconcileByPortMapping`: one group of endpoints with the same ports over the slices that
/// carry those ports. Returns (create, update, delete).
fn plan_port_group(
    svc: &Service,
    existing: Vec<EndpointSlice>,
    mut wanted: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();

    // 1. Keep the endpoints still wanted (in their desired form); drop the rest.
    for slice in existing {
        let name = slice.name_any();
        let mut kept = vec![];
        let mut changed = false;
        for ep in &slice.endpoints {
            if let Some(want) = wanted.remove(&endpoint_key(ep)) {
                changed |= !endpoints_equal_beyond_key(&want, ep);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(&slice, svc);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, slice);
            } else {
                let mut s = slice;
                s.endpoints = kept;
                s.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, s);
            }
        } else if labels_changed {
            let mut s = slice;
            s.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, s);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, slice);
        }
    }

    // 2. Fill the slices being updated anyway, fullest first.
    if !wanted.is_empty() && !to_update.is_empty() {
        let mut names: Vec<String> = to_update.iter().cloned().collect();
        names.sort_by_key(|n| std::cmp::Reverse(by_name.get(n).map_or(0, |s| s.endpoints.len())));
        for n in names {
            if let Some(s) = by_name.get_mut(&n) {
                fill(s, &mut wanted, max);
            }
        }
    }

    // 3. The rest: into the unchanged slice they fit best, else into new slices.
    let mut create = vec![];
    while !wanted.is_empty() {
        let mut target = None;
        if wanted.len() < max {
            target = slice_to_fill(unchanged.iter().filter_map(|n| by_name.get(n)), wanted.len(), max);
        }
        match target {
            Some(name) => {
                if let Some(s) = by_name.get_mut(&name) {
                    fill(s, &mut wanted, max);
                }
                unchanged.remove(&name);
                to_update.insert(name);
            }
            None => {
                let mut s = new_slice(svc, ports, address_type);
                fill(&mut s, &mut wanted, max);
                create.push(s);
            }
        }
    }

    let take = |names: &BTreeSet<String>, by_name: &mut BTreeMap<String, EndpointSlice>| {
        names.iter().filter_map(|n| by_name.remove(n)).collect::<Vec<_>>()
    };
    let update = take(&to_update, &mut by_name);
    let delete = take(&to_delete, &mut by_name);
    (create, update, delete)
}

/// Move wanted endpoints into `slice` until it holds `max`.
fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, ep)) = wanted.pop_first() else { break };
        slice.endpoints.push(ep);
    }
}

/// `getSliceToFill`: the slice that `n` more endpoints would bring closest to full.
fn slice_to_fill<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, n: usize, max: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for s in slices {
        let total = n + s.endpoints.len();
        if total > max {
            continue;
        }
        let room = max - total;
        if best.as_ref().is_none_or(|(r, _)| room < *r) {
            best = Some((room, s.name_any()));
            if room == 0 {
                break;
            }
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::{CONTROLLER_NAME, IPV4, LABEL_MANAGED_BY};
    use super::*;
    use crate::util_endpoints::tests::{labels, pod, service, svc_port};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn web() -> Service {
        service("web", &[("app", "web")], vec![svc_port("http", 80, Some(IntOrString::String("http".into())))])
    }

    fn known(_: &str) -> NodeInfo {
        NodeInfo::Known(Some("zone-a".into()))
    }

    fn pods(n: usize) -> Vec<Pod> {
        (0..n).map(|i| pod(&format!("p{i:03}"), &format!("10.0.{}.{}", i / 200, i % 200 + 1), true)).collect()
    }

    /// What the server would store: a name and a resourceVersion.
    fn stored(mut plan: SlicePlan) -> Vec<EndpointSlice> {
        let mut out = vec![];
        for (i, mut s) in plan.create.drain(..).enumerate() {
            s.metadata.name = Some(format!("web-{i}"));
            s.metadata.resource_version = Some("1".into());
            out.push(s);
        }
        out.extend(plan.update);
        out
    }

    fn count(slices: &[EndpointSlice]) -> usize {
        slices.iter().map(|s| s.endpoints.len()).sum()
    }

    #[test]
    fn new_service_gets_one_slice_then_nothing_to_do() {
        let svc = web();
        let ps = pods(3);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, skipped) = plan(&svc, &refs, &known, &[], 100);
        assert!(skipped.is_empty());
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 0));
        let s = &p.create[0];
        assert_eq!(s.address_type, IPV4);
        assert_eq!(s.endpoints.len(), 3);
        assert_eq!(s.endpoints[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(s.labels().get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        let existing = stored(p);
        let (again, _) = plan(&svc, &refs, &known, &existing, 100);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn no_pods_means_one_placeholder_kept() {
        let svc = web();
        let (p, _) = plan(&svc, &[], &known, &[], 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let existing = stored(p);
        let (again, _) = plan(&svc, &[], &known, &existing, 100);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn placeholder_becomes_the_real_slice() {
        let svc = web();
        let (p, _) = plan(&svc, &[], &known, &[], 100);
        let existing = stored(p);
        let ps = pods(2);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        // The placeholder has other (no) ports: it is reused, not deleted and recreated.
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0), "{p:?}");
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-0"));
        assert_eq!(p.update[0].endpoints.len(), 2);
        assert_eq!(p.update[0].ports.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn at_most_max_per_slice_and_surplus_deleted() {
        let svc = web();
        let ps = pods(250);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, _) = plan(&svc, &refs, &known, &[], 100);
        assert_eq!(p.create.len(), 3);
        assert!(p.create.iter().all(|s| s.endpoints.len() <= 100));
        assert_eq!(count(&p.create), 250);
        let existing = stored(p);
        // Down to 50 pods: slices keep what is left in place; emptied ones go.
        let refs: Vec<&Pod> = ps.iter().take(50).collect();
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        assert_eq!(count(&p.update), 50);
        assert_eq!(p.update.len() + p.delete.len(), 3);
        assert!(p.create.is_empty());
        assert!(!p.delete.is_empty());
        assert!(p.delete.iter().all(|s| !p.update.iter().any(|u| u.metadata.name == s.metadata.name)));
        // Down to the first endpoint of one slice: the others are all deleted.
        let first = &existing[0].endpoints[0];
        let one: Vec<&Pod> = ps
            .iter()
            .filter(|p| {
                Some(p.metadata.name.clone().unwrap_or_default())
                    == first.target_ref.as_ref().and_then(|r| r.name.clone())
            })
            .collect();
        let (p, _) = plan(&svc, &one, &known, &existing, 100);
        assert_eq!((p.update.len(), p.delete.len()), (1, 2));
    }

    #[test]
    fn changed_endpoint_is_updated_in_place() {
        let svc = web();
        let mut ps = pods(2);
        let refs: Vec<&Pod> = ps.iter().collect();
        let existing = stored(plan(&svc, &refs, &known, &[], 100).0);
        ps[1] = pod("p001", "10.0.0.2", false);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let ep = p.update[0].endpoints.iter().find(|e| e.addresses == vec!["10.0.0.2"]).unwrap();
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(p.update[0].metadata.resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn new_endpoints_fit_into_an_unchanged_slice() {
        let svc = web();
        let ps = pods(3);
        let refs: Vec<&Pod> = ps.iter().take(2).collect();
        let existing = stored(plan(&svc, &refs, &known, &[], 100).0);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(p.update[0].endpoints.len(), 3);
    }

    #[test]
    fn service_labels_propagate() {
        let mut svc = web();
        let ps = pods(1);
        let refs: Vec<&Pod> = ps.iter().collect();
        let existing = stored(plan(&svc, &refs, &known, &[], 100).0);
        svc.metadata.labels = Some(labels(&[("tier", "front")]));
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].labels().get("tier").map(String::as_str), Some("front"));
    }

    #[test]
    fn slices_of_another_service_uid_or_family_are_deleted() {
        let svc = web();
        let ps = pods(1);
        let refs: Vec<&Pod> = ps.iter().collect();
        let mut existing = stored(plan(&svc, &refs, &known, &[], 100).0);
        let mut old_owner = existing[0].clone();
        old_owner.metadata.name = Some("web-old".into());
        old_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "previous-uid".into();
        let mut v6 = existing[0].clone();
        v6.metadata.name = Some("web-v6".into());
        v6.address_type = "IPv6".into();
        existing.push(old_owner);
        existing.push(v6);
        let (p, _) = plan(&svc, &refs, &known, &existing, 100);
        let mut deleted: Vec<String> = p.delete.iter().map(|s| s.name_any()).collect();
        deleted.sort();
        assert_eq!(deleted, vec!["web-old", "web-v6"]);
        assert!(p.create.is_empty() && p.update.is_empty());
    }

    #[test]
    fn pods_on_missing_nodes_are_skipped_unless_published() {
        let mut svc = web();
        let ps = pods(2);
        let refs: Vec<&Pod> = ps.iter().collect();
        let missing = |_: &str| NodeInfo::Missing;
        let (p, skipped) = plan(&svc, &refs, &missing, &[], 100);
        assert_eq!(skipped, vec!["p000", "p001"]);
        assert!(p.create[0].endpoints.is_empty(), "only the placeholder");
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (p, skipped) = plan(&svc, &refs, &missing, &[], 100);
        assert!(skipped.is_empty());
        assert_eq!(p.create[0].endpoints.len(), 2);
        // A pod not on any node yet is not asked about.
        let mut unscheduled = pod("u", "10.0.9.9", true);
        unscheduled.spec.as_mut().unwrap().node_name = None;
        let (p, skipped) = plan(&web(), &[&unscheduled], &missing, &[], 100);
        assert!(skipped.is_empty());
        assert_eq!(p.create[0].endpoints.len(), 1);
    }

    #[test]
    fn pods_with_other_ports_get_their_own_slice() {
        let svc = web();
        let a = pod("a", "10.0.0.1", true);
        let mut b = pod("b", "10.0.0.2", true);
        b.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 9090;
        let (p, _) = plan(&svc, &[&a, &b], &known, &[], 100);
        assert_eq!(p.create.len(), 2);
        let mut ports: Vec<i32> = p.create.iter().map(|s| s.ports.as_ref().unwrap()[0].port.unwrap()).collect();
        ports.sort();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn deleting_service_creates_nothing() {
        let mut svc = web();
        svc.metadata.deletion_timestamp = Some(crate::util_api::now());
        let ps = pods(1);
        let refs: Vec<&Pod> = ps.iter().collect();
        let (p, _) = plan(&svc, &refs, &known, &[], 100);
        assert!(p.create.is_empty());
    }
}
