//! The watches feeding the scheduler: a kube-runtime `watcher` per resource (retrying with
//! backoff), each object converted to the scheduler's parsed form in the watch task — off
//! the scheduling loop — and handed over on a bounded channel.

use std::fmt::Debug;

use futures::StreamExt;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Resource,
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Events queued per watch before the watch waits for the scheduler.
pub const CHANNEL_CAPACITY: usize = 4096;

/// A watch event, with the object already converted.
#[derive(Debug, Clone)]
pub enum Change<T> {
    /// A (re)list starts: objects not listed before [`Change::InitDone`] are gone.
    Init,
    /// An object of the (re)list.
    InitApply(T),
    /// The (re)list is complete.
    InitDone,
    Apply(T),
    Delete(T),
}

/// Watch `api`, sending each event converted by `convert`, until `stop` fires or the
/// receiver goes away.
pub fn spawn<K, T>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    resource: &'static str,
    convert: fn(&K) -> T,
    tx: mpsc::Sender<Change<T>>,
    stop: CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::info_span!("watch", resource);
    tasks.spawn(
        async move {
            let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = events.next() => ev,
                };
                let change = match ev {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch failed; retrying");
                        continue;
                    }
                    Some(Ok(watcher::Event::Init)) => Change::Init,
                    Some(Ok(watcher::Event::InitApply(o))) => Change::InitApply(convert(&o)),
                    Some(Ok(watcher::Event::InitDone)) => Change::InitDone,
                    Some(Ok(watcher::Event::Apply(o))) => Change::Apply(convert(&o)),
                    Some(Ok(watcher::Event::Delete(o))) => Change::Delete(convert(&o)),
                };
                let sent = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tx.send(change) => r,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
}
