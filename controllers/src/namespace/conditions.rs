//! The status conditions a terminating namespace carries about its deletion
//! (`status_condition_utils.go` upstream). Pure.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::NamespaceCondition, apimachinery::pkg::apis::meta::v1::Time};

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GV_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types the namespace controller maintains, in order.
const TYPES: [&str; 5] =
    [DISCOVERY_FAILURE, GV_PARSING_FAILURE, CONTENT_FAILURE, CONTENT_REMAINING, FINALIZERS_REMAINING];

/// (reason, message) of each type when all is well (status `False`).
fn ok(type_: &str) -> (&'static str, &'static str) {
    match type_ {
        DISCOVERY_FAILURE => ("ResourcesDiscovered", "All resources successfully discovered"),
        GV_PARSING_FAILURE => ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
        CONTENT_FAILURE => ("ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
        _ => ("ContentRemoved", "All content successfully removed"),
    }
}

/// What one pass of content deletion found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Groups whose resources could not be discovered, as `group/version: error`.
    pub discovery_failures: Vec<String>,
    /// Resources whose content could not be deleted, as error messages.
    pub delete_errors: Vec<String>,
    /// Objects left, by `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Objects left, by finalizer they wait on.
    pub finalizers: BTreeMap<String, usize>,
}

/// The failing conditions (status `True`) the outcome calls for.
pub fn failing(outcome: &Outcome) -> Vec<(&'static str, &'static str, String)> {
    let mut out = vec![];
    if !outcome.discovery_failures.is_empty() {
        out.push((
            DISCOVERY_FAILURE,
            "DiscoveryFailed",
            format!(
                "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
                outcome.discovery_failures.len(),
                outcome.discovery_failures.join(", ")
            ),
        ));
    }
    if !outcome.delete_errors.is_empty() {
        let mut msgs = outcome.delete_errors.clone();
        msgs.sort();
        out.push((
            CONTENT_FAILURE,
            "ContentDeletionFailed",
            format!("Failed to delete all resource types, {} remaining: {}", msgs.len(), msgs.join(", ")),
        ));
    }
    let remaining: Vec<String> = outcome
        .remaining
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} has {n} resource instances"))
        .collect();
    if !remaining.is_empty() {
        out.push((
            CONTENT_REMAINING,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", remaining.join(", ")),
        ));
    }
    let finalizers: Vec<String> = outcome
        .finalizers
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect();
    if !finalizers.is_empty() {
        out.push((
            FINALIZERS_REMAINING,
            "SomeFinalizerRemain",
            format!("Some finalizers are remaining: {}", finalizers.join(", ")),
        ));
    }
    out
}

/// `updateConditions`: set every maintained condition — failing ones `True`, the others
/// their `False` "ok" variant — keeping transition times unless the status flips. Returns
/// whether anything changed.
pub fn update(conditions: &mut Vec<NamespaceCondition>, outcome: &Outcome, now: &Time) -> bool {
    let failing = failing(outcome);
    let mut changed = false;
    for t in TYPES {
        let (status, reason, message) = match failing.iter().find(|(ft, _, _)| *ft == t) {
            Some((_, reason, message)) => ("True", *reason, message.clone()),
            None => {
                let (reason, message) = ok(t);
                ("False", reason, message.to_string())
            }
        };
        match conditions.iter_mut().find(|c| c.type_ == t) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: t.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status
                    || c.reason.as_deref() != Some(reason)
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(cs: &'a [NamespaceCondition], t: &str) -> &'a NamespaceCondition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn all_ok_sets_five_false_conditions_once() {
        let mut cs = vec![];
        let now = crate::util_api::now();
        assert!(update(&mut cs, &Outcome::default(), &now));
        assert_eq!(cs.len(), 5);
        assert!(cs.iter().all(|c| c.status == "False"));
        assert_eq!(find(&cs, CONTENT_REMAINING).message.as_deref(), Some("All content successfully removed"));
        assert!(!update(&mut cs, &Outcome::default(), &now), "nothing changes the second time");
    }

    #[test]
    fn remaining_content_and_finalizers_are_reported() {
        let mut o = Outcome::default();
        o.remaining.insert("pods.".into(), 2);
        o.remaining.insert("configmaps.".into(), 0);
        o.finalizers.insert("example.com/hold".into(), 1);
        o.delete_errors.push("b failed".into());
        o.delete_errors.push("a failed".into());
        o.discovery_failures.push("metrics.k8s.io/v1beta1: 503".into());
        let mut cs = vec![];
        let now = crate::util_api::now();
        update(&mut cs, &o, &now);
        let c = find(&cs, CONTENT_REMAINING);
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("SomeResourcesRemain")));
        assert_eq!(c.message.as_deref(), Some("Some resources are remaining: pods. has 2 resource instances"));
        let f = find(&cs, FINALIZERS_REMAINING);
        assert_eq!(
            f.message.as_deref(),
            Some("Some finalizers are remaining: example.com/hold in 1 resource instances")
        );
        let d = find(&cs, CONTENT_FAILURE);
        assert_eq!(d.message.as_deref(), Some("Failed to delete all resource types, 2 remaining: a failed, b failed"));
        let disc = find(&cs, DISCOVERY_FAILURE);
        assert_eq!(disc.status, "True");
        assert!(disc.message.as_deref().unwrap().starts_with("Discovery failed for some groups, 1 failing"));
        // Back to ok: statuses flip with new transition times.
        let later = Time(now.0 + jiff::SignedDuration::from_secs(5));
        assert!(update(&mut cs, &Outcome::default(), &later));
        let c = find(&cs, CONTENT_REMAINING);
        assert_eq!((c.status.as_str(), c.last_transition_time.as_ref()), ("False", Some(&later)));
        assert_eq!(find(&cs, GV_PARSING_FAILURE).last_transition_time.as_ref(), Some(&now), "unflipped keeps its time");
    }
}
