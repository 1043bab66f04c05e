//! The garbage collector (upstream `pkg/controller/garbagecollector`): deletes objects
//! whose owners are gone (`ownerReferences`), runs foreground deletion (an owner with
//! the `foregroundDeletion` finalizer waits for its `blockOwnerDeletion` dependents) and
//! orphaning (the `orphan` finalizer: dependents lose their reference, then the owner
//! goes). It watches object metadata of every listable, deletable resource type found by
//! discovery (re-run periodically, so CRDs are covered). Decisions: [`decide`].

pub mod decide;
pub mod graph;
mod work;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::mpsc;

use self::decide::{FOREGROUND, ORPHAN};
use self::graph::{Graph, Node};
use crate::util_runtime::lock;
use crate::{Context, Error};

/// How often discovery runs again (new CRDs).
const REDISCOVER: Duration = Duration::from_secs(30);
/// Work items processed at once.
const WORKERS: usize = 8;

/// What a worker does with one uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Is this dependent's owner gone? (`attemptToDelete`)
    Attempt(String),
    /// An owner in foreground deletion: delete its blocking dependents, or finish.
    Foreground(String),
    /// An owner being orphaned: release its dependents, then finish.
    Orphan(String),
}

/// Why a work was queued: a watched change (its `resourceVersion`: the write whose trace
/// the work continues) or an earlier step (its span).
#[derive(Clone)]
pub(crate) enum Cause {
    Version(String),
    Step(tracing::Span),
}

impl Cause {
    fn version(rv: Option<&str>) -> Cause {
        Cause::Version(rv.unwrap_or_default().to_string())
    }
}

pub(crate) struct Shared {
    pub ctx: Context,
    pub graph: Mutex<Graph>,
    /// (group, kind) → resource type and whether it is namespaced.
    pub kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    queued: Mutex<HashSet<Work>>,
    /// What called for each queued work: its trace continues there.
    causes: Mutex<HashMap<Work, Cause>>,
    tx: mpsc::UnboundedSender<Work>,
    /// Resource types whose first list is still pending.
    unsynced: Mutex<HashSet<usize>>,
    synced_once: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        lock(&self.graph)
    }

    pub fn enqueue(&self, w: Work) {
        if lock(&self.queued).insert(w.clone()) {
            let _ = self.tx.send(w);
        }
    }

    /// Enqueue `w`, called for by `cause` (the latest cause wins).
    pub fn enqueue_for(&self, w: Work, cause: Cause) {
        self.set_cause(&w, cause);
        self.enqueue(w);
    }

    /// Remember what called for `w` (queued later, by a retry).
    pub fn set_cause(&self, w: &Work, cause: Cause) {
        lock(&self.causes).insert(w.clone(), cause);
    }

    /// What called for `w`, once.
    pub fn take_cause(&self, w: &Work) -> Option<Cause> {
        lock(&self.causes).remove(w)
    }

    /// Enqueue again after `delay` (a failed step).
    pub fn retry(self: &Arc<Self>, w: Work, delay: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.ctx.stop.cancelled() => {}
                _ = tokio::time::sleep(delay) => me.enqueue(w),
            }
        });
    }

    fn synced(&self) -> bool {
        self.synced_once.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The work an object's arrival or change (at `rv`) calls for.
    fn changed(&self, uid: &str, node: &Node, rv: Option<&str>) {
        if !self.synced() {
            return;
        }
        let cause = || Cause::version(rv);
        let g = self.graph();
        if node.owners.iter().any(|o| !g.nodes.contains_key(&o.uid)) {
            self.enqueue_for(Work::Attempt(uid.to_string()), cause());
        }
        for o in &node.owners {
            if g.nodes.get(&o.uid).is_some_and(|n| n.deleting && n.has(FOREGROUND)) {
                self.enqueue_for(Work::Foreground(o.uid.clone()), cause());
            }
        }
        drop(g);
        if node.deleting && node.has(FOREGROUND) {
            self.enqueue_for(Work::Foreground(uid.to_string()), cause());
        }
        if node.deleting && node.has(ORPHAN) {
            self.enqueue_for(Work::Orphan(uid.to_string()), cause());
        }
    }

    /// The work an object's disappearance (at `rv`, when a watch saw it) calls for.
    fn gone(&self, uid: &str, rv: Option<&str>) {
        let mut g = self.graph();
        let Some(old) = g.remove(uid) else { return };
        let deps = g.dependents_of(uid);
        let waiting: Vec<String> = old
            .owners
            .iter()
            .filter(|o| g.nodes.get(&o.uid).is_some_and(|n| n.deleting && n.has(FOREGROUND)))
            .map(|o| o.uid.clone())
            .collect();
        drop(g);
        if !self.synced() {
            return;
        }
        for d in deps {
            self.enqueue_for(Work::Attempt(d), Cause::version(rv));
        }
        for o in waiting {
            self.enqueue_for(Work::Foreground(o), Cause::version(rv));
        }
    }

    /// Once every type has been listed: look at everything once.
    fn first_sync(&self) {
        if self.synced_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let all: Vec<(String, Node)> = self.graph().nodes.iter().map(|(u, n)| (u.clone(), n.clone())).collect();
        tracing::info!(objects = all.len(), "garbage collector synced");
        for (uid, node) in all {
            self.changed(&uid, &node, None);
        }
    }
}

