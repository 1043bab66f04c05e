//! Score normalisation (upstream's `helper.DefaultNormalizeScore`).

use super::MAX_NODE_SCORE;

/// Scale scores to `0..=MAX_NODE_SCORE` relative to the highest; `reverse` makes the
/// highest raw score the lowest final one. All-zero scores stay zero (or all become the
/// maximum when reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE.saturating_mul(*s) / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_the_highest() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
    }

    #[test]
    fn all_zero() {
        let mut s = [0, 0];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 0]);
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        let mut empty: [i64; 0] = [];
        default_normalize(&mut empty, true);
    }
}
