//! What a pod on a simulated node should look like: what to do about it now ([`decide`]),
//! its status once "running" and once "completed". Pure functions of the pod and a time.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::node_object::NODE_IP;

/// `sim.keelson.dev/ready: "false"` keeps a running pod (and its containers) not Ready.
pub const READY_ANNOTATION: &str = "sim.keelson.dev/ready";
/// `sim.keelson.dev/exit-code: "N"` (N ≠ 0) makes a run-to-completion pod fail with N.
pub const EXIT_CODE_ANNOTATION: &str = "sim.keelson.dev/exit-code";

/// The conditions the sim manages (others a pod has are kept as they are).
const OWN_CONDITIONS: &[&str] =
    &["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// What a pod of ours needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing (finished, already as it should be, or waiting for finalizers).
    Nothing,
    /// Being deleted: its "containers" have stopped, so delete it for good.
    Delete,
    /// Write the running status (it is not running yet, or its readiness changed).
    Run,
    /// A run-to-completion pod: write its completed status at `at`.
    Finish { at: Timestamp },
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// restartPolicy Never or OnFailure: the pod runs to completion.
pub fn runs_to_completion(pod: &Pod) -> bool {
    matches!(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()), Some("Never" | "OnFailure"))
}

/// The exit code its containers finish with (0 unless the annotation says otherwise).
pub fn exit_code(pod: &Pod) -> i32 {
    annotation(pod, EXIT_CODE_ANNOTATION).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Its containers are ready (unless annotated `sim.keelson.dev/ready: "false"`).
pub fn containers_ready(pod: &Pod) -> bool {
    annotation(pod, READY_ANNOTATION).is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"))
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn condition_true(pod: &Pod, type_: &str) -> bool {
    condition(pod, type_).is_some_and(|c| c.status == "True")
}

/// Ready: containers ready and every readiness gate's condition True.
pub fn want_ready(pod: &Pod) -> bool {
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_deref()).unwrap_or_default();
    containers_ready(pod) && gates.iter().all(|g| condition_true(pod, &g.condition_type))
}

/// The pod's containers and init containers.
fn containers(pod: &Pod) -> (&[Container], &[Container]) {
    match pod.spec.as_ref() {
        Some(s) => (&s.containers, s.init_containers.as_deref().unwrap_or_default()),
        None => (&[], &[]),
    }
}

/// The pod shows a complete running status (ours, or one like it).
fn shows_running(pod: &Pod) -> bool {
    let Some(s) = pod.status.as_ref() else { return false };
    let running = |c: &ContainerStatus| c.state.as_ref().is_some_and(|st| st.running.is_some());
    let statuses = s.container_statuses.as_deref().unwrap_or_default();
    s.phase.as_deref() == Some("Running")
        && s.pod_ip.is_some()
        && s.host_ip.is_some()
        && s.start_time.is_some()
        && statuses.len() == containers(pod).0.len()
        && statuses.iter().all(running)
}

/// When a pod that runs to completion finishes: `job_run` after it started.
pub fn finish_time(pod: &Pod, now: Timestamp, job_run: Duration) -> Timestamp {
    let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now);
    start.checked_add(job_run).unwrap_or(Timestamp::MAX)
}

/// What a pod bound to one of our nodes needs now.
pub fn decide(pod: &Pod, now: Timestamp, job_run: Duration) -> Decision {
    if pod.metadata.deletion_timestamp.is_some() {
        // Already deleted with no grace: the API server removes it once its finalizers are gone.
        let finalizers = pod.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty());
        return match (finalizers, pod.metadata.deletion_grace_period_seconds) {
            (true, Some(0)) => Decision::Nothing,
            _ => Decision::Delete,
        };
    }
    if is_terminal(pod) {
        return Decision::Nothing;
    }
    if !shows_running(pod) {
        return Decision::Run;
    }
    if runs_to_completion(pod) {
        return Decision::Finish { at: finish_time(pod, now, job_run) };
    }
    if want_ready(pod) != condition_true(pod, "Ready") {
        return Decision::Run;
    }
    Decision::Nothing
}

