//! Traces over OTLP: a small OTLP/gRPC trace receiver collects the spans of three masters.
//! A client's create through the leader is one trace: the API request span (child of the
//! client's span), the leader's `raft.propose` (child of the API span) and a `raft.apply`
//! on every master (children of the propose). A Deployment's create continues through the
//! leader's controllers and scheduler: the Deployment's reconcile, its ReplicaSet's create
//! and reconcile, the pods' creates and each pod's scheduling and binding, one trace.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::sim::{self, Agent};
use common::telemetry::{client_context, descends, post_traced, tree, Collector, SpanRec};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_create_from_the_client_through_raft_on_every_master() {
    let collector = Collector::start().await;
    let mut c = Cluster::shared_pki(3, &["--otlp-endpoint", &collector.endpoint]);
    let pki: PathBuf = c.pki();
    for m in c.masters.iter_mut() {
        m.env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into())];
    }
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    c.wait_api_settled(3).await;
    let api = c.masters[leader].api_addr.clone();
    let (trace_id, client_span, traceparent) = client_context();
    let doc = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced"}}"#;
    let (code, body) = post_traced(&pki, &api, &traceparent, doc, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 201, "{body}");

    let names: Vec<String> = c.masters.iter().map(|m| m.name.clone()).collect();
    let leader_name = names[leader].clone();
    let spans = eventually(WAIT, "the API, propose and three apply spans of the trace", || {
        let spans = collector.trace(&trace_id);
        let appliers: BTreeSet<&str> =
            spans.iter().filter(|s| s.name == "raft.apply").map(|s| s.instance.as_str()).collect();
        let ok = spans.iter().any(|s| s.name == "raft.propose") && names.iter().all(|n| appliers.contains(n.as_str()));
        futures::future::ready(ok.then_some(spans.clone()))
    })
    .await;
    let api_span = spans
        .iter()
        .find(|s| s.instance == leader_name && s.parent == client_span)
        .unwrap_or_else(|| panic!("no API span on {leader_name} parented on the client's span: {spans:#?}"));
    assert!(api_span.name.contains("configmaps"), "{api_span:?}");
    let propose = spans
        .iter()
        .find(|s| s.name == "raft.propose" && s.instance == leader_name && s.parent == api_span.id)
        .unwrap_or_else(|| panic!("no raft.propose under the API span: {spans:#?}"));
    for n in &names {
        assert!(
            spans.iter().any(|s| s.name == "raft.apply" && &s.instance == n && s.parent == propose.id),
            "no raft.apply on {n} under the propose: {spans:#?}"
        );
    }
    eprintln!("the trace, as a tree:\n{}", tree(&spans, &client_span, 0));

    // Through a follower: its propose forwards to the leader, whose part is a span of the
    // same trace (child of the follower's propose).
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let (trace2, client2, traceparent2) = client_context();
    let doc = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced-2"}}"#;
    let (code, body) =
        post_traced(&pki, &c.masters[follower].api_addr, &traceparent2, doc, "/api/v1/namespaces/default/configmaps")
            .await;
    assert_eq!(code, 201, "{body}");
    let follower_name = names[follower].clone();
    let spans = eventually(WAIT, "the follower's propose and the leader's forwarded part", || {
        let spans = collector.trace(&trace2);
        let ok = spans.iter().any(|s| s.name == "raft.propose.forwarded" && s.instance == leader_name)
            && spans.iter().filter(|s| s.name == "raft.apply").count() >= 3;
        futures::future::ready(ok.then_some(spans.clone()))
    })
    .await;
    let propose = spans
        .iter()
        .find(|s| s.name == "raft.propose" && s.instance == follower_name)
        .unwrap_or_else(|| panic!("no raft.propose on the follower {follower_name}: {spans:#?}"));
    assert!(
        spans.iter().any(|s| s.name == "raft.propose.forwarded" && s.instance == leader_name && s.parent == propose.id),
        "the leader's forwarded span is not under the follower's propose: {spans:#?}"
    );
    eprintln!("through a follower:\n{}", tree(&spans, &client2, 0));

    // A Deployment's create, through a follower, continues on the leader: its reconcile,
    // the ReplicaSet's create and reconcile, the pods' creates, their scheduling and binds.
    let kubeconfig = sim::kubeconfig_of(&c.masters[follower].data_dir);
    let agent = Agent::start(&kubeconfig, None, 2, &[]);
    let (trace3, client3, traceparent3) = client_context();
    let doc = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"traced"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"traced"}},"template":{"metadata":{"labels":{"app":"traced"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let (code, body) = post_traced(
        &pki,
        &c.masters[follower].api_addr,
        &traceparent3,
        doc,
        "/apis/apps/v1/namespaces/default/deployments",
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let spans = eventually_or(
        Duration::from_secs(60),
        "the Deployment's trace to reach both pods' bindings",
        || {
            let spans = collector.trace(&trace3);
            let binds = spans.iter().filter(|s| s.name == "schedule pod" && s.attr("scheduler.result") == "scheduled");
            futures::future::ready((binds.count() >= 2).then_some(spans.clone()))
        },
        || format!("spans so far:\n{}\nagent log:\n{}", tree(&collector.trace(&trace3), &client3, 0), agent.log()),
    )
    .await;
    eprintln!("a Deployment's create:\n{}", tree(&spans, &client3, 0));
    let one = |what: &str, pick: &dyn Fn(&SpanRec) -> bool| -> SpanRec {
        let found: Vec<&SpanRec> = spans.iter().filter(|s| pick(s)).collect();
        assert!(!found.is_empty(), "no {what} in the trace:\n{}", tree(&spans, &client3, 0));
        for s in &found {
            assert!(descends(&spans, s, &client3), "{what} is not under the client's span: {s:?}");
        }
        found[0].clone()
    };
    let leader_name = leader_name.as_str();
    let reconcile = |controller: &'static str| {
        move |s: &SpanRec| {
            s.name.starts_with("reconcile ") && s.attr("k8s.controller") == controller && s.instance == leader_name
        }
    };
    let d = one("the Deployment's reconcile on the leader", &reconcile("deployment"));
    let rs_create = one("the ReplicaSet's create", &|s| s.name == "POST replicasets" && s.instance == leader_name);
    assert!(descends(&spans, &rs_create, &d.id), "the ReplicaSet's create is not the Deployment reconcile's");
    let rs = one("the ReplicaSet's reconcile", &reconcile("replicaset"));
    assert!(descends(&spans, &rs, &rs_create.id), "the ReplicaSet's reconcile does not follow its create");
    let pod_creates: Vec<&SpanRec> =
        spans.iter().filter(|s| s.name == "POST pods" && descends(&spans, s, &rs.id)).collect();
    assert!(
        pod_creates.len() >= 2,
        "the pods' creates under the ReplicaSet's reconcile:\n{}",
        tree(&spans, &client3, 0)
    );
    let scheduled: Vec<&SpanRec> =
        spans.iter().filter(|s| s.name == "schedule pod" && s.attr("scheduler.result") == "scheduled").collect();
    for s in &scheduled {
        assert!(
            pod_creates.iter().any(|p| descends(&spans, s, &p.id)),
            "a scheduling span not under a pod's create: {s:?}"
        );
        assert!(!s.attr("k8s.node.name").is_empty(), "{s:?}");
        assert!(
            spans.iter().any(|b| b.name == "POST pods/binding" && b.parent == s.id),
            "no binding request under {s:?}"
        );
    }

    // Its deletion continues through the garbage collector: the ReplicaSet's delete, then
    // the pods', in the trace of the client's DELETE.
    let (trace4, client4, traceparent4) = client_context();
    let (code, body) = curl_api(
        &pki,
        true,
        15,
        &c.masters[follower].api_addr,
        &["-X", "DELETE", "-H", &traceparent4],
        "/apis/apps/v1/namespaces/default/deployments/traced",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let spans = eventually_or(
        Duration::from_secs(60),
        "the garbage collector's deletes in the trace of the Deployment's delete",
        || {
            let spans = collector.trace(&trace4);
            let ok = spans.iter().any(|s| s.name == "DELETE replicasets")
                && spans.iter().filter(|s| s.name == "DELETE pods").count() >= 2;
            futures::future::ready(ok.then_some(spans.clone()))
        },
        || format!("spans so far:\n{}", tree(&collector.trace(&trace4), &client4, 0)),
    )
    .await;
    eprintln!("a Deployment's delete:\n{}", tree(&spans, &client4, 0));
    let gc = |s: &&SpanRec| s.name == "reconcile garbagecollector" && s.instance == leader_name;
    let rs_delete = spans.iter().find(|s| s.name == "DELETE replicasets").expect("the ReplicaSet's delete");
    assert!(
        spans.iter().filter(gc).any(|g| rs_delete.parent == g.id),
        "the ReplicaSet's delete is not the garbage collector's:\n{}",
        tree(&spans, &client4, 0)
    );
    for p in spans.iter().filter(|s| s.name == "DELETE pods") {
        assert!(descends(&spans, p, &rs_delete.id), "a pod's delete does not follow the ReplicaSet's: {p:?}");
    }
    drop(agent);
}

/// `keelson_trace_spans_dropped_total{reason}` from a master's `/metrics`.
async fn dropped(pki: &std::path::Path, api: &str) -> u64 {
    let (code, text) = curl_api(pki, true, 15, api, &[], "/metrics").await;
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("keelson_trace_spans_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_collector_costs_spans_not_requests() {
    // Accepts connections and never answers: every export times out.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", hole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            conns.push(s);
        }
    });
    let mut c = Cluster::shared_pki(1, &["--otlp-endpoint", &otlp]);
    let pki: PathBuf = c.pki();
    c.masters[0].env = vec![
        ("OTEL_BSP_MAX_QUEUE_SIZE".into(), "8".into()),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE".into(), "8".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_BSP_EXPORT_TIMEOUT".into(), "5000".into()),
    ];
    c.spawn(0);
    c.wait_leader(&[0]).await;
    c.wait_api_settled(1).await;
    let api = c.masters[0].api_addr.clone();
    // Every request is traced (a root span when the client sends no context), so start-up
    // already queued some; count from here.
    let before = dropped(&pki, &api).await;
    // Exports hang for 5 s each: a processor that made requests wait for them would show
    // here as requests of seconds; the queue must not.
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..40 {
        let sent = std::time::Instant::now();
        let traceparent =
            format!("traceparent: 00-{:032x}-{:016x}-01", rand::random::<u128>() | 1, rand::random::<u64>() | 1);
        let doc = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#);
        let (code, body) = post_traced(&pki, &api, &traceparent, &doc, "/api/v1/namespaces/default/configmaps").await;
        assert_eq!(code, 201, "request {i} with the collector black-holed: {body}");
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < std::time::Duration::from_millis(2500),
        "a request waited {slowest:?} on the black-holed collector"
    );
    eventually(WAIT, "the dropped-span counter to rise", || {
        let (pki, api) = (pki.clone(), api.clone());
        // Each create is three spans (API, propose, apply); the queue holds 8.
        async move { (dropped(&pki, &api).await >= before + 40).then_some(()) }
    })
    .await;
    held.abort();
}
