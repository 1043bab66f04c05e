//! The store's Kubernetes-facing semantics on one master: CAS, consistent paged lists,
//! watch replay and compaction, leases, revisions, bad input.

mod common;

use std::time::Duration;

use common::*;
use keelson_store::{
    Consistency, EventKind, KeyRange, OpResult, RangeRequest, StoreError, Txn, WatchRequest, WatchUpdate,
};

fn range_at(prefix: &str, revision: i64, limit: i64, after: Option<&[u8]>) -> RangeRequest {
    let mut r = RangeRequest::new(KeyRange::prefix(prefix.as_bytes().to_vec()));
    if let Some(last) = after {
        // Kubernetes' continue: start just after the last key of the previous page.
        let mut start = last.to_vec();
        start.push(0);
        r.range.key = start;
    }
    r.revision = revision;
    r.limit = limit;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict_returns_current_value_and_writes_nothing() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    tracing::info!("--- create if absent");
    let created = s.txn(Txn::cas_put("/registry/configmaps/default/a", "v1", 0)).await.unwrap();
    assert!(created.succeeded);
    let rev1 = created.revision;
    let again = s.txn(Txn::cas_put("/registry/configmaps/default/a", "other", 0)).await.unwrap();
    assert!(!again.succeeded, "second create must conflict");
    let cur = again.current_kv().expect("failure branch returns the current value");
    assert_eq!(cur.value, b"v1");
    assert_eq!(cur.mod_revision, rev1);
    assert_eq!(again.revision, rev1, "a failed CAS leaves no revision behind");

    tracing::info!("--- update with the right and a stale mod revision");
    let upd = s.txn(Txn::cas_put("/registry/configmaps/default/a", "v2", rev1)).await.unwrap();
    assert!(upd.succeeded);
    assert_eq!(upd.revision, rev1 + 1);
    let stale = s.txn(Txn::cas_put("/registry/configmaps/default/a", "v3", rev1)).await.unwrap();
    assert!(!stale.succeeded);
    let cur = stale.current_kv().unwrap();
    assert_eq!((cur.value.as_slice(), cur.mod_revision, cur.version), (&b"v2"[..], rev1 + 1, 2));

    tracing::info!("--- CAS delete");
    let del_stale = s.txn(Txn::cas_delete("/registry/configmaps/default/a", rev1)).await.unwrap();
    assert!(!del_stale.succeeded);
    assert_eq!(del_stale.current_kv().unwrap().value, b"v2");
    let del = s.txn(Txn::cas_delete("/registry/configmaps/default/a", rev1 + 1)).await.unwrap();
    assert!(del.succeeded);
    assert!(matches!(del.responses[0], OpResult::Delete { deleted: 1, .. }));
    let (kv, rev) = s.get("/registry/configmaps/default/a", Consistency::Linearizable).await.unwrap();
    assert!(kv.is_none());
    assert_eq!(rev, rev1 + 2);
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_list_is_consistent_at_its_pinned_revision() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    for i in 0..60 {
        s.txn(Txn::put(format!("/registry/pods/ns/p{i:03}"), format!("v{i}"))).await.unwrap();
    }
    let first = s.range(range_at("/registry/pods/", 0, 25, None)).await.unwrap();
    let pinned = first.revision;
    assert_eq!(first.kvs.len(), 25);
    assert!(first.more);
    assert_eq!(first.count, 60);

    tracing::info!("--- writes continue between pages");
    for i in 0..60 {
        if i % 3 == 0 {
            s.txn(Txn::put(format!("/registry/pods/ns/p{i:03}"), "changed")).await.unwrap();
        }
        if i % 7 == 0 {
            s.txn(Txn::delete(KeyRange::single(format!("/registry/pods/ns/p{i:03}")))).await.unwrap();
        }
    }
    s.txn(Txn::put("/registry/pods/ns/p0255", "new")).await.unwrap();

    let mut all = first.kvs.clone();
    let mut last = first.kvs.last().unwrap().key.clone();
    loop {
        let page = s.range(range_at("/registry/pods/", pinned, 25, Some(&last))).await.unwrap();
        all.extend(page.kvs.iter().cloned());
        if !page.more {
            break;
        }
        last = page.kvs.last().unwrap().key.clone();
    }
    assert_eq!(all.len(), 60, "the pages together are exactly the state at the pinned revision");
    for (i, kv) in all.iter().enumerate() {
        assert_eq!(kv.key, format!("/registry/pods/ns/p{i:03}").into_bytes());
        assert_eq!(kv.value, format!("v{i}").into_bytes());
        assert!(kv.mod_revision <= pinned);
    }
    let now = s.range(range_at("/registry/pods/", 0, 0, None)).await.unwrap();
    assert_eq!(now.count, 60 - 9 + 1, "the latest state has the later writes");
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_history_then_live_each_revision_once_in_order() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    let mut expected = Vec::new();
    for i in 0..40 {
        let r = s.txn(Txn::put(format!("/registry/a/{}", i % 5), format!("{i}"))).await.unwrap();
        expected.push((r.revision, EventKind::Put, format!("{i}")));
    }
    let d = s.txn(Txn::delete(KeyRange::prefix("/registry/a/"))).await.unwrap();
    for _ in 0..5 {
        expected.push((d.revision, EventKind::Delete, String::new()));
    }
    let from = expected[10].0;
    let mut w = s.watch(WatchRequest {
        range: KeyRange::prefix("/registry/"),
        start_revision: from,
        prev_kv: true,
        ..Default::default()
    });
    for i in 0..10 {
        let r = s.txn(Txn::put(format!("/registry/b/{i}"), format!("live{i}"))).await.unwrap();
        expected.push((r.revision, EventKind::Put, format!("live{i}")));
    }
    let want: Vec<_> = expected.iter().filter(|(rev, ..)| *rev >= from).cloned().collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        match within(WAIT, "watch events", w.next()).await.expect("watch ended early") {
            WatchUpdate::Events { events, revision } => {
                assert_eq!(events.last().unwrap().kv.mod_revision, revision);
                for e in events {
                    let v = String::from_utf8(e.kv.value.clone()).unwrap();
                    if e.kind == EventKind::Delete {
                        assert!(e.prev_kv.is_some(), "deletes carry the previous value");
                    }
                    got.push((e.kv.mod_revision, e.kind, v));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, want, "history then live, each revision once, in order");
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_compact_revision_reads_and_watches_are_compacted() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(s.txn(Txn::put("/k", format!("{i}"))).await.unwrap().revision);
    }
    let compact = revs[10];
    s.compact(compact).await.unwrap();
    assert_eq!(s.compact(compact).await, Err(StoreError::Compacted { compact_revision: compact }));
    let mut r = RangeRequest::new(KeyRange::single("/k"));
    r.revision = compact - 1;
    assert_eq!(s.range(r.clone()).await, Err(StoreError::Compacted { compact_revision: compact }));
    r.revision = compact;
    assert_eq!(s.range(r.clone()).await.unwrap().kvs[0].value, b"10");
    r.revision = revs[19] + 5;
    assert!(matches!(s.range(r).await, Err(StoreError::FutureRevision { .. })));

    let mut w =
        s.watch(WatchRequest { range: KeyRange::single("/k"), start_revision: compact - 1, ..Default::default() });
    assert_eq!(within(WAIT, "compacted", w.next()).await, Some(WatchUpdate::Compacted { compact_revision: compact }));
    let mut w = s.watch(WatchRequest { range: KeyRange::single("/k"), start_revision: compact, ..Default::default() });
    match within(WAIT, "events from the compact revision", w.next()).await {
        Some(WatchUpdate::Events { events, .. }) => assert_eq!(events[0].kv.mod_revision, compact),
        other => panic!("unexpected {other:?}"),
    }
    tracing::info!("--- physical compaction keeps what reads at or above the compact revision need");
    eventually(WAIT, "physical compaction", || async {
        let mut r = RangeRequest::new(KeyRange::single("/k"));
        r.revision = compact;
        let v = s.range(r).await.unwrap();
        (v.kvs[0].value == b"10").then_some(())
    })
    .await;
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_keys_with_delete_events() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    let (id, ttl, _) = s.lease_grant(2, 0).await.unwrap();
    assert_eq!(ttl, 2);
    let mut w = s.watch(WatchRequest { range: KeyRange::prefix("/registry/events/"), ..Default::default() });
    for k in ["a", "b"] {
        let mut txn = Txn::put(format!("/registry/events/{k}"), "e");
        if let keelson_store::Op::Put(p) = &mut txn.success[0] {
            p.lease = id;
        }
        s.txn(txn).await.unwrap();
    }
    let (left, granted, keys) = s.lease_time_to_live(id, true).await.unwrap();
    assert_eq!(granted, 2);
    assert!(left <= 2);
    assert_eq!(keys.len(), 2);
    let mut deletes = Vec::new();
    while deletes.len() < 2 {
        match within(Duration::from_secs(15), "lease expiry DELETE events", w.next()).await.unwrap() {
            WatchUpdate::Events { events, .. } => {
                deletes.extend(events.into_iter().filter(|e| e.kind == EventKind::Delete).map(|e| e.kv.key))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    deletes.sort();
    assert_eq!(deletes, vec![b"/registry/events/a".to_vec(), b"/registry/events/b".to_vec()]);
    assert_eq!(s.lease_time_to_live(id, false).await, Err(StoreError::LeaseNotFound(id)));
    assert_eq!(s.lease_keep_alive(id).await, Err(StoreError::LeaseNotFound(id)));
    let mut bad = Txn::put("/x", "y");
    if let keelson_store::Op::Put(p) = &mut bad.success[0] {
        p.lease = id;
    }
    assert_eq!(s.txn(bad).await, Err(StoreError::LeaseNotFound(id)));
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_move_once_per_successful_write_and_bad_input_writes_nothing() {
    init_tracing();
    let m = start_single(|_| {}).await;
    let s = &m.store;
    let r0 = s.txn(Txn::put("/a", "1")).await.unwrap().revision;
    tracing::info!("--- no-op writes leave no revision");
    assert_eq!(s.txn(Txn::delete(KeyRange::single("/missing"))).await.unwrap().revision, r0);
    assert!(!s.txn(Txn::cas_put("/a", "2", 999)).await.unwrap().succeeded);
    s.lease_grant(30, 0).await.unwrap();
    assert_eq!(s.revision(), r0);
    tracing::info!("--- a transaction's writes share one revision");
    let multi = Txn {
        success: vec![
            keelson_store::Op::Put(keelson_store::PutRequest {
                key: b"/m1".to_vec(),
                value: b"x".to_vec(),
                ..Default::default()
            }),
            keelson_store::Op::Put(keelson_store::PutRequest {
                key: b"/m2".to_vec(),
                value: b"y".to_vec(),
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    let r = s.txn(multi).await.unwrap();
    assert_eq!(r.revision, r0 + 1);
    let (m1, _) = s.get("/m1", Consistency::Serializable).await.unwrap();
    let (m2, _) = s.get("/m2", Consistency::Serializable).await.unwrap();
    assert_eq!((m1.unwrap().mod_revision, m2.unwrap().mod_revision), (r0 + 1, r0 + 1));
    tracing::info!("--- bad input");
    let big = vec![b'x'; (3 << 19) + 1];
    assert!(matches!(s.txn(Txn::put("/big", big)).await, Err(StoreError::RequestTooLarge { .. })));
    assert_eq!(s.txn(Txn::put("", "v")).await, Err(StoreError::EmptyKey));
    assert!(matches!(s.lease_grant(keelson_store::MAX_LEASE_TTL + 1, 0).await, Err(StoreError::LeaseTtlTooLarge(_))));
    assert_eq!(s.revision(), r0 + 1, "nothing was written");
    assert!(s.get("/big", Consistency::Linearizable).await.unwrap().0.is_none());
    m.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_report_delivered_revisions_only() {
    init_tracing();
    let m = start_single(|c| c.progress_interval = Duration::from_millis(200)).await;
    let s = &m.store;
    s.txn(Txn::put("/other", "1")).await.unwrap();
    let mut w =
        s.watch(WatchRequest { range: KeyRange::prefix("/watched/"), progress_notify: true, ..Default::default() });
    s.txn(Txn::put("/other", "2")).await.unwrap();
    let r = s.txn(Txn::put("/watched/a", "1")).await.unwrap().revision;
    let mut saw_event = false;
    loop {
        match within(WAIT, "progress after the event", w.next()).await.unwrap() {
            WatchUpdate::Events { revision, .. } => {
                assert_eq!(revision, r);
                saw_event = true;
            }
            WatchUpdate::Progress { revision } => {
                assert!(saw_event || revision < r, "a bookmark at {revision} before the event at {r} was delivered");
                if saw_event {
                    assert!(revision >= r);
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    w.request_progress();
    match within(WAIT, "requested progress", w.next()).await.unwrap() {
        WatchUpdate::Progress { revision } => assert_eq!(revision, s.revision()),
        other => panic!("unexpected {other:?}"),
    }
    m.store.shutdown().await;
}
