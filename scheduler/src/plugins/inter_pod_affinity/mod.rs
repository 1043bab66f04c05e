//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and
//! existing pods' anti-affinity against the incoming pod) as a filter; preferred terms of
//! both sides (and existing pods' required affinity, at weight 1) as a score.

pub mod filter;
pub mod score;

pub use filter::{filter, pre_filter, FilterState};
pub use score::{normalize, pre_score, score, ScoreState};
