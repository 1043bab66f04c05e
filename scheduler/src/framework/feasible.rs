//! How many feasible nodes to find before scoring (upstream's `numFeasibleNodesToFind`), so
//! that a pod's cost grows with the nodes examined rather than the cluster size.

/// Below this many nodes, every node is examined.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// The number of feasible nodes to look for among `num_all_nodes`. `percentage` is
/// `percentageOfNodesToScore`: `None` (or 0) is the adaptive default, 50% minus 1% per 125
/// nodes, at least 5%; and at least 100 nodes are always looked for.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    let percentage = percentage.map(|p| p as usize).unwrap_or(0);
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return num_all_nodes;
    }
    let percentage = if percentage == 0 {
        50usize.saturating_sub(num_all_nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    } else {
        percentage
    };
    (num_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_clusters_examine_every_node() {
        assert_eq!(num_feasible_nodes_to_find(None, 0), 0);
        assert_eq!(num_feasible_nodes_to_find(None, 10), 10);
        assert_eq!(num_feasible_nodes_to_find(None, 99), 99);
        assert_eq!(num_feasible_nodes_to_find(Some(10), 99), 99);
    }

    #[test]
    fn adaptive_percentage() {
        // 50 - 1000/125 = 42%.
        assert_eq!(num_feasible_nodes_to_find(None, 1000), 420);
        // 50 - 5000/125 = 10%.
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        // 50 - 6000/125 = 2% → 5%.
        assert_eq!(num_feasible_nodes_to_find(None, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(Some(0), 5000), 500);
        // Never fewer than 100.
        assert_eq!(num_feasible_nodes_to_find(None, 150), 100.max(150 * 49 / 100));
        assert_eq!(num_feasible_nodes_to_find(Some(1), 1000), 100);
    }

    #[test]
    fn configured_percentage() {
        assert_eq!(num_feasible_nodes_to_find(Some(30), 1000), 300);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(Some(250), 5000), 5000);
    }
}
