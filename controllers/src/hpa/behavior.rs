//! Turning a metrics-based replica proposal into the count to scale to: stabilization windows
//! and scaling policies (`spec.behavior`), min/max replicas, and the per-HPA memory both need
//! (upstream `pkg/controller/podautoscaler/horizontal.go`: `normalizeDesiredReplicasWithBehaviors`,
//! `stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
//! `calculateScale{Up,Down}Limit*`, `storeScaleEvent`, the legacy `normalizeDesiredReplicas`
//! for HPAs without `spec.behavior`; and `pkg/apis/autoscaling/v2/defaults.go`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// kube-controller-manager's default `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DEFAULT_DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

/// The `ScalingLimited=False` condition's reason and message when nothing limited the count.
pub const DESIRED_WITHIN_RANGE: (&str, &str) =
    ("DesiredWithinRange", "the desired count is within the acceptable range");

/// The `ScalingActive=False` condition's reason and message when the target has zero replicas.
pub const SCALING_DISABLED: (&str, &str) =
    ("ScalingDisabled", "scaling is disabled since the replica count of the target is zero");

const READY_FOR_NEW_SCALE: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const SCALE_UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const SCALE_DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const SCALE_UP_LIMIT: (&str, &str) =
    ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const SCALE_DOWN_LIMIT: (&str, &str) =
    ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate");
const TOO_MANY_REPLICAS: (&str, &str) =
    ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW_REPLICAS: (&str, &str) =
    ("TooFewReplicas", "the desired replica count is less than the minimum replica count");

/// Unstabilized recommendations: when each was made, and the replica count it proposed.
pub type Recommendations = Vec<(Timestamp, i32)>;

/// One past rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// When it happened.
    pub timestamp: Timestamp,
    /// How many replicas it added or removed (non-negative).
    pub replica_change: i32,
    /// Older than the longest policy period when last checked: its slot may be reused.
    pub outdated: bool,
}

/// Past rescales, by direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleEvents {
    /// Scale-ups.
    pub up: Vec<ScaleEvent>,
    /// Scale-downs.
    pub down: Vec<ScaleEvent>,
}

/// What the controller remembers per HPA between reconciles (upstream keeps it in memory too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HpaState {
    /// Recent unstabilized recommendations.
    pub recommendations: Recommendations,
    /// Recent rescales.
    pub events: ScaleEvents,
}

/// The normalized replica count and the conditions to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The replica count to scale to.
    pub replicas: i32,
    /// `AbleToScale=True`'s reason and message: `ScaleUpStabilized`, `ScaleDownStabilized` or
    /// `ReadyForNewScale`.
    pub able_to_scale: (&'static str, String),
    /// `ScalingLimited=True`'s reason and message (`TooManyReplicas`, `TooFewReplicas`,
    /// `ScaleUpLimit`, `ScaleDownLimit`); `None` is `ScalingLimited=False` with
    /// [`DESIRED_WITHIN_RANGE`].
    pub limited: Option<(&'static str, String)>,
}

fn policy(type_: &str, value: i32, period_seconds: i32) -> HPAScalingPolicy {
    HPAScalingPolicy { type_: type_.to_string(), value, period_seconds }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The behavior of an HPA that sets none of it: scale up by at most 4 pods or 100% (whichever
/// is more) per 15s with no stabilization; scale down by up to 100% per 15s after the
/// `downscale_stabilization` window.
pub fn default_behavior(downscale_stabilization: Duration) -> HorizontalPodAutoscalerBehavior {
    with_defaults(None, downscale_stabilization)
}

/// `SetDefaults_HorizontalPodAutoscalerBehavior` (plus the controller's
/// `maybeInitScaleDownStabilizationWindow`): each rule's unset fields from the defaults, the
/// scale-down window from `downscale_stabilization`. Set fields are kept as they are.
pub fn with_defaults(
    spec_behavior: Option<&HorizontalPodAutoscalerBehavior>,
    downscale_stabilization: Duration,
) -> HorizontalPodAutoscalerBehavior {
    let up = HPAScalingRules {
        stabilization_window_seconds: Some(0),
        select_policy: Some("Max".to_string()),
        policies: Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]),
        tolerance: None,
    };
    let down = HPAScalingRules {
        stabilization_window_seconds: Some(seconds(downscale_stabilization)),
        select_policy: Some("Max".to_string()),
        policies: Some(vec![policy("Percent", 100, 15)]),
        tolerance: None,
    };
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(copy_rules(spec_behavior.and_then(|b| b.scale_up.as_ref()), up)),
        scale_down: Some(copy_rules(spec_behavior.and_then(|b| b.scale_down.as_ref()), down)),
    }
}

