//! Events expire: each stored Event is attached to a store lease, so the store deletes it
//! (with a DELETE watch event) once the TTL passes. Like Kubernetes' lease manager, one
//! lease is shared by the events of a short window, and that window is added to its TTL so
//! no event lives less than the TTL.

use std::time::{Duration, Instant};

use keelson_store::Store;
use tokio::sync::Mutex;

use crate::status::ApiError;

pub struct EventLeases {
    ttl: Duration,
    current: Mutex<Option<(i64, Instant)>>,
}

impl EventLeases {
    pub fn new(ttl: Duration) -> EventLeases {
        EventLeases { ttl, current: Mutex::new(None) }
    }

    /// How long a lease is reused: a tenth of the TTL, at most a minute.
    fn window(&self) -> Duration {
        (self.ttl / 10).min(Duration::from_secs(60))
    }

    /// The lease to attach to an event written now.
    pub async fn lease(&self, store: &Store) -> Result<i64, ApiError> {
        let mut cur = self.current.lock().await;
        if let Some((id, granted)) = *cur {
            if granted.elapsed() < self.window() {
                return Ok(id);
            }
        }
        let ttl = (self.ttl + self.window()).as_secs_f64().ceil().max(1.0) as i64;
        let (id, _, _) = store.lease_grant(ttl, 0).await?;
        *cur = Some((id, Instant::now()));
        Ok(id)
    }

    /// Forget the cached lease (after the store refused it, e.g. it expired early).
    pub async fn reset(&self) {
        *self.current.lock().await = None;
    }
}

/// Whether objects of this kind expire (core and events.k8s.io Events).
pub fn expires(group: &str, kind: &str) -> bool {
    kind == "Event" && (group.is_empty() || group == "events.k8s.io")
}
