//! The pod status the kubelet writes back: phase, conditions, addresses and each
//! container's state, from what it observed (pure; the rules of upstream's
//! `getPhase` and `generateAPIPodStatus`).

use serde_json::{json, Value};

/// A container's state as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<String>,
        finished_at: String,
        container_id: Option<String>,
    },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting { reason: reason.into(), message }
    }

    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => json!({ "waiting": { "reason": reason, "message": message } }),
            State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
            State::Terminated { exit_code, reason, message, started_at, finished_at, container_id } => {
                json!({ "terminated": {
                    "exitCode": exit_code, "reason": reason, "message": message,
                    "startedAt": started_at, "finishedAt": finished_at, "containerID": container_id,
                }})
            }
        }
    }
}

/// One container's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: i32,
    pub ready: bool,
    /// Running and past its startup probe (if any).
    pub started: bool,
}

impl ContainerStatus {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map_or(json!({}), State::to_json),
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        strip_nulls(&mut v);
        v
    }
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            strip_nulls(x);
        }
    }
}

/// Everything the status is made of.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub restart_policy: String,
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: Option<String>,
    pub sandbox_ready: bool,
    /// A sandbox that could not be made: (reason, message).
    pub sandbox_error: Option<(String, String)>,
    pub init: Vec<ContainerStatus>,
    /// Whether every init container has succeeded.
    pub initialized: bool,
    pub containers: Vec<ContainerStatus>,
}

/// The pod's phase (upstream's getPhase, with init containers).
pub fn phase(o: &Observed) -> &'static str {
    if !o.initialized {
        let failed = o.init.iter().any(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0));
        if failed && o.restart_policy == "Never" {
            return "Failed";
        }
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &o.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to restart after it ran counts as stopped.
            State::Waiting { .. } if c.last_state.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    let total = o.containers.len();
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == total && total > 0 {
        return match o.restart_policy.as_str() {
            "Always" => "Running",
            "OnFailure" if succeeded == total => "Succeeded",
            "OnFailure" => "Running",
            _ if succeeded == total => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, since: &str) -> Value {
    let mut c = json!({ "type": type_, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since, "lastProbeTime": null });
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// The pod's status object (its conditions keep `lastTransitionTime` from `previous`
/// when unchanged; PodScheduled and conditions of others are kept as they are).
pub fn build(o: &Observed, previous: &Value, now: &str) -> Value {
    let phase = phase(o);
    let all_ready = !o.containers.is_empty() && o.containers.iter().all(|c| c.ready);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let since = |type_: &str, ok: bool| -> String {
        previous["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .filter(|c| c["status"] == if ok { "True" } else { "False" })
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.to_string())
    };
    let mine = ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"];
    let ready_reason = if terminal { "PodCompleted" } else { "ContainersNotReady" };
    let mut conditions: Vec<Value> = vec![
        condition(
            "PodReadyToStartContainers",
            o.sandbox_ready,
            None,
            &since("PodReadyToStartContainers", o.sandbox_ready),
        ),
        condition("Initialized", o.initialized, Some("ContainersNotInitialized"), &since("Initialized", o.initialized)),
        condition("ContainersReady", all_ready, Some(ready_reason), &since("ContainersReady", all_ready)),
        condition("Ready", all_ready, Some(ready_reason), &since("Ready", all_ready)),
    ];
    if let Some(cs) = previous["conditions"].as_array() {
        conditions.extend(cs.iter().filter(|c| !mine.iter().any(|m| c["type"] == *m)).cloned());
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": o.host_ip,
        "hostIPs": [{ "ip": o.host_ip }],
        "startTime": o.start_time,
        "containerStatuses": o.containers.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
        "qosClass": previous["qosClass"],
    });
    if !o.init.is_empty() {
        status["initContainerStatuses"] = json!(o.init.iter().map(ContainerStatus::to_json).collect::<Vec<_>>());
    }
    if let Some(ip) = &o.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    strip_nulls(&mut status);
    // A merge patch: null removes a reason the pod no longer has.
    let (reason, message) = o.sandbox_error.clone().map_or((Value::Null, Value::Null), |(r, m)| (json!(r), json!(m)));
    status["reason"] = reason;
    status["message"] = message;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: State) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            ready: matches!(state, State::Running { .. }),
            started: matches!(state, State::Running { .. }),
            state,
            last_state: None,
            restart_count: 0,
        }
    }

    fn term(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: "t".into(),
            container_id: None,
        }
    }

    fn obs(policy: &str, cs: Vec<ContainerStatus>) -> Observed {
        Observed {
            restart_policy: policy.into(),
            initialized: true,
            sandbox_ready: true,
            containers: cs,
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        let run = State::Running { started_at: "t".into() };
        assert_eq!(phase(&obs("Always", vec![c(State::waiting("ContainerCreating", None))])), "Pending");
        assert_eq!(phase(&obs("Always", vec![c(run.clone()), c(term(1))])), "Running");
        assert_eq!(phase(&obs("Never", vec![c(term(0)), c(term(0))])), "Succeeded");
        assert_eq!(phase(&obs("Never", vec![c(term(0)), c(term(2))])), "Failed");
        assert_eq!(phase(&obs("OnFailure", vec![c(term(2))])), "Running");
        assert_eq!(phase(&obs("Always", vec![c(term(0))])), "Running");
        let mut crash = c(State::waiting("CrashLoopBackOff", None));
        crash.last_state = Some(term(1));
        assert_eq!(phase(&obs("Always", vec![crash])), "Running");
        let mut o = obs("Never", vec![c(State::waiting("PodInitializing", None))]);
        o.initialized = false;
        o.init = vec![c(term(1))];
        assert_eq!(phase(&o), "Failed");
        o.restart_policy = "Always".into();
        assert_eq!(phase(&o), "Pending");
    }

    #[test]
    fn conditions_keep_their_transition_times_and_others() {
        let run = State::Running { started_at: "t0".into() };
        let mut o = obs("Always", vec![c(run)]);
        o.pod_ip = Some("10.244.0.5".into());
        o.host_ip = "127.0.0.1".into();
        let prev = json!({ "conditions": [
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": "t-1" },
            { "type": "Ready", "status": "True", "lastTransitionTime": "t-2" },
        ], "qosClass": "BestEffort" });
        let s = build(&o, &prev, "now");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.244.0.5");
        assert_eq!(s["qosClass"], "BestEffort");
        let cs = s["conditions"].as_array().unwrap();
        let get = |t: &str| cs.iter().find(|c| c["type"] == t).unwrap().clone();
        assert_eq!(get("Ready")["lastTransitionTime"], "t-2");
        assert_eq!(get("ContainersReady")["lastTransitionTime"], "now");
        assert_eq!(get("PodScheduled")["lastTransitionTime"], "t-1");
        assert_eq!(s["containerStatuses"][0]["state"]["running"]["startedAt"], "t0");
        assert_eq!(s["containerStatuses"][0]["started"], true);
        assert!(s["containerStatuses"][0].get("containerID").is_none());
    }
}
