//! Records operations as they are invoked and completed, on the run's shared clock.

use std::sync::{Arc, Mutex};

use crate::history::{Clock, Op, OpKind, Outcome, Stamp};

/// Shared by every client of a run; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    clock: Clock,
    ops: Arc<Mutex<Vec<Op>>>,
}

/// An invoked operation that has not completed yet. Dropping it without `finish` records
/// it as never completed (the run ended with it outstanding): a write stays "maybe".
pub struct Pending {
    recorder: Recorder,
    op: Option<Op>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Recorder {
        Recorder { clock, ops: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn now(&self) -> Stamp {
        self.clock.now()
    }

    pub fn invoke(&self, client: u32, master: Option<usize>, kind: OpKind) -> Pending {
        let op = Op {
            client,
            master,
            kind,
            invoke: self.clock.now(),
            complete: None,
            outcome: Outcome::Unknown { error: "still outstanding when the run ended".into() },
        };
        Pending { recorder: self.clone(), op: Some(op) }
    }

    /// Every operation recorded so far, in completion order.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn push(&self, op: Op) {
        if let Ok(mut v) = self.ops.lock() {
            v.push(op);
        }
    }
}

impl Pending {
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(mut op) = self.op.take() {
            op.complete = Some(self.recorder.clock.now());
            op.outcome = outcome;
            self.recorder.push(op);
        }
    }

    pub fn kind(&self) -> Option<&OpKind> {
        self.op.as_ref().map(|o| &o.kind)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            self.recorder.push(op);
        }
    }
}
