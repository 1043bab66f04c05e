//! Every reconcile as a span and in the metrics. The span continues the trace of the
//! object's last write (found by its `resourceVersion`, see
//! [`keelson_scheduler::trace::WriteTraces`]), so the writes a reconcile makes join the trace
//! of the write that caused it: `kubectl create deployment` → the Deployment's reconcile →
//! its ReplicaSet's create → that ReplicaSet's reconcile → the pods' creates.

use std::{future::Future, sync::Arc, time::Instant};

use futures::future::BoxFuture;
use kube::{runtime::controller::Action, Resource, ResourceExt};
use tracing::Instrument;

use crate::{metrics::metrics, Error};
use keelson_scheduler::trace::{WriteTraces, TARGET};

/// `reconcile`, observed as `controller`'s.
pub fn observed<K, C, R, Fut>(
    controller: &'static str,
    traces: &WriteTraces,
    mut reconcile: R,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: FnMut(Arc<K>, Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let traces = traces.clone();
    move |obj: Arc<K>, ctx: Arc<C>| {
        let span = tracing::info_span!(
            target: TARGET,
            "controller.reconcile",
            otel.name = %format_args!("reconcile {controller}"),
            k8s.controller = controller,
            k8s.object.kind = %K::kind(&()),
            k8s.namespace.name = obj.namespace().as_deref().unwrap_or_default(),
            k8s.object.name = %obj.name_any(),
            k8s.object.resource_version = obj.resource_version().as_deref().unwrap_or_default(),
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        traces.tie(&span, obj.meta().resource_version.as_deref());
        let fut = reconcile(obj, ctx);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = fut.await;
                metrics().reconciled(controller, &result, started.elapsed());
                if let Err(e) = &result {
                    let span = tracing::Span::current();
                    span.record("otel.status_code", "ERROR");
                    span.record("error.message", e.to_string());
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reconcile_is_counted_with_its_outcome() {
        let mut r = observed("observe-test", &WriteTraces::default(), |cm: Arc<ConfigMap>, _: Arc<()>| async move {
            match cm.metadata.name.as_deref() {
                Some("bad") => Err(Error::Invalid { what: "x".into(), reason: "y".into() }),
                _ => Ok(Action::requeue(Duration::from_secs(5))),
            }
        });
        let named = |n: &str| {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(n.into());
            Arc::new(cm)
        };
        assert!(r(named("good"), Arc::new(())).await.is_ok());
        assert!(r(named("bad"), Arc::new(())).await.is_err());
        let m = metrics();
        assert_eq!(m.total.with_label_values(&["observe-test", "requeue_after"]).get(), 1);
        assert_eq!(m.total.with_label_values(&["observe-test", "error"]).get(), 1);
        assert_eq!(m.errors.with_label_values(&["observe-test"]).get(), 1);
    }
}