/// `copyHPAScalingRules`: `from`'s set fields over `to`.
fn copy_rules(from: Option<&HPAScalingRules>, mut to: HPAScalingRules) -> HPAScalingRules {
    if let Some(from) = from {
        if from.select_policy.is_some() {
            to.select_policy.clone_from(&from.select_policy);
        }
        if from.stabilization_window_seconds.is_some() {
            to.stabilization_window_seconds = from.stabilization_window_seconds;
        }
        if from.policies.is_some() {
            to.policies.clone_from(&from.policies);
        }
        if from.tolerance.is_some() {
            to.tolerance.clone_from(&from.tolerance);
        }
    }
    to
}

/// `reconcileAutoscaler`'s cases that rescale without looking at metrics: the current count
/// above `max` or below `min` (default 1) gives the bound and the event's reason.
///
/// `None` when metrics decide, and also when `current` is 0: upstream then does not scale at
/// all (`ScalingActive=False`, [`SCALING_DISABLED`]), which the caller must check first.
pub fn clamp_without_metrics(current: i32, min: Option<i32>, max: i32) -> Option<(i32, &'static str)> {
    let min = min.unwrap_or(1);
    if current == 0 {
        None
    } else if current > max {
        Some((max, "Current number of replicas above Spec.MaxReplicas"))
    } else if current < min {
        Some((min, "Current number of replicas below Spec.MinReplicas"))
    } else {
        None
    }
}

/// `recordInitialRecommendation`: seed an HPA's first recommendation with its current count
/// (upstream does this on every reconcile, before computing metrics).
pub fn record_initial_recommendation(state: &mut HpaState, current: i32, now: Timestamp) {
    if state.recommendations.is_empty() {
        state.recommendations.push((now, current));
    }
}

/// `normalizeDesiredReplicasWithBehaviors`: stabilize `prenormalized_desired` over the
/// behavior's windows (recording it), then limit it by the scaling policies given the recent
/// scale events, and by `min_replicas`/`max_replicas`. `behavior` should come from
/// [`with_defaults`]; fields still unset take upstream's defaults (a 300s scale-down window).
pub fn normalize(
    state: &mut HpaState,
    behavior: &HorizontalPodAutoscalerBehavior,
    min_replicas: i32,
    max_replicas: i32,
    current_replicas: i32,
    prenormalized_desired: i32,
    now: Timestamp,
) -> Normalized {
    let b = with_defaults(Some(behavior), DEFAULT_DOWNSCALE_STABILIZATION);
    let (up, down) = (b.scale_up.unwrap_or_default(), b.scale_down.unwrap_or_default());
    let window = |r: &HPAScalingRules| r.stabilization_window_seconds.unwrap_or(0);
    let (stabilized, stabilized_reason) =
        stabilize(&mut state.recommendations, window(&up), window(&down), current_replicas, prenormalized_desired, now);
    let able = if stabilized != prenormalized_desired { stabilized_reason } else { READY_FOR_NEW_SCALE };
    let limits = Limits { events: &state.events, up: &up, down: &down, min: min_replicas, max: max_replicas, now };
    let (replicas, limit) = limits.apply(current_replicas, stabilized);
    finish(replicas, stabilized, able, limit)
}

/// The legacy `normalizeDesiredReplicas` upstream applies when `spec.behavior` is unset: the
/// highest recommendation within `downscale_stabilization`, at most `max(2 × current, 4)`,
/// within `min_replicas..=max_replicas`. (Scale events are not used, so the caller need not
/// [`record_scale`], as upstream does not.)
pub fn normalize_without_behavior(
    state: &mut HpaState,
    downscale_stabilization: Duration,
    min_replicas: i32,
    max_replicas: i32,
    current_replicas: i32,
    prenormalized_desired: i32,
    now: Timestamp,
) -> Normalized {
    let stabilized = stabilize_legacy(&mut state.recommendations, downscale_stabilization, prenormalized_desired, now);
    let able = if stabilized != prenormalized_desired { SCALE_DOWN_STABILIZED } else { READY_FOR_NEW_SCALE };
    let (replicas, limit) = convert_with_rules(current_replicas, stabilized, min_replicas, max_replicas);
    finish(replicas, stabilized, able, limit)
}

fn finish(replicas: i32, stabilized: i32, able: (&'static str, &str), limit: (&'static str, &str)) -> Normalized {
    let limited = (replicas != stabilized).then(|| (limit.0, limit.1.to_string()));
    Normalized { replicas, able_to_scale: (able.0, able.1.to_string()), limited }
}

