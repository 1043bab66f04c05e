//! The per-key register workload through the etcd v3 endpoint: unique-value puts and
//! linearizable gets on a few keys, each answer recorded for the linearizability checker.

use std::sync::Arc;
use std::time::Duration;

use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{Endpoints, Target, OP_TIMEOUT};
use crate::history::{OpKind, Outcome};
use crate::workload::recorder::Recorder;

/// One sequential client. After an operation with no answer the client continues as a new
/// process id (`id * INCARNATIONS + incarnation`), as in Jepsen: the old one may still be "in
/// flight" forever.
pub async fn client(
    id: u32,
    target: Target,
    keys: Arc<Vec<String>>,
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
        let key = keys[rng.gen_range(0..keys.len())].clone();
        let pid = super::process_id(id, incarnation);
        let mut kv = KvClient::new(endpoints.etcd[master].clone());
        let answered = if rng.gen_bool(0.5) {
            seq += 1;
            let value = format!("{id}-{seq}");
            let pending = recorder.invoke(pid, Some(master), OpKind::Put { key: key.clone(), value: value.clone() });
            let req = PutRequest { key: key.into_bytes(), value: value.clone().into_bytes(), ..Default::default() };
            let outcome = match tokio::time::timeout(OP_TIMEOUT, kv.put(req)).await {
                Ok(Ok(resp)) => {
                    let revision = resp.into_inner().header.map(|h| h.revision).unwrap_or(0);
                    Outcome::Ok { revision, value: Some(value) }
                }
                // Refused before it could be proposed: nothing was written.
                Ok(Err(s)) if definitely_refused(s.code()) => Outcome::Fail { error: s.message().to_string() },
                Ok(Err(s)) => Outcome::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
                Err(_) => Outcome::Unknown { error: format!("no answer within {OP_TIMEOUT:?}") },
            };
            let ok = !matches!(outcome, Outcome::Unknown { .. });
            pending.finish(outcome);
            ok
        } else {
            let pending = recorder.invoke(pid, Some(master), OpKind::Get { key: key.clone() });
            let req = RangeRequest { key: key.into_bytes(), ..Default::default() };
            let outcome = match tokio::time::timeout(OP_TIMEOUT, kv.range(req)).await {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    let revision = resp.header.map(|h| h.revision).unwrap_or(0);
                    let value = resp.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                    Outcome::Ok { revision, value }
                }
                Ok(Err(s)) => Outcome::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
                Err(_) => Outcome::Unknown { error: format!("no answer within {OP_TIMEOUT:?}") },
            };
            let ok = matches!(outcome, Outcome::Ok { .. });
            pending.finish(outcome);
            ok
        };
        if !answered {
            incarnation += 1;
            // Don't spin against a master that is down.
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

/// Codes keelson returns only for a request it rejected before proposing it.
fn definitely_refused(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::OutOfRange)
}
