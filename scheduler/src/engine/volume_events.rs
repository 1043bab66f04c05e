//! Applying PersistentVolumeClaim, PersistentVolume and StorageClass watch events to the
//! snapshot's [`crate::volumes::VolumeCache`]. Any change may make a pod with claims
//! schedulable (a claim created or bound, a volume made, a class added), so each is a
//! cluster event for the queue.
//!
//! These watches do not hold up scheduling as a whole (an API server without
//! `storage.k8s.io` must not stop pods without volumes from being placed): until all three
//! have listed, pods with claims wait quietly in the queue.

use std::time::Instant;

use super::{watch_events::relist_step, Relist, Scheduler};
use crate::{
    informer::Change,
    volumes::{ClaimData, ClassData, VolumeData},
};

/// How often (at most) the scheduler says it is still waiting for the volume watches.
const WAITING_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The relists of the three volume watches.
#[derive(Default)]
pub(super) struct VolumeRelists {
    pub(super) claims: Relist,
    pub(super) volumes: Relist,
    pub(super) classes: Relist,
    /// When the scheduler last said pods wait for these watches.
    pub(super) last_waiting_log: Option<Instant>,
}

impl VolumeRelists {
    pub(super) fn synced(&self) -> bool {
        self.claims.synced && self.volumes.synced && self.classes.synced
    }
}

/// The keys in `known` a finished relist did not see (and the relist marked synced).
fn stale(relist: &mut Relist, known: Vec<String>) -> Vec<String> {
    relist.synced = true;
    let Some(seen) = relist.seen.take() else { return Vec::new() };
    known.into_iter().filter(|k| !seen.contains(k)).collect()
}

impl Scheduler {
    fn volume_change(&mut self, changed: bool, was_synced: bool, now: Instant) {
        if changed || (!was_synced && self.volume_relists.synced()) {
            self.queue.cluster_event(now);
        }
    }

    pub(super) fn on_claim(&mut self, change: Change<ClaimData>, now: Instant) {
        let was_synced = self.volume_relists.synced();
        let (obj, done) = relist_step(&mut self.volume_relists.claims, change, |c: &ClaimData| c.key.clone());
        let vols = &mut self.snapshot.volumes;
        let mut changed = match obj {
            Some((c, true)) => vols.remove_claim(&c.key),
            Some((c, false)) => vols.upsert_claim(c),
            None => false,
        };
        if done {
            let keys = vols.claim_keys();
            for key in stale(&mut self.volume_relists.claims, keys) {
                changed |= self.snapshot.volumes.remove_claim(&key);
            }
        }
        self.volume_change(changed, was_synced, now);
    }

    pub(super) fn on_volume(&mut self, change: Change<VolumeData>, now: Instant) {
        let was_synced = self.volume_relists.synced();
        let (obj, done) = relist_step(&mut self.volume_relists.volumes, change, |v: &VolumeData| v.name.clone());
        let vols = &mut self.snapshot.volumes;
        let mut changed = match obj {
            Some((v, true)) => vols.remove_volume(&v.name),
            Some((v, false)) => vols.upsert_volume(v),
            None => false,
        };
        if done {
            let names = vols.volume_names();
            for name in stale(&mut self.volume_relists.volumes, names) {
                changed |= self.snapshot.volumes.remove_volume(&name);
            }
        }
        self.volume_change(changed, was_synced, now);
    }

    pub(super) fn on_class(&mut self, change: Change<ClassData>, now: Instant) {
        let was_synced = self.volume_relists.synced();
        let (obj, done) = relist_step(&mut self.volume_relists.classes, change, |c: &ClassData| c.name.clone());
        let vols = &mut self.snapshot.volumes;
        let mut changed = match obj {
            Some((c, true)) => vols.remove_class(&c.name),
            Some((c, false)) => vols.upsert_class(c),
            None => false,
        };
        if done {
            let names = vols.class_names();
            for name in stale(&mut self.volume_relists.classes, names) {
                changed |= self.snapshot.volumes.remove_class(&name);
            }
        }
        self.volume_change(changed, was_synced, now);
    }

    /// Whether a pod with claims must wait for the volume watches to list first (then it
    /// is put back to wait out a backoff, without any report).
    pub(super) fn waits_for_volume_watches(&mut self, now: Instant) -> bool {
        if self.volume_relists.synced() {
            return false;
        }
        let quiet = self.volume_relists.last_waiting_log.is_some_and(|t| now.duration_since(t) < WAITING_LOG_EVERY);
        if !quiet {
            self.volume_relists.last_waiting_log = Some(now);
            tracing::warn!(
                claims = self.volume_relists.claims.synced,
                volumes = self.volume_relists.volumes.synced,
                classes = self.volume_relists.classes.synced,
                "pods with PersistentVolumeClaims wait until persistentvolumeclaims, persistentvolumes \
                 and storageclasses (storage.k8s.io/v1) are listed"
            );
        }
        true
    }
}
