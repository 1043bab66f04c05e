//! The endpointslice controller: the discovery.k8s.io/v1 EndpointSlices of every Service
//! with a selector (kube-controller-manager's `endpointslice` controller).
//!
//! One applier over Services, triggered by the Service, by the pods it selects or selected,
//! and by changes to its slices. Each reconcile lists the Service's slices from the API (so a
//! slice it just created is never missed and created twice), plans the writes
//! ([`plan::plan`]) and makes them. Slices carry the Service as controlling owner, so the
//! garbage collector removes them with it.

pub mod endpoint;
pub mod plan;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
    Api, ResourceExt,
};

use crate::{
    util_api::{is_namespace_terminating, is_not_found},
    util_endpoints::{pod_trigger, selected_pods, service_selector},
    util_runtime::{reflect, run_applier, spawn_reflector, trigger_self, trigger_with, watch},
    Context, Error,
};
use endpoint::{CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE};
use plan::NodeInfo;

/// The most endpoints in one slice (`--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Every Service is recomputed at least this often, whatever the watches said.
const RESYNC: Duration = Duration::from_secs(600);
/// How soon to look again when pods were left out for want of their node.
const MISSING_NODE_RETRY: Duration = Duration::from_secs(5);

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (services, svc_events) = reflect(Api::<Service>::all(client.clone()), watcher::Config::default());
    let (pods, pod_events) = reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let nodes = spawn_reflector(Api::<Node>::all(client.clone()), watcher::Config::default());
    let managed = format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}");
    let slice_events = watch(Api::<EndpointSlice>::all(client.clone()), watcher::Config::default().labels(&managed));
    let slice_trigger = trigger_with(slice_events, |ev| match ev {
        watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s) => s
            .labels()
            .get(LABEL_SERVICE_NAME)
            .map(|svc| ObjectRef::<Service>::new(svc).within(&s.namespace().unwrap_or_default()))
            .into_iter()
            .collect(),
        watcher::Event::Init | watcher::Event::InitDone => vec![],
    });
    let state = Arc::new(State { client, pods, nodes: nodes.store.clone() });
    run_applier(
        services.clone(),
        vec![trigger_self(svc_events), pod_trigger(pod_events, services), slice_trigger],
        crate::observe::observed("endpointslice", &ctx.config.write_traces, reconcile),
        state,
        &ctx.stop,
        ctx.config.concurrency,
    )
    .await;
    Ok(())
}

async fn reconcile(svc: Arc<Service>, st: Arc<State>) -> Result<Action, Error> {
    if service_selector(&svc).is_none() {
        // Slices of a Service without a selector are somebody else's.
        return Ok(Action::await_change());
    }
    if st.pods.wait_until_ready().await.is_err() || st.nodes.wait_until_ready().await.is_err() {
        return Ok(Action::await_change()); // stopping
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(st.client.clone(), &ns);
    let selector = format!("{LABEL_SERVICE_NAME}={name},{LABEL_MANAGED_BY}={CONTROLLER_NAME}");
    let existing = api.list(&ListParams::default().labels(&selector)).await?.items;

    let pods = selected_pods(&st.pods, &svc);
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let zones: BTreeMap<String, NodeInfo> = pod_refs
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .filter(|n| !n.is_empty())
        .map(|n| {
            let info = match st.nodes.get(&ObjectRef::new(&n)) {
                Some(node) => NodeInfo::Known(node.labels().get(LABEL_ZONE).cloned()),
                None => NodeInfo::Missing,
            };
            (n, info)
        })
        .collect();
    let node = |n: &str| zones.get(n).cloned().unwrap_or(NodeInfo::Missing);
    let (plan, skipped) = plan::plan(&svc, &pod_refs, &node, &existing, MAX_ENDPOINTS_PER_SLICE);
    if !skipped.is_empty() {
        tracing::info!(service = %name, namespace = %ns, pods = ?skipped, "pods left out of endpointslices: their node does not exist");
    }
    if plan.is_empty() {
        tracing::trace!(service = %name, namespace = %ns, "endpointslices up to date");
    } else {
        tracing::debug!(
            service = %name,
            namespace = %ns,
            create = plan.create.len(),
            update = plan.update.len(),
            delete = plan.delete.len(),
            "writing endpointslices"
        );
    }
    for slice in &plan.create {
        match api.create(&PostParams::default(), slice).await {
            Ok(_) => {}
            Err(e) if is_namespace_terminating(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    for slice in &plan.update {
        api.replace(&slice.name_any(), &PostParams::default(), slice).await?;
    }
    for slice in &plan.delete {
        match api.delete(&slice.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(if skipped.is_empty() { RESYNC } else { MISSING_NODE_RETRY }))
}
