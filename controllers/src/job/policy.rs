//! `spec.podFailurePolicy` and `spec.successPolicy` (upstream `pod_failure_policy.go`,
//! `success_policy.go`).

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, SuccessPolicy};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::indexes;

/// What a failed pod means under a pod failure policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `FailJob`: the Job fails with this message.
    pub fail_job: Option<String>,
    /// Whether the failure counts towards `backoffLimit` (`Ignore` does not).
    pub counts: bool,
    /// The matched rule's action.
    pub action: Option<String>,
}

impl Verdict {
    fn none() -> Verdict {
        Verdict { fail_job: None, counts: true, action: None }
    }
}

/// `matchPodFailurePolicy`: the first rule that matches a failed pod decides.
/// (`FailIndex` needs `backoffLimitPerIndex`, which this controller does not implement: it
/// counts like a plain failure.)
pub fn match_failed(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else { return Verdict::none() };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.clone().unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            exit_code_match(&status.container_statuses.clone().unwrap_or_default(), req)
                .or_else(|| exit_code_match(&status.init_container_statuses.clone().unwrap_or_default(), req))
                .map(|(c, code)| {
                    format!(
                        "Container {c} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        rule.action
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status.conditions.as_ref().and_then(|cs| {
                cs.iter().find(|c| patterns.iter().any(|p| p.type_ == c.type_ && p.status == c.status)).map(|c| {
                    format!("Pod {ns}/{name} has condition {} matching {} rule at index {i}", c.type_, rule.action)
                })
            })
        } else {
            None
        };
        let Some(message) = matched else { continue };
        match rule.action.as_str() {
            "Ignore" => return Verdict { fail_job: None, counts: false, action: Some(rule.action.clone()) },
            "Count" | "FailIndex" => {
                return Verdict { fail_job: None, counts: true, action: Some(rule.action.clone()) }
            }
            "FailJob" => return Verdict { fail_job: Some(message), counts: true, action: Some(rule.action.clone()) },
            _ => continue,
        }
    }
    Verdict::none()
}

/// The first terminated container (non-zero exit) whose code the requirement matches.
fn exit_code_match(
    statuses: &[ContainerStatus],
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    statuses.iter().find_map(|c| {
        let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
        if code == 0 || req.container_name.as_ref().is_some_and(|n| *n != c.name) {
            return None;
        }
        let listed = req.values.contains(&code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then(|| (c.name.clone(), code))
    })
}

/// `matchSuccessPolicy` (Indexed Jobs): the message of the first rule the succeeded
/// indexes satisfy.
pub fn match_success(policy: Option<&SuccessPolicy>, completions: i32, succeeded: &BTreeSet<i32>) -> Option<String> {
    let policy = policy?;
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(ixs), count) => {
                let wanted = indexes::parse(ixs, completions);
                let have = wanted.intersection(succeeded).count();
                match count {
                    Some(c) => have as i32 >= c,
                    None => !wanted.is_empty() && have == wanted.len(),
                }
            }
            (None, Some(c)) => succeeded.len() as i32 >= c,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicyRule,
    };
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, PodCondition, PodStatus};

    use super::*;

    fn failed_pod(code: i32, conditions: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.namespace = Some("ns".into());
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated { exit_code: code, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            conditions: Some(
                conditions
                    .iter()
                    .map(|(t, s)| PodCondition { type_: t.to_string(), status: s.to_string(), ..Default::default() })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    fn exit_rule(action: &str, op: &str, values: &[i32]) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn exit_code_rules() {
        let policy =
            PodFailurePolicy { rules: vec![exit_rule("Ignore", "In", &[1]), exit_rule("FailJob", "NotIn", &[1, 2])] };
        let v = match_failed(Some(&policy), &failed_pod(1, &[]));
        assert_eq!((v.counts, v.fail_job.is_none()), (false, true));
        let v = match_failed(Some(&policy), &failed_pod(2, &[]));
        assert_eq!(v, Verdict::none());
        let v = match_failed(Some(&policy), &failed_pod(42, &[]));
        assert!(v.counts);
        assert_eq!(
            v.fail_job.as_deref(),
            Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1")
        );
        assert_eq!(match_failed(None, &failed_pod(42, &[])), Verdict::none());
    }

    #[test]
    fn condition_rules() {
        let policy = PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            }],
        };
        assert!(!match_failed(Some(&policy), &failed_pod(1, &[("DisruptionTarget", "True")])).counts);
        assert!(match_failed(Some(&policy), &failed_pod(1, &[("DisruptionTarget", "False")])).counts);
    }

    #[test]
    fn success_rules() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let policy = SuccessPolicy {
            rules: vec![
                SuccessPolicyRule { succeeded_indexes: Some("0-2".into()), succeeded_count: None },
                SuccessPolicyRule { succeeded_indexes: Some("5-9".into()), succeeded_count: Some(2) },
                SuccessPolicyRule { succeeded_indexes: None, succeeded_count: Some(6) },
            ],
        };
        assert_eq!(match_success(Some(&policy), 10, &set(&[0, 1])), None);
        assert_eq!(match_success(Some(&policy), 10, &set(&[0, 1, 2])).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(match_success(Some(&policy), 10, &set(&[5, 9])).as_deref(), Some("Matched rules at index 1"));
        assert_eq!(match_success(Some(&policy), 10, &set(&[0, 1, 3, 4, 5, 6])).is_some(), true);
        assert_eq!(match_success(None, 10, &set(&[0, 1, 2])), None);
    }
}
