//! The provisioner's loop: reflectors over claims, volumes and classes; once all three are
//! listed, a pass over every claim and every volume of this node after each burst of
//! changes, whenever a failed step is due again, and every [`RESYNC`]. Each pass decides
//! from the objects alone ([`super::volume`]) and takes the next step, so it is idempotent
//! and picks up where a restart left off.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::volume::{self, ClaimAction, VolumeAction};
use super::{class, StorageConfig, StorageError, PROVISIONER};
use crate::reflect::reflect;
use crate::simulate::retry::{is_conflict, is_not_found, key_backoff, sleep_or_stop, Backoff};

/// A full pass at least this often (retries missed events, finds orphaned directories).
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a burst of changes is gathered before a pass.
const SETTLE: Duration = Duration::from_millis(50);
/// How long an object we wrote is skipped while the watch has not shown our write yet.
const WRITE_LAG: Duration = Duration::from_secs(10);
/// A directory with no volume is removed (if empty) once it is this old.
const ORPHAN_AGE: Duration = Duration::from_secs(60);

/// A step that did not succeed: retried with backoff; `quiet` ones (a stale object, pods
/// still using a volume) are not warned about.
struct StepError {
    message: String,
    quiet: bool,
}

impl From<kube::Error> for StepError {
    fn from(e: kube::Error) -> StepError {
        StepError { quiet: is_conflict(&e), message: e.to_string() }
    }
}

fn step_error(message: impl Into<String>) -> StepError {
    StepError { message: message.into(), quiet: false }
}

pub(super) async fn run(client: kube::Client, cfg: StorageConfig, stop: CancellationToken) -> Result<(), StorageError> {
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| StorageError::Setup(format!("creating {}: {e}", cfg.dir.display())))?;
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    const NAME: &str = "local-path provisioner";
    let claims = reflect::<PersistentVolumeClaim>(&mut tasks, Api::all(client.clone()), &changed, |_| {}, NAME);
    let volumes = reflect::<PersistentVolume>(&mut tasks, Api::all(client.clone()), &changed, |_| {}, NAME);
    let classes = reflect::<StorageClass>(&mut tasks, Api::all(client.clone()), &changed, |_| {}, NAME);
    tasks.spawn(ensure_class(client.clone(), stop.clone()));
    let synced = async {
        let _ = claims.wait_until_ready().await;
        let _ = volumes.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => {
            tasks.abort_all();
            return Ok(());
        }
    }
    info!(node = %cfg.node_name, dir = %cfg.dir.display(), "local-path provisioner: claims, volumes and classes listed");
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: PROVISIONER.into(), instance: Some(format!("{PROVISIONER}-{}", cfg.node_name)) },
    );
    let mut p = Provisioner {
        client,
        cfg,
        claims,
        volumes,
        classes,
        recorder,
        written: HashMap::new(),
        retries: HashMap::new(),
        told: HashSet::new(),
    };
    let mut next_resync = Instant::now();
    loop {
        let full = Instant::now() >= next_resync;
        if full {
            next_resync = Instant::now() + RESYNC;
        }
        let retry_at = p.pass(full).await;
        let wake = retry_at.map_or(next_resync, |r| r.min(next_resync));
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
            () = stop.cancelled() => break,
        }
        if !sleep_or_stop(&stop, SETTLE).await {
            break;
        }
    }
    tasks.abort_all();
    Ok(())
}

/// Make sure the `local-path` class exists, retrying until it does (or `stop`).
async fn ensure_class(client: kube::Client, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match class::ensure(&client).await {
            Ok(true) => info!(class = super::LOCAL_PATH_CLASS, "StorageClass created"),
            Ok(false) => debug!(class = super::LOCAL_PATH_CLASS, "StorageClass exists"),
            Err(e) => {
                let hint = if is_not_found(&e) {
                    " (does the API server serve storage.k8s.io/v1 storageclasses?)"
                } else {
                    ""
                };
                warn!(error = %e, "ensuring the local-path StorageClass failed{hint}; retrying");
                if sleep_or_stop(&stop, backoff.next_delay()).await {
                    continue;
                }
            }
        }
        return;
    }
}

