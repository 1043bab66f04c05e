//! A Deployment's status (upstream `calculateStatus` and `progress.go`), pure: the counts
//! from its ReplicaSets and the `Available` / `Progressing` conditions that
//! `kubectl rollout status` reads.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One ReplicaSet's status counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RsCounts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
}

/// What the status calculation needs.
pub struct Inputs<'a> {
    pub replicas: i32,
    pub generation: Option<i64>,
    pub max_unavailable: i32,
    pub paused: bool,
    pub progress_deadline_seconds: Option<i32>,
    pub new_rs: Option<(&'a str, RsCounts)>,
    pub all: Vec<RsCounts>,
    pub previous: Option<&'a DeploymentStatus>,
    /// A condition event of this sync: (status, reason, message), e.g. a new ReplicaSet.
    pub event: Option<(&'static str, &'static str, String)>,
    /// The new ReplicaSet's `ReplicaFailure` condition (reason, message), if set.
    pub replica_failure: Option<(String, String)>,
    pub now: Timestamp,
}

fn cond(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Put `c` into `conds` (upstream `SetDeploymentCondition`): an unchanged status and
/// reason keeps the old transition time (and the old update time when the message is
/// the same too).
fn set(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(old) = conds.iter().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason {
            if old.message == c.message {
                return;
            }
            c.last_transition_time = old.last_transition_time.clone();
        } else if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conds.retain(|o| o.type_ != c.type_);
    conds.push(c);
}

/// Whether the rollout is complete (`DeploymentComplete`).
pub fn complete(replicas: i32, generation: Option<i64>, s: &DeploymentStatus) -> bool {
    s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && s.observed_generation >= generation
}

/// The new status, and how long until the progress deadline should be checked again.
pub fn calculate(i: &Inputs<'_>) -> (DeploymentStatus, Option<i64>) {
    let total = i.all.iter().map(|r| r.replicas).sum::<i32>();
    let ready = i.all.iter().map(|r| r.ready).sum::<i32>();
    let available = i.all.iter().map(|r| r.available).sum::<i32>();
    let updated = i.new_rs.map_or(0, |(_, c)| c.replicas);
    let prev = i.previous.cloned().unwrap_or_default();
    let mut conds = prev.conditions.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: i.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((i.replicas - available).max(0)),
        collision_count: prev.collision_count,
        terminating_replicas: None,
        conditions: None,
    };
    let now = i.now;
    if available >= i.replicas - i.max_unavailable {
        set(
            &mut conds,
            cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), now),
        );
    } else {
        set(
            &mut conds,
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let mut recheck = None;
    if i.paused {
        set(&mut conds, cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), now));
    } else if let Some(deadline) = i.progress_deadline_seconds.filter(|d| *d > 0 && *d < i32::MAX) {
        let was_paused =
            conds.iter().any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused"));
        if was_paused {
            set(&mut conds, cond("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed".into(), now));
        }
        if let Some((status_, reason, message)) = &i.event {
            set(&mut conds, cond("Progressing", status_, reason, message.clone(), now));
        }
        let name = i.new_rs.map_or("", |(n, _)| n);
        if complete(i.replicas, i.generation, &status) {
            set(
                &mut conds,
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{name}\" has successfully progressed."),
                    now,
                ),
            );
        } else {
            let progressed = updated > prev.updated_replicas.unwrap_or(0)
                || total < prev.replicas.unwrap_or(0)
                || ready > prev.ready_replicas.unwrap_or(0)
                || available > prev.available_replicas.unwrap_or(0);
            if progressed && i.new_rs.is_some() {
                let mut c = cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{name}\" is progressing."),
                    now,
                );
                // Progress moves the update time even when the reason stays.
                if let Some(old) = conds.iter().find(|o| o.type_ == "Progressing" && o.status == "True") {
                    c.last_transition_time = old.last_transition_time.clone();
                }
                conds.retain(|o| o.type_ != "Progressing");
                conds.push(c);
            }
            let progressing = conds.iter().find(|c| c.type_ == "Progressing").cloned();
            if let Some(p) = progressing {
                let timed_out = p.reason.as_deref() == Some("ProgressDeadlineExceeded");
                let since = p.last_update_time.as_ref().map(|t| t.0.as_second()).unwrap_or(now.as_second());
                let left = since + i64::from(deadline) - now.as_second();
                if !timed_out && left <= 0 && p.reason.as_deref() != Some("NewReplicaSetAvailable") {
                    set(
                        &mut conds,
                        cond(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{name}\" has timed out progressing."),
                            now,
                        ),
                    );
                } else if !timed_out && left > 0 {
                    recheck = Some(left);
                }
            }
        }
    }
    match &i.replica_failure {
        Some((reason, message)) => set(&mut conds, cond("ReplicaFailure", "True", reason, message.clone(), now)),
        None => conds.retain(|c| c.type_ != "ReplicaFailure"),
    }
    // Upstream's order: Available, Progressing, ReplicaFailure.
    conds.sort_by_key(|c| match c.type_.as_str() {
        "Available" => 0,
        "Progressing" => 1,
        _ => 2,
    });
    status.conditions = Some(conds);
    (status, recheck)
}

