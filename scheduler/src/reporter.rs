//! Telling users what happened, without ever holding up scheduling: Events (`Scheduled`,
//! `FailedScheduling`) and the pod's `PodScheduled=False` condition are written by
//! fire-and-forget tasks; when too many are already in flight a report is dropped (the next
//! attempt reports again).

use std::collections::HashMap;

use k8s_openapi::{
    api::core::v1::{ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter as EventReporter},
    Api,
};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::{framework::fit_error::truncate_message, pod_info::PodInfo};

/// Reports (events and status patches) in flight at once.
const MAX_IN_FLIGHT: usize = 256;

pub struct Reporter {
    client: kube::Client,
    controller: String,
    tasks: JoinSet<()>,
    /// One recorder per pod with failures, so repeated FailedScheduling events of a pod
    /// become one event with a series count rather than one event each.
    failure_recorders: HashMap<String, Recorder>,
    dropped: u64,
}

pub fn pod_reference(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
        ..Default::default()
    }
}

/// The strategic merge patch setting `PodScheduled=False` (`None` if the pod already says so).
pub fn condition_patch(pod: &PodInfo, reason: &str, message: &str) -> Option<Value> {
    let current = pod.condition.as_ref();
    let unchanged = current.is_some_and(|c| {
        c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)
    });
    if unchanged {
        return None;
    }
    let transition = current
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff::Timestamp::now()));
    Some(json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}}))
}

impl Reporter {
    pub fn new(client: kube::Client, controller: &str) -> Reporter {
        Reporter {
            client,
            controller: controller.to_string(),
            tasks: JoinSet::new(),
            failure_recorders: HashMap::new(),
            dropped: 0,
        }
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), EventReporter { controller: self.controller.clone(), instance: None })
    }

    /// Run `task` in the background unless too many reports are in flight.
    fn spawn(&mut self, what: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= MAX_IN_FLIGHT {
            self.dropped += 1;
            tracing::debug!(what, dropped = self.dropped, "too many reports in flight; dropping one");
            return;
        }
        // In the span of the decision it reports (its trace continues through the write).
        self.tasks.spawn(tracing::Instrument::in_current_span(task));
    }

    fn event(
        &mut self,
        recorder: Recorder,
        pod: &PodInfo,
        type_: EventType,
        reason: &'static str,
        action: &str,
        note: String,
    ) {
        let reference = pod_reference(pod);
        let ev =
            Event { type_, reason: reason.to_string(), note: Some(note), action: action.to_string(), secondary: None };
        self.spawn("event", async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, reason = ev.reason, "event not recorded");
            }
        });
    }

    /// `Scheduled`: the binding succeeded.
    pub fn scheduled(&mut self, pod: &PodInfo, node: &str) {
        self.failure_recorders.remove(&pod.key);
        let note = format!("Successfully assigned {}/{} to {node}", pod.namespace, pod.name);
        let recorder = self.recorder();
        self.event(recorder, pod, EventType::Normal, "Scheduled", "Binding", note);
    }

    /// `FailedScheduling`, and the `PodScheduled` condition set to False with `reason`
    /// (`Unschedulable`, or `SchedulerError` when binding failed).
    pub fn failed(&mut self, pod: &PodInfo, reason: &str, message: &str) {
        let recorder = match self.failure_recorders.get(&pod.key) {
            Some(r) => r.clone(),
            None => {
                let r = self.recorder();
                self.failure_recorders.insert(pod.key.clone(), r.clone());
                r
            }
        };
        self.event(recorder, pod, EventType::Warning, "FailedScheduling", "Scheduling", truncate_message(message));
        let Some(patch) = condition_patch(pod, reason, message) else { return };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let name = pod.name.clone();
        self.spawn("status", async move {
            match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::debug!(error = %e, pod = name, "PodScheduled condition not updated"),
            }
        });
    }

    /// The pod is gone or placed: forget its failure history.
    pub fn forget(&mut self, key: &str) {
        self.failure_recorders.remove(key);
    }

    /// Collect finished reports.
    pub fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pod_info::ScheduledCondition, testutil::*};

    #[test]
    fn condition_patch_only_when_it_changes() {
        let mut p = info(&pod("d", "p", &[]));
        let patch = condition_patch(&p, "Unschedulable", "0/1 nodes are available").unwrap();
        let c = &patch["status"]["conditions"][0];
        assert_eq!((c["type"].as_str(), c["status"].as_str()), (Some("PodScheduled"), Some("False")));
        assert_eq!(c["message"], "0/1 nodes are available");
        let since = Time(jiff::Timestamp::UNIX_EPOCH);
        p.condition = Some(ScheduledCondition {
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available".into()),
            last_transition_time: Some(since.clone()),
        });
        assert!(condition_patch(&p, "Unschedulable", "0/1 nodes are available").is_none());
        // A new message keeps the transition time (the status did not change).
        let patch = condition_patch(&p, "Unschedulable", "0/2 nodes are available").unwrap();
        assert_eq!(patch["status"]["conditions"][0]["lastTransitionTime"], json!(since));
    }

    #[test]
    fn references_the_pod() {
        let r = pod_reference(&info(&pod("d", "p", &[])));
        assert_eq!((r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()), (Some("Pod"), Some("p"), Some("d")));
        assert_eq!(r.uid.as_deref(), Some("uid-d-p"));
    }
}
