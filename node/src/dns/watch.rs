//! Keeping the table current: reflectors over Services, EndpointSlices and Pods; after any
//! change (a burst coalesced for [`SETTLE`]) the whole table is rebuilt from their stores.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::rr::Name;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::records::Table;
use super::server::TableHandle;
use crate::reflect::reflect;

/// How long a burst of changes is gathered before one rebuild.
const SETTLE: Duration = Duration::from_millis(100);

/// Feed `table` from the API server until `stop`. The first table is set once the Services
/// and EndpointSlices are listed (until then the zone answers SERVFAIL); Pods, which only
/// give PTR records, join whenever their list arrives.
pub async fn feed(client: kube::Client, zone: Name, table: TableHandle, stop: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let services = reflect::<Service>(&mut tasks, Api::all(client.clone()), &changed, |_| {}, "DNS");
    let slices = reflect::<EndpointSlice>(&mut tasks, Api::all(client.clone()), &changed, |_| {}, "DNS");
    let pods = reflect::<Pod>(&mut tasks, Api::all(client), &changed, slim_pod, "DNS");

    let synced = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.cancelled() => return,
    }
    loop {
        let (s, e, p) = (services.state(), slices.state(), pods.state());
        let t = Table::build(
            zone.clone(),
            s.iter().map(|x| x.as_ref()),
            e.iter().map(|x| x.as_ref()),
            p.iter().map(|x| x.as_ref()),
        );
        debug!(names = t.len(), services = s.len(), slices = e.len(), pods = p.len(), "DNS: table rebuilt");
        if table.get().is_none() {
            info!(names = t.len(), "DNS: cluster names loaded");
        }
        table.set(t);
        tokio::select! {
            _ = changed.notified() => {}
            _ = stop.cancelled() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => {}
            _ = stop.cancelled() => break,
        }
    }
    tasks.abort_all();
}

/// A Pod as the table needs it: its namespace and name, hostNetwork, phase and addresses.
fn slim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.annotations = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    pod.spec = pod.spec.take().map(|s| PodSpec { host_network: s.host_network, ..Default::default() });
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..Default::default()
    });
}
