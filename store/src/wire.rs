//! Messages between masters that are not openraft's own (bincode inside `peer.Blob`).

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::{CommandResult, Member, MemberInfo, NodeId};

/// The leader's answer to a forwarded batch of commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ProposeReply {
    /// Committed and applied on the leader at `log_index`.
    Applied {
        results: Vec<CommandResult>,
        log_index: u64,
    },
    /// Not appended: the receiver is not the leader.
    NotLeader {
        leader: Option<NodeId>,
    },
    Failed(StoreError),
}

/// A membership change forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    Add {
        member: Member,
        learner: bool,
    },
    Remove {
        id: NodeId,
    },
    Promote {
        id: NodeId,
    },
    /// A joining master fills in its name and client address.
    Update {
        id: NodeId,
        member: Member,
    },
}

/// Result of a membership change: the new member's id (for `Add`) and the members after.
pub(crate) type ChangeReply = Result<(Option<NodeId>, Vec<MemberInfo>), StoreError>;

/// Any member's view of the cluster, for masters that are joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<MemberInfo>,
    pub leader: Option<NodeId>,
}