/// Equal but for the condition times (to skip writing an unchanged status).
pub fn same(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        if let Some(c) = s.conditions.as_mut() {
            for c in c.iter_mut() {
                c.last_update_time = None;
                c.last_transition_time = None;
            }
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(prev: Option<&'a DeploymentStatus>, new: RsCounts, old: RsCounts, now: i64) -> Inputs<'a> {
        Inputs {
            replicas: 3,
            generation: Some(2),
            max_unavailable: 1,
            paused: false,
            progress_deadline_seconds: Some(600),
            new_rs: Some(("web-abc", new)),
            all: vec![new, old],
            previous: prev,
            event: None,
            replica_failure: None,
            now: Timestamp::from_second(now).unwrap(),
        }
    }

    fn find<'a>(s: &'a DeploymentStatus, t: &str) -> &'a DeploymentCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_finished_rollout_is_available_and_progressed() {
        let c = RsCounts { replicas: 3, ready: 3, available: 3 };
        let (s, recheck) = calculate(&inputs(None, c, RsCounts::default(), 1000));
        assert_eq!(
            (s.replicas, s.updated_replicas, s.available_replicas, s.unavailable_replicas),
            (Some(3), Some(3), Some(3), Some(0))
        );
        assert_eq!(find(&s, "Available").status, "True");
        assert_eq!(find(&s, "Progressing").reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert!(complete(3, Some(2), &s));
        assert_eq!(recheck, None);
    }

    #[test]
    fn progress_then_the_deadline() {
        let (s1, _) = calculate(&inputs(
            None,
            RsCounts { replicas: 1, ready: 0, available: 0 },
            RsCounts { replicas: 3, ready: 3, available: 3 },
            1000,
        ));
        assert_eq!(find(&s1, "Progressing").reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(find(&s1, "Available").status, "True");
        // No progress for longer than the deadline: timed out.
        let (s2, _) = calculate(&inputs(
            Some(&s1),
            RsCounts { replicas: 1, ready: 0, available: 0 },
            RsCounts { replicas: 3, ready: 3, available: 3 },
            1700,
        ));
        let p = find(&s2, "Progressing");
        assert_eq!((p.status.as_str(), p.reason.as_deref()), ("False", Some("ProgressDeadlineExceeded")));
        // Within the deadline: recheck when it would run out.
        let (_, recheck) = calculate(&inputs(
            Some(&s1),
            RsCounts { replicas: 1, ready: 0, available: 0 },
            RsCounts { replicas: 3, ready: 3, available: 3 },
            1100,
        ));
        assert_eq!(recheck, Some(500));
    }

    #[test]
    fn paused_and_minimum_availability() {
        let mut i = inputs(None, RsCounts { replicas: 1, ready: 1, available: 1 }, RsCounts::default(), 1000);
        i.paused = true;
        let (s, _) = calculate(&i);
        assert_eq!(find(&s, "Progressing").reason.as_deref(), Some("DeploymentPaused"));
        assert_eq!(find(&s, "Available").reason.as_deref(), Some("MinimumReplicasUnavailable"));
    }
}
