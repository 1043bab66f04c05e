//! Versions served from another version's storage: autoscaling/v1 HorizontalPodAutoscalers
//! are stored as autoscaling/v2, events.k8s.io/v1 Events as core/v1 Events (Kubernetes'
//! storage versions). The request path works on the stored form: a body is converted
//! once on the way in, every object once on the way out.

mod event;
mod hpa;

pub use hpa::drop_round_trip_annotations;

use serde_json::Value;

/// How one served version maps to and from its storage version.
#[derive(Debug, Clone, Copy)]
pub struct Conversion {
    /// Stored form → this version (never fails: the served version can say everything the
    /// stored one can, through annotations where it must).
    pub from_storage: fn(Value) -> Value,
    /// This version → stored form; an error says which field does not convert.
    pub to_storage: fn(Value) -> Result<Value, String>,
    /// The stored form's type check (what the conversion produced must decode as the
    /// storage version's type).
    pub storage_check: Option<crate::resources::TypeCheck>,
}

pub const HPA_V1: Conversion = Conversion { from_storage: hpa::to_v1, to_storage: hpa::from_v1, storage_check: None };
pub const EVENTS_V1: Conversion =
    Conversion { from_storage: event::to_events_v1, to_storage: event::from_events_v1, storage_check: None };

/// `obj[field]`, taken out of an object.
fn take(obj: &mut Value, field: &str) -> Option<Value> {
    obj.as_object_mut().and_then(|m| m.remove(field))
}

/// Insert `v` under `field` unless it is `None` or JSON null.
fn put(obj: &mut serde_json::Map<String, Value>, field: &str, v: Option<Value>) {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        obj.insert(field.to_string(), v);
    }
}