/// A condition, keeping the pod's `lastTransitionTime` for it if its status is unchanged.
fn cond(
    pod: &Pod,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let since = match condition(pod, type_) {
        Some(c) if c.status == status => c.last_transition_time.clone().unwrap_or(Time(now)),
        _ => Time(now),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// Ours, then the pod's other conditions as they are.
fn with_others(pod: &Pod, mut ours: Vec<PodCondition>) -> Vec<PodCondition> {
    let others = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    ours.extend(others.iter().filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str())).cloned());
    ours
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn container_id(pod: &Pod, name: &str) -> String {
    format!("sim://{}-{name}", uid(pod))
}

fn base_status(pod: &Pod, c: &Container) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: format!("sim://{image}"),
        image,
        container_id: Some(container_id(pod, &c.name)),
        restart_count: 0,
        ..Default::default()
    }
}

fn running(pod: &Pod, c: &Container, ready: bool, since: Timestamp) -> ContainerStatus {
    ContainerStatus {
        ready,
        started: Some(true),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(since)) }),
            ..Default::default()
        }),
        ..base_status(pod, c)
    }
}

fn terminated(pod: &Pod, c: &Container, exit_code: i32, started: Timestamp, finished: Timestamp) -> ContainerStatus {
    ContainerStatus {
        ready: false,
        started: Some(false),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                started_at: Some(Time(started)),
                finished_at: Some(Time(finished)),
                container_id: Some(container_id(pod, &c.name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..base_status(pod, c)
    }
}

/// A sidecar: an init container with restartPolicy Always (it keeps running).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn not_ready_message(names: &[&str]) -> String {
    format!("containers with unready status: [{}]", names.join(" "))
}

/// The running status of `pod` with address `pod_ip`: every container running since the
/// pod started (`now` if it has no start time yet), init containers completed (sidecars
/// running), ready as [`want_ready`] says.
pub fn running_status(pod: &Pod, pod_ip: IpAddr, now: Timestamp) -> PodStatus {
    let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now);
    let c_ready = containers_ready(pod);
    let ready = want_ready(pod);
    let (main, init) = containers(pod);
    let unready: Vec<&str> = if c_ready { vec![] } else { main.iter().map(|c| c.name.as_str()).collect() };
    let (reason, message) = match (c_ready, ready) {
        (true, true) => (None, None),
        (true, false) => {
            (Some("ReadinessGatesNotReady"), Some("the pod's readiness gates are not all True".to_string()))
        }
        (false, _) => (Some("ContainersNotReady"), Some(not_ready_message(&unready))),
    };
    let c_reason = (!c_ready).then_some("ContainersNotReady");
    let c_message = (!c_ready).then(|| not_ready_message(&unready));
    let conditions = vec![
        cond(pod, "PodReadyToStartContainers", true, None, None, now),
        cond(pod, "Initialized", true, None, None, now),
        cond(pod, "Ready", ready, reason, message, now),
        cond(pod, "ContainersReady", c_ready, c_reason, c_message, now),
        cond(pod, "PodScheduled", true, None, None, now),
    ];
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|c| if is_sidecar(c) { running(pod, c, c_ready, start) } else { completed_init(pod, c, start) })
        .collect();
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let ip = if host_network { NODE_IP.to_string() } else { pod_ip.to_string() };
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(with_others(pod, conditions)),
        host_ip: Some(NODE_IP.into()),
        host_ips: Some(vec![HostIP { ip: NODE_IP.into() }]),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(Time(start)),
        container_statuses: Some(main.iter().map(|c| running(pod, c, c_ready, start)).collect()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ..Default::default()
    }
}

