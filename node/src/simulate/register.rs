//! Registering the nodes: create each Node (or take over the one that exists), then write
//! its status through `nodes/status` — at most [`CONCURRENCY`] nodes at a time, each
//! retried with backoff until it works, the request is invalid, or the sim stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::heartbeat::heartbeat_stopped;
use super::node_object;
use super::nodes::NodeTable;
use super::retry::{is_conflict, is_invalid, sleep_or_stop, Backoff};
use super::{SimConfig, SimError, FIELD_MANAGER};

/// Nodes registered at once.
const CONCURRENCY: usize = 32;
/// Re-reads of a node whose take-over keeps conflicting, per attempt.
const TAKEOVER_TRIES: usize = 5;

/// How registration went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub created: usize,
    pub taken_over: usize,
}

/// Register every node (recording each in `table`); `Ok(None)` if stopped first.
pub async fn register_all(
    client: &kube::Client,
    cfg: &SimConfig,
    table: &NodeTable,
    stop: &CancellationToken,
) -> Result<Option<Registered>, SimError> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let failures = AtomicU64::new(0);
    let mut results = stream::iter(0..table.count())
        .map(|i| {
            let (api, pp, failures) = (&api, &pp, &failures);
            async move { (i, register_retrying(api, pp, cfg, &table.name(i), failures, stop).await) }
        })
        .buffer_unordered(CONCURRENCY);
    let mut done = Registered::default();
    while let Some((i, r)) = results.next().await {
        match r? {
            None => return Ok(None),
            Some((node, created)) => {
                table.observe(i, &node);
                if created {
                    done.created += 1;
                } else {
                    done.taken_over += 1;
                }
            }
        }
    }
    Ok(Some(done))
}

/// Register one node, retrying until it works; `None` if stopped first. `failures`
/// counts failed attempts of all nodes (the first and every thousandth are warned about).
async fn register_retrying(
    api: &Api<Node>,
    pp: &PatchParams,
    cfg: &SimConfig,
    name: &str,
    failures: &AtomicU64,
    stop: &CancellationToken,
) -> Result<Option<(Node, bool)>, SimError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            r = register(api, pp, cfg, name) => r,
        };
        match attempt {
            Ok(done) => return Ok(Some(done)),
            Err(e) if is_invalid(&e) => return Err(SimError::Register { node: name.to_string(), source: e }),
            Err(e) => {
                let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n % 1000 == 0 {
                    tracing::warn!(node = %name, failures = n, error = %e, "registering simulated nodes is failing; retrying");
                } else {
                    tracing::debug!(node = %name, error = %e, "registering node failed; retrying");
                }
                if !sleep_or_stop(stop, backoff.next_delay()).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Create or take over `name`, then write its status (unless its heartbeat is stopped).
/// Returns the Node and whether it was created.
async fn register(api: &Api<Node>, pp: &PatchParams, cfg: &SimConfig, name: &str) -> Result<(Node, bool), kube::Error> {
    let post = PostParams { field_manager: pp.field_manager.clone(), ..Default::default() };
    let (node, created) = match api.create(&post, &node_object::node(cfg, name)).await {
        Ok(n) => (n, true),
        Err(e) if is_conflict(&e) => (take_over(api, pp, cfg, name).await?, false),
        Err(e) => return Err(e),
    };
    if heartbeat_stopped(&node.metadata) {
        return Ok((node, created));
    }
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let patch = node_object::status_patch(cfg, name, &conditions, Timestamp::now());
    let node = api.patch_status(name, pp, &Patch::Merge(&patch)).await?;
    Ok((node, created))
}

/// Make an existing Node ours: a patch pinned to what was read, re-read on conflict.
async fn take_over(api: &Api<Node>, pp: &PatchParams, cfg: &SimConfig, name: &str) -> Result<Node, kube::Error> {
    let mut tries = 0;
    loop {
        let existing = api.get(name).await?;
        let Some(patch) = node_object::takeover_patch(cfg, name, &existing) else { return Ok(existing) };
        match api.patch(name, pp, &Patch::Merge(&patch)).await {
            Ok(n) => return Ok(n),
            Err(e) if is_conflict(&e) && tries + 1 < TAKEOVER_TRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}
