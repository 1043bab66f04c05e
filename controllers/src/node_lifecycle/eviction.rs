//! Taint-based eviction: a pod on a node with `NoExecute` taints it does not tolerate goes
//! at once; one that tolerates them for `tolerationSeconds` goes that long after the taint
//! was added (upstream's taint eviction controller, timed from the taint's `timeAdded`).
//! Pure.

use crate::pods::tolerates;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Taint, Toleration};

/// When a pod must leave its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every taint for good (or there are none).
    Never,
    /// Now.
    Now,
    /// At this time.
    At(Timestamp),
}

/// When a pod with `tolerations` must leave a node with these `NoExecute` taints; `since`
/// gives each taint's start (its `timeAdded`, or when the controller first saw it).
pub fn eviction(
    tolerations: &[Toleration],
    taints: &[&Taint],
    since: impl Fn(&Taint) -> Timestamp,
    now: Timestamp,
) -> Eviction {
    let mut deadline: Option<Timestamp> = None;
    for taint in taints {
        // Upstream uses the first toleration that matches each taint.
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else { return Eviction::Now };
        let Some(secs) = t.toleration_seconds else { continue };
        let at = since(taint).checked_add(SignedDuration::from_secs(secs.max(0))).unwrap_or(Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Eviction::Never,
        Some(d) if d <= now => Eviction::Now,
        Some(d) => Eviction::At(d),
    }
}

#[cfg(test)]
mod tests {
    use super::super::health::tests::t;
    use super::super::taints::{NOT_READY, NO_EXECUTE, UNREACHABLE};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, added: i64) -> Taint {
        Taint { key: key.into(), effect: NO_EXECUTE.into(), time_added: Some(Time(t(added))), value: None }
    }

    fn tol(key: Option<&str>, op: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            effect: Some(NO_EXECUTE.into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    fn since(x: &Taint) -> Timestamp {
        x.time_added.as_ref().map_or(t(0), |a| a.0)
    }

    #[test]
    fn matching_rules() {
        let u = taint(UNREACHABLE, 0);
        assert!(tolerates(&tol(Some(UNREACHABLE), "Exists", None), &u));
        assert!(!tolerates(&tol(Some(NOT_READY), "Exists", None), &u));
        assert!(tolerates(&tol(None, "Exists", None), &u), "an empty key with Exists tolerates everything");
        let mut eq = tol(Some(UNREACHABLE), "Equal", None);
        assert!(tolerates(&eq, &u));
        eq.value = Some("x".into());
        assert!(!tolerates(&eq, &u));
        let mut other_effect = tol(Some(UNREACHABLE), "Exists", None);
        other_effect.effect = Some("NoSchedule".into());
        assert!(!tolerates(&other_effect, &u));
    }

    #[test]
    fn untolerated_goes_now_tolerated_waits_forever_or_its_seconds() {
        let u = taint(UNREACHABLE, 100);
        assert_eq!(eviction(&[], &[&u], since, t(100)), Eviction::Now);
        assert_eq!(eviction(&[tol(Some(UNREACHABLE), "Exists", None)], &[&u], since, t(100)), Eviction::Never);
        let timed = [tol(Some(UNREACHABLE), "Exists", Some(300))];
        assert_eq!(eviction(&timed, &[&u], since, t(150)), Eviction::At(t(400)));
        assert_eq!(eviction(&timed, &[&u], since, t(400)), Eviction::Now);
        let zero = [tol(Some(UNREACHABLE), "Exists", Some(0))];
        assert_eq!(eviction(&zero, &[&u], since, t(100)), Eviction::Now);
        assert_eq!(eviction(&[], &[], since, t(100)), Eviction::Never);
    }

    #[test]
    fn the_earliest_deadline_wins_and_any_untolerated_taint_evicts() {
        let (u, n) = (taint(UNREACHABLE, 100), taint(NOT_READY, 0));
        let tols = [tol(Some(UNREACHABLE), "Exists", Some(300)), tol(Some(NOT_READY), "Exists", Some(60))];
        assert_eq!(eviction(&tols, &[&u, &n], since, t(10)), Eviction::At(t(60)));
        assert_eq!(eviction(&tols[..1], &[&u, &n], since, t(10)), Eviction::Now);
    }
}
