//! Emptying a namespace: discover every namespaced resource that can be deleted, delete its
//! objects in the namespace (deletecollection, else one by one), and count what is left
//! (`namespaced_resources_deleter.go` upstream).

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::APIResourceList};
use kube::{
    api::{ApiResource, DeleteParams, DynamicObject, ListParams},
    Api, Client, ResourceExt,
};

use super::conditions::Outcome;
use crate::util_api::{is_method_not_supported, is_not_found};

/// How long to assume an object with finalizers takes to go (`finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE_SECS: i64 = 15;

/// A namespaced resource that supports `delete`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletable {
    pub resource: ApiResource,
    pub verbs: BTreeSet<String>,
}

impl Deletable {
    /// `resource.group` as upstream's messages name it (`pods.` for the core group).
    pub fn display(&self) -> String {
        format!("{}.{}", self.resource.plural, self.resource.group)
    }
}

/// The namespaced, deletable resources of one discovery document (subresources skipped).
pub fn deletable(list: &APIResourceList) -> Vec<Deletable> {
    let (group, version) = match list.group_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), list.group_version.clone()),
    };
    list.resources
        .iter()
        .filter(|r| r.namespaced && !r.name.contains('/') && r.verbs.iter().any(|v| v == "delete"))
        .map(|r| {
            let g = r.group.clone().filter(|g| !g.is_empty()).unwrap_or_else(|| group.clone());
            let v = r.version.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| version.clone());
            let api_version = if g.is_empty() { v.clone() } else { format!("{g}/{v}") };
            Deletable {
                resource: ApiResource {
                    group: g,
                    version: v,
                    api_version,
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                },
                verbs: r.verbs.iter().cloned().collect(),
            }
        })
        .collect()
}

/// Every namespaced deletable resource at each group's preferred version, and the group
/// versions whose discovery failed (deletion goes ahead with the rest).
pub async fn discover(client: &Client) -> (Vec<Deletable>, Vec<String>) {
    let mut out = vec![];
    let mut failures = vec![];
    match client.list_core_api_versions().await {
        Ok(v) => {
            let version = v.versions.first().cloned().unwrap_or_else(|| "v1".into());
            match client.list_core_api_resources(&version).await {
                Ok(list) => out.extend(deletable(&list)),
                Err(e) => failures.push(format!("{version}: {e}")),
            }
        }
        Err(e) => failures.push(format!("v1: {e}")),
    }
    match client.list_api_groups().await {
        Ok(groups) => {
            for g in groups.groups {
                let Some(gv) = g
                    .preferred_version
                    .map(|p| p.group_version)
                    .or_else(|| g.versions.first().map(|v| v.group_version.clone()))
                else {
                    continue;
                };
                match client.list_api_group_resources(&gv).await {
                    Ok(list) => out.extend(deletable(&list)),
                    Err(e) => failures.push(format!("{gv}: {e}")),
                }
            }
        }
        Err(e) => failures.push(format!("apis: {e}")),
    }
    out.sort_by_key(Deletable::display);
    out.dedup_by(|a, b| a.resource.plural == b.resource.plural && a.resource.group == b.resource.group);
    (out, failures)
}

/// Delete everything in `ns`. Returns what is left and the estimated seconds until it goes
/// (0: nothing left to wait for).
pub async fn delete_all(client: &Client, ns: &str, deleted_at: Timestamp, resources: &[Deletable]) -> (Outcome, i64) {
    let mut outcome = Outcome::default();
    let mut estimate = 0;
    for r in resources {
        match delete_resource(client, ns, deleted_at, r).await {
            Ok(left) => {
                estimate = estimate.max(left.estimate);
                if left.remaining > 0 {
                    outcome.remaining.insert(r.display(), left.remaining);
                    for f in left.finalizers {
                        *outcome.finalizers.entry(f).or_default() += 1;
                    }
                }
            }
            Err((e, left)) => {
                estimate = estimate.max(left.estimate);
                outcome.delete_errors.push(e);
            }
        }
    }
    (outcome, estimate)
}

/// What is left of one resource.
#[derive(Default)]
struct Left {
    estimate: i64,
    remaining: usize,
    /// One entry per (object, finalizer).
    finalizers: Vec<String>,
}

