//! Failover probes: one writer through the etcd endpoint and one through the Kubernetes
//! API, each writing its own key as often as it can with a short timeout and moving to
//! the next master on any failure — so the first write acknowledged after a fault marks
//! the failover within a few tens of milliseconds. Their operations are recorded like
//! every other and checked with the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::PutRequest;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::Api;
use tokio_util::sync::CancellationToken;

use super::kube::{etcd_key, revision_of};
use super::Endpoints;
use crate::history::{OpKind, Outcome};
use crate::workload::recorder::Recorder;

/// How long one probe write may take before the probe moves on.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between successful writes.
const EVERY: Duration = Duration::from_millis(20);

/// Client ids of the probes (each incarnation adds one).
pub const ETCD_PROBE: u32 = 900;
pub const KUBE_PROBE: u32 = 950;

pub async fn etcd(key: String, endpoints: Arc<Endpoints>, recorder: Recorder, cancel: CancellationToken) {
    let mut master = 0usize;
    let mut incarnation = 0u32;
    let mut seq = 0u64;
    while !cancel.is_cancelled() {
        seq += 1;
        let value = format!("probe-{seq}");
        let pending = recorder.invoke(
            super::process_id(ETCD_PROBE, incarnation),
            Some(master),
            OpKind::Put { key: key.clone(), value: value.clone() },
        );
        let mut kv = KvClient::new(endpoints.etcd[master].clone());
        let req = PutRequest { key: key.clone().into_bytes(), value: value.clone().into_bytes(), ..Default::default() };
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, kv.put(req)).await {
            Ok(Ok(r)) => {
                Outcome::Ok { revision: r.into_inner().header.map(|h| h.revision).unwrap_or(0), value: Some(value) }
            }
            Ok(Err(s)) => Outcome::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
            Err(_) => Outcome::Unknown { error: format!("no answer within {PROBE_TIMEOUT:?}") },
        };
        let ok = matches!(outcome, Outcome::Ok { .. });
        pending.finish(outcome);
        if !ok {
            incarnation += 1;
            master = (master + 1) % endpoints.len();
        }
        pace(&cancel, ok).await;
    }
}

/// Server-side apply of the probe ConfigMap: no read first, no conflicts to retry.
pub async fn kube(namespace: String, endpoints: Arc<Endpoints>, recorder: Recorder, cancel: CancellationToken) {
    let name = "probe";
    let key = etcd_key(&namespace, name);
    let mut master = 0usize;
    let mut incarnation = 0u32;
    let mut seq = 0u64;
    let pp = PatchParams::apply("keelson-chaos-probe").force();
    while !cancel.is_cancelled() {
        seq += 1;
        let value = format!("probe-{seq}");
        let api: Api<ConfigMap> = Api::namespaced(endpoints.kube[master].clone(), &namespace);
        let cm = ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(BTreeMap::from([("v".to_string(), value.clone())])),
            ..Default::default()
        };
        // An apply either creates or updates; recorded as an update of unknown prior
        // version (expected_rv 0), which the checkers treat as a plain write.
        let pending = recorder.invoke(
            super::process_id(KUBE_PROBE, incarnation),
            Some(master),
            OpKind::Update { key: key.clone(), value: value.clone(), expected_rv: 0 },
        );
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, api.patch(name, &pp, &Patch::Apply(&cm))).await {
            Ok(Ok(cm)) => Outcome::Ok { revision: revision_of(&cm.metadata), value: Some(value) },
            Ok(Err(kube::Error::Api(s))) if matches!(s.code, 400 | 403 | 404 | 409 | 422) => {
                Outcome::Fail { error: format!("{} {}", s.code, s.message) }
            }
            Ok(Err(e)) => Outcome::Unknown { error: e.to_string() },
            Err(_) => Outcome::Unknown { error: format!("no answer within {PROBE_TIMEOUT:?}") },
        };
        let ok = matches!(outcome, Outcome::Ok { .. });
        pending.finish(outcome);
        if !ok {
            incarnation += 1;
            master = (master + 1) % endpoints.len();
        }
        pace(&cancel, ok).await;
    }
}

async fn pace(cancel: &CancellationToken, ok: bool) {
    let d = if ok { EVERY } else { Duration::from_millis(5) };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
