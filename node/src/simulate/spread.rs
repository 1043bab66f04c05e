//! Spreading periodic per-node work (Lease renewals, status heartbeats) evenly over its
//! interval: the interval is cut into slots, each node belongs to one slot, and a ticker
//! walks the slots, so N nodes make N/interval writes per second rather than N at once.

use std::ops::Range;
use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use tokio::time::MissedTickBehavior;

/// Slots are at least this far apart (finer ticking only costs wakeups).
const MIN_TICK: Duration = Duration::from_millis(10);

/// How many slots `count` nodes are spread over in `interval`: one per node, but no
/// closer together than [`MIN_TICK`] (and at least one).
pub fn slots(count: usize, interval: Duration) -> usize {
    let by_time = (interval.as_nanos() / MIN_TICK.as_nanos()).max(1);
    count.min(usize::try_from(by_time).unwrap_or(usize::MAX)).max(1)
}

/// The nodes of `slot` (of `slots`): contiguous ranges covering `0..count` exactly once
/// per round, sized within one of each other.
pub fn slot_members(count: usize, slots: usize, slot: usize) -> Range<usize> {
    if slots == 0 || slot >= slots {
        return 0..0;
    }
    let at = |s: usize| ((s as u128 * count as u128) / slots as u128) as usize;
    at(slot)..at(slot + 1)
}

/// One item per node per `interval`, in slot order, starting now; a round that falls
/// behind is stretched rather than bunched up. Each item is `(round_start, node)` where
/// `round_start` is true for the first slot of a round (for per-round summaries).
pub fn ticks(count: usize, interval: Duration) -> impl Stream<Item = (bool, usize)> + Send {
    let slots = slots(count, interval);
    let period = (interval / u32::try_from(slots).unwrap_or(u32::MAX)).max(Duration::from_millis(1));
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    stream::unfold((timer, 0usize), move |(mut timer, slot)| async move {
        timer.tick().await;
        let members = slot_members(count, slots, slot);
        Some((members.map(move |i| (slot == 0, i)), (timer, (slot + 1) % slots)))
    })
    .flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_by_nodes_and_by_time() {
        assert_eq!(slots(5_000, Duration::from_secs(10)), 1_000);
        assert_eq!(slots(3, Duration::from_secs(10)), 3);
        assert_eq!(slots(0, Duration::from_secs(10)), 1);
        assert_eq!(slots(100, Duration::from_millis(1)), 1);
        assert!(slots(usize::MAX, Duration::MAX) >= 1);
    }

    #[test]
    fn every_node_is_in_exactly_one_slot_and_slots_are_even() {
        for (count, n) in [(5_000, 1_000), (7, 3), (3, 7), (1, 1), (0, 1), (10_001, 997)] {
            let mut seen = vec![0u32; count];
            let mut sizes = Vec::new();
            for s in 0..n {
                let r = slot_members(count, n, s);
                sizes.push(r.len());
                for i in r {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "count {count} slots {n}");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "count {count} slots {n}: {min}..{max}");
        }
        assert_eq!(slot_members(10, 0, 0), 0..0);
        assert_eq!(slot_members(10, 2, 5), 0..0);
    }

    #[tokio::test]
    async fn the_ticker_visits_every_node_once_per_round_spread_over_the_interval() {
        let start = tokio::time::Instant::now();
        let items: Vec<(bool, usize)> = ticks(10, Duration::from_millis(200)).take(20).collect().await;
        let elapsed = start.elapsed();
        let nodes: Vec<usize> = items.iter().map(|(_, i)| *i).collect();
        assert_eq!(nodes, (0..10).chain(0..10).collect::<Vec<_>>());
        assert!(items[0].0 && !items[1].0 && items[10].0);
        // 20 items = 2 rounds of 10 slots 20ms apart, the first at once: ~380ms.
        assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    }
}
