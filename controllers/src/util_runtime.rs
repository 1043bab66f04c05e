//! Running a controller: watches kept in reflector stores, kube-runtime's applier fed by
//! caller-made triggers, a retry policy, and a bounded graceful stop.
//!
//! kube-runtime's `Controller` owns its watches; controllers that need one watch both as a
//! store and as a trigger (pods for the endpoints controllers) use [`run_applier`], the same
//! applier `Controller::run` is built on, with the streams from [`reflect`].

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use futures::{future::BoxFuture, stream::BoxStream, Stream, StreamExt};
use kube::{
    runtime::{
        applier,
        controller::{self, Action, Config, ReconcileRequest},
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Api, Resource,
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Error;

/// How long a stopping controller lets in-flight reconciles finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One source of reconcile requests for a controller of `K`.
pub type Trigger<K> = BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>;

/// The events of a watch of `K`, each applied to the returned store before it is yielded.
pub type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// A watch of `K` (retrying with backoff) that keeps a store current. The caller drives the
/// events (usually as a trigger); the store is ready after the first full list.
pub fn reflect<K>(api: Api<K>, wc: watcher::Config) -> (Store<K>, Events<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, wc).default_backoff().reflect(writer).boxed();
    (store, events)
}

/// A watch of `K` (retrying with backoff) without a store.
pub fn watch<K>(api: Api<K>, wc: watcher::Config) -> Events<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, wc).default_backoff().boxed()
}

/// A store kept current by a background watch, which stops when this is dropped.
pub struct Reflector<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for Reflector<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a [`Reflector`] of `K`.
pub fn spawn_reflector<K>(api: Api<K>, wc: watcher::Config) -> Reflector<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, events) = reflect(api, wc);
    let task = tokio::spawn(
        events
            .for_each(|ev| {
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "watch failed; retrying");
                }
                futures::future::ready(())
            })
            .in_current_span(),
    );
    Reflector { store, task }
}

/// Wait for a store's first full list; `false` if `stop` fired first (or its watch ended).
pub async fn wait_ready<K>(store: &Store<K>, stop: &CancellationToken) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    tokio::select! {
        r = store.wait_until_ready() => r.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// Every object a watch touched (applied or deleted) as a reconcile of that object itself.
pub fn trigger_self<K>(events: Events<K>) -> Trigger<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
{
    trigger_with(events, |ev| match ev {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => {
            vec![ObjectRef::from_obj(&o)]
        }
        watcher::Event::Init | watcher::Event::InitDone => vec![],
    })
}

/// A watch's events mapped to reconcile requests by `mapper`.
pub fn trigger_with<O, K>(
    events: Events<O>,
    mapper: impl Fn(watcher::Event<O>) -> Vec<ObjectRef<K>> + Send + 'static,
) -> Trigger<K>
where
    O: Send + 'static,
    K: Resource<DynamicType = ()> + Send + 'static,
{
    controller::trigger_with(events, move |ev| mapper(ev).into_iter().map(ReconcileRequest::from)).boxed()
}

/// Requests pushed from elsewhere (another controller's watch) as a trigger.
pub fn trigger_channel<K>(rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>) -> Trigger<K>
where
    K: Resource<DynamicType = ()> + Send + 'static,
{
    rx.map(|r| Ok(ReconcileRequest::from(r))).boxed()
}

/// Run kube-runtime's applier over `store` with `triggers` until `stop` fires, as
/// `Controller::run` would (at most `concurrency` reconciles at once, never two of one object).
pub async fn run_applier<K, C, R, Fut>(
    store: Store<K>,
    triggers: Vec<Trigger<K>>,
    mut reconcile: R,
    ctx: Arc<C>,
    stop: &CancellationToken,
    concurrency: u16,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let queue = futures::stream::select_all(triggers).take_until(stop.clone().cancelled_owned());
    let results = applier(
        move |obj, ctx| -> BoxFuture<'static, Result<Action, Error>> { Box::pin(reconcile(obj, ctx)) },
        retry_policy::<K, C>,
        ctx,
        store,
        queue,
        Config::default().concurrency(concurrency),
    );
    drive(results, stop).await;
}

/// Consume a controller's result stream, logging failures, until it ends or `stop` fired
/// [`SHUTDOWN_GRACE`] ago.
pub async fn drive<K, Q>(
    results: impl Stream<Item = Result<(ObjectRef<K>, Action), controller::Error<Error, Q>>>,
    stop: &CancellationToken,
) where
    K: Resource<DynamicType = ()>,
    Q: std::error::Error + 'static,
{
    let drain = results.for_each(|res| {
        log_result(res);
        futures::future::ready(())
    });
    tokio::select! {
        _ = drain => {}
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
}

fn log_result<K, Q>(res: Result<(ObjectRef<K>, Action), controller::Error<Error, Q>>)
where
    K: Resource<DynamicType = ()>,
    Q: std::error::Error + 'static,
{
    match res {
        Ok((obj, _)) => tracing::trace!(object = %obj, "reconciled"),
        Err(controller::Error::ObjectNotFound(obj)) => {
            tracing::trace!(object = %obj, "object gone before its reconcile")
        }
        Err(controller::Error::ReconcilerFailed(e, obj)) => match &e {
            Error::Kube(k) if crate::util_api::is_conflict(k) => {
                tracing::debug!(object = %obj, error = %e, "reconcile conflicted; retrying")
            }
            _ => tracing::warn!(object = %obj, error = %e, "reconcile failed; retrying"),
        },
        Err(e) => tracing::warn!(error = %e, "controller queue error"),
    }
}

/// Retry a failed reconcile: soon after a conflict (a stale read), later after anything else.
pub fn retry_policy<K, C>(_obj: Arc<K>, err: &Error, _ctx: Arc<C>) -> Action {
    Action::requeue(retry_delay(err))
}

/// The delay before retrying after `err` (see [`retry_policy`]).
pub fn retry_delay(err: &Error) -> Duration {
    match err {
        Error::Kube(k) if crate::util_api::is_conflict(k) => crate::util_api::jittered(Duration::from_millis(100)),
        _ => crate::util_api::jittered(Duration::from_secs(2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_retry_sooner_than_other_errors() {
        let conflict =
            Error::Kube(kube::Error::Api(kube::core::Status::failure("c", "Conflict").with_code(409).boxed()));
        let other = Error::Invalid { what: "x".into(), reason: "y".into() };
        assert!(retry_delay(&conflict) < Duration::from_secs(1));
        assert!(retry_delay(&other) >= Duration::from_secs(2));
    }
}

/// A mutex's guard, poisoned or not (a panicked holder left plain data, not a broken invariant).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
