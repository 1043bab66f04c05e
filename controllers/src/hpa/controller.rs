//! The HPA reconcile (upstream `horizontal.go` `reconcileAutoscaler`): read the target's
//! `scale` subresource, compute a replica count per metric from the resource metrics API,
//! take the largest, stabilize and rate-limit it by the HPA's behavior, write the new
//! scale, and report status, conditions and Events as `kubectl describe hpa` shows them.
//! Each HPA is reconciled every `--horizontal-pod-autoscaler-sync-period`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricSpec, MetricStatus,
    MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::behavior::{self, HpaState};
use super::replicas::{self, CalcConfig};
use super::types::{pod_samples, PodMetricsList};
use crate::events::Events;
use crate::util_runtime::lock;
use crate::{Context, Error};

/// An HPA's in-memory history is forgotten after this long without a reconcile (it was
/// deleted; upstream forgets it on the delete event).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

struct State {
    ctx: Context,
    events: Events,
    /// HPA uid → its recommendations and scale events, and when it was last reconciled.
    history: Mutex<HashMap<String, (HpaState, Instant)>>,
    /// (apiVersion, kind) → the resource serving it.
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let state = Arc::new(State {
        events: Events::new(client.clone(), "horizontal-pod-autoscaler"),
        ctx: ctx.clone(),
        history: Mutex::new(HashMap::new()),
        resources: Mutex::new(HashMap::new()),
    });
    Controller::new(Api::<HorizontalPodAutoscaler>::all(client), watcher::Config::default())
        .with_config(CtrlConfig::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed("horizontalpodautoscaling", &ctx.config.write_traces, reconcile),
            error_policy,
            state,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "hpa sync");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_obj: Arc<HorizontalPodAutoscaler>, err: &Error, st: Arc<State>) -> Action {
    Action::requeue(crate::util_runtime::retry_delay(err).max(st.ctx.config.hpa_sync_period))
}

fn reference(hpa: &HorizontalPodAutoscaler) -> ObjectReference {
    ObjectReference {
        api_version: Some("autoscaling/v2".into()),
        kind: Some("HorizontalPodAutoscaler".into()),
        name: hpa.metadata.name.clone(),
        namespace: hpa.metadata.namespace.clone(),
        uid: hpa.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Set a condition, keeping its transition time when its status did not change.
fn set_condition(
    conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let now = Time(jiff::Timestamp::now());
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now);
            }
            c.status = status;
            c.reason = Some(reason.to_string());
            c.message = Some(message);
        }
        None => conds.push(HorizontalPodAutoscalerCondition {
            type_: type_.to_string(),
            status,
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(now),
        }),
    }
}

/// What the reconcile found, written as the status.
struct Outcome {
    current: i32,
    desired: i32,
    metrics: Option<Vec<MetricStatus>>,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    last_scale: Option<Time>,
}

