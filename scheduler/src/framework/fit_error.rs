//! Why a pod fits no node: the per-node rejections counted by reason, rendered like
//! upstream's `FitError.Error()` (v1.30+) — `0/5 nodes are available: 3 Insufficient cpu,
//! 2 node(s) had untolerated taint {…}. preemption: 0/5 nodes are available: 5 Preemption is
//! not helpful for scheduling.` (reasons counted, rendered as "count reason" and sorted as
//! strings; the preemption part is upstream's PostFilter message, which ends in its own dot).

use std::{borrow::Cow, collections::BTreeMap};

use super::{Code, Rejection};

/// Upstream's message when there are no nodes at all (`ErrNoNodesAvailable`).
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";
/// The preemption verdict for nodes where removing pods cannot help.
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The preemption verdict for nodes without lower-priority pods to remove.
pub const NO_PREEMPTION_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Rejections gathered while filtering, and what preemption would make of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// A PreFilter rejected the pod for every node (e.g. conflicting node affinity terms).
    pub pre_filter_msg: Option<String>,
    /// Reason → number of nodes rejected for it.
    pub reasons: BTreeMap<Cow<'static, str>, usize>,
    /// The same, as the preemption dry run would report it.
    pub preemption_reasons: BTreeMap<Cow<'static, str>, usize>,
    /// Nodes rejected so far.
    pub rejected: usize,
}

impl Diagnosis {
    /// Record one node's rejection. `has_lower_priority_pods`: whether preemption would have
    /// anything to remove from the node.
    pub fn record(&mut self, rejection: &Rejection, has_lower_priority_pods: bool) {
        self.rejected += 1;
        for r in &rejection.reasons {
            *self.reasons.entry(r.clone()).or_insert(0) += 1;
        }
        match rejection.code {
            Code::UnschedulableAndUnresolvable => {
                *self.preemption_reasons.entry(PREEMPTION_NOT_HELPFUL.into()).or_insert(0) += 1
            }
            // Without victims upstream reports that; with them (preemption is not implemented
            // here) the node's own reasons stand.
            Code::Unschedulable if !has_lower_priority_pods => {
                *self.preemption_reasons.entry(NO_PREEMPTION_VICTIMS.into()).or_insert(0) += 1
            }
            Code::Unschedulable => {
                for r in &rejection.reasons {
                    *self.preemption_reasons.entry(r.clone()).or_insert(0) += 1;
                }
            }
        }
    }

    /// Record `count` nodes that were never examined because a PreFilter ruled them out.
    pub fn record_absent(&mut self, count: usize, reason: &str) {
        if count == 0 {
            return;
        }
        self.rejected += count;
        *self.reasons.entry(Cow::Owned(reason.to_string())).or_insert(0) += count;
        *self.preemption_reasons.entry(PREEMPTION_NOT_HELPFUL.into()).or_insert(0) += count;
    }
}

/// A pod that fits no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
    /// `preemptionPolicy: Never` (preemption then reports only that).
    pub preempt_never: bool,
}

impl FitError {
    /// The message for the FailedScheduling event and the PodScheduled condition.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return NO_NODES_AVAILABLE.to_string();
        }
        let d = &self.diagnosis;
        let filter = render(self.num_all_nodes, d.pre_filter_msg.as_deref(), &d.reasons);
        let preemption = if self.preempt_never {
            "preemption: not eligible due to preemptionPolicy=Never.".to_string()
        } else {
            let mut reasons = d.preemption_reasons.clone();
            let counted: usize = d.rejected;
            if counted < self.num_all_nodes {
                *reasons.entry(PREEMPTION_NOT_HELPFUL.into()).or_insert(0) += self.num_all_nodes - counted;
            }
            if d.pre_filter_msg.is_some() {
                reasons = [(Cow::Borrowed(PREEMPTION_NOT_HELPFUL), self.num_all_nodes)].into();
            }
            format!("preemption: {}", render(self.num_all_nodes, None, &reasons))
        };
        format!("{filter} {preemption}")
    }
}

/// `0/N nodes are available: <prefilter msg | sorted "count reason" list>.`
fn render(num_all_nodes: usize, pre_filter_msg: Option<&str>, reasons: &BTreeMap<Cow<'static, str>, usize>) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if let Some(p) = pre_filter_msg {
        msg.push_str(&format!(" {p}."));
        return msg;
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

/// Cut a message to the 1024 characters an Event note may have, like upstream's
/// `truncateMessage` (on a character boundary).
pub fn truncate_message(message: &str) -> String {
    const MAX: usize = 1024;
    const SUFFIX: &str = " ...";
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX - SUFFIX.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint() -> Rejection {
        Rejection::unresolvable("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }")
    }

    #[test]
    fn counts_and_sorts_reasons_like_upstream() {
        let mut d = Diagnosis::default();
        for _ in 0..3 {
            d.record(&Rejection::unschedulable("Insufficient cpu"), false);
        }
        d.record(&taint(), false);
        d.record(&taint(), false);
        let e = FitError { num_all_nodes: 5, diagnosis: d, preempt_never: false };
        assert_eq!(
            e.message(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, \
             3 Insufficient cpu. preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, \
             3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn multiple_reasons_per_node_and_victims() {
        let mut d = Diagnosis::default();
        let both = Rejection {
            code: Code::Unschedulable,
            reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
        };
        d.record(&both, true);
        let e = FitError { num_all_nodes: 1, diagnosis: d, preempt_never: false };
        assert_eq!(
            e.message(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. \
             preemption: 0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
    }

    #[test]
    fn unresolvable_everywhere() {
        let mut d = Diagnosis::default();
        d.record(&Rejection::unresolvable("node(s) didn't match Pod's node affinity/selector"), true);
        d.record_absent(2, "node(s) didn't satisfy plugin(s) [NodeAffinity]");
        let e = FitError { num_all_nodes: 3, diagnosis: d, preempt_never: false };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             2 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn prefilter_and_never_and_no_nodes() {
        let d = Diagnosis { pre_filter_msg: Some("pod affinity terms conflict".into()), ..Default::default() };
        let e = FitError { num_all_nodes: 2, diagnosis: d, preempt_never: true };
        assert_eq!(
            e.message(),
            "0/2 nodes are available: pod affinity terms conflict. preemption: not eligible due to preemptionPolicy=Never."
        );
        let e = FitError { num_all_nodes: 0, diagnosis: Diagnosis::default(), preempt_never: false };
        assert_eq!(e.message(), NO_NODES_AVAILABLE);
    }

    #[test]
    fn truncates_long_messages() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(1000);
        let t = truncate_message(&long);
        assert!(t.len() <= 1024 && t.ends_with(" ..."));
    }
}
