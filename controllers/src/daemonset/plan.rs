//! The DaemonSet decision (upstream `daemon_controller.go` and `update.go`), as pure
//! functions: which pods it owns, adopts and releases; the pod it makes for a node; per
//! node, whether to create a daemon pod and which pods to delete (`manage`); which old pods
//! a RollingUpdate replaces next (`rollingUpdate`); and the status counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use kube::Resource;

use super::eligibility::{self, Fit};
use super::history::HASH_LABEL;
use crate::pods;

/// The most pods created or deleted in one sync (upstream `BurstReplicas`).
pub const BURST: usize = 250;

/// `extensions.DaemonSetTemplateGenerationKey`.
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// `apps.DeprecatedTemplateGeneration`.
pub const GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The template generation a DaemonSet's pods are labelled with: upstream's annotation
/// (which keelson's API does not maintain), else `metadata.generation`.
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    match ds.metadata.annotations.as_ref().and_then(|a| a.get(GENERATION_ANNOTATION)) {
        Some(v) => v.parse().ok(),
        None => ds.metadata.generation,
    }
}

/// `IsPodUpdated`: the pod carries the current revision hash or template generation.
pub fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let by_generation = generation.is_some_and(|g| label(GENERATION_LABEL) == Some(g.to_string().as_str()));
    let by_hash = !hash.is_empty() && label(HASH_LABEL) == Some(hash);
    by_hash || by_generation
}

/// The DaemonSet's pod selector: `Ok(None)` for the empty selector (it would select every
/// pod: upstream refuses to act), `Err` for an invalid one.
pub fn selector(ds: &DaemonSet) -> Result<Option<Selector>, String> {
    let Some(s) = ds.spec.as_ref().map(|s| &s.selector) else { return Err("no spec".into()) };
    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return Ok(None);
    }
    Selector::try_from(s.clone()).map(Some).map_err(|e| e.to_string())
}

/// What a controller holds among a namespace's objects (`ClaimPods`, `ClaimControllerRevisions`).
#[derive(Debug)]
pub struct Claims<T> {
    /// Its objects (controller reference to it) that it keeps.
    pub owned: Vec<Arc<T>>,
    /// Orphans it should adopt (selected, not being deleted).
    pub adopt: Vec<Arc<T>>,
    /// Its objects it no longer selects.
    pub release: Vec<Arc<T>>,
}

pub fn claim<T: Resource>(items: &[Arc<T>], uid: &str, sel: &Selector, deleting: bool) -> Claims<T> {
    let mut c = Claims { owned: vec![], adopt: vec![], release: vec![] };
    for it in items {
        let meta: &ObjectMeta = it.meta();
        let selected = sel.matches(&pods::labels(meta));
        match pods::controller_of(meta) {
            Some(r) if r.uid == uid => {
                if selected || deleting {
                    c.owned.push(it.clone());
                } else {
                    c.release.push(it.clone());
                }
            }
            Some(_) => {}
            None => {
                if selected && !deleting && meta.deletion_timestamp.is_none() {
                    c.adopt.push(it.clone());
                }
            }
        }
    }
    c
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminal(p: &Pod) -> bool {
    matches!(phase(p), "Failed" | "Succeeded")
}

/// `getNodesToDaemonPods`: the DaemonSet's pods by target node (bound or pinned), without
/// terminal pods already being deleted (unless `include_deleted_terminal`).
pub fn by_node(pods: &[Arc<Pod>], include_deleted_terminal: bool) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut m: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in pods {
        if !include_deleted_terminal && terminal(p) && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(n) = eligibility::target_node(p) {
            m.entry(n).or_default().push(p.clone());
        }
    }
    m
}

fn bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

/// `podByCreationTimestampAndPhase`: bound pods first, then oldest, then by name.
pub fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        bound(b).cmp(&bound(a)).then_with(|| {
            let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ta.cmp(&tb).then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
    });
}

