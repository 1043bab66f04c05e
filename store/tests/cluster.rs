//! Several masters in one process: forwarding, linearizable reads on followers, the
//! leadership stream, membership changes with snapshot catch-up, and lease deadlines
//! across a leader change.

mod common;

use std::time::Duration;

use common::*;
use keelson_store::{ClusterState, Consistency, KeyRange, Member, RangeRequest, Store, StoreConfig, StoreError, Txn};

fn leader_of(ms: &[Master]) -> Option<usize> {
    ms.iter().position(|m| m.store.leadership().borrow().is_leader)
}

async fn must_leader(ms: &[Master]) -> usize {
    eventually(WAIT, "one leader among the masters", || async { leader_of(ms) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_writes_and_serve_linearizable_reads() {
    init_tracing();
    let ms = start_cluster(3, |_| {}).await;
    let leader = must_leader(&ms).await;
    tracing::info!("--- one leader, one term, seen by everyone");
    eventually(WAIT, "every master to see the same leader and term", || async {
        let views: Vec<_> = ms.iter().map(|m| *m.store.leadership().borrow()).collect();
        let leader_id = ms[leader].store.member_id();
        views.iter().all(|v| v.leader == Some(leader_id) && v.term == views[0].term).then_some(())
    })
    .await;
    assert_eq!(ms.iter().filter(|m| m.store.leadership().borrow().is_leader).count(), 1);

    tracing::info!("--- a write through each master is read back linearizably on every other");
    for (i, m) in ms.iter().enumerate() {
        let r = m.store.txn(Txn::put(format!("/registry/x/{i}"), format!("{i}"))).await.unwrap();
        for other in &ms {
            let (kv, rev) = other.store.get(format!("/registry/x/{i}"), Consistency::Linearizable).await.unwrap();
            assert_eq!(kv.unwrap().value, format!("{i}").into_bytes());
            assert!(rev >= r.revision);
        }
        // Like etcd, a write through a follower returns after that follower applied it.
        let (kv, _) = m.store.get(format!("/registry/x/{i}"), Consistency::Serializable).await.unwrap();
        assert!(kv.is_some(), "read-your-write on the master that took the write");
    }
    let revs: Vec<i64> = ms.iter().map(|m| m.store.revision()).collect();
    eventually(WAIT, "all masters at the same revision", || async {
        let r: Vec<i64> = ms.iter().map(|m| m.store.revision()).collect();
        r.iter().all(|x| *x == r[0]).then_some(())
    })
    .await;
    assert!(revs.iter().all(|r| *r >= 3));
    for m in &ms {
        m.store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_master_joins_from_a_snapshot_and_can_be_removed() {
    init_tracing();
    let tweak = |c: &mut StoreConfig| {
        c.snapshot_after_entries = 50;
        c.snapshot_keep_logs = 10;
    };
    let ms = start_cluster(3, tweak).await;
    let s = &ms[0].store;
    tracing::info!("--- enough entries that the log is purged behind a snapshot");
    for i in 0..300 {
        s.txn(Txn::put(format!("/registry/pods/ns/p{i}"), "v")).await.unwrap();
    }
    s.compact(s.revision() - 50).await.unwrap();
    let want_rev = s.revision();

    tracing::info!("--- add m4 (learner, then voter) and start it with state=existing");
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("127.0.0.1:{}", free_port());
    let mut initial = ms[0].config.initial_cluster.clone();
    initial.push(("m4".into(), peer.clone()));
    let (id, members) = s
        .add_member(
            Member { name: String::new(), peer_addr: peer.clone(), client_addr: String::new(), voter: false },
            false,
        )
        .await
        .unwrap();
    assert!(members.iter().any(|m| m.id == id && m.is_learner), "m4 starts as a learner: {members:?}");
    let mut cfg = StoreConfig {
        name: "m4".into(),
        data_dir: dir.path().to_path_buf(),
        peer_addr: peer,
        client_addr: format!("127.0.0.1:{}", free_port()),
        initial_cluster: initial,
        initial_cluster_state: ClusterState::Existing,
        ..StoreConfig::default()
    };
    tweak(&mut cfg);
    let m4 = within(WAIT, "m4 to open", Store::open(cfg)).await.unwrap();
    assert_eq!(m4.member_id(), id);
    eventually(WAIT, "m4 to catch up", || async { (m4.revision() >= want_rev).then_some(()) }).await;
    eventually(WAIT, "m4 to become a voter with its name", || async {
        s.members().iter().any(|m| m.id == id && !m.is_learner && m.member.name == "m4").then_some(())
    })
    .await;
    let all = m4
        .range(RangeRequest { serializable: true, ..RangeRequest::new(KeyRange::prefix("/registry/pods/")) })
        .await
        .unwrap();
    assert_eq!(all.count, 300, "m4 has every key");
    assert!(dir.path().join("snapshots").read_dir().unwrap().count() >= 1, "m4 was installed from a snapshot");
    let mut old = RangeRequest::new(KeyRange::single("/registry/pods/ns/p0"));
    old.serializable = true;
    old.revision = want_rev - 60;
    assert!(matches!(m4.range(old).await, Err(StoreError::Compacted { .. })), "m4 has the compact revision too");

    tracing::info!("--- writes through m4, then remove it while the cluster serves");
    m4.txn(Txn::put("/registry/pods/ns/from-m4", "v")).await.unwrap();
    let members = ms[1].store.remove_member(id).await.unwrap();
    assert!(members.iter().all(|m| m.id != id));
    let r = ms[2].store.txn(Txn::put("/registry/pods/ns/after-removal", "v")).await.unwrap();
    assert!(r.revision > want_rev);
    m4.shutdown().await;
    for m in &ms {
        m.store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_voter_is_promoted_by_the_next_leader() {
    init_tracing();
    let ms = start_cluster(3, |_| {}).await;
    let leader = must_leader(&ms).await;
    tracing::info!("--- add m4 as a future voter, then stop the leader before m4 even starts");
    let peer = format!("127.0.0.1:{}", free_port());
    let mut initial = ms[0].config.initial_cluster.clone();
    initial.push(("m4".into(), peer.clone()));
    let (id, members) = ms[leader]
        .store
        .add_member(
            Member { name: String::new(), peer_addr: peer.clone(), client_addr: String::new(), voter: false },
            false,
        )
        .await
        .unwrap();
    assert!(members.iter().any(|m| m.id == id && m.is_learner && m.member.voter), "{members:?}");
    ms[leader].store.shutdown().await;
    let rest: Vec<&Master> = ms.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m).collect();
    eventually(WAIT, "a new leader among the other two", || async {
        rest.iter().any(|m| m.store.leadership().borrow().is_leader).then_some(())
    })
    .await;
    tracing::info!("--- m4 starts; the new leader (not the one that added it) promotes it");
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        name: "m4".into(),
        data_dir: dir.path().to_path_buf(),
        peer_addr: peer,
        client_addr: format!("127.0.0.1:{}", free_port()),
        initial_cluster: initial,
        initial_cluster_state: ClusterState::Existing,
        ..StoreConfig::default()
    };
    let m4 = within(WAIT, "m4 to open", Store::open(cfg)).await.unwrap();
    eventually(WAIT, "m4 to be promoted to voter by the new leader", || async {
        rest[0].store.members().iter().any(|m| m.id == id && !m.is_learner).then_some(())
    })
    .await;
    m4.shutdown().await;
    for m in rest {
        m.store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_extends_leases_instead_of_expiring_them() {
    init_tracing();
    let ms = start_cluster(3, |_| {}).await;
    let leader = must_leader(&ms).await;
    let (id, _, _) = ms[leader].store.lease_grant(4, 0).await.unwrap();
    ms[leader]
        .store
        .txn({
            let mut t = Txn::put("/registry/events/e1", "x");
            if let keelson_store::Op::Put(p) = &mut t.success[0] {
                p.lease = id;
            }
            t
        })
        .await
        .unwrap();
    tracing::info!("--- let most of the TTL pass without keep-alives, then lose the leader");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ms[leader].store.shutdown().await;
    let rest: Vec<&Master> = ms.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m).collect();
    let new_leader = eventually(WAIT, "a new leader", || async {
        rest.iter().position(|m| m.store.leadership().borrow().is_leader)
    })
    .await;
    let (left, granted, _) = rest[new_leader].store.lease_time_to_live(id, false).await.unwrap();
    assert_eq!(granted, 4);
    assert!(left >= 3, "the new leader gave the lease a full TTL again (left {left}s)");
    let (kv, _) = rest[0].store.get("/registry/events/e1", Consistency::Linearizable).await.unwrap();
    assert!(kv.is_some(), "the key survives the leader change");
    tracing::info!("--- keep-alives through a follower reach the new leader");
    let follower = 1 - new_leader;
    assert_eq!(rest[follower].store.lease_keep_alive(id).await.unwrap(), 4);
    for m in rest {
        m.store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fenced_to_an_old_term_are_refused_and_write_nothing() {
    init_tracing();
    let ms = start_cluster(3, |_| {}).await;
    let leader = must_leader(&ms).await;
    let term = ms[leader].store.leadership().borrow().term;
    let follower = (leader + 1) % 3;
    tracing::info!("--- fenced to the current term: accepted, through the leader and a follower");
    for m in [leader, follower] {
        let r = ms[m].store.txn_with(Txn::put(format!("/registry/f/{m}"), "ok"), Default::default(), Some(term)).await;
        assert!(r.unwrap().succeeded);
    }
    tracing::info!("--- fenced to another term: refused, nothing written");
    // A linearizable read, not the leader's applied revision: a write through a follower returns
    // once the follower has applied it, which may be before the leader's state machine has.
    let (_, before) = ms[leader].store.get("/registry/f/stale", Consistency::Linearizable).await.unwrap();
    for stale in [term - 1, term + 1] {
        let err = ms[follower]
            .store
            .txn_with(Txn::put("/registry/f/stale", "no"), Default::default(), Some(stale))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::TermMismatch { expected, actual } if expected == stale && actual == term),
            "{err}"
        );
    }
    let (kv, rev) = ms[leader].store.get("/registry/f/stale", Consistency::Linearizable).await.unwrap();
    assert!(kv.is_none() && rev == before, "a refused write left no trace (revision {before} → {rev})");
    tracing::info!("--- after a leader change, the old term's writes are refused everywhere");
    ms[leader].store.shutdown().await;
    let rest: Vec<&Master> = ms.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, m)| m).collect();
    let new_leader = eventually(WAIT, "a new leader", || async {
        rest.iter().position(|m| m.store.leadership().borrow().is_leader)
    })
    .await;
    let new_term = rest[new_leader].store.leadership().borrow().term;
    assert!(new_term > term);
    for m in &rest {
        let err =
            m.store.txn_with(Txn::put("/registry/f/old", "no"), Default::default(), Some(term)).await.unwrap_err();
        assert!(matches!(err, StoreError::TermMismatch { .. }), "{err}");
    }
    let (kv, _) = rest[0].store.get("/registry/f/old", Consistency::Linearizable).await.unwrap();
    assert!(kv.is_none());
    for m in rest {
        m.store.shutdown().await;
    }
}
