//! A kube-runtime reflector that wakes one [`Notify`] on every event: how the service
//! proxy, cluster DNS and the local-path provisioner keep their object stores current and
//! know when to act again.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::warn;

/// Run a reflector for `K` on `tasks` — managedFields dropped and each object passed
/// through `slim` before it is stored — that notifies `changed` on every event; returns
/// its store. `component` names the caller in the log.
pub(crate) fn reflect<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    changed: &Arc<Notify>,
    slim: fn(&mut K),
    component: &'static str,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(api, watcher::Config::default()).default_backoff().modify(move |obj: &mut K| {
        obj.meta_mut().managed_fields = None;
        slim(obj);
    });
    let stream = reflector::reflector(writer, stream);
    tasks.spawn(drive(stream, changed.clone(), K::kind(&Default::default()).into_owned(), component));
    reader
}

async fn drive<S, T>(stream: S, changed: Arc<Notify>, kind: String, component: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => warn!(%kind, error = %e, "{component}: watch failed; retrying"),
        }
    }
}
