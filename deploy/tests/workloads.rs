//! Workload controllers end to end on simulated nodes (one master, real kubectl): Jobs run
//! to completion or fail by their backoff limit and are cleaned up by their TTL; a CronJob
//! starts Jobs on schedule and keeps its history limit; a StatefulSet creates its pods in
//! order with stable names and claims; a DaemonSet puts one pod on every node.

mod common;

use std::time::Duration;

use common::sim::{self, must_kubectl, Agent};
use common::{eventually_or, Cluster};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(90);

async fn one_master() -> (Cluster, std::path::PathBuf, kube::Client, Agent) {
    let mut c = Cluster::shared_pki(1, &[]);
    c.spawn_all();
    c.wait_leader(&[0]).await;
    c.wait_api_settled(1).await;
    let kubeconfig = sim::kubeconfig_of(&c.masters[0].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    // Simulated nodes with local-path provisioners, so StatefulSets' claims bind.
    let root = c.dir.path().join("sim-node").display().to_string();
    let agent = Agent::start(
        &kubeconfig,
        None,
        3,
        &["--lease-renew-interval", "1s", "--job-duration", "500ms", "--local-storage", "--root-dir", &root],
    );
    (c, kubeconfig, client, agent)
}

fn condition(j: &Job, t: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .and_then(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_cronjobs() {
    let (c, kubeconfig, client, agent) = one_master().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let detail = || {
        format!("{}\nagent:\n{}", c.log_tail(0, 20), agent.log().lines().rev().take(10).collect::<Vec<_>>().join("\n"))
    };

    tracing::info!("--- a Job of 3 completions, 2 at a time, completes");
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: work}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n"),
    )
    .await;
    let done = eventually_or(
        WAIT,
        "Job work to complete",
        || async {
            let j = jobs.get("work").await.ok()?;
            condition(&j, "Complete").map(|_| j)
        },
        detail,
    )
    .await;
    let s = done.status.clone().unwrap_or_default();
    assert_eq!((s.succeeded, s.failed.unwrap_or(0), s.active.unwrap_or(0)), (Some(3), 0, 0));
    assert!(condition(&done, "SuccessCriteriaMet").is_some() && s.completion_time.is_some() && s.start_time.is_some());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let made = pods.list(&ListParams::default().labels("batch.kubernetes.io/job-name=work")).await.expect("pods").items;
    assert_eq!(
        made.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")).count(),
        3
    );
    let out = must_kubectl(&kubeconfig, &["wait", "--for=condition=complete", "job/work", "--timeout=30s"], None).await;
    assert!(out.contains("condition met"), "{out}");

    tracing::info!("--- a Job whose pod fails, with backoffLimit 0, fails; TTL deletes it");
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: batch/v1\nkind: Job\nmetadata: {name: doomed}\nspec:\n  backoffLimit: 0\n  ttlSecondsAfterFinished: 2\n  template:\n    metadata: {annotations: {sim.keelson.dev/exit-code: \"3\"}}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n"),
    )
    .await;
    let failed = eventually_or(
        WAIT,
        "Job doomed to fail",
        || async {
            let j = jobs.get("doomed").await.ok()?;
            condition(&j, "Failed").map(|r| (j, r))
        },
        detail,
    )
    .await;
    assert_eq!(failed.1, "BackoffLimitExceeded");
    assert_eq!(failed.0.status.as_ref().and_then(|s| s.failed), Some(1));
    eventually_or(
        WAIT,
        "the finished Job to be deleted by its TTL",
        || async { jobs.get_opt("doomed").await.ok()?.is_none().then_some(()) },
        detail,
    )
    .await;

    tracing::info!("--- a CronJob every 2 s starts Jobs and keeps 1 successful one");
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: \"@every 2s\"\n  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: c, image: busybox}]\n"),
    )
    .await;
    let cjs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "the CronJob's first successful run",
        || async { cjs.get("tick").await.ok()?.status?.last_successful_time.map(|_| ()) },
        detail,
    )
    .await;
    let owned = |l: &Vec<Job>| {
        l.iter()
            .filter(|j| {
                j.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o.kind == "CronJob" && o.name == "tick"))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let seen = eventually_or(
        WAIT,
        "the CronJob's Jobs",
        || async {
            let l = jobs.list(&ListParams::default()).await.ok()?.items;
            let mine = owned(&l);
            let names: Vec<String> = mine.iter().filter_map(|j| j.metadata.name.clone()).collect();
            (!names.is_empty()
                && mine.iter().all(|j| j.metadata.name.as_deref().is_some_and(|n| n.starts_with("tick-"))))
            .then_some(names)
        },
        detail,
    )
    .await;
    eventually_or(
        WAIT,
        "Jobs of later schedule times, the old ones cleaned up",
        || async {
            let l = jobs.list(&ListParams::default()).await.ok()?.items;
            let mine = owned(&l);
            let complete = mine.iter().filter(|j| condition(j, "Complete").is_some()).count();
            let newer = mine.iter().any(|j| !seen.contains(j.metadata.name.as_ref().unwrap()));
            (newer && complete <= 1).then_some(())
        },
        detail,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonsets_run_on_every_node() {
    let (c, kubeconfig, client, agent) = one_master().await;
    let detail = || {
        format!("{}\nagent:\n{}", c.log_tail(0, 20), agent.log().lines().rev().take(10).collect::<Vec<_>>().join("\n"))
    };
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: c, image: \"fluentd:1\"}]}\n"),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let on_nodes = |n: usize, image: &'static str| {
        let pods = pods.clone();
        async move {
            let l = pods.list(&ListParams::default().labels("app=agent")).await.ok()?.items;
            let nodes: std::collections::BTreeSet<String> = l.iter().filter_map(sim::node_of).collect();
            let ok = l.len() == n
                && nodes.len() == n
                && l.iter().all(|p| sim::running(p) && sim::ready(p) && sim::image_of(p).as_deref() == Some(image));
            ok.then_some(nodes)
        }
    };
    let nodes =
        eventually_or(WAIT, "one running daemon pod on each of the 3 nodes", || on_nodes(3, "fluentd:1"), detail).await;
    assert_eq!(nodes.len(), 3);
    must_kubectl(&kubeconfig, &["rollout", "status", "daemonset/agent", "--timeout=60s"], None).await;
    tracing::info!("--- a node joins: it gets its daemon pod");
    let extra = Agent::start(&kubeconfig, None, 1, &["--node-name-prefix", "late", "--lease-renew-interval", "1s"]);
    let nodes = eventually_or(WAIT, "a daemon pod on the new node too", || on_nodes(4, "fluentd:1"), detail).await;
    assert!(nodes.contains("late-0"), "{nodes:?}");
    tracing::info!("--- a rolling update replaces every daemon pod");
    must_kubectl(&kubeconfig, &["set", "image", "daemonset/agent", "c=fluentd:2"], None).await;
    must_kubectl(&kubeconfig, &["rollout", "status", "daemonset/agent", "--timeout=90s"], None).await;
    eventually_or(WAIT, "fluentd:2 on all 4 nodes", || on_nodes(4, "fluentd:2"), detail).await;
    drop(extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_create_in_order_with_stable_names_and_claims() {
    let (c, kubeconfig, client, agent) = one_master().await;
    let detail = || {
        format!("{}\nagent:\n{}", c.log_tail(0, 20), agent.log().lines().rev().take(10).collect::<Vec<_>>().join("\n"))
    };
    let history = sim::History::start(client.clone(), "default", "app=db");
    eventually_or(
        WAIT,
        "the history watch to list",
        || async { (!history.snapshot().is_empty()).then_some(()) },
        String::new,
    )
    .await;
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: \"redis:7\", volumeMounts: [{name: data, mountPath: /data}]}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"),
    )
    .await;
    must_kubectl(&kubeconfig, &["rollout", "status", "statefulset/db", "--timeout=90s"], None).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = |want: &'static [&'static str]| {
        let pods = pods.clone();
        async move {
            let l = pods.list(&ListParams::default().labels("app=db")).await.ok()?.items;
            let mut n: Vec<String> =
                l.iter().filter(|p| sim::running(p) && sim::ready(p)).filter_map(|p| p.metadata.name.clone()).collect();
            n.sort();
            (n == want && l.len() == want.len()).then_some(l)
        }
    };
    let made = eventually_or(WAIT, "db-0, db-1, db-2 running", || names(&["db-0", "db-1", "db-2"]), detail).await;
    for p in &made {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), p.metadata.name.as_deref());
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let claim = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        assert_eq!(claim, Some(format!("data-{}", p.metadata.name.as_ref().unwrap())));
    }
    let out = must_kubectl(&kubeconfig, &["get", "pvc", "-o", "name"], None).await;
    for i in 0..3 {
        assert!(out.contains(&format!("persistentvolumeclaim/data-db-{i}")), "{out}");
    }
    // OrderedReady: each pod was created only once the one before it was Running and Ready.
    let snap = history.snapshot();
    for i in 1..3 {
        let first_seen = snap.iter().position(|s| s.contains_key(&format!("db-{i}"))).expect("created");
        let before = &snap[first_seen.saturating_sub(1)];
        let prev = before.get(&format!("db-{}", i - 1));
        assert!(prev.is_some_and(|p| sim::ready(p)), "db-{i} was created before db-{} was ready", i - 1);
    }
    tracing::info!("--- scale down removes the highest ordinals, one at a time");
    must_kubectl(&kubeconfig, &["scale", "statefulset/db", "--replicas", "1"], None).await;
    eventually_or(WAIT, "only db-0 left", || names(&["db-0"]), detail).await;
    let snap = history.snapshot();
    let last_seen = |name: &str| snap.iter().rposition(|s| s.contains_key(name));
    let (l2, l1) = (last_seen("db-2"), last_seen("db-1"));
    assert!(
        l2.is_some() && l1.is_some() && l2 < l1,
        "db-2 must go before db-1 (last seen in states {l2:?} and {l1:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_deployments_never_run_old_and_new_pods_together() {
    let (c, kubeconfig, client, agent) = one_master().await;
    let detail = || {
        format!("{}\nagent:\n{}", c.log_tail(0, 20), agent.log().lines().rev().take(10).collect::<Vec<_>>().join("\n"))
    };
    // The old pods carry a finalizer, so they stay Terminating (still running) until the
    // test releases them: a Recreate that only looked at ReplicaSet counts would start
    // the new pods meanwhile.
    let manifest = |image: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: rec}}\nspec:\n  replicas: 3\n  strategy: {{type: Recreate}}\n  selector: {{matchLabels: {{app: rec}}}}\n  template:\n    metadata: {{labels: {{app: rec}}, finalizers: [keelson.dev/test-hold]}}\n    spec: {{containers: [{{name: c, image: \"{image}\"}}]}}\n")
    };
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest("nginx:1"))).await;
    must_kubectl(&kubeconfig, &["rollout", "status", "deployment/rec", "--timeout=90s"], None).await;
    let history = sim::History::start(client.clone(), "default", "app=rec");
    eventually_or(
        WAIT,
        "the history watch to list",
        || async { (history.snapshot().last().is_some_and(|s| s.len() == 3)).then_some(()) },
        detail,
    )
    .await;
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest("nginx:2"))).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "the old pods terminating and the Deployment counting none",
        || async {
            let l = pods.list(&ListParams::default().labels("app=rec")).await.ok()?.items;
            let d = deployments.get("rec").await.ok()?;
            let st = d.status?;
            let old: Vec<&Pod> = l.iter().filter(|p| sim::image_of(p).as_deref() == Some("nginx:1")).collect();
            let all_terminating = old.len() == 3 && old.iter().all(|p| p.metadata.deletion_timestamp.is_some());
            (all_terminating && st.observed_generation == d.metadata.generation && st.replicas == Some(0)).then_some(())
        },
        detail,
    )
    .await;
    let held = pods.list(&ListParams::default().labels("app=rec")).await.expect("list").items;
    let started: Vec<String> = held
        .iter()
        .filter(|p| sim::image_of(p).as_deref() != Some("nginx:1"))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(started.is_empty(), "new pods {started:?} started while the old ones still run");
    for p in held {
        let name = p.metadata.name.clone().unwrap();
        release(&kubeconfig, &name).await;
    }
    must_kubectl(&kubeconfig, &["rollout", "status", "deployment/rec", "--timeout=90s"], None).await;
    eventually_or(
        WAIT,
        "3 running nginx:2 pods and nothing else",
        || async {
            let l = pods.list(&ListParams::default().labels("app=rec")).await.ok()?.items;
            (l.len() == 3 && l.iter().all(|p| sim::running(p) && sim::image_of(p).as_deref() == Some("nginx:2")))
                .then_some(())
        },
        detail,
    )
    .await;
    // In no recorded state does a new pod exist while an old one (even terminating) does.
    for (i, state) in history.snapshot().iter().enumerate() {
        let old = state.values().filter(|p| sim::image_of(p).as_deref() == Some("nginx:1")).count();
        let new = state.values().filter(|p| sim::image_of(p).as_deref() == Some("nginx:2")).count();
        assert!(old == 0 || new == 0, "state {i}: {old} old and {new} new pods at once");
    }
    // The new pods carry the finalizer too: release them so the namespace can go.
    for p in pods.list(&ListParams::default().labels("app=rec")).await.expect("list").items {
        let name = p.metadata.name.clone().unwrap();
        release(&kubeconfig, &name).await;
    }
}

/// Drop a pod's finalizers (retrying while the simulated node writes the pod too).
async fn release(kubeconfig: &std::path::Path, name: &str) {
    eventually_or(
        WAIT,
        &format!("the finalizers of {name} to be removed"),
        || async {
            let patch = r#"{"metadata":{"finalizers":null}}"#;
            let (ok, _, err) =
                sim::kubectl(kubeconfig, &["patch", "pod", name, "--type=merge", "-p", patch], None).await;
            (ok || err.contains("NotFound")).then_some(())
        },
        String::new,
    )
    .await
}
