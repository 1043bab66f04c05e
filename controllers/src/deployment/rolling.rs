//! The rollout arithmetic of upstream `deployment/util` and `rolling.go`, pure: surge and
//! unavailability budgets, how far to scale the new ReplicaSet up and the old ones down,
//! and proportional scaling of a Deployment resized mid-rollout.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A ReplicaSet as the arithmetic sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rs {
    pub name: String,
    /// spec.replicas
    pub replicas: i32,
    /// status.availableReplicas
    pub available: i32,
    /// creation time (seconds), for oldest-first order
    pub created: i64,
}

/// A percentage or count against `total` (`intstr.GetScaledValueFromIntOrPercent`).
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let v = v.cloned().unwrap_or(IntOrString::String(default.into()));
    match v {
        IntOrString::Int(n) => n.max(0),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.trim().parse::<i64>().ok()) else {
                return s.trim().parse::<i32>().unwrap_or(0).max(0);
            };
            let x = i64::from(total) * p.max(0);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable); both zero becomes unavailable 1.
pub fn fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, replicas: i32) -> (i32, i32) {
    let surge = scaled(max_surge, replicas, true, "25%");
    let unavailable = scaled(max_unavailable, replicas, false, "25%");
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// `NewRSNewReplicas` for RollingUpdate: the new ReplicaSet's next size.
pub fn new_rs_replicas(replicas: i32, surge: i32, all: &[Rs], new: &Rs) -> i32 {
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(replicas - new.replicas).max(0);
    new.replicas + up
}

/// `reconcileOldReplicaSets`: the scale-downs of old ReplicaSets (name, new size), first
/// the unhealthy replicas, then down to the availability budget, oldest first.
pub fn scale_down_old(replicas: i32, unavailable: i32, new: Option<&Rs>, old: &[Rs]) -> Vec<(String, i32)> {
    let old_count: i32 = old.iter().map(|r| r.replicas).sum();
    if old_count == 0 {
        return vec![];
    }
    let all_count = old_count + new.map_or(0, |n| n.replicas);
    let min_available = replicas - unavailable;
    let new_unavailable = new.map_or(0, |n| (n.replicas - n.available).max(0));
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut sorted: Vec<Rs> = old.to_vec();
    sorted.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    let mut out: Vec<(String, i32)> = vec![];
    // 1. unhealthy replicas, within the budget.
    let mut budget = max_scaled_down;
    for r in sorted.iter_mut() {
        if budget <= 0 {
            break;
        }
        if r.replicas == 0 {
            continue;
        }
        let unhealthy = (r.replicas - r.available).max(0);
        let down = unhealthy.min(budget);
        if down > 0 {
            r.replicas -= down;
            budget -= down;
            out.push((r.name.clone(), r.replicas));
        }
    }
    // 2. available replicas above the minimum.
    let available: i32 =
        sorted.iter().map(|r| r.available.min(r.replicas)).sum::<i32>() + new.map_or(0, |n| n.available);
    let mut total_down = (available - min_available).min(budget);
    for r in sorted.iter_mut() {
        if total_down <= 0 {
            break;
        }
        if r.replicas == 0 {
            continue;
        }
        let down = r.replicas.min(total_down);
        r.replicas -= down;
        total_down -= down;
        out.retain(|(n, _)| n != &r.name);
        out.push((r.name.clone(), r.replicas));
    }
    out
}

/// Proportional scaling (`scale` in sync.go) of active ReplicaSets when the Deployment's
/// size changed mid-rollout: spread `target total - current total` over them in
/// proportion to their size; the rounding leftover goes to the largest (newest on ties).
pub fn proportional(active: &[Rs], allowed_total: i32) -> Vec<(String, i32)> {
    let current: i32 = active.iter().map(|r| r.replicas).sum();
    let to_add = allowed_total - current;
    if to_add == 0 || current == 0 {
        return vec![];
    }
    let mut sorted: Vec<Rs> = active.to_vec();
    // Largest first; on scale-up newer first, on scale-down older first.
    sorted.sort_by(|a, b| {
        b.replicas.cmp(&a.replicas).then(if to_add > 0 { b.created.cmp(&a.created) } else { a.created.cmp(&b.created) })
    });
    let mut added = 0;
    let mut sizes: Vec<i32> = vec![];
    for r in &sorted {
        let share = (i64::from(r.replicas) * i64::from(to_add) / i64::from(current)) as i32;
        let share = if to_add > 0 { share.min(to_add - added) } else { share.max(to_add - added) };
        added += share;
        sizes.push(r.replicas + share);
    }
    if let Some(first) = sizes.first_mut() {
        *first += to_add - added;
    }
    sorted.iter().zip(sizes).filter(|(r, s)| r.replicas != *s).map(|(r, s)| (r.name.clone(), s.max(0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, replicas: i32, available: i32, created: i64) -> Rs {
        Rs { name: name.into(), replicas, available, created }
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        assert_eq!(fenceposts(None, None, 10), (3, 2));
        assert_eq!(fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 10), (0, 1));
        assert_eq!(fenceposts(Some(&IntOrString::String("10%".into())), Some(&IntOrString::Int(1)), 3), (1, 1));
        assert_eq!(fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::String("0%".into())), 5), (2, 0));
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        let old = rs("old", 10, 10, 1);
        let new = rs("new", 0, 0, 2);
        assert_eq!(new_rs_replicas(10, 3, &[old.clone(), new.clone()], &new), 3);
        // At the surge limit: no growth.
        let new3 = rs("new", 3, 0, 2);
        assert_eq!(new_rs_replicas(10, 3, &[old, new3.clone()], &new3), 3);
        // Never above the desired count.
        let lone = rs("new", 9, 9, 2);
        assert_eq!(new_rs_replicas(10, 3, &[lone.clone()], &lone), 10);
    }

    #[test]
    fn old_replica_sets_shrink_within_the_availability_budget() {
        // 10 replicas, maxUnavailable 2, new RS at 3 (none available): 13 - 8 - 3 = 2.
        let new = rs("new", 3, 0, 2);
        let out = scale_down_old(10, 2, Some(&new), &[rs("old", 10, 10, 1)]);
        assert_eq!(out, vec![("old".to_string(), 8)]);
        // Unhealthy old replicas go first: budget 11 - 8 - 1 = 2, three unhealthy.
        let out = scale_down_old(10, 2, Some(&rs("new", 1, 0, 3)), &[rs("old", 10, 7, 1)]);
        assert_eq!(out, vec![("old".to_string(), 8)]);
        // No budget with maxUnavailable 0 while the new replica is not available.
        assert!(scale_down_old(10, 0, Some(&rs("new", 1, 0, 3)), &[rs("old", 10, 10, 1)]).is_empty());
        // Nothing old: nothing to do.
        assert!(scale_down_old(10, 2, Some(&new), &[rs("old", 0, 0, 1)]).is_empty());
    }

    #[test]
    fn proportional_scaling_spreads_by_size() {
        let out = proportional(&[rs("a", 6, 6, 1), rs("b", 4, 0, 2)], 15);
        let mut out = out;
        out.sort();
        assert_eq!(out, vec![("a".to_string(), 9), ("b".to_string(), 6)]);
        let mut down = proportional(&[rs("a", 6, 6, 1), rs("b", 4, 0, 2)], 5);
        down.sort();
        assert_eq!(down, vec![("a".to_string(), 3), ("b".to_string(), 2)]);
    }
}