async fn resolve(st: &State, api_version: &str, kind: &str) -> Result<ApiResource, String> {
    let key = (api_version.to_string(), kind.to_string());
    if let Some(ar) = lock(&st.resources).get(&key) {
        return Ok(ar.clone());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(&st.ctx.client, &gvk).await.map_err(|e| e.to_string())?;
    if !caps.subresources.iter().any(|(s, _)| s.plural == format!("{}/scale", ar.plural) || s.plural == "scale") {
        // Discovery lists subresources as `<plural>/scale`; kube-rs strips the parent.
        tracing::debug!(kind, "no scale subresource listed; trying anyway");
    }
    lock(&st.resources).insert(key, ar.clone());
    Ok(ar)
}

#[tracing::instrument(skip_all, fields(ns = hpa.metadata.namespace.as_deref().unwrap_or(""), name = hpa.metadata.name.as_deref().unwrap_or("")))]
async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, st: Arc<State>) -> Result<Action, Error> {
    let sync = Action::requeue(st.ctx.config.hpa_sync_period);
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let status = hpa.status.clone().unwrap_or_default();
    let mut out = Outcome {
        current: status.current_replicas.unwrap_or(0),
        desired: status.desired_replicas,
        metrics: status.current_metrics.clone(),
        conditions: status.conditions.clone().unwrap_or_default(),
        last_scale: status.last_scale_time.clone(),
    };
    let target = &spec.scale_target_ref;
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());
    let target_name = format!("{}/{}", target.kind, target.name);

    // The target's scale.
    let scale = match resolve(&st, &api_version, &target.kind).await {
        Ok(ar) => {
            let api: Api<DynamicObject> = Api::namespaced_with(st.ctx.client.clone(), &ns, &ar);
            api.get_scale(&target.name).await.map(|s| (api, s)).map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    let (scale_api, scale) = match scale {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("the HPA controller was unable to get the target's current scale: {e}");
            st.events.warning(reference(&hpa), "FailedGetScale", "GetScale", e.clone());
            set_condition(&mut out.conditions, "AbleToScale", false, "FailedGetScale", msg);
            write_status(&st, &hpa, out).await?;
            return Ok(sync);
        }
    };
    set_condition(
        &mut out.conditions,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    // Upstream reports the scale's spec.replicas as the HPA's currentReplicas.
    out.current = current;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let now = jiff::Timestamp::now();
    let behavior = behavior::with_defaults(spec.behavior.as_ref(), st.ctx.config.hpa_downscale_stabilization);

    let mut rescale_reason = String::new();
    let desired = if current == 0 && min != 0 {
        set_condition(
            &mut out.conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
        out.metrics = None;
        0
    } else if let Some((d, why)) = behavior::clamp_without_metrics(current, spec.min_replicas, max) {
        rescale_reason = why.to_string();
        d
    } else {
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        match compute(&st, &ns, &metric_specs(&spec), &selector, current, now).await {
            Ok((proposal, metric_name, statuses)) => {
                out.metrics = Some(statuses);
                set_condition(
                    &mut out.conditions,
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!("the HPA was able to successfully calculate a replica count from {metric_name}"),
                );
                let normalized = {
                    let mut history = lock(&st.history);
                    history.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
                    let entry = history.entry(uid.clone()).or_insert_with(|| (HpaState::default(), Instant::now()));
                    entry.1 = Instant::now();
                    match &spec.behavior {
                        Some(_) => behavior::normalize(&mut entry.0, &behavior, min, max, current, proposal, now),
                        // Upstream's older normalization for HPAs without a behavior.
                        None => behavior::normalize_without_behavior(
                            &mut entry.0,
                            st.ctx.config.hpa_downscale_stabilization,
                            min,
                            max,
                            current,
                            proposal,
                            now,
                        ),
                    }
                };
                let (reason, message) = normalized.able_to_scale.clone();
                set_condition(&mut out.conditions, "AbleToScale", true, reason, message);
                match normalized.limited.clone() {
                    Some((reason, message)) => {
                        set_condition(&mut out.conditions, "ScalingLimited", true, reason, message)
                    }
                    None => set_condition(
                        &mut out.conditions,
                        "ScalingLimited",
                        false,
                        "DesiredWithinRange",
                        "the desired count is within the acceptable range".into(),
                    ),
                }
                if normalized.replicas > current {
                    rescale_reason = format!("{metric_name} above target");
                } else if normalized.replicas < current {
                    rescale_reason = "All metrics below target".into();
                }
                normalized.replicas
            }
            Err(MetricsFailure { reason, message, statuses }) => {
                st.events.warning(reference(&hpa), reason, "ComputeReplicas", message.clone());
                set_condition(&mut out.conditions, "ScalingActive", false, reason, message);
                out.metrics = statuses;
                // No scaling on a metric that cannot be read (upstream returns the error).
                out.desired = current;
                write_status(&st, &hpa, out).await?;
                return Ok(sync);
            }
        }
    };
    out.desired = desired;
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        match scale_api.patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                set_condition(
                    &mut out.conditions,
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                st.events.normal(
                    reference(&hpa),
                    "SuccessfulRescale",
                    "Scale",
                    format!("New size: {desired}; reason: {rescale_reason}"),
                );
                if spec.behavior.is_some() {
                    if let Some((state, _)) = lock(&st.history).get_mut(&uid) {
                        behavior::record_scale(state, &behavior, current, desired, now);
                    }
                }
                out.last_scale = Some(Time(now));
                tracing::info!(target = %target_name, from = current, to = desired, reason = %rescale_reason, "rescaled");
            }
            Err(e) => {
                st.events.warning(
                    reference(&hpa),
                    "FailedRescale",
                    "Scale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                );
                set_condition(
                    &mut out.conditions,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                write_status(&st, &hpa, out).await?;
                return Err(e.into());
            }
        }
    }
    write_status(&st, &hpa, out).await?;
    Ok(sync)
}

/// The HPA's metrics; none means CPU at 80% utilization (the autoscaling/v2 default).
fn metric_specs(spec: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerSpec) -> Vec<MetricSpec> {
    use k8s_openapi::api::autoscaling::v2::{MetricTarget, ResourceMetricSource};
    match &spec.metrics {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }],
    }
}