fn node_of(ty: usize, m: &PartialObjectMeta<DynamicObject>, seen: u64) -> Option<(String, Node)> {
    let meta = &m.metadata;
    Some((
        meta.uid.clone()?,
        Node {
            ty,
            namespace: meta.namespace.clone(),
            name: meta.name.clone()?,
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            seen,
        },
    ))
}

/// Resource types the collector ignores (upstream's `ignoredResources`: Events).
fn ignored(ar: &ApiResource) -> bool {
    ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io")
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: Mutex::new(HashMap::new()),
        queued: Mutex::new(HashSet::new()),
        causes: Mutex::new(HashMap::new()),
        tx,
        unsynced: Mutex::new(HashSet::new()),
        synced_once: std::sync::atomic::AtomicBool::new(false),
    });
    let mut watchers = tokio::task::JoinSet::new();
    let mut workers = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(WORKERS));
    let mut rediscover = tokio::time::interval(REDISCOVER);
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = rediscover.tick() => {
                if let Err(e) = discover(&shared, &mut watchers).await {
                    tracing::warn!(error = %e, "garbage collector discovery failed");
                }
            }
            Some(w) = rx.recv() => {
                let Ok(permit) = sem.clone().acquire_owned().await else { break };
                lock(&shared.queued).remove(&w);
                let s = shared.clone();
                workers.spawn(async move {
                    work::process(&s, w).await;
                    drop(permit);
                });
            }
            Some(_) = workers.join_next(), if !workers.is_empty() => {}
        }
    }
    watchers.shutdown().await;
    workers.shutdown().await;
    Ok(())
}

/// Find resource types; start a metadata watch for each new one.
async fn discover(shared: &Arc<Shared>, watchers: &mut tokio::task::JoinSet<()>) -> Result<(), Error> {
    let discovery = Discovery::new(shared.ctx.client.clone()).run().await?;
    let mut fresh = vec![];
    {
        let mut kinds = lock(&shared.kinds);
        let mut g = shared.graph();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let namespaced = caps.scope == Scope::Namespaced;
                kinds.insert((ar.group.clone(), ar.kind.clone()), (ar.clone(), namespaced));
                let usable = caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE);
                if !usable || ignored(&ar) || g.types.iter().any(|t| t.group == ar.group && t.plural == ar.plural) {
                    continue;
                }
                g.types.push(ar.clone());
                fresh.push((g.types.len() - 1, ar));
            }
        }
    }
    if fresh.is_empty() {
        if lock(&shared.unsynced).is_empty() {
            shared.first_sync();
        }
        return Ok(());
    }
    lock(&shared.unsynced).extend(fresh.iter().map(|(i, _)| *i));
    for (ty, ar) in fresh {
        let s = shared.clone();
        watchers.spawn(watch_type(s, ty, ar));
    }
    Ok(())
}

async fn watch_type(shared: Arc<Shared>, ty: usize, ar: ApiResource) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(shared.ctx.client.clone(), &ar);
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut generation = 0u64;
    loop {
        let ev = tokio::select! {
            _ = shared.ctx.stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Err(e) => tracing::debug!(resource = %ar.plural, error = %e, "garbage collector watch"),
            Ok(watcher::Event::Init) => generation += 1,
            Ok(watcher::Event::InitApply(m)) | Ok(watcher::Event::Apply(m)) => {
                let Some((uid, node)) = node_of(ty, &m, generation) else { continue };
                shared.graph().upsert(&uid, node.clone());
                shared.changed(&uid, &node, m.metadata.resource_version.as_deref());
            }
            Ok(watcher::Event::Delete(m)) => {
                if let Some(uid) = m.metadata.uid.as_deref() {
                    shared.gone(uid, m.metadata.resource_version.as_deref());
                }
            }
            Ok(watcher::Event::InitDone) => {
                let missed = shared.graph().unseen(ty, generation);
                for uid in missed {
                    shared.gone(&uid, None);
                }
                let all_synced = {
                    let mut u = lock(&shared.unsynced);
                    u.remove(&ty);
                    u.is_empty()
                };
                if all_synced {
                    shared.first_sync();
                }
            }
        }
    }
}