/// A regular init container that ran to completion when the pod started.
fn completed_init(pod: &Pod, c: &Container, start: Timestamp) -> ContainerStatus {
    ContainerStatus { ready: true, ..terminated(pod, c, 0, start, start) }
}

/// When a container started running, as the pod's status shows (else the pod's start).
fn started_at(pod: &Pod, name: &str) -> Option<Timestamp> {
    let s = pod.status.as_ref()?;
    let all = s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten());
    all.filter(|c| c.name == name).find_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref().map(|t| t.0))
}

/// The completed status of a run-to-completion pod at `at`: Succeeded (or Failed with
/// `exit_code` ≠ 0), every container terminated, not ready.
pub fn finished_status(pod: &Pod, at: Timestamp, exit_code: i32) -> PodStatus {
    let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(at);
    let (main, init) = containers(pod);
    let conditions = vec![
        cond(pod, "PodReadyToStartContainers", false, None, None, at),
        cond(pod, "Initialized", true, None, None, at),
        cond(pod, "Ready", false, Some("PodCompleted"), None, at),
        cond(pod, "ContainersReady", false, Some("PodCompleted"), None, at),
        cond(pod, "PodScheduled", true, None, None, at),
    ];
    let ended = |c: &Container, code: i32| terminated(pod, c, code, started_at(pod, &c.name).unwrap_or(start), at);
    let init_statuses: Vec<ContainerStatus> =
        init.iter().map(|c| if is_sidecar(c) { ended(c, 0) } else { completed_init(pod, c, start) }).collect();
    PodStatus {
        phase: Some(if exit_code == 0 { "Succeeded" } else { "Failed" }.into()),
        conditions: Some(with_others(pod, conditions)),
        container_statuses: Some(main.iter().map(|c| ended(c, exit_code)).collect()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ..Default::default()
    }
}

/// The `pods/status` merge patch writing `status`, pinned to the resourceVersion the
/// decision was made at (a pod changed since is re-read: 409).
pub fn status_patch(pod: &Pod, status: &PodStatus) -> Value {
    match &pod.metadata.resource_version {
        Some(rv) => json!({"metadata": {"resourceVersion": rv}, "status": status}),
        None => json!({ "status": status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn c(name: &str) -> Container {
        Container { name: name.into(), image: Some(format!("img/{name}:1")), ..Default::default() }
    }

    fn pod(restart: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                resource_version: Some("42".into()),
                annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("sim-0".into()),
                restart_policy: Some(restart.into()),
                containers: vec![c("a"), c("b")],
                init_containers: Some(vec![
                    c("init"),
                    Container { restart_policy: Some("Always".into()), ..c("sidecar") },
                ]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(t(5))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ip() -> IpAddr {
        "10.244.0.7".parse().unwrap()
    }

    /// `p` after our running status was written.
    fn run(p: &Pod, now: Timestamp) -> Pod {
        Pod { status: Some(running_status(p, ip(), now)), ..p.clone() }
    }

    fn cond_of<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_pending_pod_gets_a_full_running_status() {
        let p = pod("Always", &[]);
        assert_eq!(decide(&p, t(10), Duration::from_secs(1)), Decision::Run);
        let s = running_status(&p, ip(), t(10));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            (s.host_ip.as_deref(), s.host_ips.as_ref().unwrap()[0].ip.as_str()),
            (Some("127.0.0.1"), "127.0.0.1")
        );
        assert_eq!(
            (s.pod_ip.as_deref(), s.pod_ips.as_ref().unwrap()[0].ip.as_str()),
            (Some("10.244.0.7"), "10.244.0.7")
        );
        assert_eq!(s.start_time, Some(Time(t(10))));
        for ty in OWN_CONDITIONS {
            assert_eq!(cond_of(&s, ty).status, "True", "{ty}");
        }
        assert_eq!(cond_of(&s, "PodScheduled").last_transition_time, Some(Time(t(5))), "kept");
        assert_eq!(cond_of(&s, "Ready").last_transition_time, Some(Time(t(10))));
        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1].name, "b");
        assert_eq!(cs[1].image, "img/b:1");
        assert_eq!(cs[1].image_id, "sim://img/b:1");
        assert_eq!(cs[1].container_id.as_deref(), Some("sim://u1-b"));
        assert!(cs[1].ready && cs[1].started == Some(true) && cs[1].restart_count == 0);
        assert_eq!(cs[1].state.as_ref().unwrap().running.as_ref().unwrap().started_at, Some(Time(t(10))));
        let init = s.init_container_statuses.as_ref().unwrap();
        let done = init[0].state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
        assert!(init[0].ready);
        assert!(init[1].state.as_ref().unwrap().running.is_some(), "sidecars keep running");
        // Once written, nothing more to do; a restart of the sim decides the same.
        let ran = run(&p, t(10));
        assert_eq!(decide(&ran, t(500), Duration::from_secs(1)), Decision::Nothing);
        let again = running_status(&ran, ip(), t(600));
        assert_eq!(again.start_time, Some(Time(t(10))), "stable start time");
        assert_eq!(cond_of(&again, "Ready").last_transition_time, Some(Time(t(10))));
        let v = status_patch(&p, &s);
        assert_eq!(v.pointer("/metadata/resourceVersion"), Some(&json!("42")));
        assert_eq!(v.pointer("/status/phase"), Some(&json!("Running")));
    }

    #[test]
    fn host_network_pods_get_the_node_address() {
        let mut p = pod("Always", &[]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(running_status(&p, ip(), t(1)).pod_ip.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn the_ready_annotation_is_re_evaluated() {
        let p = pod("Always", &[(READY_ANNOTATION, "false")]);
        let s = running_status(&p, ip(), t(10));
        assert_eq!(cond_of(&s, "Ready").status, "False");
        assert_eq!(cond_of(&s, "ContainersReady").status, "False");
        assert_eq!(cond_of(&s, "ContainersReady").message.as_deref(), Some("containers with unready status: [a b]"));
        assert_eq!(cond_of(&s, "Initialized").status, "True");
        assert!(s.container_statuses.as_ref().unwrap().iter().all(|c| !c.ready && c.started == Some(true)));
        let ran = run(&p, t(10));
        assert_eq!(decide(&ran, t(20), Duration::from_secs(1)), Decision::Nothing);
        // The annotation is removed: ready again.
        let mut now_ready = ran.clone();
        now_ready.metadata.annotations = None;
        assert_eq!(decide(&now_ready, t(30), Duration::from_secs(1)), Decision::Run);
        let s = running_status(&now_ready, ip(), t(30));
        assert_eq!(cond_of(&s, "Ready").status, "True");
        assert_eq!(cond_of(&s, "Ready").last_transition_time, Some(Time(t(30))));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.7"));
        // "true" or anything else means ready.
        assert!(containers_ready(&pod("Always", &[(READY_ANNOTATION, "true")])));
        assert!(!containers_ready(&pod("Always", &[(READY_ANNOTATION, " FALSE")])));
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut p = pod("Always", &[]);
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate { condition_type: "lb/ok".into() }]);
        let s = running_status(&p, ip(), t(1));
        assert_eq!(cond_of(&s, "Ready").status, "False");
        assert_eq!(cond_of(&s, "ContainersReady").status, "True");
        let mut ran = run(&p, t(1));
        let gate = PodCondition { type_: "lb/ok".into(), status: "True".into(), ..Default::default() };
        ran.status.as_mut().unwrap().conditions.as_mut().unwrap().push(gate);
        assert_eq!(decide(&ran, t(2), Duration::from_secs(1)), Decision::Run);
        let s = running_status(&ran, ip(), t(2));
        assert_eq!(cond_of(&s, "Ready").status, "True");
        assert_eq!(cond_of(&s, "lb/ok").status, "True", "foreign conditions kept");
    }

    #[test]
    fn run_to_completion_pods_finish_after_job_run() {
        for policy in ["Never", "OnFailure"] {
            let ran = run(&pod(policy, &[]), t(10));
            assert_eq!(decide(&ran, t(10), Duration::from_secs(3)), Decision::Finish { at: t(13) });
            let s = finished_status(&ran, t(13), exit_code(&ran));
            assert_eq!(s.phase.as_deref(), Some("Succeeded"));
            assert_eq!(cond_of(&s, "Ready").status, "False");
            assert_eq!(cond_of(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
            assert_eq!(cond_of(&s, "ContainersReady").status, "False");
            assert_eq!(cond_of(&s, "Initialized").status, "True");
            let cs = s.container_statuses.as_ref().unwrap();
            assert_eq!(cs.len(), 2);
            let term = cs[0].state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
            assert_eq!((term.started_at.clone(), term.finished_at.clone()), (Some(Time(t(10))), Some(Time(t(13)))));
            assert!(!cs[0].ready && cs[0].state.as_ref().unwrap().running.is_none());
            let init = s.init_container_statuses.as_ref().unwrap();
            assert!(init.iter().all(|c| c.state.as_ref().unwrap().terminated.is_some()));
            assert!(s.pod_ip.is_none(), "the address is left as it is");
            let done = Pod { status: Some(s), ..ran.clone() };
            assert_eq!(decide(&done, t(99), Duration::from_secs(3)), Decision::Nothing);
        }
        // restartPolicy Always (the default) keeps running.
        let ran = run(&pod("Always", &[]), t(10));
        assert_eq!(decide(&ran, t(9_999), Duration::from_secs(1)), Decision::Nothing);
    }

    #[test]
    fn the_exit_code_annotation_fails_a_job() {
        let ran = run(&pod("Never", &[(EXIT_CODE_ANNOTATION, "3")]), t(10));
        assert_eq!(exit_code(&ran), 3);
        let s = finished_status(&ran, t(11), exit_code(&ran));
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let term = s.container_statuses.as_ref().unwrap()[1].state.as_ref().unwrap().terminated.clone().unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
        assert_eq!(exit_code(&pod("Never", &[(EXIT_CODE_ANNOTATION, "x")])), 0);
        assert_eq!(exit_code(&pod("Never", &[(EXIT_CODE_ANNOTATION, "0")])), 0);
    }

    #[test]
    fn deleting_pods_are_deleted_for_good_unless_only_finalizers_hold_them() {
        let mut p = run(&pod("Always", &[]), t(1));
        p.metadata.deletion_timestamp = Some(Time(t(2)));
        p.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(decide(&p, t(3), Duration::ZERO), Decision::Delete);
        p.metadata.finalizers = Some(vec!["x".into()]);
        assert_eq!(decide(&p, t(3), Duration::ZERO), Decision::Delete);
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(decide(&p, t(3), Duration::ZERO), Decision::Nothing);
        // A finished pod being deleted too.
        let mut done = pod("Never", &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        done.metadata.deletion_timestamp = Some(Time(t(2)));
        assert_eq!(decide(&done, t(3), Duration::ZERO), Decision::Delete);
    }

    #[test]
    fn odd_pods_do_not_panic() {
        let empty = Pod::default();
        assert_eq!(decide(&empty, t(1), Duration::MAX), Decision::Run);
        let s = running_status(&empty, ip(), t(1));
        assert_eq!(s.container_statuses, Some(vec![]));
        assert!(s.init_container_statuses.is_none());
        let f = finished_status(&empty, t(1), -1);
        assert_eq!(f.phase.as_deref(), Some("Failed"));
        assert_eq!(finish_time(&empty, t(1), Duration::MAX), Timestamp::MAX);
        assert_eq!(status_patch(&empty, &s).get("metadata"), None);
    }
}
