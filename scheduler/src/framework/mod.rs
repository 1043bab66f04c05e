//! The scheduling framework's shared vocabulary: filter outcomes, score normalisation,
//! how many nodes to examine, and the message a pod gets when no node fits.

pub mod feasible;
pub mod fit_error;
pub mod normalize;

use std::borrow::Cow;

pub use feasible::num_feasible_nodes_to_find;
pub use fit_error::FitError;

/// The highest score a plugin gives a node (after normalisation).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node was rejected, like upstream's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Removing pods (preemption) could make the node fit.
    Unschedulable,
    /// Nothing short of changing the node or the pod helps.
    UnschedulableAndUnresolvable,
}

/// A filter's rejection of a node: a code and the reasons shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
}

impl Rejection {
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { code: Code::Unschedulable, reasons: vec![reason.into()] }
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { code: Code::UnschedulableAndUnresolvable, reasons: vec![reason.into()] }
    }
}

/// What a filter plugin says about a node.
pub type FilterResult = Result<(), Rejection>;

/// The score plugins, with upstream kube-scheduler's default weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorePlugin {
    TaintToleration,
    NodeAffinity,
    PodTopologySpread,
    InterPodAffinity,
    NodeResourcesFit,
    NodeResourcesBalancedAllocation,
}

impl ScorePlugin {
    pub const ALL: [ScorePlugin; 6] = [
        ScorePlugin::TaintToleration,
        ScorePlugin::NodeAffinity,
        ScorePlugin::PodTopologySpread,
        ScorePlugin::InterPodAffinity,
        ScorePlugin::NodeResourcesFit,
        ScorePlugin::NodeResourcesBalancedAllocation,
    ];

    pub fn weight(self) -> i64 {
        match self {
            ScorePlugin::TaintToleration => 3,
            ScorePlugin::NodeAffinity | ScorePlugin::PodTopologySpread | ScorePlugin::InterPodAffinity => 2,
            ScorePlugin::NodeResourcesFit | ScorePlugin::NodeResourcesBalancedAllocation => 1,
        }
    }
}
