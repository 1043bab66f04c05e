//! Three masters as separate processes on loopback: writes through every master;
//! SIGKILL the leader during a stream of writes; every acknowledged write survives on
//! every master (including the killed one after its restart), a new leader is elected
//! within 2 s, and a watcher on a survivor sees every revision once, in order.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use keelson_store::pb::etcdserverpb::watch_request::RequestUnion;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_loses_no_acknowledged_write_and_no_watch_event() {
    let mut c = Cluster::start(3).await;

    tracing::info!("--- writes through every master are visible on every master");
    for i in 0..3 {
        let mut kv = c.kv(i).await;
        must_put(&mut kv, &format!("/registry/configmaps/default/via-m{}", i + 1), "x").await;
    }
    for i in 0..3 {
        let mut kv = c.kv(i).await;
        for j in 0..3 {
            let v = must_get(&mut kv, &format!("/registry/configmaps/default/via-m{}", j + 1), false).await;
            assert_eq!(v.as_deref(), Some(&b"x"[..]), "linearizable read on m{} of m{}'s write", i + 1, j + 1);
        }
    }

    let leader = c.wait_leader(&[0, 1, 2]).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let watch_on = survivors[0];

    tracing::info!("--- a watcher on survivor m{} from the first revision", watch_on + 1);
    let mut wc = c.watch(watch_on).await;
    let (wtx, wrx) = tokio::sync::mpsc::channel(16);
    wtx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"/registry/".to_vec(),
            range_end: keelson_store::keys::prefix_end(b"/registry/"),
            start_revision: 2,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut events = wc.watch(tokio_stream::wrappers::ReceiverStream::new(wrx)).await.expect("watch").into_inner();
    // (revision, key) of every event: a transaction writing several keys (the API server's
    // Service + address claim) has several events at one revision.
    let seen: Arc<Mutex<Vec<(i64, Vec<u8>)>>> = Arc::default();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let _keep_open = wtx;
            while let Ok(Some(resp)) = events.message().await {
                assert!(!resp.canceled, "watch canceled: {}", resp.cancel_reason);
                let mut s = seen.lock().unwrap();
                for e in resp.events {
                    let kv = e.kv.expect("kv");
                    s.push((kv.mod_revision, kv.key));
                }
            }
        })
    };

    tracing::info!("--- writers on every master");
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let mut kv = c.kv(w % 3).await;
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) && seq < 5000 {
                let key = format!("/registry/pods/ns/w{w}-{seq}");
                let mut req = tonic::Request::new(PutRequest {
                    key: key.clone().into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                });
                req.set_timeout(Duration::from_secs(5));
                match kv.put(req).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(key, r.into_inner().header.unwrap().revision);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                seq += 1;
            }
        }));
    }
    eventually(WAIT, "200 acknowledged writes before the kill", || async {
        (acked.lock().unwrap().len() >= 200).then_some(())
    })
    .await;

    tracing::info!("--- SIGKILL the leader m{}", leader + 1);
    c.kill(leader);
    let killed_at = Instant::now();
    let new_leader = c.wait_leader(&survivors).await;
    let failover = killed_at.elapsed();
    tracing::info!(?failover, "new leader m{}", new_leader + 1);
    assert_ne!(new_leader, leader);
    assert!(failover < Duration::from_secs(2), "new leader after {failover:?}, want < 2 s");

    let before = acked.lock().unwrap().len();
    eventually(WAIT, "writes to be acknowledged after the failover", || async {
        (acked.lock().unwrap().len() >= before + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        within(WAIT, "writers to stop", w).await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let max_rev = *acked.values().max().unwrap();

    tracing::info!("--- every acknowledged write is on every survivor");
    for &i in &survivors {
        eventually(WAIT, "survivor to apply the last acknowledged write", || async {
            c.revision(i).await.filter(|r| *r >= max_rev)
        })
        .await;
        must_have_all(&c, i, &acked).await;
    }

    tracing::info!("--- the killed master restarts, catches up and has them too");
    c.spawn(leader);
    eventually(WAIT, "restarted master to catch up", || async { c.revision(leader).await.filter(|r| *r >= max_rev) })
        .await;
    must_have_all(&c, leader, &acked).await;

    tracing::info!("--- the survivor's watcher saw each revision once, in order, no gap");
    let final_rev = c.revision(watch_on).await.unwrap();
    eventually(WAIT, "watcher to reach the final revision", || async {
        (seen.lock().unwrap().last().map(|(r, _)| *r) == Some(final_rev)).then_some(())
    })
    .await;
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    let mut revs: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    revs.dedup();
    assert_eq!(revs.first(), Some(&2), "an empty store is at revision 1, the first write makes 2");
    for w in revs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "watch gap or reorder between revisions {} and {}", w[0], w[1]);
    }
    let mut events = seen.clone();
    events.sort();
    events.dedup();
    assert_eq!(seen.len(), events.len(), "no event delivered twice");
    for (key, rev) in &acked {
        assert!(revs.binary_search(rev).is_ok(), "watcher missed {key} at revision {rev}");
    }
}

async fn must_have_all(c: &Cluster, i: usize, acked: &BTreeMap<String, i64>) {
    let mut kv = c.kv(i).await;
    let resp = within(
        WAIT,
        "range of all pods",
        kv.range(RangeRequest {
            key: b"/registry/pods/".to_vec(),
            range_end: keelson_store::keys::prefix_end(b"/registry/pods/"),
            serializable: true,
            keys_only: true,
            ..Default::default()
        }),
    )
    .await
    .expect("range")
    .into_inner();
    let present: std::collections::BTreeSet<Vec<u8>> = resp.kvs.into_iter().map(|kv| kv.key).collect();
    let missing: Vec<&String> = acked.keys().filter(|k| !present.contains(k.as_bytes())).collect();
    assert!(
        missing.is_empty(),
        "m{} lost {} acknowledged writes, e.g. {:?}",
        i + 1,
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