/// The pod to create on `node` (`CreatePodTemplate` + `ReplaceDaemonSetPodNodeNameNodeAffinity`):
/// the template with the DaemonSet tolerations, the revision hash and template generation
/// labels, pinned to the node by a required `metadata.name` node affinity.
pub fn new_pod(ds: &DaemonSet, hash: &str, node: &str) -> Pod {
    let mut template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    eligibility::add_daemon_tolerations(template.spec.get_or_insert_with(Default::default));
    let labels = template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
    if let Some(g) = template_generation(ds) {
        labels.insert(GENERATION_LABEL.to_string(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(HASH_LABEL.to_string(), hash.to_string());
    }
    let name = ds.metadata.name.clone().unwrap_or_default();
    let owner = pods::controller_ref("apps/v1", "DaemonSet", &name, ds.metadata.uid.as_deref().unwrap_or(""));
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let mut pod = pods::from_template(&template, &ns, &name, owner);
    if let Some(spec) = pod.spec.as_mut() {
        spec.affinity = Some(eligibility::pin_to_node(spec.affinity.take(), node));
    }
    pod
}

/// `intstr.GetScaledValueFromIntOrPercent`: a count, or a percentage of `total`.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| {
                format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}")
            })?;
            let x = p * i64::from(total);
            Ok((if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) }) as i32)
        }
    }
}

/// The update strategy, resolved against the desired number of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OnDelete,
    RollingUpdate { max_surge: i32, max_unavailable: i32 },
}

fn rolling(ds: &DaemonSet) -> Option<(Option<&IntOrString>, Option<&IntOrString>)> {
    let st = ds.spec.as_ref()?.update_strategy.as_ref();
    // An absent strategy is RollingUpdate (the API defaults it).
    if st.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    let r = st.and_then(|s| s.rolling_update.as_ref());
    Some((r.and_then(|r| r.max_surge.as_ref()), r.and_then(|r| r.max_unavailable.as_ref())))
}

/// `SurgeCount` / `UnavailableCount` (maxUnavailable default 1, maxSurge default 0), and
/// `updatedDesiredNodeCounts`' rule that both zero means maxUnavailable 1.
pub fn strategy(ds: &DaemonSet, desired: i32) -> Result<Strategy, String> {
    let Some((surge, unavailable)) = rolling(ds) else { return Ok(Strategy::OnDelete) };
    let max_surge = match surge {
        Some(v) => scaled(v, desired, true).map_err(|e| format!("invalid value for MaxSurge: {e}"))?,
        None => 0,
    };
    let max_unavailable = match unavailable {
        Some(v) => scaled(v, desired, true).map_err(|e| format!("invalid value for MaxUnavailable: {e}"))?,
        None => 1,
    };
    let max_unavailable = if desired > 0 && max_surge == 0 && max_unavailable == 0 { 1 } else { max_unavailable };
    Ok(Strategy::RollingUpdate { max_surge, max_unavailable })
}

/// `AllowsSurge`: more than one pod per node is allowed during an update.
pub fn allows_surge(ds: &DaemonSet) -> bool {
    rolling(ds).and_then(|(s, _)| s).is_some_and(|s| scaled(s, 1, true).is_ok_and(|n| n > 0))
}

/// Upstream's `failedPodsBackoff` (`flowcontrol.Backoff`, 1 s doubling to 15 min): how soon
/// another failed daemon pod may be deleted on the same node.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, (Duration, Instant)>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(15 * 60))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, entries: HashMap::new() }
    }

    fn expired(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) > self.max * 2
    }

    /// `IsInBackOffSinceUpdate`: the remaining delay, if `key` is backing off.
    pub fn waiting(&self, key: &str, now: Instant) -> Option<Duration> {
        let (delay, at) = self.entries.get(key)?;
        if self.expired(*at, now) {
            return None;
        }
        let since = now.saturating_duration_since(*at);
        (since < *delay).then(|| *delay - since)
    }

    /// `Next`: record an attempt (the delay doubles, up to the maximum).
    pub fn next(&mut self, key: &str, now: Instant) {
        let delay = match self.entries.get(key) {
            Some((d, at)) if !self.expired(*at, now) => (*d * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(key.to_string(), (delay, now));
    }

    /// `GC`: forget keys not touched for twice the maximum delay.
    pub fn gc(&mut self, now: Instant) {
        let max2 = self.max * 2;
        self.entries.retain(|_, (_, at)| now.saturating_duration_since(*at) <= max2);
    }
}

/// What `manage` decides for the DaemonSet.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Manage {
    /// Nodes to create a daemon pod on.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// Pods targeting a node that no longer exists: deleted at once (upstream leaves the
    /// bound ones to the pod GC, which keelson does not have).
    pub orphaned: Vec<String>,
    /// Failed pods being deleted (pod, node), for events.
    pub failed: Vec<(String, String)>,
    /// Succeeded pods being deleted (pod, node), for events.
    pub succeeded: Vec<(String, String)>,
    /// Recheck after this long (a failed pod whose deletion is backing off).
    pub retry_in: Option<Duration>,
}

