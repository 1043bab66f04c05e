use super::*;
use crate::testutil::*;

const S: Duration = Duration::from_secs(1);

fn q() -> SchedulingQueue {
    SchedulingQueue::new(S, 10 * S)
}

fn p(name: &str, priority: Option<i32>) -> Arc<PodInfo> {
    let mut pod = pod("d", name, &[]);
    spec_mut(&mut pod).priority = priority;
    Arc::new(info(&pod))
}

fn names(q: &mut SchedulingQueue, now: Instant) -> Vec<String> {
    std::iter::from_fn(|| q.pop(now)).map(|p| p.info.name.clone()).collect()
}

#[test]
fn fifo_within_priority_and_priority_first() {
    let now = Instant::now();
    let mut q = q();
    q.add_or_update(p("a", None), now);
    q.add_or_update(p("b", Some(10)), now);
    q.add_or_update(p("c", None), now);
    q.add_or_update(p("d", Some(10)), now);
    q.add_or_update(p("e", Some(-5)), now);
    assert_eq!(q.active_len(), 5);
    assert_eq!(names(&mut q, now), ["b", "d", "a", "c", "e"]);
    assert_eq!(q.active_len(), 0);
}

#[test]
fn exponential_backoff_capped() {
    let q = q();
    let got: Vec<u64> = (1..=7).map(|a| q.backoff_for(a).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 10, 10, 10]);
    assert_eq!(q.backoff_for(u32::MAX), 10 * S);
}

#[test]
fn unschedulable_pods_come_back_after_their_backoff() {
    let t0 = Instant::now();
    let mut q = q();
    q.add_or_update(p("a", None), t0);
    let first = q.pop(t0).unwrap();
    assert_eq!(first.attempts, 1);
    q.unschedulable("d/a", t0);
    assert_eq!(q.unschedulable_len(), 1);
    assert_eq!(q.next_wakeup(), Some(t0 + S));
    assert!(q.pop(t0 + S / 2).is_none());
    let second = q.pop(t0 + S).unwrap();
    assert_eq!(second.attempts, 2);
    let t1 = t0 + S;
    q.unschedulable("d/a", t1);
    assert_eq!(q.next_wakeup(), Some(t1 + 2 * S));
    assert!(q.pop(t1 + S).is_none());
    assert!(q.pop(t1 + 2 * S).is_some());
}

#[test]
fn cluster_events_bring_retries_forward_but_not_before_initial_backoff() {
    let t0 = Instant::now();
    let mut q = q();
    q.add_or_update(p("a", None), t0);
    for i in 0..4 {
        let t = t0 + Duration::from_secs(100 * i);
        q.pop(t).unwrap();
        q.unschedulable("d/a", t);
    }
    // Attempt 4 failed at t=300s: backoff 8s.
    let t = t0 + Duration::from_secs(300);
    assert_eq!(q.next_wakeup(), Some(t + 8 * S));
    // An event right after the failure: eligible 1s after the attempt.
    q.cluster_event(t + S / 2);
    assert!(q.pop(t + S / 2).is_none());
    assert_eq!(q.next_wakeup(), Some(t + S));
    assert!(q.pop(t + S).is_some());
    // An event long after a failure: active at once.
    let t2 = t + 2 * S;
    q.unschedulable("d/a", t2);
    q.cluster_event(t2 + 5 * S);
    assert_eq!(q.active_len(), 1);
    // A pod that failed after the last event is not affected by it.
    q.pop(t2 + 5 * S).unwrap();
    q.unschedulable("d/a", t2 + 6 * S);
    assert!(q.pop(t2 + 8 * S).is_none());
}

#[test]
fn owner_updates_requeue_status_updates_do_not() {
    let t0 = Instant::now();
    let mut q = q();
    q.add_or_update(p("a", None), t0);
    q.pop(t0).unwrap();
    q.unschedulable("d/a", t0);
    q.pop(t0 + S).unwrap();
    q.unschedulable("d/a", t0 + S);
    // Our own PodScheduled condition coming back through the watch changes nothing.
    let mut status_only = (*p("a", None)).clone();
    status_only.condition = Some(crate::pod_info::ScheduledCondition {
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some("x".into()),
        last_transition_time: None,
    });
    q.add_or_update(Arc::new(status_only), t0 + 2 * S);
    assert!(q.pop(t0 + 2 * S).is_none(), "backoff runs until t0 + 3s");
    // A label change by the owner makes it eligible again.
    let mut relabelled = (*p("a", None)).clone();
    relabelled.labels.insert("x".into(), "y".into());
    q.add_or_update(Arc::new(relabelled), t0 + 2 * S);
    assert_eq!(q.pop(t0 + 2 * S).map(|p| p.info.labels.len()), Some(1));
}

#[test]
fn gated_pods_wait_for_their_gates_to_go() {
    let now = Instant::now();
    let mut q = q();
    let mut gated = (*p("g", None)).clone();
    gated.gated = true;
    q.add_or_update(Arc::new(gated.clone()), now);
    assert!(q.contains("d/g") && q.pop(now).is_none());
    gated.gated = false;
    q.add_or_update(Arc::new(gated), now);
    assert_eq!(q.pop(now).map(|p| p.info.name.clone()).as_deref(), Some("g"));
}

#[test]
fn removal_from_any_state() {
    let now = Instant::now();
    let mut q = q();
    q.add_or_update(p("a", None), now);
    q.add_or_update(p("b", None), now);
    assert!(q.remove("d/a"));
    assert_eq!(q.active_len(), 1);
    q.pop(now).unwrap();
    assert!(q.is_in_flight("d/b"));
    q.unschedulable("d/b", now);
    assert!(q.remove("d/b"));
    assert_eq!((q.unschedulable_len(), q.next_wakeup()), (0, None));
    assert!(q.pop(now + 20 * S).is_none());
    assert!(!q.remove("d/b"));
    // Re-adding a known active pod does not duplicate it.
    q.add_or_update(p("c", None), now);
    q.add_or_update(p("c", None), now);
    assert_eq!(names(&mut q, now), ["c"]);
}
