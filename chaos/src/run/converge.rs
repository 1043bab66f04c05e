//! Convergence after the last heal: every master reaches the same applied index and the
//! same state (a hash of every key, value and mod revision read locally from each master
//! at one revision), and then a fresh write succeeds.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest};

use super::monitor::ask_all;
use crate::check::Verdict;

/// Keys per page of [`state_hash`] (whole-keyspace answers outgrow gRPC's 4 MiB limit).
const PAGE: i64 = 100;

/// A hash of the whole keyspace as `channel`'s master holds it at `revision`, read
/// locally (serializable) so it says what that master applied, page by page.
pub async fn state_hash(channel: &tonic::transport::Channel, revision: i64) -> Option<(u64, usize)> {
    let mut kv = KvClient::new(channel.clone());
    let mut h = DefaultHasher::new();
    let mut keys = 0usize;
    let mut from = vec![0u8];
    loop {
        let req = RangeRequest {
            key: from.clone(),
            range_end: vec![0],
            revision,
            serializable: true,
            limit: PAGE,
            ..Default::default()
        };
        let resp = tokio::time::timeout(Duration::from_secs(5), kv.range(req)).await.ok()?.ok()?.into_inner();
        for kv in &resp.kvs {
            (&kv.key, &kv.value, kv.mod_revision, kv.create_revision, kv.version).hash(&mut h);
        }
        keys += resp.kvs.len();
        match resp.kvs.last() {
            Some(last) if resp.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Some((h.finish(), keys)),
        }
    }
}

/// Waits up to `within` for every master to agree; then writes `sentinel`.
pub async fn converge(
    channels: &[tonic::transport::Channel],
    within: Duration,
    sentinel: &str,
) -> (Verdict, Option<Duration>) {
    let started = Instant::now();
    let mut last_seen = String::from("no master answered");
    let mut agreed = None;
    // Background writers (lease renewals, controllers) keep the indexes moving, so the
    // target is the highest applied index seen first: every master must reach it.
    let mut target: Option<u64> = None;
    while started.elapsed() < within {
        let said = ask_all(channels, Duration::from_secs(1)).await;
        let applied: Vec<Option<u64>> = said.iter().map(|s| s.map(|s| s.applied)).collect();
        let revisions: Vec<Option<i64>> = said.iter().map(|s| s.map(|s| s.revision)).collect();
        last_seen = format!("applied index per master {applied:?}, revision {revisions:?}");
        if said.iter().all(|s| s.is_some()) {
            let goal = *target.get_or_insert_with(|| applied.iter().flatten().copied().max().unwrap_or(0));
            if applied.iter().flatten().all(|&a| a >= goal) {
                let rev = revisions.iter().flatten().copied().min().unwrap_or(0);
                let hashes = futures::future::join_all(channels.iter().map(|c| state_hash(c, rev))).await;
                last_seen = format!("{last_seen}; state (hash, keys) at revision {rev} per master {hashes:?}");
                if hashes.iter().all(|h| h.is_some()) && hashes.windows(2).all(|w| w[0] == w[1]) {
                    agreed = Some((started.elapsed(), rev, hashes[0].map(|h| h.1).unwrap_or(0)));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some((took, rev, keys)) = agreed else {
        let v = Verdict {
            name: "convergence",
            ok: false,
            checked: channels.len(),
            violations: vec![last_seen.clone()],
            summary: format!("masters did not agree within {within:?}: {last_seen}"),
        };
        return (v, None);
    };
    // Then a fresh write must succeed (any master; followers forward).
    let mut written = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    'outer: while Instant::now() < deadline {
        for c in channels {
            let mut kv = KvClient::new(c.clone());
            let req = PutRequest { key: sentinel.as_bytes().to_vec(), value: b"end".to_vec(), ..Default::default() };
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), kv.put(req)).await {
                written = r.into_inner().header.map(|h| h.revision);
                break 'outer;
            }
        }
    }
    let ok = written.is_some();
    let summary = match written {
        Some(w) => format!(
            "{} masters agreed after {} ms (each reached applied index of the first poll; {keys} keys hash-equal at revision {rev}); a fresh write landed at revision {w}",
            channels.len(),
            took.as_millis()
        ),
        None => format!("masters agreed at revision {rev} but no fresh write succeeded within 10 s"),
    };
    (Verdict { name: "convergence", ok, checked: channels.len(), violations: Vec::new(), summary }, Some(took))
}
