//! Scoring the feasible nodes: each score plugin's raw scores, normalised to 0–100,
//! weighted (upstream's default weights) and summed.

use k8s_openapi::api::core::v1::Toleration;

use crate::{
    framework::ScorePlugin,
    node_info::{NodeData, NodeInfo},
    plugins::{
        balanced_allocation, inter_pod_affinity, node_affinity, node_resources_fit, taint_toleration, topology_spread,
    },
    pod_info::PodInfo,
    snapshot::Snapshot,
};

/// A feasible node.
pub type Candidate<'a> = (&'a NodeData, &'a NodeInfo);

/// Per-pod state of the score plugins that look across nodes; `None` means skipped.
struct ScoreState {
    tolerations: Vec<Toleration>,
    node_affinity: bool,
    spread: Option<topology_spread::ScoreState>,
    inter_pod: Option<inter_pod_affinity::ScoreState>,
    balanced: bool,
}

/// The weighted total score of each candidate, in order.
pub fn total_scores(pod: &PodInfo, candidates: &[Candidate<'_>], snap: &Snapshot) -> Vec<i64> {
    let feasible: Vec<&NodeData> = candidates.iter().map(|(n, _)| *n).collect();
    let state = ScoreState {
        tolerations: taint_toleration::prefer_no_schedule_tolerations(pod),
        node_affinity: node_affinity::wants_score(pod),
        spread: topology_spread::pre_score(pod, &feasible, snap),
        inter_pod: inter_pod_affinity::pre_score(pod, snap),
        balanced: balanced_allocation::wants_score(pod),
    };
    let mut totals = vec![0i64; candidates.len()];
    let mut scores = vec![0i64; candidates.len()];
    for plugin in ScorePlugin::ALL {
        if !plugin_scores(plugin, pod, candidates, &state, &mut scores) {
            continue;
        }
        for (t, s) in totals.iter_mut().zip(&scores) {
            *t = t.saturating_add(s.saturating_mul(plugin.weight()));
        }
    }
    totals
}

/// Fill `out` with one plugin's normalised scores; `false` if the plugin is skipped.
fn plugin_scores(
    plugin: ScorePlugin,
    pod: &PodInfo,
    candidates: &[Candidate<'_>],
    st: &ScoreState,
    out: &mut [i64],
) -> bool {
    let each = |out: &mut [i64], f: &dyn Fn(&NodeData, &NodeInfo) -> i64| {
        for (o, (n, i)) in out.iter_mut().zip(candidates) {
            *o = f(n, i);
        }
    };
    match plugin {
        ScorePlugin::TaintToleration => {
            each(out, &|n, _| taint_toleration::score(&st.tolerations, n));
            taint_toleration::normalize(out);
        }
        ScorePlugin::NodeAffinity => {
            if !st.node_affinity {
                return false;
            }
            each(out, &|n, _| node_affinity::score(pod, n));
            node_affinity::normalize(out);
        }
        ScorePlugin::PodTopologySpread => {
            let Some(s) = &st.spread else { return false };
            each(out, &|n, i| topology_spread::score(pod, s, n, i));
            topology_spread::normalize(out);
        }
        ScorePlugin::InterPodAffinity => {
            let Some(s) = &st.inter_pod else { return false };
            each(out, &|n, _| inter_pod_affinity::score(s, n));
            inter_pod_affinity::normalize(out);
        }
        ScorePlugin::NodeResourcesFit => each(out, &|n, i| node_resources_fit::score(pod, n, i)),
        ScorePlugin::NodeResourcesBalancedAllocation => {
            if !st.balanced {
                return false;
            }
            each(out, &|n, i| balanced_allocation::score(pod, n, i));
        }
    }
    true
}
