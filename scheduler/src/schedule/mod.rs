//! One scheduling decision (upstream's `schedulePod`): PreFilter, filter nodes starting
//! where the previous pod stopped until enough feasible nodes are found, score them, and
//! pick the best (ties broken at random). Pure over the snapshot, so it is unit-tested
//! without an API server.

pub mod filters;
pub mod scoring;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    framework::{fit_error::Diagnosis, num_feasible_nodes_to_find, FitError},
    node_info::NodeInfo,
    plugins::{
        node_affinity::{self, PreFilter},
        volume_binding,
    },
    pod_info::PodInfo,
    snapshot::Snapshot,
};

use filters::{run_filters, CycleState};
use scoring::Candidate;

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// Nodes examined (filtered) for this decision.
    pub evaluated: usize,
    /// Of which feasible.
    pub feasible: usize,
}

/// The scheduling algorithm and the little state it carries between pods.
pub struct Algorithm {
    percentage_of_nodes_to_score: Option<u32>,
    /// Round-robin start, so all nodes get examined across pods.
    next_start: usize,
    rng: StdRng,
}

impl Algorithm {
    pub fn new(percentage_of_nodes_to_score: Option<u32>) -> Algorithm {
        Algorithm { percentage_of_nodes_to_score, next_start: 0, rng: StdRng::from_entropy() }
    }

    /// A deterministic algorithm for tests.
    pub fn seeded(percentage_of_nodes_to_score: Option<u32>, seed: u64) -> Algorithm {
        Algorithm { percentage_of_nodes_to_score, next_start: 0, rng: StdRng::seed_from_u64(seed) }
    }

    pub fn schedule(&mut self, pod: &PodInfo, snap: &Snapshot) -> Result<Placement, FitError> {
        let num_all = snap.num_nodes();
        let fit_error = |diagnosis| FitError { num_all_nodes: num_all, diagnosis, preempt_never: pod.preempt_never };
        if num_all == 0 {
            return Err(fit_error(Diagnosis::default()));
        }
        let mut diagnosis = Diagnosis::default();
        let pinned: Option<Vec<&NodeInfo>> = match node_affinity::pre_filter(pod) {
            PreFilter::AllNodes => None,
            PreFilter::Only(names) => Some(names.iter().filter_map(|n| snap.node(n)).collect()),
            PreFilter::Conflict => {
                diagnosis.pre_filter_msg = Some(node_affinity::ERR_REASON_CONFLICT.to_string());
                return Err(fit_error(diagnosis));
            }
        };
        let volumes = match volume_binding::pre_filter(pod, &snap.volumes) {
            Ok(v) => v,
            Err(msg) => {
                diagnosis.pre_filter_msg = Some(msg);
                return Err(fit_error(diagnosis));
            }
        };
        let mut state = CycleState::new(pod, snap);
        state.volumes = volumes;
        let (candidates, evaluated) = match &pinned {
            Some(nodes) => {
                let (c, e) = self.find_feasible(pod, &state, nodes.len(), 0, |i| nodes.get(i).copied(), &mut diagnosis);
                diagnosis.record_absent(num_all.saturating_sub(nodes.len()), node_affinity::ERR_REASON_NOT_PINNED);
                (c, e)
            }
            None => {
                let start = self.next_start % num_all;
                let (c, e) = self.find_feasible(pod, &state, num_all, start, |i| snap.node_at(i), &mut diagnosis);
                self.next_start = (start + e) % num_all;
                (c, e)
            }
        };
        if candidates.is_empty() {
            return Err(fit_error(diagnosis));
        }
        let feasible = candidates.len();
        let chosen = if feasible == 1 { 0 } else { self.select(&scoring::total_scores(pod, &candidates, snap)) };
        match candidates.get(chosen) {
            Some((node, _)) => Ok(Placement { node: node.name.clone(), evaluated, feasible }),
            None => Err(fit_error(diagnosis)),
        }
    }

    /// Filter nodes `start, start+1, …` (wrapping over `len`) until enough are feasible.
    /// Returns the feasible nodes and how many nodes were examined.
    fn find_feasible<'a>(
        &self,
        pod: &PodInfo,
        state: &CycleState,
        len: usize,
        start: usize,
        node_at: impl Fn(usize) -> Option<&'a NodeInfo>,
        diagnosis: &mut Diagnosis,
    ) -> (Vec<Candidate<'a>>, usize) {
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, len);
        let mut feasible = Vec::with_capacity(want.min(len));
        let mut examined = 0;
        for i in 0..len {
            if feasible.len() >= want {
                break;
            }
            examined += 1;
            let Some(info) = node_at((start + i) % len) else { continue };
            let Some(node) = info.node.as_deref() else { continue };
            match run_filters(pod, node, info, state) {
                Ok(()) => feasible.push((node, info)),
                Err(rejection) => {
                    let has_victims = info.pods.iter().any(|p| p.priority < pod.priority);
                    diagnosis.record(&rejection, has_victims);
                }
            }
        }
        (feasible, examined)
    }

    /// The index of a highest score, chosen uniformly among ties (reservoir sampling).
    fn select(&mut self, scores: &[i64]) -> usize {
        let mut best = 0;
        let mut ties = 0u32;
        let mut best_score = i64::MIN;
        for (i, &s) in scores.iter().enumerate() {
            if i == 0 || s > best_score {
                best = i;
                best_score = s;
                ties = 1;
            } else if s == best_score {
                ties += 1;
                if self.rng.gen_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests;
