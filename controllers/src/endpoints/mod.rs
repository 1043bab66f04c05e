//! The endpoints controller: every Service with a selector has an Endpoints object of the
//! same name listing the pods it selects (kube-controller-manager's `endpoint` controller).
//!
//! Two appliers share three watches. The Service applier computes each Service's Endpoints
//! ([`desired::plan`]) from the pod store and writes them when they differ; it is triggered
//! by the Service, by pods it selects or selected, and by changes to its Endpoints. The
//! Endpoints applier ([`orphans`]) deletes controller-made Endpoints whose Service is gone;
//! it is triggered by every Endpoints (so a restart sweeps leftovers) and by Service deletions.

pub mod desired;
mod orphans;

use std::{sync::Arc, time::Duration};

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::{
    api::PostParams,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
    Api, ResourceExt,
};

use crate::{
    util_api::is_namespace_terminating,
    util_endpoints::{pod_trigger, selected_pods, service_selector},
    util_runtime::{reflect, run_applier, trigger_channel, trigger_with},
    Context, Error,
};
use desired::Plan;

/// Every Service is recomputed at least this often, whatever the watches said.
const RESYNC: Duration = Duration::from_secs(600);

/// What the reconcilers share.
struct State {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (services, svc_events) = reflect(Api::<Service>::all(client.clone()), watcher::Config::default());
    let (pods, pod_events) = reflect(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (endpoints, ep_events) = reflect(Api::<Endpoints>::all(client.clone()), watcher::Config::default());
    let state = Arc::new(State { client, services: services.clone(), pods, endpoints: endpoints.clone() });

    // A deleted Service: check its Endpoints. A changed Endpoints: resync its Service.
    let (gone_tx, gone_rx) = mpsc::unbounded::<ObjectRef<Endpoints>>();
    let (ep_changed_tx, ep_changed_rx) = mpsc::unbounded::<ObjectRef<Service>>();
    let service_trigger = trigger_with(svc_events, move |ev| match ev {
        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => vec![ObjectRef::<Service>::from_obj(&s)],
        watcher::Event::Delete(s) => {
            let _ = gone_tx.unbounded_send(ObjectRef::new(&s.name_any()).within(&s.namespace().unwrap_or_default()));
            vec![]
        }
        watcher::Event::Init | watcher::Event::InitDone => vec![],
    });
    let endpoints_trigger = trigger_with(ep_events, move |ev| match ev {
        watcher::Event::Apply(e) | watcher::Event::InitApply(e) | watcher::Event::Delete(e) => {
            let _ =
                ep_changed_tx.unbounded_send(ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default()));
            vec![ObjectRef::<Endpoints>::from_obj(&e)]
        }
        watcher::Event::Init | watcher::Event::InitDone => vec![],
    });

    let concurrency = ctx.config.concurrency;
    let sync = run_applier(
        services.clone(),
        vec![service_trigger, pod_trigger(pod_events, services), trigger_channel(ep_changed_rx)],
        crate::observe::observed("endpoints", &ctx.config.write_traces, reconcile),
        state.clone(),
        &ctx.stop,
        concurrency,
    );
    let sweep = run_applier(
        endpoints,
        vec![endpoints_trigger, trigger_channel(gone_rx)],
        crate::observe::observed("endpoints-orphans", &ctx.config.write_traces, orphans::reconcile),
        state,
        &ctx.stop,
        concurrency,
    );
    futures::future::join(sync, sweep).await;
    Ok(())
}

/// Make one Service's Endpoints match the pods it selects.
async fn reconcile(svc: Arc<Service>, st: Arc<State>) -> Result<Action, Error> {
    if service_selector(&svc).is_none() {
        // Without a selector the Endpoints are the user's (or another controller's).
        return Ok(Action::await_change());
    }
    if st.pods.wait_until_ready().await.is_err() || st.endpoints.wait_until_ready().await.is_err() {
        return Ok(Action::await_change()); // stopping
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods = selected_pods(&st.pods, &svc);
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let current = st.endpoints.get(&ObjectRef::new(&name).within(&ns));
    let api: Api<Endpoints> = Api::namespaced(st.client.clone(), &ns);
    match desired::plan(&svc, &pod_refs, current.as_deref()) {
        Plan::Unchanged => tracing::trace!(service = %name, namespace = %ns, "endpoints up to date"),
        Plan::Create(ep) => match api.create(&PostParams::default(), &ep).await {
            Ok(_) => tracing::debug!(service = %name, namespace = %ns, pods = pods.len(), "created endpoints"),
            // The namespace is going away; so is the Service.
            Err(e) if is_namespace_terminating(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        },
        Plan::Update(ep) => {
            api.replace(&name, &PostParams::default(), &ep).await?;
            tracing::debug!(service = %name, namespace = %ns, pods = pods.len(), "updated endpoints");
        }
    }
    Ok(Action::requeue(RESYNC))
}
