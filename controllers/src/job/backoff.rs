//! The delay before replacing failed pods (upstream `backoff_utils.go`): after N
//! consecutive failures (since the last success) a new pod waits `base · 2^(N-1)`
//! (capped) from the last failure.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// Upstream's `DefaultJobPodFailureBackOff`.
pub const BASE: Duration = Duration::from_secs(10);
/// The cap (upstream's `MaxJobPodFailureBackOff` is ten minutes; a minute keeps a
/// retrying Job responsive on a small cluster).
pub const MAX: Duration = Duration::from_secs(60);

/// Per Job: failures since the last success, and when the last one finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub failures_after_last_success: i32,
    pub last_failure: Option<Timestamp>,
}

/// `newBackoffRecord`: `prev` advanced by newly finished pods (their finish times).
pub fn advance(prev: Record, succeeded: &[Timestamp], failed: &[Timestamp]) -> Record {
    let mut s = succeeded.to_vec();
    let mut f = failed.to_vec();
    s.sort();
    f.sort();
    let (Some(&last_success), Some(&last_failure)) = (s.last(), f.last()) else {
        return match (s.is_empty(), f.is_empty()) {
            (true, true) => prev,
            (true, false) => Record {
                failures_after_last_success: prev.failures_after_last_success + f.len() as i32,
                last_failure: f.last().copied(),
            },
            _ => Record::default(),
        };
    };
    let after = f.iter().filter(|t| **t > last_success).count() as i32;
    Record { failures_after_last_success: after, last_failure: (after > 0).then_some(last_failure) }
}

/// `getRemainingTime`: how long pod creation should still wait at `now`.
pub fn remaining(r: &Record, now: Timestamp, base: Duration, max: Duration) -> Duration {
    if r.failures_after_last_success <= 0 {
        return Duration::ZERO;
    }
    let Some(last) = r.last_failure else { return Duration::ZERO };
    let mut d = base;
    for _ in 1..r.failures_after_last_success {
        d *= 2;
        if d >= max {
            d = max;
            break;
        }
    }
    let d = d.min(max);
    let elapsed_ms = (now.as_millisecond() - last.as_millisecond()).max(0) as u64;
    d.saturating_sub(Duration::from_millis(elapsed_ms))
}

/// `getFinishedTime`: when a pod finished — its containers' latest finish, else its
/// Ready=False transition, else its deletion time less the grace period, else creation.
pub fn finish_time(p: &Pod) -> Timestamp {
    let st = p.status.as_ref();
    let statuses = st.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    if !statuses.is_empty() {
        let mut latest: Option<Timestamp> = None;
        let mut all = true;
        for c in statuses {
            match c.state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.finished_at.as_ref()) {
                Some(t) => latest = Some(latest.map_or(t.0, |l| l.max(t.0))),
                None => {
                    all = false;
                    break;
                }
            }
        }
        if all {
            if let Some(t) = latest {
                return t;
            }
        }
    }
    let ready_false = st
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref());
    if let Some(t) = ready_false {
        return t.0;
    }
    if let Some(d) = &p.metadata.deletion_timestamp {
        let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return Timestamp::from_second(d.0.as_second() - grace).unwrap_or(d.0);
    }
    p.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn records_count_failures_since_the_last_success() {
        let r = advance(Record::default(), &[], &[t(10), t(5)]);
        assert_eq!(r, Record { failures_after_last_success: 2, last_failure: Some(t(10)) });
        let r = advance(r, &[], &[t(20)]);
        assert_eq!(r, Record { failures_after_last_success: 3, last_failure: Some(t(20)) });
        assert_eq!(advance(r, &[t(30)], &[]), Record::default());
        let r2 = advance(r, &[t(15)], &[t(12), t(18), t(19)]);
        assert_eq!(r2, Record { failures_after_last_success: 2, last_failure: Some(t(19)) });
        assert_eq!(advance(r, &[], &[]), r);
    }

    #[test]
    fn remaining_time_doubles_and_caps() {
        let r = |n| Record { failures_after_last_success: n, last_failure: Some(t(100)) };
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        assert_eq!(remaining(&Record::default(), t(100), base, max), Duration::ZERO);
        assert_eq!(remaining(&r(1), t(100), base, max), Duration::from_secs(10));
        assert_eq!(remaining(&r(1), t(104), base, max), Duration::from_secs(6));
        assert_eq!(remaining(&r(2), t(100), base, max), Duration::from_secs(20));
        assert_eq!(remaining(&r(3), t(100), base, max), Duration::from_secs(40));
        assert_eq!(remaining(&r(4), t(100), base, max), Duration::from_secs(60));
        assert_eq!(remaining(&r(9), t(100), base, max), Duration::from_secs(60));
        assert_eq!(remaining(&r(2), t(200), base, max), Duration::ZERO);
    }

    #[test]
    fn finish_time_prefers_containers_then_conditions() {
        let mut p = Pod::default();
        p.metadata.creation_timestamp = Some(Time(t(1)));
        assert_eq!(finish_time(&p), t(1));
        p.metadata.deletion_timestamp = Some(Time(t(50)));
        p.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(finish_time(&p), t(20));
        let term = |s| ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { finished_at: Some(Time(t(s))), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.status = Some(PodStatus { container_statuses: Some(vec![term(7), term(9)]), ..Default::default() });
        assert_eq!(finish_time(&p), t(9));
    }
}