/// `storeScaleEvent`: remember a rescale from `previous` to `new` replicas, reusing the slot of
/// an event older than the direction's longest policy period (unset rules: the defaults').
pub fn record_scale(
    state: &mut HpaState,
    behavior: &HorizontalPodAutoscalerBehavior,
    previous: i32,
    new: i32,
    now: Timestamp,
) {
    let b = with_defaults(Some(behavior), DEFAULT_DOWNSCALE_STABILIZATION);
    let (rules, events, change) = if new > previous {
        (b.scale_up.as_ref(), &mut state.events.up, new.saturating_sub(previous))
    } else {
        (b.scale_down.as_ref(), &mut state.events.down, previous.saturating_sub(new))
    };
    let longest = rules.and_then(|r| r.policies.as_ref()).into_iter().flatten().fold(0, |m, p| m.max(p.period_seconds));
    let cutoff = before(now, longest);
    for e in events.iter_mut() {
        if e.timestamp < cutoff {
            e.outdated = true;
        }
    }
    let event = ScaleEvent { timestamp: now, replica_change: change, outdated: false };
    match events.iter().rposition(|e| e.outdated) {
        Some(i) => events[i] = event,
        None => events.push(event),
    }
}

/// `now` minus `secs` seconds.
fn before(now: Timestamp, secs: i32) -> Timestamp {
    now.saturating_sub(SignedDuration::from_secs(i64::from(secs))).unwrap_or(Timestamp::MIN)
}

/// `stabilizeRecommendationWithBehaviors`: `current` brought within [lowest recommendation of
/// the scale-up window, highest of the scale-down window] (both including `desired`);
/// `desired` is recorded, replacing a recommendation older than both windows.
fn stabilize(
    recommendations: &mut Recommendations,
    up_window: i32,
    down_window: i32,
    current: i32,
    desired: i32,
    now: Timestamp,
) -> (i32, (&'static str, &'static str)) {
    let (up_cutoff, down_cutoff) = (before(now, up_window), before(now, down_window));
    let (mut up, mut down, mut old) = (desired, desired, None);
    for (i, &(at, rec)) in recommendations.iter().enumerate() {
        if at > up_cutoff {
            up = up.min(rec);
        }
        if at > down_cutoff {
            down = down.max(rec);
        }
        if at < up_cutoff && at < down_cutoff {
            old = Some(i);
        }
    }
    let recommendation = current.max(up).min(down);
    match old {
        Some(i) => recommendations[i] = (now, desired),
        None => recommendations.push((now, desired)),
    }
    let reason = if desired >= current { SCALE_UP_STABILIZED } else { SCALE_DOWN_STABILIZED };
    (recommendation, reason)
}

/// The legacy `stabilizeRecommendation`: the highest recommendation within `window` (and
/// `desired`), recording `desired` in the slot of an older one.
fn stabilize_legacy(recommendations: &mut Recommendations, window: Duration, desired: i32, now: Timestamp) -> i32 {
    let cutoff = before(now, seconds(window));
    let (mut highest, mut old) = (desired, None);
    for (i, &(at, rec)) in recommendations.iter().enumerate() {
        if at < cutoff {
            old = Some(i);
        } else if rec > highest {
            highest = rec;
        }
    }
    match old {
        Some(i) => recommendations[i] = (now, desired),
        None => recommendations.push((now, desired)),
    }
    highest
}

/// The legacy `convertDesiredReplicasWithRules`.
fn convert_with_rules(current: i32, desired: i32, min: i32, max: i32) -> (i32, (&'static str, &'static str)) {
    let scale_up_limit = (2.0 * f64::from(current)).max(4.0) as i32;
    let (maximum, limit) =
        if max > scale_up_limit { (scale_up_limit, SCALE_UP_LIMIT) } else { (max, TOO_MANY_REPLICAS) };
    if desired < min {
        (min, TOO_FEW_REPLICAS)
    } else if desired > maximum {
        (maximum, limit)
    } else {
        (desired, DESIRED_WITHIN_RANGE)
    }
}

/// What `convertDesiredReplicasWithBehaviorRate` looks at.
struct Limits<'a> {
    events: &'a ScaleEvents,
    up: &'a HPAScalingRules,
    down: &'a HPAScalingRules,
    min: i32,
    max: i32,
    now: Timestamp,
}

