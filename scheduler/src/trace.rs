//! Trace context for the control loops. A reconcile or a scheduling decision continues the
//! trace of the write it reacts to: keelson's masters remember the trace of each recent
//! traced write by revision ([`WriteTraces`]), and an object's `resourceVersion` is the
//! revision of its last write. Against another API server there is nothing to look up and
//! each decision starts its own trace.
//!
//! Spans meant for export use [`TARGET`], which the binary's exporter selects; everything
//! else stays in the logs.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of exported control-loop spans.
pub const TARGET: &str = "keelson::trace";

/// The Binding (and so the pod) annotation carrying the bind's W3C `traceparent`, which
/// the node's kubelet continues.
pub const ANN_TRACEPARENT: &str = "trace.keelson.dev/traceparent";

/// How long after a trace began a reaction still joins it. A cascade (a Deployment's
/// ReplicaSet, its pods, their bindings) happens within seconds; past this, a reaction
/// starts its own trace with a link to the write, so loops that write on every pass (an
/// HPA's status every sync period) do not grow one trace forever.
pub const CONTINUE_WITHIN: Duration = Duration::from_secs(30);

/// A write's W3C carrier and how long ago its trace began.
pub type Found = (HashMap<String, String>, Duration);

type Lookup = dyn Fn(&str) -> Option<Found> + Send + Sync;

/// Where the trace of the write behind a `resourceVersion` is found.
#[derive(Clone, Default)]
pub struct WriteTraces(Option<Arc<Lookup>>);

/// How a span was tied to the write it reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// A child of the write's span: the same trace.
    Parent,
    /// A new trace, linked to the write (whose trace is older than [`CONTINUE_WITHIN`]).
    Link,
    /// A new trace: the write is unknown (untraced, forgotten, or no lookup).
    Root,
}

impl WriteTraces {
    pub fn new(lookup: impl Fn(&str) -> Option<Found> + Send + Sync + 'static) -> Self {
        WriteTraces(Some(Arc::new(lookup)))
    }

    /// Tie `span` to the write that made `resource_version`: its child while that write's
    /// trace is young, else the root of a new trace (linked to the write when it is known),
    /// never a child of whatever long-lived span the loop runs in.
    pub fn tie(&self, span: &tracing::Span, resource_version: Option<&str>) -> Tie {
        let found = match (&self.0, resource_version.filter(|r| !r.is_empty())) {
            (Some(lookup), Some(rv)) => lookup(rv),
            _ => None,
        };
        let cx = found.as_ref().map(|(carrier, age)| (extract(carrier), *age));
        let tie = match &cx {
            Some((cx, age)) if cx.span().span_context().is_valid() => {
                if *age <= CONTINUE_WITHIN {
                    Tie::Parent
                } else {
                    Tie::Link
                }
            }
            _ => Tie::Root,
        };
        match (tie, cx) {
            (Tie::Parent, Some((cx, _))) => {
                let _ = span.set_parent(cx);
            }
            (Tie::Link, Some((cx, _))) => {
                let _ = span.set_parent(opentelemetry::Context::new());
                span.add_link(cx.span().span_context().clone());
            }
            _ => {
                let _ = span.set_parent(opentelemetry::Context::new());
            }
        }
        tie
    }
}

impl fmt::Debug for WriteTraces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "WriteTraces(lookup)" } else { "WriteTraces(none)" })
    }
}

fn extract(carrier: &HashMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier))
}

/// Parent `span` on a W3C carrier (`traceparent`, `tracestate`); `false` if it holds no
/// valid context (or no propagator is installed: tracing is off).
pub fn adopt(span: &tracing::Span, carrier: &HashMap<String, String>) -> bool {
    let cx = extract(carrier);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// Parent `span` on a `traceparent` value alone.
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    adopt(span, &HashMap::from([("traceparent".to_string(), traceparent.to_string())]))
}

/// `span`'s W3C `traceparent` when it is sampled (exported); `None` otherwise.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    let mut out = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
    out.remove("traceparent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_lookup_or_a_version_a_span_is_a_root() {
        let span = tracing::info_span!(target: TARGET, "t");
        assert_eq!(WriteTraces::default().tie(&span, Some("5")), Tie::Root);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let traces = WriteTraces::new(move |rv| {
            seen.lock().unwrap().push(rv.to_string());
            None
        });
        assert_eq!(traces.tie(&span, None), Tie::Root);
        assert_eq!(traces.tie(&span, Some("")), Tie::Root);
        assert_eq!(traces.tie(&span, Some("7")), Tie::Root);
        assert_eq!(*asked.lock().unwrap(), vec!["7".to_string()], "only a real version is looked up");
    }

    #[test]
    fn a_young_trace_is_continued_and_an_old_one_linked() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
        let (young, old) = (carrier.clone(), carrier.clone());
        let span = tracing::info_span!(target: TARGET, "t");
        let t = WriteTraces::new(move |_| Some((young.clone(), Duration::from_secs(1))));
        assert_eq!(t.tie(&span, Some("3")), Tie::Parent);
        let t = WriteTraces::new(move |_| Some((old.clone(), CONTINUE_WITHIN + Duration::from_secs(1))));
        assert_eq!(t.tie(&span, Some("3")), Tie::Link);
        let bad = HashMap::from([("traceparent".to_string(), "garbage".to_string())]);
        let t = WriteTraces::new(move |_| Some((bad.clone(), Duration::ZERO)));
        assert_eq!(t.tie(&span, Some("3")), Tie::Root);
    }

    #[test]
    fn an_invalid_carrier_is_not_adopted() {
        let span = tracing::info_span!(target: TARGET, "t");
        assert!(!adopt_traceparent(&span, "not-a-traceparent"));
        assert_eq!(traceparent(&span), None, "no exporter: nothing sampled");
    }
}