struct Provisioner {
    client: kube::Client,
    cfg: StorageConfig,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    recorder: Recorder,
    /// Objects this provisioner wrote, by key: the resourceVersion they had before, until
    /// the watch shows them changed (acting on the older version would only conflict).
    written: HashMap<String, (String, Instant)>,
    /// Keys whose last step failed: attempts, and when to try again.
    retries: HashMap<String, (u32, Instant)>,
    /// What was said once already (claim UID and message).
    told: HashSet<String>,
}

impl Provisioner {
    /// One pass over every claim and every volume of this node. Returns when the earliest
    /// failed step is due again.
    async fn pass(&mut self, full: bool) -> Option<Instant> {
        let classes = self.classes.state();
        let class_of = |n: &str| classes.iter().find(|c| c.metadata.name.as_deref() == Some(n)).map(AsRef::as_ref);
        let default = volume::default_class(classes.iter().map(AsRef::as_ref));
        let volumes: HashMap<String, Arc<PersistentVolume>> =
            self.volumes.state().into_iter().map(|v| (v.name_any(), v)).collect();
        let claims = self.claims.state();
        let node = self.cfg.node_name.clone();
        for claim in &claims {
            let key = format!("claim/{}", volume::claim_key(claim));
            if self.skip(&key, claim.resource_version().as_deref()) {
                continue;
            }
            let pv = volumes.get(&volume::volume_name(claim)).map(AsRef::as_ref);
            let action = volume::claim_action(claim, &node, class_of, default, pv);
            let result = match action {
                ClaimAction::None => Ok(()),
                ClaimAction::SetClass(name) => self.set_class(claim, &name, &key).await,
                ClaimAction::Provision => match volume::claim_class(claim).and_then(class_of) {
                    Some(class) => self.provision(claim, class).await,
                    None => Ok(()),
                },
                ClaimAction::Bind => match pv {
                    Some(pv) => self.bind(claim, pv).await,
                    None => Ok(()),
                },
                ClaimAction::NoNodeSelected => {
                    if self.tell_once(claim, "immediate") {
                        info!(
                            claim = %volume::claim_key(claim),
                            "claim of an Immediate class with no selected node: left alone (this provisioner makes \
                             volumes on the node a pod is scheduled to; use a WaitForFirstConsumer class)"
                        );
                    }
                    Ok(())
                }
                ClaimAction::Fail(why) => {
                    if self.tell_once(claim, &why) {
                        warn!(claim = %volume::claim_key(claim), reason = %why, "cannot provision");
                        self.event(claim, EventType::Warning, "ProvisioningFailed", &why).await;
                    }
                    Ok(())
                }
            };
            self.record(&key, result);
        }
        let by_key: HashMap<String, &Arc<PersistentVolumeClaim>> =
            claims.iter().map(|c| (volume::claim_key(c), c)).collect();
        for pv in volumes.values().filter(|v| volume::is_ours(v, &node)) {
            let key = format!("volume/{}", pv.name_any());
            if self.skip(&key, pv.resource_version().as_deref()) {
                continue;
            }
            let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()).unwrap_or_default();
            let ref_key = format!(
                "{}/{}",
                claim_ref.namespace.as_deref().unwrap_or_default(),
                claim_ref.name.as_deref().unwrap_or_default()
            );
            let claim_exists = by_key.get(&ref_key).is_some_and(|c| c.metadata.uid == claim_ref.uid);
            let result = match volume::volume_action(pv, claim_exists, &self.cfg.dir) {
                VolumeAction::None => Ok(()),
                VolumeAction::Release => self.release(pv, &claim_ref, &key).await,
                VolumeAction::Delete(path) => self.delete(pv, &claim_ref, &path).await,
                VolumeAction::Foreign(why) => {
                    if self.told.insert(format!("{key}:{why}")) {
                        warn!(volume = %pv.name_any(), "{why}");
                    }
                    Ok(())
                }
            };
            self.record(&key, result);
        }
        if full {
            self.remove_orphans(&volumes).await;
        }
        let now = Instant::now();
        self.written.retain(|_, (_, at)| now.duration_since(*at) < WRITE_LAG);
        self.retries.values().map(|(_, at)| *at).min()
    }

    /// Whether to leave `key` alone this pass: its last step failed and is not due yet, or
    /// we wrote it and the watch still shows the version before our write.
    fn skip(&mut self, key: &str, rv: Option<&str>) -> bool {
        if self.retries.get(key).is_some_and(|(_, at)| Instant::now() < *at) {
            return true;
        }
        match self.written.get(key) {
            Some((before, at)) if Some(before.as_str()) == rv && at.elapsed() < WRITE_LAG => true,
            Some(_) => {
                self.written.remove(key);
                false
            }
            None => false,
        }
    }

    fn wrote(&mut self, key: &str, before: Option<String>) {
        if let Some(rv) = before {
            self.written.insert(key.to_string(), (rv, Instant::now()));
        }
    }

    fn record(&mut self, key: &str, result: Result<(), StepError>) {
        match result {
            Ok(()) => {
                self.retries.remove(key);
            }
            Err(e) => {
                let n = self.retries.get(key).map_or(1, |(n, _)| n + 1);
                let delay = key_backoff(n).max(Duration::from_secs(1));
                if e.quiet {
                    debug!(key, error = %e.message, retry_in = ?delay, "local-path: step not done; retrying");
                } else {
                    warn!(key, error = %e.message, retry_in = ?delay, "local-path: step failed; retrying");
                }
                self.retries.insert(key.to_string(), (n, Instant::now() + delay));
            }
        }
    }

    fn tell_once(&mut self, claim: &PersistentVolumeClaim, what: &str) -> bool {
        self.told.insert(format!("{}:{what}", claim.metadata.uid.as_deref().unwrap_or_default()))
    }

    async fn event(&self, claim: &PersistentVolumeClaim, type_: EventType, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Provisioning".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            debug!(error = %e, reason, "event not recorded");
        }
    }

    fn claims_api(&self, claim: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), claim.metadata.namespace.as_deref().unwrap_or_default())
    }

    /// Give a claim without a class the default one.
    async fn set_class(&mut self, claim: &PersistentVolumeClaim, class: &str, key: &str) -> Result<(), StepError> {
        let patch = json!({
            "metadata": { "resourceVersion": claim.metadata.resource_version },
            "spec": { "storageClassName": class },
        });
        self.claims_api(claim).patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.wrote(key, claim.resource_version());
        info!(claim = %volume::claim_key(claim), class, "claim without a class: default class set");
        Ok(())
    }

    /// Make the claim's directory and volume on this node, then bind them.
    async fn provision(&mut self, claim: &PersistentVolumeClaim, class: &StorageClass) -> Result<(), StepError> {
        let name = volume::volume_name(claim);
        let path = self.cfg.dir.join(&name);
        let dir = path.clone();
        tokio::task::spawn_blocking(move || make_dir(&dir))
            .await
            .map_err(|e| step_error(e.to_string()))?
            .map_err(step_error)?;
        let want = volume::new_volume(claim, class, &self.cfg.node_name, &path);
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = match api.create(&PostParams::default(), &want).await {
            Ok(pv) => {
                info!(claim = %volume::claim_key(claim), volume = %name, path = %path.display(), "volume provisioned");
                let note =
                    format!("Successfully provisioned volume {name} at {}:{}", self.cfg.node_name, path.display());
                self.event(claim, EventType::Normal, "ProvisioningSucceeded", &note).await;
                pv
            }
            Err(e) if is_conflict(&e) => api.get(&name).await?,
            Err(e) => return Err(e.into()),
        };
        if !volume::is_ours(&pv, &self.cfg.node_name) {
            return Err(step_error(format!("volume {name} exists and is not this node's")));
        }
        self.bind(claim, &pv).await
    }

    /// Bind the claim and its volume: the volume says Bound, the claim names it, the
    /// claim says Bound (each step only if not done yet).
    async fn bind(&mut self, claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Result<(), StepError> {
        let pv_name = pv.name_any();
        if !volume::claims(pv, claim) {
            return Err(step_error(format!("volume {pv_name} is not this claim's")));
        }
        let claim_key = format!("claim/{}", volume::claim_key(claim));
        let params = PatchParams::default();
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            api.patch_status(&pv_name, &params, &Patch::Merge(&json!({ "status": { "phase": "Bound" } }))).await?;
            self.wrote(&format!("volume/{pv_name}"), pv.resource_version());
        }
        let api = self.claims_api(claim);
        let mut claim = claim.clone();
        if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or_default().is_empty() {
            let before = claim.resource_version();
            claim = api.patch(&claim.name_any(), &params, &Patch::Merge(&volume::bind_patch(&claim, &pv_name))).await?;
            self.wrote(&claim_key, before);
        }
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            api.patch_status(&claim.name_any(), &params, &Patch::Merge(&volume::bound_status(pv))).await?;
            self.wrote(&claim_key, claim.resource_version());
            info!(claim = %volume::claim_key(&claim), volume = %pv_name, "claim bound");
        }
        Ok(())
    }

    /// The claim of one of our volumes is gone: the volume is Released (after asking the
    /// API server, not only the cache, whether the claim is really gone).
    async fn release(
        &mut self,
        pv: &PersistentVolume,
        claim_ref: &ObjectReference,
        key: &str,
    ) -> Result<(), StepError> {
        let ns = claim_ref.namespace.as_deref().unwrap_or_default();
        let name = claim_ref.name.as_deref().unwrap_or_default();
        if !ns.is_empty() && !name.is_empty() {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            if let Some(c) = api.get_opt(name).await? {
                if c.metadata.uid == claim_ref.uid {
                    return Err(StepError { message: format!("claim {ns}/{name} still exists"), quiet: true });
                }
            }
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let status = json!({ "status": { "phase": "Released", "message": format!("claim {ns}/{name} is gone") } });
        api.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        self.wrote(key, pv.resource_version());
        info!(volume = %pv.name_any(), claim = %format!("{ns}/{name}"), "volume released");
        Ok(())
    }

    /// Reclaim a Released volume (policy Delete): once no pod on this node still uses its
    /// claim, remove its directory, then the volume.
    async fn delete(
        &mut self,
        pv: &PersistentVolume,
        claim_ref: &ObjectReference,
        path: &Path,
    ) -> Result<(), StepError> {
        let ns = claim_ref.namespace.as_deref().unwrap_or_default();
        let claim = claim_ref.name.as_deref().unwrap_or_default();
        if !ns.is_empty() {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.cfg.node_name));
            let using: Vec<String> = pods
                .list(&lp)
                .await?
                .items
                .iter()
                .filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
                .filter(|p| uses_claim(p, claim))
                .map(ResourceExt::name_any)
                .collect();
            if !using.is_empty() {
                return Err(StepError {
                    message: format!("volume {} is still used by pods {using:?}", pv.name_any()),
                    quiet: true,
                });
            }
        }
        let dir = path.to_path_buf();
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {}: {e}", dir.display())),
            _ => Ok(()),
        })
        .await
        .map_err(|e| step_error(e.to_string()))?
        .map_err(step_error)?;
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: pv.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&pv.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        info!(volume = %pv.name_any(), path = %path.display(), "volume deleted with its directory");
        Ok(())
    }

    /// Directories of volumes that do not exist (a provisioning interrupted before its
    /// volume was made, and abandoned): removed when empty and old, reported otherwise.
    async fn remove_orphans(&mut self, volumes: &HashMap<String, Arc<PersistentVolume>>) {
        let Ok(entries) = std::fs::read_dir(&self.cfg.dir) else { return };
        let claimed: HashSet<String> = self.claims.state().iter().map(|c| volume::volume_name(c)).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("pvc-") || volumes.contains_key(&name) || claimed.contains(&name) {
                continue;
            }
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if old.is_none_or(|age| age < ORPHAN_AGE) {
                continue;
            }
            let path = e.path();
            match std::fs::remove_dir(&path) {
                Ok(()) => info!(path = %path.display(), "removed the empty directory of a volume that was never made"),
                Err(err) => {
                    if self.told.insert(format!("orphan:{name}")) {
                        warn!(path = %path.display(), error = %err, "a directory of no volume is left alone");
                    }
                }
            }
        }
    }
}

/// `mkdir -m 0777 -p` (containers may run as any user), like local-path-provisioner.
fn make_dir(path: &PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Whether one of the pod's volumes is the claim.
fn uses_claim(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_use_claims_by_name() {
        let p: Pod = serde_json::from_value(json!({"spec": {"containers": [],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}, {"name": "e", "emptyDir": {}}]}}))
        .unwrap();
        assert!(uses_claim(&p, "data") && !uses_claim(&p, "other"));
    }

    #[test]
    fn directories_are_made_for_anyone_to_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/pvc-1");
        make_dir(&p).unwrap();
        make_dir(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o777);
    }
}
