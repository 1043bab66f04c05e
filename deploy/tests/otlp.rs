//! Traces over OTLP: a small OTLP/gRPC trace receiver (opentelemetry-proto's tonic
//! service; there is no collector on this machine) collects the spans of three masters
//! while a client with a `traceparent` creates an object through the leader. One trace
//! holds the API request span (child of the client's span), the leader's `raft.propose`
//! (child of the API span) and a `raft.apply` on every master (children of the propose).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// (service.instance.id, span name, trace id, span id, parent span id) as hex.
type Seen = Arc<Mutex<Vec<(String, String, String, String, String)>>>;

struct Receiver(Seen);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let instance = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.instance.id")
                .and_then(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    seen.push((instance.clone(), s.name, hex(&s.trace_id), hex(&s.span_id), hex(&s.parent_span_id)));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_create_from_the_client_through_raft_on_every_master() {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let svc = TraceServiceServer::new(Receiver(seen.clone()));
        async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop.cancelled())
                .await
        }
    });

    let mut c = Cluster::shared_pki(3, &["--otlp-endpoint", &otlp]);
    let pki: PathBuf = c.pki();
    for m in c.masters.iter_mut() {
        m.env = vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into())];
    }
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    c.wait_api_settled(3).await;
    let api = c.masters[leader].api_addr.clone();
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("traceparent: 00-{trace_id}-{client_span}-01");
    let doc = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced"}}"#;
    let (code, body) = curl_api(
        &pki,
        true,
        15,
        &api,
        &["-X", "POST", "-H", "Content-Type: application/json", "-H", &traceparent, "--data", doc],
        "/api/v1/namespaces/default/configmaps",
    )
    .await;
    assert_eq!(code, 201, "{body}");

    let names: Vec<String> = c.masters.iter().map(|m| m.name.clone()).collect();
    let leader_name = names[leader].clone();
    let spans = eventually(WAIT, "the API, propose and three apply spans of the trace", || {
        let seen = seen.clone();
        let names = names.clone();
        let trace_id = trace_id.clone();
        async move {
            let spans: Vec<_> = seen.lock().unwrap().iter().filter(|s| s.2 == trace_id).cloned().collect();
            let appliers: BTreeSet<&str> = spans.iter().filter(|s| s.1 == "raft.apply").map(|s| s.0.as_str()).collect();
            let ok = spans.iter().any(|s| s.1 == "raft.propose") && names.iter().all(|n| appliers.contains(n.as_str()));
            ok.then_some(spans)
        }
    })
    .await;
    let api_span = spans
        .iter()
        .find(|s| s.0 == leader_name && s.4 == client_span)
        .unwrap_or_else(|| panic!("no API span on {leader_name} parented on the client's span: {spans:#?}"));
    assert!(api_span.1.contains("configmaps"), "{api_span:?}");
    let propose = spans
        .iter()
        .find(|s| s.1 == "raft.propose" && s.0 == leader_name && s.4 == api_span.3)
        .unwrap_or_else(|| panic!("no raft.propose under the API span: {spans:#?}"));
    for n in &names {
        assert!(
            spans.iter().any(|s| s.1 == "raft.apply" && &s.0 == n && s.4 == propose.3),
            "no raft.apply on {n} under the propose: {spans:#?}"
        );
    }
    eprintln!("the trace, as a tree:\n{}", tree(&spans, &client_span, 0));

    // Through a follower: its propose forwards to the leader, whose part is a span of the
    // same trace (child of the follower's propose).
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let trace2 = format!("{:032x}", rand::random::<u128>() | 1);
    let client2 = format!("{:016x}", rand::random::<u64>() | 1);
    let doc = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced-2"}}"#;
    let (code, body) = curl_api(
        &pki,
        true,
        15,
        &c.masters[follower].api_addr,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("traceparent: 00-{trace2}-{client2}-01"),
            "--data",
            doc,
        ],
        "/api/v1/namespaces/default/configmaps",
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let follower_name = names[follower].clone();
    let spans = eventually(WAIT, "the follower's propose and the leader's forwarded part", || {
        let (seen, trace2, leader_name) = (seen.clone(), trace2.clone(), leader_name.clone());
        async move {
            let spans: Vec<_> = seen.lock().unwrap().iter().filter(|s| s.2 == trace2).cloned().collect();
            let ok = spans.iter().any(|s| s.1 == "raft.propose.forwarded" && s.0 == leader_name)
                && spans.iter().filter(|s| s.1 == "raft.apply").count() >= 3;
            ok.then_some(spans)
        }
    })
    .await;
    let propose = spans
        .iter()
        .find(|s| s.1 == "raft.propose" && s.0 == follower_name)
        .unwrap_or_else(|| panic!("no raft.propose on the follower {follower_name}: {spans:#?}"));
    assert!(
        spans.iter().any(|s| s.1 == "raft.propose.forwarded" && s.0 == leader_name && s.4 == propose.3),
        "the leader's forwarded span is not under the follower's propose: {spans:#?}"
    );
    eprintln!("through a follower:\n{}", tree(&spans, &client2, 0));
    stop.cancel();
    let _ = server.await;
}

/// The spans under `parent`, indented (the README's example comes from this).
fn tree(spans: &[(String, String, String, String, String)], parent: &str, depth: usize) -> String {
    let mut out = String::new();
    for s in spans.iter().filter(|s| s.4 == parent) {
        out.push_str(&format!("{}{} [{}]\n", "  ".repeat(depth), s.1, s.0));
        out.push_str(&tree(spans, &s.3, depth + 1));
    }
    out
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
        let (code, body) = curl_api(
            &pki,
            true,
            15,
            &api,
            &["-X", "POST", "-H", "Content-Type: application/json", "-H", &traceparent, "--data", &doc],
            "/api/v1/namespaces/default/configmaps",
        )
        .await;
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