impl Limits<'_> {
    /// `convertDesiredReplicasWithBehaviorRate`: `desired` limited by the scaling rate and
    /// min/max replicas, with the limit that applied.
    fn apply(&self, current: i32, desired: i32) -> (i32, (&'static str, &'static str)) {
        if desired > current {
            // Never below the current count: no further scale-up until the events age out.
            let limit = self.scale_up_limit(current).max(current);
            let (maximum, why) = if self.max > limit { (limit, SCALE_UP_LIMIT) } else { (self.max, TOO_MANY_REPLICAS) };
            if desired > maximum {
                return (maximum, why);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(current).min(current);
            let (minimum, why) =
                if self.min < limit { (limit, SCALE_DOWN_LIMIT) } else { (self.min, TOO_FEW_REPLICAS) };
            if desired < minimum {
                return (minimum, why);
            }
        }
        (desired, DESIRED_WITHIN_RANGE)
    }

    /// `getReplicasChangePerPeriod`.
    fn change_in_period(&self, period_seconds: i32, events: &[ScaleEvent]) -> i32 {
        let cutoff = before(self.now, period_seconds);
        events.iter().filter(|e| e.timestamp > cutoff).fold(0, |sum, e| sum.saturating_add(e.replica_change))
    }

    /// The replica count when `policy`'s period started.
    fn period_start(&self, current: i32, policy: &HPAScalingPolicy) -> i32 {
        let added = self.change_in_period(policy.period_seconds, &self.events.up);
        let removed = self.change_in_period(policy.period_seconds, &self.events.down);
        current.saturating_sub(added).saturating_add(removed)
    }

    /// `calculateScaleUpLimitWithScalingRules`: the most replicas the policies allow.
    fn scale_up_limit(&self, current: i32) -> i32 {
        let select = self.up.select_policy.as_deref();
        if select == Some("Disabled") {
            return current;
        }
        let min_change = select == Some("Min");
        let (mut result, mut proposed) = (if min_change { i32::MAX } else { i32::MIN }, 0);
        for p in self.up.policies.iter().flatten() {
            let start = self.period_start(current, p);
            match p.type_.as_str() {
                "Pods" => proposed = start.saturating_add(p.value),
                // Rounded up, or a small percentage would never add a replica.
                "Percent" => proposed = (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
                _ => {}
            }
            result = if min_change { result.min(proposed) } else { result.max(proposed) };
        }
        result
    }

    /// `calculateScaleDownLimitWithBehaviors`: the fewest replicas the policies allow.
    fn scale_down_limit(&self, current: i32) -> i32 {
        let select = self.down.select_policy.as_deref();
        if select == Some("Disabled") {
            return current;
        }
        let min_change = select == Some("Min");
        let (mut result, mut proposed) = (if min_change { i32::MIN } else { i32::MAX }, 0);
        for p in self.down.policies.iter().flatten() {
            let start = self.period_start(current, p);
            match p.type_.as_str() {
                "Pods" => proposed = start.saturating_sub(p.value),
                "Percent" => proposed = (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
                _ => {}
            }
            result = if min_change { result.max(proposed) } else { result.min(proposed) };
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now().checked_sub(SignedDuration::from_secs(secs)).unwrap()
    }

    /// Upstream's `generateScalingRules` (a zero value leaves that policy out).
    fn rules(pods: i32, pods_period: i32, percent: i32, percent_period: i32, window: i32) -> HPAScalingRules {
        let mut policies = vec![];
        if pods != 0 {
            policies.push(policy("Pods", pods, pods_period));
        }
        if percent != 0 {
            policies.push(policy("Percent", percent, percent_period));
        }
        HPAScalingRules {
            stabilization_window_seconds: Some(window),
            select_policy: Some("Max".into()),
            policies: Some(policies),
            tolerance: None,
        }
    }

    /// Upstream's `generateEventsUniformDistribution`: events spread over the last `period` seconds.
    fn spread(changes: &[i32], period: i64) -> Vec<ScaleEvent> {
        let segment = period as f64 / changes.len() as f64;
        (changes.iter().enumerate())
            .map(|(i, &c)| {
                let secs = (period as f64 - segment * (i + 1) as f64 + segment / 2.0) as i64;
                ScaleEvent { timestamp: ago(secs), replica_change: c, outdated: false }
            })
            .collect()
    }

    #[test]
    fn defaults() {
        let d = default_behavior(Duration::from_secs(120));
        let up = d.scale_up.as_ref().unwrap();
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert_eq!(up.select_policy.as_deref(), Some("Max"));
        assert_eq!(up.policies, Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]));
        let down = d.scale_down.as_ref().unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(120));
        assert_eq!(down.policies, Some(vec![policy("Percent", 100, 15)]));
        assert_eq!(with_defaults(None, Duration::from_secs(120)), d);
        let spec = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules { select_policy: Some("Min".into()), ..Default::default() }),
            scale_down: Some(HPAScalingRules { stabilization_window_seconds: Some(60), ..Default::default() }),
        };
        let filled = with_defaults(Some(&spec), DEFAULT_DOWNSCALE_STABILIZATION);
        let (up, down) = (filled.scale_up.unwrap(), filled.scale_down.unwrap());
        assert_eq!((up.select_policy.as_deref(), up.stabilization_window_seconds), (Some("Min"), Some(0)));
        assert_eq!(up.policies.map(|p| p.len()), Some(2));
        assert_eq!((down.select_policy.as_deref(), down.stabilization_window_seconds), (Some("Max"), Some(60)));
    }

    /// Upstream `TestScalingWithRules` (convertDesiredReplicasWithBehaviorRate).
    #[test]
    fn scaling_with_rules() {
        let r = |pods, pods_period, percent, percent_period, window| {
            Some(rules(pods, pods_period, percent, percent_period, window))
        };
        let ev = |up: &[i32], down: &[i32]| ScaleEvents {
            up: if up.is_empty() { vec![] } else { spread(up, 120) },
            down: if down.is_empty() { vec![] } else { spread(down, 120) },
        };
        let none = ScaleEvents::default;
        // (name, scale-up rules, scale-down rules, events, [min, max, current, desired], expected)
        #[rustfmt::skip]
        let cases = vec![
            ("within range", None, None, none(), [3, 8, 5, 7], (7, "DesiredWithinRange")),
            ("below min", None, None, none(), [2, 8, 3, 1], (2, "TooFewReplicas")),
            ("within range when min is 0", None, None, none(), [0, 10, 1, 0], (0, "DesiredWithinRange")),
            ("max below scale-up limit", None, None, none(), [1, 10, 20, 1000], (10, "TooManyReplicas")),
            ("more than max", None, None, none(), [100, 150, 100, 1000], (150, "TooManyReplicas")),
            ("scale-up limit below max", r(0, 0, 1, 60, 0), None, none(), [1, 2000, 3, 1000], (4, "ScaleUpLimit")),
            ("scale up with default behavior", None, None, none(), [1, 1000, 10, 50], (20, "ScaleUpLimit")),
            ("pods policy over percent", r(100, 60, 100, 60, 0), None, none(), [1, 1000, 10, 500], (110, "ScaleUpLimit")),
            ("percent policy over pods", r(2, 60, 100, 60, 0), None, none(), [1, 1000, 10, 500], (20, "ScaleUpLimit")),
            ("large pod policy", r(100, 60, 0, 0, 0), None, none(), [1, 1000, 10, 50], (50, "DesiredWithinRange")),
            ("large percent policy", r(10000, 60, 0, 0, 0), None, none(), [1, 1000, 10, 50], (50, "DesiredWithinRange")),
            ("pod policy limit", r(30, 60, 0, 0, 0), None, none(), [1, 1000, 10, 50], (40, "ScaleUpLimit")),
            ("percent policy limit", r(0, 0, 200, 60, 0), None, none(), [1, 1000, 10, 50], (30, "ScaleUpLimit")),
            ("down: percent over pods", None, r(20, 60, 1, 60, 300), none(), [1, 1000, 100, 2], (80, "ScaleDownLimit")),
            ("down: pods over percent", None, r(2, 60, 1, 60, 300), none(), [1, 1000, 100, 2], (98, "ScaleDownLimit")),
            ("down: min, large pod policy", None, r(100, 60, 0, 0, 300), none(), [1, 1000, 10, 0], (1, "TooFewReplicas")),
            ("down: min, large percent", None, r(0, 0, 100, 60, 300), none(), [5, 1000, 10, 2], (5, "TooFewReplicas")),
            ("down: pod policy limit", None, r(5, 60, 0, 0, 300), none(), [1, 1000, 10, 2], (5, "ScaleDownLimit")),
            ("down: percent policy limit", None, r(0, 0, 50, 60, 300), none(), [1, 1000, 10, 5], (5, "DesiredWithinRange")),
            ("max, pod policy, events", r(300, 60, 0, 0, 0), None, ev(&[1, 5, 9], &[]), [1, 200, 100, 500], (200, "TooManyReplicas")),
            ("max, percent policy, events", r(0, 0, 10000, 60, 0), None, ev(&[1, 5, 9], &[]), [1, 200, 100, 500], (200, "TooManyReplicas")),
            ("recent scale-ups stop scaling", r(5, 120, 0, 0, 0), None, ev(&[1, 5, 9], &[]), [1, 1000, 100, 500], (100, "ScaleUpLimit")),
            ("pod policy, scale-ups", r(150, 120, 0, 0, 0), None, ev(&[1, 5, 9], &[]), [1, 1000, 100, 500], (235, "ScaleUpLimit")),
            ("percent policy, scale-ups", r(0, 0, 200, 120, 0), None, ev(&[1, 5, 9], &[]), [1, 1000, 100, 500], (255, "ScaleUpLimit")),
            ("percent policy, ups and downs", r(0, 0, 300, 300, 0), None, ev(&[4], &[2]), [1, 1000, 6, 24], (16, "ScaleUpLimit")),
            ("down: default policy, events", None, None, ev(&[], &[1, 5, 9]), [1, 1000, 10, 5], (5, "DesiredWithinRange")),
            ("down: min, pod policy, events", None, r(115, 120, 0, 0, 300), ev(&[], &[1, 5, 9]), [1, 1000, 100, 0], (1, "TooFewReplicas")),
            ("down: min, percent, events", None, r(0, 0, 100, 120, 300), ev(&[], &[1, 5, 9]), [5, 1000, 100, 2], (5, "TooFewReplicas")),
            ("down: pod policy, events", None, r(5, 120, 0, 0, 300), ev(&[], &[1, 5, 9]), [1, 1000, 100, 2], (100, "ScaleDownLimit")),
            ("down: percent policy, events", None, r(0, 0, 50, 120, 300), ev(&[], &[2, 4, 6]), [1, 1000, 100, 0], (56, "ScaleDownLimit")),
            ("down: percent, ups and downs", None, r(0, 0, 50, 180, 0), ev(&[2], &[4]), [1, 1000, 10, 1], (6, "ScaleDownLimit")),
            ("down: events prevent more", None, r(0, 0, 10, 120, 300), ev(&[], &[10, 10, 10]), [1, 1000, 100, 0], (100, "ScaleDownLimit")),
            ("down: events still allow", None, r(0, 0, 1000, 120, 300), ev(&[], &[10, 10, 10]), [1, 1000, 10, 5], (5, "DesiredWithinRange")),
            ("up: outdated events", r(1000, 30, 100, 60, 0), None, ev(&[8, 12, 9, 11], &[]), [1, 1000, 100, 200], (200, "DesiredWithinRange")),
            ("down: outdated events", None, r(1000, 30, 100, 60, 300), ev(&[], &[8, 12, 9, 11]), [1, 1000, 100, 5], (5, "DesiredWithinRange")),
        ];
        for (name, up, down, events, [min, max, current, desired], expected) in cases {
            let b = with_defaults(
                Some(&HorizontalPodAutoscalerBehavior { scale_up: up, scale_down: down }),
                Duration::ZERO,
            );
            let (up, down) = (b.scale_up.unwrap(), b.scale_down.unwrap());
            let limits = Limits { events: &events, up: &up, down: &down, min, max, now: now() };
            let (replicas, (reason, _)) = limits.apply(current, desired);
            assert_eq!((replicas, reason), expected, "{name}");
        }
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let select = |r: HPAScalingRules, s: &str| HPAScalingRules { select_policy: Some(s.into()), ..r };
        let events = ScaleEvents::default();
        let (up, down) = (select(rules(4, 60, 100, 60, 0), "Min"), select(rules(2, 60, 50, 60, 0), "Min"));
        let limits = Limits { events: &events, up: &up, down: &down, min: 1, max: 100, now: now() };
        assert_eq!(limits.apply(10, 50), (14, SCALE_UP_LIMIT));
        assert_eq!(limits.apply(10, 1), (8, SCALE_DOWN_LIMIT));
        let (up, down) = (select(rules(4, 60, 0, 0, 0), "Disabled"), select(rules(2, 60, 0, 0, 0), "Disabled"));
        let limits = Limits { events: &events, up: &up, down: &down, min: 1, max: 100, now: now() };
        assert_eq!(limits.apply(10, 50), (10, SCALE_UP_LIMIT));
        assert_eq!(limits.apply(10, 1), (10, SCALE_DOWN_LIMIT));
    }

    /// Upstream `TestStoreScaleEvents` (the cases with a behavior), both directions.
    #[test]
    fn store_scale_events() {
        let ev = |change, secs, outdated| ScaleEvent { timestamp: ago(secs), replica_change: change, outdated };
        let r = |pods_period, percent_period| {
            rules(10, pods_period, if percent_period == 0 { 0 } else { 100 }, percent_period, 0)
        };
        // (name, events before, (change, outdated) after, rules, scaled in the last 60s before)
        #[rustfmt::skip]
        let cases = vec![
            ("empty entries", vec![], vec![(5, false)], r(60, 60), 0),
            ("one outdated entry replaced", vec![ev(7, 61, false)], vec![(5, false)], r(60, 60), 0),
            ("one actual entry kept", vec![ev(7, 58, false)], vec![(7, false), (5, false)], r(60, 60), 7),
            ("one of two replaced", vec![ev(7, 61, false), ev(6, 59, false)], vec![(5, false), (6, false)], r(60, 0), 6),
            ("policies with different periods",
                vec![ev(8, 29, false), ev(6, 59, false), ev(7, 61, false), ev(9, 61, false)],
                vec![(8, false), (6, false), (7, true), (5, false)], r(60, 30), 14),
            ("both actual", vec![ev(7, 58, false), ev(6, 59, false)], vec![(7, false), (6, false), (5, false)], r(120, 30), 13),
        ];
        for (name, prev, expected, r, change_in_60s) in cases {
            for up in [true, false] {
                let behavior = if up {
                    HorizontalPodAutoscalerBehavior { scale_up: Some(r.clone()), scale_down: None }
                } else {
                    HorizontalPodAutoscalerBehavior { scale_up: None, scale_down: Some(r.clone()) }
                };
                let mut state = HpaState::default();
                *(if up { &mut state.events.up } else { &mut state.events.down }) = prev.clone();
                let (e, u, d) = (ScaleEvents::default(), rules(0, 0, 0, 0, 0), rules(0, 0, 0, 0, 0));
                let limits = Limits { events: &e, up: &u, down: &d, min: 0, max: 0, now: now() };
                assert_eq!(limits.change_in_period(60, &prev), change_in_60s, "{name}");
                let new = if up { 15 } else { 5 };
                record_scale(&mut state, &behavior, 10, new, now());
                let got = if up { &state.events.up } else { &state.events.down };
                let got: Vec<_> = got.iter().map(|e| (e.replica_change, e.outdated)).collect();
                assert_eq!(got, expected, "{name} (up: {up})");
            }
        }
    }

    /// Upstream `TestNormalizeDesiredReplicasWithBehavior` (stabilizeRecommendationWithBehaviors).
    #[test]
    fn stabilization_windows() {
        let m = |mins: i64| ago(mins * 60);
        // (name, recommendations, current, desired, up window, down window, expected, stored after)
        #[rustfmt::skip]
        let cases = vec![
            ("empty recommendations for scaling down", vec![], 100, 5, 0, 0, 5, vec![5]),
            ("simple scale down stabilization", vec![(m(2), 4), (m(1), 5)], 100, 3, 0, 180, 5, vec![4, 5, 3]),
            ("simple scale up stabilization", vec![(m(2), 4), (m(1), 5)], 1, 7, 300, 0, 4, vec![4, 5, 7]),
            ("no scale down stabilization", vec![(m(2), 1), (m(1), 2)], 100, 3, 300, 0, 3, vec![1, 2, 3]),
            ("no scale up stabilization", vec![(m(2), 4), (m(1), 5)], 1, 3, 0, 300, 3, vec![4, 5, 3]),
            ("no scale down stabilization, reuse element", vec![(m(10), 10), (m(9), 9)], 100, 3, 0, 0, 3, vec![10, 3]),
            ("no scale up stabilization, reuse element", vec![(m(10), 10), (m(9), 9)], 1, 100, 0, 0, 100, vec![10, 100]),
            ("scale down stabilization, reuse obsolete element",
                vec![(m(10), 10), (m(1), 4), (m(2), 5), (m(9), 9)], 100, 3, 0, 180, 5, vec![10, 4, 5, 3]),
            ("scale up stabilization, reuse obsolete element",
                vec![(m(100), 10), (m(1), 6), (m(2), 5), (m(3), 9)], 1, 100, 300, 0, 5, vec![100, 6, 5, 9]),
            ("do not scale up when rec goes down", vec![(m(100), 2), (m(3), 3)], 2, 1, 300, 300, 2, vec![1, 3]),
            ("do not scale down when rec goes up", vec![(m(100), 2), (m(3), 1)], 2, 3, 300, 300, 2, vec![3, 1]),
        ];
        for (name, mut recs, current, desired, up_window, down_window, expected, stored) in cases {
            let (got, _) = stabilize(&mut recs, up_window, down_window, current, desired, now());
            assert_eq!(got, expected, "{name}");
            assert_eq!(recs.iter().map(|r| r.1).collect::<Vec<_>>(), stored, "{name}");
        }
    }

    /// Upstream `TestNormalizeDesiredReplicas` (the legacy stabilizeRecommendation).
    #[test]
    fn legacy_stabilization() {
        let m = |mins: i64| ago(mins * 60);
        let cases: Vec<(&str, Recommendations, i32, i32, usize)> = vec![
            ("empty log", vec![], 5, 5, 1),
            ("stabilize", vec![(m(2), 4), (m(1), 5)], 3, 5, 3),
            ("no stabilize", vec![(m(2), 1), (m(1), 2)], 3, 3, 3),
            ("no stabilize - old recommendations", vec![(m(10), 10), (m(9), 9)], 3, 3, 2),
            ("stabilize - old recommendations", vec![(m(10), 10), (m(1), 4), (m(2), 5), (m(9), 9)], 3, 5, 4),
        ];
        for (name, mut recs, desired, expected, len) in cases {
            assert_eq!(stabilize_legacy(&mut recs, Duration::from_secs(300), desired, now()), expected, "{name}");
            assert_eq!(recs.len(), len, "{name}");
        }
        assert_eq!(convert_with_rules(3, 1000, 1, 100), (6, SCALE_UP_LIMIT));
        assert_eq!(convert_with_rules(1, 1000, 1, 100), (4, SCALE_UP_LIMIT));
        assert_eq!(convert_with_rules(10, 1000, 1, 15), (15, TOO_MANY_REPLICAS));
        assert_eq!(convert_with_rules(10, 1, 2, 15), (2, TOO_FEW_REPLICAS));
        assert_eq!(convert_with_rules(10, 12, 2, 15), (12, DESIRED_WITHIN_RANGE));
    }

    #[test]
    fn normalize_end_to_end() {
        let b = default_behavior(DEFAULT_DOWNSCALE_STABILIZATION);
        let mut state = HpaState::default();
        record_initial_recommendation(&mut state, 10, ago(60));
        record_initial_recommendation(&mut state, 99, ago(60));
        assert_eq!(state.recommendations, vec![(ago(60), 10)]);
        // Scale up: limited to 2x by the default policies.
        let n = normalize(&mut state, &b, 1, 100, 10, 50, now());
        assert_eq!(n.replicas, 20);
        assert_eq!(n.able_to_scale.0, "ReadyForNewScale");
        let (reason, message) = n.limited.unwrap();
        assert_eq!(reason, "ScaleUpLimit");
        assert_eq!(message, "the desired replica count is increasing faster than the maximum scale rate");
        record_scale(&mut state, &b, 10, 20, now());
        assert_eq!(state.events.up.len(), 1);
        // Within 15s of that scale-up, 4 pods or 100% more of the 10 replicas at the period's start.
        let n = normalize(&mut state, &b, 1, 100, 20, 50, now());
        assert_eq!((n.replicas, n.limited.map(|l| l.0)), (20, Some("ScaleUpLimit")));
        // Scale down: the recommendations of the last five minutes hold it up.
        let n = normalize(&mut state, &b, 1, 100, 20, 5, now());
        assert_eq!(n.replicas, 20);
        assert_eq!(n.able_to_scale.0, "ScaleDownStabilized");
        assert_eq!(n.limited, None);
        // Past max replicas.
        let n = normalize(&mut HpaState::default(), &b, 1, 15, 10, 18, now());
        assert_eq!((n.replicas, n.limited.map(|l| l.0)), (15, Some("TooManyReplicas")));
        // Without spec.behavior.
        let mut state = HpaState::default();
        let n = normalize_without_behavior(&mut state, DEFAULT_DOWNSCALE_STABILIZATION, 1, 100, 10, 50, now());
        assert_eq!((n.replicas, n.limited.map(|l| l.0)), (20, Some("ScaleUpLimit")));
        let n = normalize_without_behavior(&mut state, DEFAULT_DOWNSCALE_STABILIZATION, 1, 100, 20, 5, now());
        assert_eq!((n.replicas, n.able_to_scale.0), (40, "ScaleDownStabilized"));
    }

    #[test]
    fn clamp() {
        assert_eq!(clamp_without_metrics(0, None, 10), None);
        assert_eq!(
            clamp_without_metrics(12, Some(2), 10),
            Some((10, "Current number of replicas above Spec.MaxReplicas"))
        );
        assert_eq!(
            clamp_without_metrics(1, Some(2), 10),
            Some((2, "Current number of replicas below Spec.MinReplicas"))
        );
        assert_eq!(clamp_without_metrics(1, None, 10), None);
        assert_eq!(clamp_without_metrics(5, Some(2), 10), None);
    }
}
