//! The API server on three masters (separate processes, one shared --pki-dir): kubectl
//! against each master through its own kubeconfig context, identical resourceVersions
//! everywhere, and a watch on a follower across a SIGKILL of the leader — it continues or
//! ends cleanly, and a re-watch from the last resourceVersion loses no event.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn kubectl(kubeconfig: &Path, cache: &Path, context: &str, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    c.arg("--kubeconfig").arg(kubeconfig).arg("--cache-dir").arg(cache).args([
        "--context",
        context,
        "--request-timeout",
        "20s",
    ]);
    c.args(args).stdin(Stdio::null()).kill_on_drop(true);
    c
}

async fn kubectl_ok(kubeconfig: &Path, cache: &Path, context: &str, args: &[&str]) -> String {
    let out = within(
        WAIT,
        &format!("kubectl --context {context} {args:?}"),
        kubectl(kubeconfig, cache, context, args).output(),
    )
    .await
    .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl --context {context} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// curl against one master with the admin certificate: (HTTP status, body).
async fn curl(pki: &Path, api: &str, args: &[&str], path: &str) -> (u16, String) {
    curl_api(pki, true, 15, api, args, path).await
}

/// A streaming watch (curl -N): every event line as (type, name, resourceVersion).
struct Watch {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Watch {
    fn start(pki: &Path, api: &str, path: &str) -> Watch {
        let mut child = curl_cmd(pki, true, 120)
            .arg("-N")
            .arg(format!("https://{api}{path}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn curl watch");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Watch { child, lines }
    }

    /// The next event, or None when the stream ended (or `d` passed).
    async fn next(&mut self, d: Duration) -> Option<(String, String, i64)> {
        let line = tokio::time::timeout(d, self.lines.next_line()).await.ok()?.ok()??;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line {line:?}: {e}"));
        let t = v["type"].as_str().unwrap_or_default().to_string();
        let name = v["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let rv = v["object"]["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        Some((t, name, rv))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_serve_kubectl_and_a_follower_watch_survives_the_leader() {
    let mut c = Cluster::shared_pki(3, &[]);
    let pki: PathBuf = c.pki();
    let apis: Vec<String> = c.masters.iter().map(|m| m.api_addr.clone()).collect();
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let kubeconfig = c.masters[0].data_dir.join("admin.kubeconfig");
    eventually(WAIT, "m1's kubeconfig to list all three masters", || async {
        let text = std::fs::read_to_string(&kubeconfig).ok()?;
        (text.contains("keelson-m1") && text.contains("keelson-m2") && text.contains("keelson-m3")).then_some(())
    })
    .await;
    let cache = c.dir.path().join("kcache");

    // Writes through every master; every master reads them back at the same resourceVersion.
    for i in 1..=3 {
        let doc = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"from-m{i}"}},"data":{{"i":"{i}"}}}}"#
        );
        let (code, body) = curl(
            &pki,
            &apis[i - 1],
            &["-X", "POST", "-H", "Content-Type: application/json", "--data", &doc],
            "/api/v1/namespaces/default/configmaps",
        )
        .await;
        assert_eq!(code, 201, "create through m{i}: {body}");
    }
    let mut seen = BTreeSet::new();
    for i in 1..=3 {
        let ctx = format!("keelson-m{i}");
        let out = kubectl_ok(
            &kubeconfig,
            &cache,
            &ctx,
            &["get", "cm", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}"],
        )
        .await;
        seen.insert(out.trim().to_string());
        let ns = kubectl_ok(&kubeconfig, &cache, &ctx, &["get", "ns", "-o", "name"]).await;
        assert!(ns.contains("namespace/kube-system"), "{ns}");
    }
    assert_eq!(seen.len(), 1, "every master lists the same objects at the same resourceVersions: {seen:?}");
    assert!(seen.iter().next().unwrap().contains("from-m3="), "{seen:?}");

    // A watch on a follower, writes through the other follower, SIGKILL the leader midway.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (watched, writer) = (followers[0], followers[1]);
    let (code, body) = curl(&pki, &apis[watched], &[], "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("list");
    let start_rv: i64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let mut watch = Watch::start(
        &pki,
        &apis[watched],
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start_rv}"),
    );
    let mut acked = Vec::new();
    for n in 0..24 {
        if n == 8 {
            c.kill(leader);
        }
        let name = format!("w-{n}");
        let doc = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        let ok =
            eventually(WAIT, &format!("create {name} through m{} while the leader is down", writer + 1), || async {
                let (code, _) = curl(
                    &pki,
                    &apis[writer],
                    &["-X", "POST", "-H", "Content-Type: application/json", "--data", &doc],
                    "/api/v1/namespaces/default/configmaps",
                )
                .await;
                // 409 on a retry: an earlier attempt was committed.
                matches!(code, 201 | 409).then_some(())
            })
            .await;
        let () = ok;
        acked.push(name);
    }

    // Read the follower's watch; if it ends, re-watch strictly after the last event seen.
    let mut events: Vec<(String, String, i64)> = Vec::new();
    let mut last_rv = start_rv;
    let mut rewatches = 0;
    let want: BTreeSet<&String> = acked.iter().collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: BTreeSet<&String> = events.iter().filter(|e| e.0 == "ADDED").map(|e| &e.1).collect();
        if want.is_subset(&got) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the watch to deliver {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        match watch.next(Duration::from_secs(5)).await {
            Some(ev) => {
                assert!(ev.2 > last_rv, "events out of order or repeated: {ev:?} after resourceVersion {last_rv}");
                last_rv = ev.2;
                events.push(ev);
            }
            None => {
                rewatches += 1;
                assert!(rewatches < 20, "the watch keeps ending");
                let _ = watch.child.start_kill();
                watch = Watch::start(
                    &pki,
                    &apis[watched],
                    &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={last_rv}"),
                );
            }
        }
    }
    let _ = watch.child.start_kill();
    let added: Vec<&String> = events.iter().filter(|e| e.0 == "ADDED").map(|e| &e.1).collect();
    let unique: BTreeSet<&&String> = added.iter().collect();
    assert_eq!(unique.len(), added.len(), "an object was added twice: {added:?}");
    eprintln!(
        "watch on m{} saw {} events across the leader's death ({} re-watches)",
        watched + 1,
        events.len(),
        rewatches
    );
}

/// Prometheus' own text-format parser (PyPI `prometheus_client`, in the test venv) reads
/// `/metrics`; every sample comes back as `name{labels-json}` → value.
async fn scrape(pki: &Path, api: &str) -> std::collections::BTreeMap<String, f64> {
    try_scrape(pki, api).await.unwrap_or_else(|| panic!("/metrics on {api} did not answer 200"))
}

/// `scrape`, or None when the master does not answer 200 (during an election, say).
async fn try_scrape(pki: &Path, api: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let (code, text) = curl(pki, api, &[], "/metrics").await;
    if code != 200 {
        return None;
    }
    Some(common::telemetry::parse_prometheus(&text).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_the_raft_metrics_follow_a_leader_change() {
    let mut c = Cluster::shared_pki(3, &[]);
    let pki: PathBuf = c.pki();
    let apis: Vec<String> = c.masters.iter().map(|m| m.api_addr.clone()).collect();
    c.spawn_all();
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    // A write through the follower: counted there with Kubernetes' labels.
    let doc = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"counted"}}"#;
    let (code, body) = eventually(WAIT, "a create through the follower", || async {
        let r = curl(
            &pki,
            &apis[follower],
            &["-X", "POST", "-H", "Content-Type: application/json", "--data", doc],
            "/api/v1/namespaces/default/configmaps",
        )
        .await;
        (r.0 == 201).then_some(r)
    })
    .await;
    assert_eq!(code, 201, "{body}");
    let before = scrape(&pki, &apis[follower]).await;
    let post = r#"apiserver_request_total{"code": "201", "component": "apiserver", "group": "", "resource": "configmaps", "scope": "namespace", "subresource": "", "verb": "POST", "version": "v1"}"#;
    assert!(before.get(post).is_some_and(|v| *v >= 1.0), "{post} in {before:#?}");
    for name in [
        "keelson_raft_term",
        "keelson_raft_commit_index",
        "keelson_raft_applied_index",
        "keelson_raft_apply_lag",
        "keelson_store_revision",
        "keelson_store_db_size_bytes",
        "keelson_raft_proposal_failures_total",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:#?}");
    }
    assert_eq!(before["keelson_raft_is_leader"], 0.0);
    assert_eq!(before["keelson_raft_has_leader"], 1.0);
    assert!(before["keelson_raft_fsync_duration_seconds_count"] >= 1.0, "{before:#?}");
    assert!(before["keelson_raft_group_commit_batch_size_count"] >= 1.0, "{before:#?}");
    // The leader runs the controllers and the scheduler: their series are there, under
    // controller-runtime's and kube-scheduler's names (a namespace is reconciled by the
    // ServiceAccount controller as soon as it starts; the queue gauge is set every second).
    let leader_scrape = eventually(WAIT, "the leader's controller and scheduler metrics", || async {
        let m = try_scrape(&pki, &apis[leader]).await?;
        let sa = r#"controller_runtime_reconcile_total{"controller": "serviceaccount", "result": "success"}"#;
        (m.get(sa).is_some_and(|v| *v >= 1.0)
            && m.contains_key(r#"controller_runtime_reconcile_time_seconds_count{"controller": "serviceaccount"}"#)
            && m.contains_key(r#"scheduler_pending_pods{"queue": "active"}"#))
        .then_some(m)
    })
    .await;
    assert_eq!(leader_scrape["keelson_raft_is_leader"], 1.0);
    // Without credentials: 401, like every other path.
    let (code, _) = curl_api(&pki, false, 15, &apis[follower], &[], "/metrics").await;
    assert_eq!(code, 401);

    c.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.wait_leader(&survivors).await;
    let after = eventually(WAIT, "the follower's metrics to show the new term and leader", || async {
        let m = try_scrape(&pki, &apis[follower]).await?;
        (m["keelson_raft_term"] > before["keelson_raft_term"]
            && m["keelson_raft_leader_changes_total"] > before["keelson_raft_leader_changes_total"]
            && m["keelson_raft_has_leader"] == 1.0)
            .then_some(m)
    })
    .await;
    assert!(after["keelson_raft_commit_index"] >= before["keelson_raft_commit_index"], "{after:#?}");
}
