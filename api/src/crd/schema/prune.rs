//! Pruning: removal of fields the schema does not specify.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::sch::{sch, Additional, Sch};
use super::values::drop_deep;
use super::{child, is_meta_field, EMBEDDED, MAX_DEPTH, PRESERVE};

/// Remove fields the schema does not specify (unless
/// x-kubernetes-preserve-unknown-fields: true at that node, or
/// x-kubernetes-embedded-resource where apiVersion/kind/metadata are kept),
/// returning the JSON paths of what was pruned, like "spec.foo" or
/// "spec.items[2].bar". The root's apiVersion, kind and metadata are never
/// pruned (metadata is checked elsewhere).
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut p = Pruner::default();
    p.node(obj, sch(schema), true, 0);
    for dead in p.graveyard.drain(..) {
        drop_deep(dead);
    }
    p.pruned
}

#[derive(Default)]
pub(super) struct Pruner {
    path: String,
    pub(super) pruned: Vec<String>,
    pub(super) graveyard: Vec<Value>,
}

impl Pruner {
    fn record(&mut self, k: &str) {
        self.pruned.push(child(&self.path, k));
    }

    fn enter_key(&mut self, k: &str) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(k);
        len
    }

    fn enter_index(&mut self, i: usize) -> usize {
        let len = self.path.len();
        let _ = write!(self.path, "[{i}]");
        len
    }

    /// Prunes `x` against `s`; `resource_root` makes the node behave as an
    /// embedded resource (apiVersion, kind and metadata are kept).
    pub(super) fn node(&mut self, x: &mut Value, s: Option<Sch<'_>>, resource_root: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(s) = s else {
            if resource_root {
                if let Value::Object(m) = x {
                    self.retain_meta_only(m);
                }
            } else {
                self.prune_all(x);
            }
            return;
        };
        if s.flag(PRESERVE) {
            self.skip(x, s, resource_root, depth);
            return;
        }
        match x {
            Value::Object(m) => {
                let meta = resource_root || s.flag(EMBEDDED);
                m.retain(|k, v| {
                    if meta && is_meta_field(k) {
                        return true;
                    }
                    let sub = member(s, k);
                    match sub {
                        None => {
                            self.record(k);
                            self.graveyard.push(std::mem::take(v));
                            false
                        }
                        Some(child_schema) => {
                            let len = self.enter_key(k);
                            self.node(v, child_schema, false, depth + 1);
                            self.path.truncate(len);
                            true
                        }
                    }
                });
            }
            Value::Array(a) => {
                let items = s.items();
                for (i, v) in a.iter_mut().enumerate() {
                    let len = self.enter_index(i);
                    self.node(v, items, false, depth + 1);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn retain_meta_only(&mut self, m: &mut Map<String, Value>) {
        m.retain(|k, v| {
            if is_meta_field(k) {
                return true;
            }
            self.record(k);
            self.graveyard.push(std::mem::take(v));
            false
        });
    }

    /// Pruning under x-kubernetes-preserve-unknown-fields: unknown fields are
    /// kept, specified ones are pruned by their schema.
    fn skip(&mut self, x: &mut Value, s: Sch<'_>, resource_root: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match x {
            Value::Object(m) => {
                let meta = resource_root || s.flag(EMBEDDED);
                for (k, v) in m.iter_mut() {
                    if meta && is_meta_field(k) {
                        continue;
                    }
                    let sub = member(s, k);
                    if let Some(child_schema) = sub {
                        let len = self.enter_key(k);
                        self.node(v, child_schema, false, depth + 1);
                        self.path.truncate(len);
                    }
                }
            }
            Value::Array(a) => {
                if let Some(items) = s.items() {
                    for (i, v) in a.iter_mut().enumerate() {
                        let len = self.enter_index(i);
                        self.skip(v, items, false, depth + 1);
                        self.path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    /// Pruning without a schema: every object field is removed, arrays are
    /// descended into. Iterative, because arrays may nest arbitrarily deep.
    fn prune_all(&mut self, x: &mut Value) {
        let base = self.path.len();
        let mut stack: Vec<(&mut Value, usize, Option<usize>)> = vec![(x, base, None)];
        while let Some((v, parent_len, idx)) = stack.pop() {
            self.path.truncate(parent_len);
            if let Some(i) = idx {
                let _ = write!(self.path, "[{i}]");
            }
            match v {
                Value::Object(m) => {
                    let taken = std::mem::take(m);
                    for (k, dead) in taken {
                        self.record(&k);
                        self.graveyard.push(dead);
                    }
                }
                Value::Array(a) => {
                    let len = self.path.len();
                    for (i, c) in a.iter_mut().enumerate().rev() {
                        stack.push((c, len, Some(i)));
                    }
                }
                _ => {}
            }
        }
        self.path.truncate(base);
    }
}

/// The schema of an object's member `k`: `None` when the schema does not allow it,
/// `Some(None)` when it is allowed without a schema (`additionalProperties: true`).
fn member<'a>(s: Sch<'a>, k: &str) -> Option<Option<Sch<'a>>> {
    match s.props().and_then(|p| p.get(k)) {
        Some(pv) => Some(sch(pv)),
        None => match s.additional() {
            Additional::Absent => None,
            Additional::Bool(_) => Some(None),
            Additional::Schema(a) => Some(Some(a)),
        },
    }
}