impl Manage {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.orphaned.is_empty()
    }
}

/// The inputs `manage`, `rolling_update` and `counts` share.
pub struct View<'a> {
    /// Every node, with what the DaemonSet's pod may do there.
    pub fits: &'a BTreeMap<String, Fit>,
    /// The DaemonSet's pods by node ([`by_node`]).
    pub pods: &'a BTreeMap<String, Vec<Arc<Pod>>>,
    pub hash: &'a str,
    pub generation: Option<i64>,
    pub min_ready_seconds: i32,
    pub now: Timestamp,
}

impl View<'_> {
    fn available(&self, p: &Pod) -> bool {
        pods::is_available(p, self.min_ready_seconds, self.now)
    }

    fn updated(&self, p: &Pod) -> bool {
        is_updated(p, self.hash, self.generation)
    }

    fn should_run(&self, node: &str) -> bool {
        self.fits.get(node).is_some_and(|f| f.should_run)
    }
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// `manage` (`podsShouldBeOnNode` for every node, then `getUnscheduledPodsWithoutNode`):
/// `surge` is [`allows_surge`]; `backoff_prefix` keys failed-pod backoff per DaemonSet
/// and generation (upstream `<uid>/<observedGeneration>/<node>`).
pub fn manage(v: &View, surge: bool, backoff: &mut Backoff, backoff_prefix: &str, now: Instant) -> Manage {
    let mut m = Manage::default();
    for (node, fit) in v.fits {
        let pods: &[Arc<Pod>] = v.pods.get(node).map(Vec::as_slice).unwrap_or_default();
        let exists = !pods.is_empty();
        if fit.should_run && !exists {
            m.create.push(node.clone());
        } else if fit.should_continue {
            let mut running: Vec<Arc<Pod>> = Vec::new();
            for p in pods {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match phase(p) {
                    "Failed" => {
                        // Don't fight a kubelet that keeps rejecting the pod: back off.
                        let key = format!("{backoff_prefix}/{node}");
                        if let Some(d) = backoff.waiting(&key, now) {
                            m.retry_in = Some(m.retry_in.map_or(d, |r| r.min(d)));
                            continue;
                        }
                        backoff.next(&key, now);
                        m.failed.push((name(p), node.clone()));
                        m.delete.push(name(p));
                    }
                    "Succeeded" => {
                        m.succeeded.push((name(p), node.clone()));
                        m.delete.push(name(p));
                    }
                    _ => running.push(p.clone()),
                }
            }
            sort_oldest_first(&mut running);
            if !surge {
                // One pod per node: keep the oldest.
                m.delete.extend(running.iter().skip(1).map(|p| name(p)));
                continue;
            }
            if running.len() <= 1 {
                if running.is_empty() && fit.should_run {
                    m.create.push(node.clone());
                }
                continue;
            }
            // Surging: keep the oldest new pod and the oldest old pod, and the old one only
            // while it is ready and the new one not yet available.
            let (mut oldest_new, mut oldest_old): (Option<&Arc<Pod>>, Option<&Arc<Pod>>) = (None, None);
            for p in &running {
                let slot = if v.updated(p) { &mut oldest_new } else { &mut oldest_old };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    m.delete.push(name(p));
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !pods::is_ready(old) || v.available(new) {
                    m.delete.push(name(old));
                }
            }
        } else if exists {
            m.delete.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| name(p)));
        }
    }
    for (node, pods) in v.pods {
        if !v.fits.contains_key(node) {
            m.orphaned.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| name(p)));
        }
    }
    m.create.truncate(BURST);
    m.delete.truncate(BURST);
    m.orphaned.truncate(BURST);
    m
}

