//! The resource metrics API and the HorizontalPodAutoscaler end to end (one master, real
//! kubectl, simulated nodes that serve `/metrics/resource` over TLS with a cluster-CA
//! certificate): `kubectl top` shows the usage the pods' annotations declare; an HPA at
//! 50% CPU scales a Deployment whose pods use 90% of their request up to its maximum
//! (ScalingLimited), and back down to its minimum when the usage drops; an HPA whose
//! target does not exist says so in its AbleToScale condition.

mod common;

use std::time::Duration;

use common::sim::{self, kubectl, kubelet_cert, must_kubectl, Agent};
use common::{eventually_or, free_port, Cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(120);

fn condition(h: &HorizontalPodAutoscaler, t: &str) -> Option<(String, String)> {
    let c = h.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {sim.keelson.dev/cpu-usage: 90m, sim.keelson.dev/memory-usage: 48Mi}
    spec:
      containers:
      - name: app
        image: busybox
        resources: {requests: {cpu: 100m, memory: 64Mi}}
";

const HPA: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 0}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_and_hpa() {
    let mut c = Cluster::shared_pki(1, &["--metric-resolution", "1s", "--horizontal-pod-autoscaler-sync-period", "1s"]);
    c.spawn_all();
    c.wait_leader(&[0]).await;
    c.wait_api_settled(1).await;
    let kubeconfig = sim::kubeconfig_of(&c.masters[0].data_dir);
    let client = sim::client(&kubeconfig, None).await;
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = kubelet_cert(&c.pki(), certs.path());
    let ca = c.pki().join("ca.crt").display().to_string();
    let port = free_port().to_string();
    let agent = Agent::start(
        &kubeconfig,
        None,
        2,
        &[
            "--lease-renew-interval",
            "1s",
            "--port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-private-key-file",
            &key,
            "--client-ca-file",
            &ca,
        ],
    );
    let detail = || {
        format!("{}\nagent:\n{}", c.log_tail(0, 30), agent.log().lines().rev().take(15).collect::<Vec<_>>().join("\n"))
    };

    tracing::info!("--- kubectl top shows the declared usage");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(DEPLOYMENT)).await;
    let top = eventually_or(
        WAIT,
        "kubectl top to show both pods of web",
        || async {
            let (ok, out, _) = kubectl(&kubeconfig, &["top", "pods", "-l", "app=web", "--no-headers"], None).await;
            (ok && out.lines().count() == 2).then_some(out)
        },
        detail,
    )
    .await;
    for line in top.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let cpu: i64 = cols[1].trim_end_matches('m').parse().expect("millicores");
        assert!((88..=92).contains(&cpu), "each pod uses 90m: {top}");
        assert_eq!(cols[2], "48Mi", "{top}");
    }
    let nodes = must_kubectl(&kubeconfig, &["top", "nodes", "--no-headers"], None).await;
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    let raw = must_kubectl(
        &kubeconfig,
        &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dnone"],
        None,
    )
    .await;
    assert!(raw.contains("\"kind\":\"PodMetricsList\"") && raw.contains("\"items\":[]"), "{raw}");
    let (ok, _, err) =
        kubectl(&kubeconfig, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"], None)
            .await;
    assert!(!ok && err.contains("NotFound"), "{err}");

    tracing::info!("--- the HPA scales up to its maximum while each pod uses 90% of its request");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(HPA)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "web to be scaled to 5 and the HPA to say TooManyReplicas",
        || async {
            let d = deployments.get("web").await.ok()?;
            let h = hpas.get("web").await.ok()?;
            let limited = condition(&h, "ScalingLimited")? == ("True".into(), "TooManyReplicas".into());
            (d.spec?.replicas == Some(5) && limited).then_some(())
        },
        detail,
    )
    .await;
    let h = hpas.get("web").await.expect("hpa");
    let s = h.status.clone().expect("status");
    assert_eq!(s.desired_replicas, 5);
    assert!(s.last_scale_time.is_some());
    assert_eq!(condition(&h, "ScalingActive"), Some(("True".into(), "ValidMetricFound".into())));
    let util = s
        .current_metrics
        .as_ref()
        .and_then(|m| m[0].resource.as_ref()?.current.average_utilization)
        .expect("utilization");
    assert!((85..=95).contains(&util), "utilization {util}");
    let table = must_kubectl(&kubeconfig, &["get", "hpa", "web", "--no-headers"], None).await;
    assert!(table.contains("/50%") && table.contains("Deployment/web"), "{table}");

    tracing::info!("--- usage drops: the HPA scales down to its minimum");
    must_kubectl(
        &kubeconfig,
        &["annotate", "pods", "-l", "app=web", "sim.keelson.dev/cpu-usage=5m", "--overwrite"],
        None,
    )
    .await;
    eventually_or(
        WAIT,
        "web to be scaled down to 1",
        || async { (deployments.get("web").await.ok()?.spec?.replicas == Some(1)).then_some(()) },
        detail,
    )
    .await;
    eventually_or(
        WAIT,
        "SuccessfulRescale Events for the scale-up to 5 and the scale-down to 1",
        || async {
            let args = [
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=HorizontalPodAutoscaler,reason=SuccessfulRescale",
                "-o",
                "jsonpath={.items[*].message}",
            ];
            let (_, events, _) = kubectl(&kubeconfig, &args, None).await;
            (events.contains("New size: 5") && events.contains("New size: 1; reason: All metrics below target"))
                .then_some(())
        },
        detail,
    )
    .await;

    tracing::info!("--- an HPA of a missing target cannot scale, and says why");
    must_kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        Some("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: nope}\n  maxReplicas: 3\n"),
    )
    .await;
    eventually_or(
        WAIT,
        "the ghost HPA to report FailedGetScale",
        || async {
            let h = hpas.get("ghost").await.ok()?;
            (condition(&h, "AbleToScale")? == ("False".into(), "FailedGetScale".into())).then_some(())
        },
        detail,
    )
    .await;
    drop(agent);
}