/// Why no replica count came out of the metrics (the ScalingActive=False reason).
struct MetricsFailure {
    reason: &'static str,
    message: String,
    statuses: Option<Vec<MetricStatus>>,
}

fn failure(reason: &'static str, message: String) -> MetricsFailure {
    MetricsFailure { reason, message, statuses: None }
}

/// Every metric's proposal; the largest wins (upstream computeReplicasForMetrics). With
/// some metrics unreadable, a proposal to scale down is not taken.
async fn compute(
    st: &State,
    ns: &str,
    metrics: &[MetricSpec],
    selector: &str,
    current: i32,
    now: jiff::Timestamp,
) -> Result<(i32, String, Vec<MetricStatus>), MetricsFailure> {
    if selector.is_empty() {
        return Err(failure("InvalidSelector", "selector is required".into()));
    }
    let pods_api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), ns);
    let pods = pods_api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            failure("FailedGetResourceMetric", format!("unable to get pods while calculating replica count: {e}"))
        })?
        .items;
    let list = metrics_list(st, ns, selector).await;
    let cfg = CalcConfig::default();
    let mut best: Option<(i32, String)> = None;
    let mut statuses = Vec::new();
    let mut invalid: Option<MetricsFailure> = None;
    for m in metrics {
        let r = one_metric(m, &list, &pods, current, &cfg, now);
        match r {
            Ok((replicas, name, status)) => {
                statuses.push(status);
                if best.as_ref().is_none_or(|(b, _)| replicas > *b) {
                    best = Some((replicas, name));
                }
            }
            Err(f) => {
                statuses.push(MetricStatus { type_: m.type_.clone(), ..Default::default() });
                invalid.get_or_insert(f);
            }
        }
    }
    match (best, invalid) {
        (None, Some(f)) => Err(MetricsFailure { statuses: Some(statuses), ..f }),
        (None, None) => Err(failure("InvalidMetricSourceType", "the HPA has no metrics to scale on".into())),
        (Some((replicas, _)), Some(f)) if replicas < current => Err(MetricsFailure { statuses: Some(statuses), ..f }),
        (Some((replicas, name)), _) => Ok((replicas, name, statuses)),
    }
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector=…`.
async fn metrics_list(st: &State, ns: &str, selector: &str) -> Result<PodMetricsList, String> {
    let req = metrics_request(ns, selector).map_err(|e| e.to_string())?;
    st.ctx.client.request::<PodMetricsList>(req).await.map_err(|e| e.to_string())
}

fn metrics_request(ns: &str, selector: &str) -> Result<http::Request<Vec<u8>>, kube::core::request::Error> {
    kube::core::Request::new(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"))
        .list(&ListParams::default().labels(selector))
}

/// One metric's replica proposal, its name for messages, and its status.
fn one_metric(
    m: &MetricSpec,
    list: &Result<PodMetricsList, String>,
    pods: &[Pod],
    current: i32,
    cfg: &CalcConfig,
    now: jiff::Timestamp,
) -> Result<(i32, String, MetricStatus), MetricsFailure> {
    let (resource, container, target) = match (m.type_.as_str(), &m.resource, &m.container_resource) {
        ("Resource", Some(r), _) => (r.name.clone(), None, r.target.clone()),
        ("ContainerResource", _, Some(c)) => (c.name.clone(), Some(c.container.clone()), c.target.clone()),
        ("Resource" | "ContainerResource", _, _) => {
            return Err(failure("InvalidMetricSourceType", format!("the {} metric has no source", m.type_)))
        }
        (t @ ("Pods" | "Object" | "External"), _, _) => {
            let reason = match t {
                "Pods" => "FailedGetPodsMetric",
                "Object" => "FailedGetObjectMetric",
                _ => "FailedGetExternalMetric",
            };
            return Err(failure(
                reason,
                format!(
                    "unable to get {} metric: no custom or external metrics API is served by keelson",
                    t.to_lowercase()
                ),
            ));
        }
        (t, _, _) => return Err(failure("InvalidMetricSourceType", format!("unknown metric source type {t:?}"))),
    };
    let fail_reason = if container.is_some() { "FailedGetContainerResourceMetric" } else { "FailedGetResourceMetric" };
    let list = list.as_ref().map_err(|e| {
        failure(
            fail_reason,
            format!(
                "unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"
            ),
        )
    })?;
    let samples = pod_samples(list, &resource, container.as_deref());
    let what = if container.is_some() { "container resource" } else { "resource" };
    let value_status = |avg_util: Option<i32>, avg_milli: i64| MetricValueStatus {
        average_utilization: avg_util,
        average_value: Some(Quantity(milli_quantity(avg_milli))),
        value: None,
    };
    let status = |current: MetricValueStatus| match &container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus { name: resource.clone(), current }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: resource.clone(),
                container: c.clone(),
                current,
            }),
            ..Default::default()
        },
    };
    match (target.type_.as_str(), target.average_utilization, target.average_value.as_ref()) {
        ("Utilization", Some(util), _) => {
            let r = replicas::resource_replicas(current, util, &resource, container.as_deref(), pods, &samples, cfg, now)
                .map_err(|e| failure(fail_reason, format!("failed to get {resource} utilization: {e}")))?;
            Ok((
                r.replicas,
                format!("{resource} {what} utilization (percentage of request)"),
                status(value_status(Some(r.utilization), r.raw_average_value)),
            ))
        }
        ("AverageValue", _, Some(v)) => {
            let target_milli = keelson_scheduler::quantity::milli_value(&v.0).ok_or_else(|| {
                failure("InvalidMetricSourceType", format!("invalid target average value {:?}", v.0))
            })?;
            let r = replicas::raw_resource_replicas(current, target_milli, &resource, container.as_deref(), pods, &samples, cfg, now)
                .map_err(|e| failure(fail_reason, format!("failed to get {resource} usage: {e}")))?;
            Ok((r.replicas, format!("{resource} {what}"), status(value_status(None, r.average_value_milli))))
        }
        (t, _, _) => Err(failure(
            "InvalidMetricSourceType",
            format!("invalid {resource} target type {t:?}: must be Utilization with averageUtilization or AverageValue with averageValue"),
        )),
    }
}

/// Thousandths as a quantity (`250m`, `2`, `134217728`).
fn milli_quantity(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

async fn write_status(st: &State, hpa: &HorizontalPodAutoscaler, out: Outcome) -> Result<(), Error> {
    let status = json!({
        "observedGeneration": hpa.metadata.generation,
        "lastScaleTime": out.last_scale,
        "currentReplicas": out.current,
        "desiredReplicas": out.desired,
        "currentMetrics": out.metrics,
        "conditions": out.conditions,
    });
    let shown = serde_json::to_value(hpa.status.clone().unwrap_or_default()).unwrap_or_default();
    if same_status(&shown, &status) {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(st.ctx.client.clone(), hpa.metadata.namespace.as_deref().unwrap_or_default());
    let name = hpa.metadata.name.clone().unwrap_or_default();
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await?;
    Ok(())
}

/// Equal but for null-vs-absent fields.
fn same_status(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    fn strip(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => serde_json::Value::Object(
                m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip(v))).collect(),
            ),
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(strip).collect()),
            v => v.clone(),
        }
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut c = Vec::new();
        set_condition(&mut c, "AbleToScale", true, "A", "a".into());
        let t0 = c[0].last_transition_time.clone();
        set_condition(&mut c, "AbleToScale", true, "B", "b".into());
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].reason.as_deref(), Some("B"));
        set_condition(&mut c, "ScalingActive", false, "C", "c".into());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn queries_and_quantities() {
        let req = metrics_request("ns", "app=web,tier in (a b)").unwrap();
        assert_eq!(
            req.uri().to_string(),
            "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods?&labelSelector=app%3Dweb%2Ctier+in+%28a+b%29"
        );
        assert_eq!(milli_quantity(250), "250m");
        assert_eq!(milli_quantity(2000), "2");
        assert!(same_status(&json!({"a": null, "b": [{"c": 1, "d": null}]}), &json!({"b": [{"c": 1}]})));
    }
}
