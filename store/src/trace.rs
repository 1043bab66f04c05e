//! Trace context across the log without the store knowing OpenTelemetry: the binary
//! installs two hooks — `inject` (the current span's W3C context, empty when not sampled)
//! and `adopt` (make a span the child of a carried context). Writes carry the context of
//! the span they were proposed in; every master's apply of such a command is a span in
//! that trace. Without hooks (tests, or tracing off) nothing is carried and no apply span
//! is made.

use std::sync::OnceLock;

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