/// `findUpdatedPodsOnNode`: the node's one new and one old pod (not being deleted);
/// `None` when it has more of either (`manage` prunes those first).
fn updated_and_old<'a>(v: &View, pods: &'a [Arc<Pod>]) -> Option<(Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if v.updated(p) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// What a rolling update step does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Old pods to delete.
    pub delete: Vec<String>,
    /// Nodes to create a new pod on beside the old one (surge).
    pub create: Vec<String>,
}

/// `rollingUpdate`. Without surge: delete old pods (unavailable ones at once, available
/// ones while fewer than maxUnavailable nodes are unavailable); `manage` then creates the
/// new pods. With surge: create new pods beside old ones (at once where the old pod is
/// unavailable, otherwise up to maxSurge), and delete an old pod once its new one is available.
pub fn rolling_update(v: &View, max_surge: i32, max_unavailable: i32) -> Rollout {
    // Every node with pods, plus every node that should have one.
    let empty: Vec<Arc<Pod>> = Vec::new();
    let mut nodes: BTreeMap<&str, &[Arc<Pod>]> = v.pods.iter().map(|(n, p)| (n.as_str(), p.as_slice())).collect();
    let mut desired = 0;
    for (n, f) in v.fits {
        if f.should_run {
            desired += 1;
            nodes.entry(n.as_str()).or_insert(empty.as_slice());
        }
    }
    let mut out = Rollout::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let (mut replace, mut candidates) = (Vec::new(), Vec::new());
        for pods in nodes.values() {
            let Some((new, old)) = updated_and_old(v, pods) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !v.available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !v.available(old) {
                        replace.push(name(old));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(name(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        out.delete = replace;
        out.delete.extend(candidates.into_iter().take(room));
        out.delete.truncate(BURST);
        return out;
    }
    let (mut surging, mut available) = (0, 0);
    let (mut allowed, mut candidates, mut sunset) = (Vec::new(), Vec::new(), Vec::new());
    for (node, pods) in &nodes {
        let Some((new, old)) = updated_and_old(v, pods) else {
            surging += 1;
            continue;
        };
        if let Some(p) = old.or(new) {
            if v.available(p) {
                available += 1;
            }
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !v.available(old) {
                    if v.should_run(node) {
                        allowed.push(node.to_string());
                    } else {
                        out.delete.push(name(old));
                    }
                } else if !v.should_run(node) {
                    sunset.push(name(old));
                } else if surging < max_surge {
                    candidates.push(node.to_string());
                }
            }
            (Some(new), Some(old)) => {
                if v.available(new) {
                    out.delete.push(name(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Old pods on nodes the DaemonSet left go only while enough others are available.
    let deletable = (available - desired).clamp(0, sunset.len() as i32) as usize;
    out.delete.extend(sunset.into_iter().take(deletable));
    let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
    out.create = allowed;
    out.create.extend(candidates.into_iter().take(room));
    out.delete.truncate(BURST);
    out.create.truncate(BURST);
    out
}

/// The DaemonSet status counts (`updateDaemonSetStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub unavailable: i32,
    pub updated: i32,
}

/// The status counts over every node (each node's oldest pod speaks for it), and the
/// seconds until a ready pod becomes available (a recheck), if any.
pub fn counts(v: &View) -> (Counts, Option<i64>) {
    let mut c = Counts::default();
    let mut next: Option<i64> = None;
    for (node, fit) in v.fits {
        let scheduled = v.pods.get(node).is_some_and(|p| !p.is_empty());
        if !fit.should_run {
            if scheduled {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        if !scheduled {
            continue;
        }
        c.current += 1;
        let mut pods = v.pods[node].clone();
        sort_oldest_first(&mut pods);
        let p = &pods[0];
        if pods::is_ready(p) {
            c.ready += 1;
            if v.available(p) {
                c.available += 1;
            } else if let Some(s) = pods::until_available(p, v.min_ready_seconds, v.now) {
                next = Some(next.map_or(s, |n| n.min(s)));
            }
        }
        if v.updated(p) {
            c.updated += 1;
        }
    }
    c.unavailable = c.desired - c.available;
    (c, next)
}

#[cfg(test)]
mod tests;
