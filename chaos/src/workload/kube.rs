//! The Kubernetes traffic profile of etcd's robustness suite, through the API: on a small
//! set of ConfigMaps, optimistic updates (75%), deletes with a resourceVersion
//! precondition (15%) and creates (10%), with an occasional list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::Api;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::{Endpoints, Target, OP_TIMEOUT};
use crate::history::{OpKind, Outcome};
use crate::workload::recorder::Recorder;

/// The etcd key of a workload ConfigMap (what the canonical log and watchers report).
pub fn etcd_key(namespace: &str, name: &str) -> String {
    format!("/registry/configmaps/{namespace}/{name}")
}

/// The value a workload ConfigMap carries.
pub fn value_of(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref().and_then(|d| d.get("v")).cloned()
}

pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn config_map(name: &str, value: &str, rv: Option<i64>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version: rv.map(|r| r.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

/// How a failed Kubernetes request ended: refused for sure, or unknown.
fn outcome_of_error(e: kube::Error) -> Outcome {
    match e {
        // Conflict, not found, already exists, invalid, forbidden: nothing was written.
        kube::Error::Api(s) if matches!(s.code, 400 | 401 | 403 | 404 | 409 | 422) => {
            Outcome::Fail { error: format!("{} {}", s.code, s.message) }
        }
        other => Outcome::Unknown { error: other.to_string() },
    }
}

async fn timed<T>(fut: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, Outcome> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(outcome_of_error(e)),
        Err(_) => Err(Outcome::Unknown { error: format!("no answer within {OP_TIMEOUT:?}") }),
    }
}

/// One sequential client of the profile.
#[allow(clippy::too_many_arguments)]
pub async fn client(
    id: u32,
    target: Target,
    namespace: String,
    names: Arc<Vec<String>>,
    endpoints: Arc<Endpoints>,
    recorder: Recorder,
    seed: u64,
    cancel: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut incarnation = 0u32;
    let mut seq = 0u64;
    while !cancel.is_cancelled() {
        let master = target.pick(&mut rng, endpoints.len());
        let api: Api<ConfigMap> = Api::namespaced(endpoints.kube[master].clone(), &namespace);
        let pid = super::process_id(id, incarnation);
        let name = names[rng.gen_range(0..names.len())].clone();
        let key = etcd_key(&namespace, &name);
        seq += 1;
        let value = format!("{id}-{seq}");
        let roll = rng.gen_range(0..100);
        let outcome_known = if roll < 5 {
            let pending = recorder.invoke(pid, Some(master), OpKind::List);
            let outcome = match timed(api.list(&ListParams::default())).await {
                Ok(list) => Outcome::Ok { revision: revision_of_list(&list), value: None },
                Err(o) => o,
            };
            finish(pending, outcome)
        } else {
            // Read the current version first (a quorum read), as the profile's optimistic
            // writers do; the read itself is not part of the checked history.
            let current = match timed(api.get_opt(&name)).await {
                Ok(c) => c,
                Err(_) => {
                    pause(&cancel).await;
                    continue;
                }
            };
            match current {
                None => {
                    let pending = recorder.invoke(pid, Some(master), OpKind::Create { key, value: value.clone() });
                    let outcome =
                        match timed(api.create(&PostParams::default(), &config_map(&name, &value, None))).await {
                            Ok(cm) => Outcome::Ok { revision: revision_of(&cm.metadata), value: Some(value) },
                            Err(o) => o,
                        };
                    finish(pending, outcome)
                }
                Some(cm) if roll < 20 => {
                    let rv = revision_of(&cm.metadata);
                    let pending = recorder.invoke(pid, Some(master), OpKind::Delete { key, expected_rv: rv });
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions { resource_version: Some(rv.to_string()), uid: None }),
                        ..Default::default()
                    };
                    let outcome = match timed(api.delete(&name, &dp)).await {
                        // The answer names the object as it was, not the delete's revision.
                        Ok(_) => Outcome::Ok { revision: 0, value: None },
                        Err(o) => o,
                    };
                    finish(pending, outcome)
                }
                Some(cm) => {
                    let rv = revision_of(&cm.metadata);
                    let pending = recorder.invoke(
                        pid,
                        Some(master),
                        OpKind::Update { key, value: value.clone(), expected_rv: rv },
                    );
                    let body = config_map(&name, &value, Some(rv));
                    let outcome = match timed(api.replace(&name, &PostParams::default(), &body)).await {
                        Ok(cm) => Outcome::Ok { revision: revision_of(&cm.metadata), value: Some(value) },
                        Err(o) => o,
                    };
                    finish(pending, outcome)
                }
            }
        };
        if !outcome_known {
            incarnation += 1;
            pause(&cancel).await;
        }
    }
}

fn revision_of_list(list: &kube::core::ObjectList<ConfigMap>) -> i64 {
    list.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Records the outcome; whether the client learned how its operation ended.
fn finish(pending: super::recorder::Pending, outcome: Outcome) -> bool {
    let known = !matches!(outcome, Outcome::Unknown { .. });
    pending.finish(outcome);
    known
}

/// Back off briefly after a failure so a down master is not hammered.
async fn pause(cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
}