/// `deleteAllContentForGroupVersionResource`.
async fn delete_resource(
    client: &Client,
    ns: &str,
    deleted_at: Timestamp,
    r: &Deletable,
) -> Result<Left, (String, Left)> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.resource);
    let gvr = format!("{}, Resource={}", r.resource.api_version, r.resource.plural);
    let mut left = Left::default();
    if r.resource.group.is_empty() && r.resource.plural == "pods" {
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| (e.to_string(), Left::default()))?;
        left.estimate = pod_estimate(&pods.items, deleted_at, Timestamp::now());
    }
    // Namespace deletion removes dependents itself: no orphaning.
    let dp = DeleteParams::background();
    let mut by_collection = false;
    if r.verbs.contains("deletecollection") {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => by_collection = true,
            Err(e) if is_not_found(&e) || is_method_not_supported(&e) => {}
            Err(e) => return Err((e.to_string(), left)),
        }
    }
    if !r.verbs.contains("list") {
        return Ok(left);
    }
    let list = |api: Api<DynamicObject>| async move {
        match api.list(&ListParams::default()).await {
            Ok(l) => Ok(Some(l.items)),
            Err(e) if is_not_found(&e) || is_method_not_supported(&e) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    if !by_collection {
        let Some(items) = list(api.clone()).await.map_err(|e| (e, Left::default()))? else {
            return Ok(left);
        };
        for item in items {
            match api.delete(&item.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_method_not_supported(&e) => {}
                Err(e) => return Err((e.to_string(), left)),
            }
        }
    }
    let items = match list(api).await {
        Ok(Some(items)) => items,
        Ok(None) => return Ok(left),
        Err(e) => return Err((e, left)),
    };
    if items.is_empty() {
        return Ok(Left::default());
    }
    left.remaining = items.len();
    left.finalizers = items.iter().flat_map(|i| i.finalizers().to_vec()).collect();
    if left.estimate != 0 {
        return Ok(left);
    }
    if !left.finalizers.is_empty() {
        left.estimate = FINALIZER_ESTIMATE_SECS;
        return Ok(left);
    }
    Err((format!("unexpected items still remain in namespace: {ns} for gvr: {gvr}"), left))
}

/// `estimateGracefulTerminationForPods`: the longest grace period of the pods still running,
/// or 0 once that long has passed since the namespace's deletion.
pub fn pod_estimate(pods: &[Pod], deleted_at: Timestamp, now: Timestamp) -> i64 {
    let estimate = pods
        .iter()
        .filter(|p| !crate::util_endpoints::is_pod_terminal(p))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .max()
        .unwrap_or(0)
        .max(0);
    let elapsed = now.duration_since(deleted_at).as_secs();
    if elapsed >= estimate {
        0
    } else {
        estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::APIResource};

    fn res(name: &str, namespaced: bool, verbs: &[&str]) -> APIResource {
        APIResource {
            name: name.into(),
            kind: "K".into(),
            namespaced,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            singular_name: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn only_namespaced_deletable_top_level_resources() {
        let list = APIResourceList {
            group_version: "apps/v1".into(),
            resources: vec![
                res("deployments", true, &["list", "delete", "deletecollection"]),
                res("deployments/status", true, &["get", "patch"]),
                res("deployments/scale", true, &["delete"]),
                res("nodes", false, &["delete"]),
                res("bindings", true, &["create"]),
            ],
        };
        let d = deletable(&list);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].resource.api_version, "apps/v1");
        assert_eq!(d[0].resource.group, "apps");
        assert_eq!(d[0].display(), "deployments.apps");
        let core =
            APIResourceList { group_version: "v1".into(), resources: vec![res("pods", true, &["delete", "list"])] };
        let d = deletable(&core);
        assert_eq!((d[0].resource.api_version.as_str(), d[0].display()), ("v1", "pods.".to_string()));
    }

    fn pod(grace: Option<i64>, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec { termination_grace_period_seconds: grace, ..Default::default() }),
            status: Some(k8s_openapi::api::core::v1::PodStatus { phase: Some(phase.into()), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_estimate_is_the_longest_grace_until_it_passed() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let pods = vec![pod(Some(30), "Running"), pod(Some(90), "Succeeded"), pod(None, "Running")];
        assert_eq!(pod_estimate(&pods, t0, t0 + jiff::SignedDuration::from_secs(10)), 30);
        assert_eq!(pod_estimate(&pods, t0, t0 + jiff::SignedDuration::from_secs(30)), 0);
        assert_eq!(pod_estimate(&[], t0, t0), 0);
    }
}
