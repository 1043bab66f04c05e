//! Trace context across the log without the store knowing OpenTelemetry: the binary
//! installs two hooks — `inject` (the current span's W3C context, empty when not sampled)
//! and `adopt` (make a span the child of a carried context). Writes carry the context of
//! the span they were proposed in; every master's apply of such a command is a span in
//! that trace. Without hooks (tests, or tracing off) nothing is carried and no apply span
//! is made.
//!
//! Each master also remembers, for its most recent traced writes, the context of its own
//! apply span by revision ([`WriteTraces`]): a controller reacting to a watch event finds
//! the write behind an object's `resourceVersion` there and continues its trace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::types::TraceContext;

#[derive(Clone, Copy)]
pub struct TraceHooks {
    /// The current span's context (`traceparent`, maybe `tracestate`), empty if none.
    pub inject: fn() -> TraceContext,
    /// Parent `span` on a carried context.
    pub adopt: fn(&tracing::Span, &TraceContext),
}

static HOOKS: OnceLock<TraceHooks> = OnceLock::new();

/// Install the hooks (once per process; later calls are ignored).
pub fn install(hooks: TraceHooks) {
    let _ = HOOKS.set(hooks);
}

/// Whether traces are exported (hooks installed): spans worth making at info level.
pub fn enabled() -> bool {
    HOOKS.get().is_some()
}

/// The current span's context, for a command about to be proposed.
pub fn current() -> TraceContext {
    HOOKS.get().map(|h| (h.inject)()).unwrap_or_default()
}

/// Parent `span` on `ctx` (nothing without hooks or context).
pub fn adopt(span: &tracing::Span, ctx: &TraceContext) {
    if let (Some(h), false) = (HOOKS.get(), ctx.is_empty()) {
        (h.adopt)(span, ctx);
    }
}

/// How many traced writes a master remembers (by revision) for the layers above.
const WRITE_TRACES: usize = 16_384;

/// A remembered write: its context and when this master first applied a write of its
/// trace (so the layers above can tell a fresh cascade from a trace that keeps going).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteTrace {
    pub context: TraceContext,
    pub trace_started: Instant,
}

/// The trace contexts of the latest traced writes, by store revision (bounded: the
/// oldest are forgotten first). Empty unless traces are exported.
#[derive(Default)]
pub struct WriteTraces {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_rev: BTreeMap<i64, WriteTrace>,
    /// When each remembered trace's first write was applied here (trace id → instant).
    started: HashMap<String, Instant>,
}

/// The trace id of a W3C context (`00-<trace id>-<span id>-<flags>`).
fn trace_id(ctx: &TraceContext) -> Option<&str> {
    ctx.get("traceparent")?.split('-').nth(1)
}

impl WriteTraces {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember `ctx` as the trace of the write that made `revision`.
    pub fn record(&self, revision: i64, ctx: TraceContext) {
        self.record_at(revision, ctx, Instant::now());
    }

    fn record_at(&self, revision: i64, ctx: TraceContext, now: Instant) {
        let Some(id) = trace_id(&ctx).map(str::to_string) else { return };
        let mut m = self.lock();
        let trace_started = *m.started.entry(id).or_insert(now);
        m.by_rev.insert(revision, WriteTrace { context: ctx, trace_started });
        while m.by_rev.len() > WRITE_TRACES {
            m.by_rev.pop_first();
        }
        // Forget the start of traces no remembered write belongs to any more.
        if m.started.len() > 2 * WRITE_TRACES {
            let Inner { by_rev, started } = &mut *m;
            let live: HashSet<&str> = by_rev.values().filter_map(|w| trace_id(&w.context)).collect();
            started.retain(|id, _| live.contains(id.as_str()));
        }
    }

    /// The trace of the write that made `revision`, if it was traced and is recent.
    pub fn get(&self, revision: i64) -> Option<WriteTrace> {
        self.lock().by_rev.get(&revision).cloned()
    }

    /// How many writes are remembered.
    pub fn len(&self) -> usize {
        self.lock().by_rev.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(n: i64) -> TraceContext {
        [("traceparent".to_string(), format!("00-{n:032x}-{n:016x}-01"))].into()
    }

    #[test]
    fn write_traces_are_bounded_and_forget_the_oldest() {
        let t = WriteTraces::default();
        t.record(1, TraceContext::new());
        assert!(t.is_empty(), "an empty context is not remembered");
        for rev in 1..=(WRITE_TRACES as i64 + 10) {
            t.record(rev, ctx(rev));
        }
        assert_eq!(t.len(), WRITE_TRACES);
        assert_eq!(t.get(10), None, "the oldest are forgotten");
        assert_eq!(t.get(11).map(|w| w.context), Some(ctx(11)));
        let last = WRITE_TRACES as i64 + 10;
        assert_eq!(t.get(last).map(|w| w.context), Some(ctx(last)));
        for rev in last + 1..=last + WRITE_TRACES as i64 + 10 {
            t.record(rev, ctx(rev));
        }
        assert!(t.lock().started.len() <= 2 * WRITE_TRACES + 1, "trace starts are forgotten too");
    }

    #[test]
    fn a_trace_started_when_its_first_write_was_applied() {
        let t = WriteTraces::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(40);
        t.record_at(5, ctx(1), t0);
        t.record_at(9, ctx(2), later);
        t.record_at(12, ctx(1), later);
        assert_eq!(t.get(5).unwrap().trace_started, t0);
        assert_eq!(t.get(12).unwrap().trace_started, t0, "the same trace keeps its start");
        assert_eq!(t.get(9).unwrap().trace_started, later);
    }
}
