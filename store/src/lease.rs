//! The lessor: lease deadlines, kept only on the leader. Lease grants and revocations are
//! replicated; deadlines are not — a master that becomes leader gives every lease a full
//! TTL again (etcd's "promote" behaviour) instead of expiring leases whose keep-alives
//! went to the old leader. Expired leases are revoked through Raft by the leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sm::apply::LeaseChange;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    expires: Instant,
    /// Set once a revoke has been proposed, so it is not proposed again at once.
    revoking_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    primary: bool,
    deadlines: HashMap<i64, Deadline>,
}

/// Why a lease operation could not be served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LessorError {
    NotPrimary,
    NotFound,
}

/// Lease deadlines of the leader.
#[derive(Debug, Default)]
pub struct Lessor {
    state: Mutex<State>,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// This master became leader: every existing lease gets a full TTL from now.
    pub fn promote(&self, leases: &BTreeMap<i64, i64>) {
        let mut st = self.lock();
        st.primary = true;
        let now = Instant::now();
        st.deadlines = leases
            .iter()
            .map(|(&id, &ttl)| (id, Deadline { ttl, expires: now + secs(ttl), revoking_since: None }))
            .collect();
    }

    pub fn demote(&self) {
        let mut st = self.lock();
        st.primary = false;
        st.deadlines.clear();
    }

    /// A snapshot replaced the lease table.
    pub fn reload(&self, leases: &BTreeMap<i64, i64>) {
        if self.is_primary() {
            self.promote(leases);
        }
    }

    pub(crate) fn on_applied(&self, changes: &[LeaseChange]) {
        let mut st = self.lock();
        if !st.primary {
            return;
        }
        let now = Instant::now();
        for c in changes {
            match *c {
                LeaseChange::Granted { id, ttl } => {
                    st.deadlines.insert(id, Deadline { ttl, expires: now + secs(ttl), revoking_since: None });
                }
                LeaseChange::Revoked { id } => {
                    st.deadlines.remove(&id);
                }
            }
        }
    }

    /// Keep-alive: a full TTL from now; returns the TTL.
    pub fn renew(&self, id: i64) -> Result<i64, LessorError> {
        let mut st = self.lock();
        if !st.primary {
            return Err(LessorError::NotPrimary);
        }
        let d = st.deadlines.get_mut(&id).ok_or(LessorError::NotFound)?;
        if d.revoking_since.is_some() {
            // Already expired and being revoked: too late to renew (as etcd).
            return Err(LessorError::NotFound);
        }
        d.expires = Instant::now() + secs(d.ttl);
        Ok(d.ttl)
    }

    /// Remaining seconds (rounded up) and granted TTL.
    pub fn remaining(&self, id: i64) -> Result<(i64, i64), LessorError> {
        let st = self.lock();
        if !st.primary {
            return Err(LessorError::NotPrimary);
        }
        let d = st.deadlines.get(&id).ok_or(LessorError::NotFound)?;
        let left = d.expires.saturating_duration_since(Instant::now());
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Ok((secs, d.ttl))
    }

    /// Leases past their deadline that need a revoke proposed (re-offered after `retry`).
    pub fn take_expired(&self, retry: Duration) -> Vec<i64> {
        let mut st = self.lock();
        if !st.primary {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, d) in st.deadlines.iter_mut() {
            let due = d.expires <= now && d.revoking_since.is_none_or(|t| now.duration_since(t) >= retry);
            if due {
                d.revoking_since = Some(now);
                out.push(*id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_gives_full_ttl_and_only_primary_answers() {
        let l = Lessor::new();
        assert_eq!(l.renew(1), Err(LessorError::NotPrimary));
        let mut leases = BTreeMap::new();
        leases.insert(1, 30);
        l.promote(&leases);
        let (left, ttl) = l.remaining(1).unwrap();
        assert_eq!(ttl, 30);
        assert!(left >= 29 && left <= 30, "{left}");
        assert_eq!(l.renew(2), Err(LessorError::NotFound));
        assert!(l.take_expired(Duration::from_secs(1)).is_empty());
        l.on_applied(&[LeaseChange::Granted { id: 2, ttl: 0 }]);
        assert_eq!(l.take_expired(Duration::from_secs(60)), vec![2]);
        assert!(l.take_expired(Duration::from_secs(60)).is_empty(), "not re-offered before retry");
        l.demote();
        assert_eq!(l.remaining(1), Err(LessorError::NotPrimary));
    }
}
