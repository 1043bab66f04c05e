//! The pods bound to this node: one watch (`spec.nodeName=<node>`) feeds one [`worker`]
//! per pod. After the first list, whatever this node holds for pods that no longer exist
//! (directories, containers, network namespaces — left by a kubelet that was down when
//! they were deleted) is undone.

pub mod container;
mod hook;
pub mod probe;
pub mod sandbox;
pub mod spec;
mod start;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::image::ImageStore;
use super::network::{Cni, NetNs};
use super::runtime::Runtime;
use super::KubeletConfig;

/// What every pod worker uses.
pub struct Shared {
    pub client: kube::Client,
    pub cfg: Arc<KubeletConfig>,
    pub runtime: Runtime,
    pub images: ImageStore,
    /// Pod networking, once the node has its podCIDR.
    pub cni: watch::Receiver<Option<Arc<Cni>>>,
    /// The Events the pods' workers record.
    pub events: crate::kubelet::events::Events,
    /// (namespace, name) → uid of the pods bound here, for the kubelet endpoint.
    pub names: std::sync::Mutex<HashMap<(String, String), String>>,
}

impl Shared {
    /// Where this node's ClusterFirst pods resolve names (see [`KubeletConfig::cluster_dns`]).
    pub fn cluster_dns(&self, cni: &Cni) -> sandbox::ClusterDns {
        let servers = match (&self.cfg.cluster_dns[..], self.cfg.serve_dns) {
            ([], true) => cni.gateway().into_iter().collect(),
            (given, _) => given.to_vec(),
        };
        sandbox::ClusterDns { servers, domain: self.cfg.cluster_domain.clone() }
    }

    pub fn uid_of(&self, namespace: &str, name: &str) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        names.get(&(namespace.to_string(), name.to_string())).cloned()
    }
}

/// Undo what the node holds for pod `uid`: its containers, mounts, sandbox and directory.
pub async fn undo(shared: &Shared, uid: &str) -> Result<(), String> {
    let dir = shared.cfg.pods_dir().join(uid);
    for id in shared.runtime.ids().map_err(|e| e.to_string())? {
        if container::uid_of_runtime_id(&id) == Some(uid) {
            shared.runtime.delete_force(&id).await.map_err(|e| e.to_string())?;
        }
    }
    worker::unmount_all(&dir)?;
    let recorded = sandbox::load(&dir);
    let sb = recorded.unwrap_or_else(|| sandbox::Sandbox {
        id: sandbox::sandbox_id(uid),
        netns: format!("{}{uid}", shared.cfg.netns_prefix),
        netns_path: std::path::PathBuf::from("/run/netns").join(format!("{}{uid}", shared.cfg.netns_prefix)),
        ip: None,
    });
    let cni = shared.cni.borrow().clone();
    sandbox::remove(&sb, cni.as_deref()).await?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Undo everything held for pods not in `live` (uids).
async fn collect_orphans(shared: &Shared, live: &HashSet<String>) {
    let mut orphans: HashSet<String> = HashSet::new();
    if let Ok(entries) = std::fs::read_dir(shared.cfg.pods_dir()) {
        orphans.extend(entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
    }
    match shared.runtime.ids() {
        Ok(ids) => orphans.extend(ids.iter().filter_map(|id| container::uid_of_runtime_id(id).map(str::to_string))),
        Err(e) => tracing::warn!(error = %e, "listing the runtime's containers failed"),
    }
    let prefix = &shared.cfg.netns_prefix;
    orphans.extend(
        NetNs::list_with_prefix(prefix).into_iter().filter_map(|n| n.strip_prefix(prefix.as_str()).map(str::to_string)),
    );
    orphans.retain(|u| !live.contains(u));
    for uid in orphans {
        match undo(shared, &uid).await {
            Ok(()) => tracing::info!(pod_uid = %uid, "cleaned up after a pod that is gone"),
            Err(e) => tracing::warn!(pod_uid = %uid, error = %e, "cleaning up after a gone pod failed"),
        }
    }
}

/// Watch this node's pods and run their workers until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.cfg.node_name));
    let mut events = pin!(watcher(api, cfg).default_backoff());
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut task_uids: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tasks_orphans: JoinSet<()> = JoinSet::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut first_list = true;
    let feed = |pod: Pod,
                workers: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
                tasks: &mut JoinSet<String>,
                task_uids: &mut HashMap<tokio::task::Id, String>| {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        shared.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, uid.clone());
        let pod = Arc::new(pod);
        if let Some(tx) = workers.get(&uid) {
            tx.send_replace(Some(pod));
            return;
        }
        let span = tracing::info_span!("pod", namespace = pod.metadata.namespace.as_deref().unwrap_or_default(), name = pod.metadata.name.as_deref().unwrap_or_default(), uid = %uid);
        let (tx, rx) = watch::channel(Some(pod));
        workers.insert(uid.clone(), tx);
        let w = worker::Worker::new(shared.clone(), uid.clone());
        let stop = stop.clone();
        let task_uid = uid.clone();
        let handle = tasks.spawn(
            async move {
                w.run(rx, stop).await;
                task_uid
            }
            .instrument(span),
        );
        task_uids.insert(handle.id(), uid);
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // A worker that panicked is forgotten too: the pod's next event starts anew.
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => {
                        tracing::error!(error = %e, "a pod worker failed");
                        e.id()
                    }
                };
                if let Some(uid) = task_uids.remove(&id) {
                    workers.remove(&uid);
                    shared.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, u| *u != uid);
                }
            }
            ev = events.next() => match ev {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if let (Some(l), Some(u)) = (listing.as_mut(), p.metadata.uid.clone()) {
                        l.insert(u);
                    }
                    feed(p, &mut workers, &mut tasks, &mut task_uids);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let live = listing.take().unwrap_or_default();
                    for (uid, tx) in &workers {
                        if !live.contains(uid) {
                            tx.send_replace(None);
                        }
                    }
                    if first_list {
                        first_list = false;
                        // Once pod networking is up (addresses can be released), undo what
                        // pods that no longer exist left; pods seen since are spared too.
                        let listed: HashSet<String> = live.iter().cloned().chain(workers.keys().cloned()).collect();
                        let (shared, stop) = (shared.clone(), stop.clone());
                        tasks_orphans.spawn(async move {
                            let mut cni = shared.cni.clone();
                            tokio::select! {
                                () = stop.cancelled() => return,
                                r = cni.wait_for(Option::is_some) => if r.is_err() { return },
                            }
                            let mut known = listed;
                            known.extend(shared.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned());
                            collect_orphans(&shared, &known).await;
                        }.instrument(tracing::info_span!("orphans")));
                    }
                }
                Some(Ok(watcher::Event::Apply(p))) => feed(p, &mut workers, &mut tasks, &mut task_uids),
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        tx.send_replace(None);
                    }
                }
            }
        }
    }
    drop(workers);
    tasks_orphans.shutdown().await;
    while tasks.join_next().await.is_some() {}
}
