//! A pod's volumes on this node, under `<pod dir>/volumes/<name>`: emptyDir (a tmpfs for
//! medium Memory), hostPath, configMap, secret, downwardAPI and projected (configMap,
//! secret, downwardAPI, serviceAccountToken from TokenRequest). Content volumes are
//! (re)written before each container start; containers bind-mount them by volumeMounts.
//!
//! persistentVolumeClaim (and generic ephemeral) volumes are resolved once, before the
//! pod's sandbox, as upstream's volume manager mounts volumes before anything runs: the
//! pod waits (ContainerCreating, saying why) until each claim is Bound, then uses its
//! volume's directory (`local` or `hostPath`, which must be usable from this node). The
//! resolution is kept in `<pod dir>/claims.json`, so the pod keeps its volumes across an
//! agent restart whatever happens to the claims meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

/// File contents by relative path, with their mode.
type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

fn safe_rel(p: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if p.is_empty() || path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("path {p:?} must be relative and may not contain '..'"));
    }
    Ok(path)
}

fn add_items(
    files: &mut Files,
    data: &BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    mode: u32,
    what: &str,
    optional: bool,
) -> Result<(), String> {
    match items {
        None => {
            for (k, v) in data {
                files.insert(safe_rel(k)?, (v.clone(), mode));
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        let m = it.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(mode);
                        files.insert(safe_rel(&it.path)?, (v.clone(), m));
                    }
                    None if optional => {}
                    None => return Err(format!("{what} has no key {:?}", it.key)),
                }
            }
        }
    }
    Ok(())
}

/// A ConfigMap's data and binaryData (None: it does not exist).
pub(super) async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = api.get_opt(name).await.map_err(|e| format!("configmap {name:?}: {e}"))?;
    Ok(cm.map(|cm| {
        let mut d: BTreeMap<String, Vec<u8>> =
            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        d
    }))
}

/// A Secret's data and stringData (None: it does not exist).
pub(super) async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api.get_opt(name).await.map_err(|e| format!("secret {name:?}: {e}"))?;
    Ok(s.map(|s| {
        let mut d: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        d.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        d
    }))
}

/// A downwardAPI item's value (fieldRef / resourceFieldRef).
fn downward(
    pod: &Pod,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<u8>, String> {
    if let Some(f) = &item.field_ref {
        let v = match f.field_path.as_str() {
            "metadata.labels" | "metadata.annotations" => {
                let m =
                    if f.field_path == "metadata.labels" { &pod.metadata.labels } else { &pod.metadata.annotations };
                m.clone().unwrap_or_default().iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
            }
            _ => {
                let c = Container {
                    env: Some(vec![serde_json::from_value(
                        serde_json::json!({ "name": "V", "valueFrom": { "fieldRef": { "fieldPath": f.field_path } } }),
                    )
                    .map_err(|e| e.to_string())?]),
                    ..Default::default()
                };
                let env = super::spec::env(pod, &c, &[], &Default::default(), pod_ip, host_ip)?;
                env.first().and_then(|kv| kv.split_once('=')).map(|(_, v)| v.to_string()).unwrap_or_default()
            }
        };
        return Ok(v.into_bytes());
    }
    if let Some(r) = &item.resource_field_ref {
        let name = r.container_name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let c = spec.containers.iter().find(|c| c.name == name).cloned().unwrap_or_default();
        let probe = Container {
            resources: c.resources.clone(),
            env: Some(vec![serde_json::from_value(serde_json::json!({ "name": "V", "valueFrom": { "resourceFieldRef": { "resource": r.resource, "divisor": r.divisor } } })).map_err(|e| e.to_string())?]),
            ..Default::default()
        };
        let env = super::spec::env(pod, &probe, &[], &Default::default(), pod_ip, host_ip)?;
        return Ok(env
            .first()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
            .into_bytes());
    }
    Ok(Vec::new())
}

/// A ServiceAccount token for the pod (bound to it), from TokenRequest.
async fn token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<Vec<u8>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let tr: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": { "apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid },
        },
    }))
    .map_err(|e| e.to_string())?;
    let out: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("serviceaccount {sa:?} token: {e}"))?;
    Ok(out.status.map(|s| s.token).unwrap_or_default().into_bytes())
}

/// The files of a content volume (None: not a content volume).
async fn content(
    client: &kube::Client,
    pod: &Pod,
    v: &Volume,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Option<Files>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mode = |m: Option<i32>| m.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
    let mut files = Files::new();
    if let Some(c) = &v.config_map {
        let optional = c.optional.unwrap_or(false);
        match config_map(client, &ns, &c.name).await? {
            Some(d) => {
                add_items(&mut files, &d, &c.items, mode(c.default_mode), &format!("configmap {:?}", c.name), optional)?
            }
            None if optional => {}
            None => return Err(format!("configmap {:?} not found", c.name)),
        }
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        match secret(client, &ns, &name).await? {
            Some(d) => {
                add_items(&mut files, &d, &s.items, mode(s.default_mode), &format!("secret {name:?}"), optional)?
            }
            None if optional => {}
            None => return Err(format!("secret {name:?} not found")),
        }
    } else if let Some(d) = &v.downward_api {
        for it in d.items.iter().flatten() {
            let m = it.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(mode(d.default_mode));
            files.insert(safe_rel(&it.path)?, (downward(pod, it, pod_ip, host_ip)?, m));
        }
    } else if let Some(p) = &v.projected {
        let m = mode(p.default_mode);
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                let optional = c.optional.unwrap_or(false);
                match config_map(client, &ns, &c.name).await? {
                    Some(d) => add_items(&mut files, &d, &c.items, m, &format!("configmap {:?}", c.name), optional)?,
                    None if optional => {}
                    None => return Err(format!("configmap {:?} not found", c.name)),
                }
            }
            if let Some(s) = &src.secret {
                let optional = s.optional.unwrap_or(false);
                match secret(client, &ns, &s.name).await? {
                    Some(d) => add_items(&mut files, &d, &s.items, m, &format!("secret {:?}", s.name), optional)?,
                    None if optional => {}
                    None => return Err(format!("secret {:?} not found", s.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    let im = it.mode.and_then(|x| u32::try_from(x).ok()).unwrap_or(m);
                    files.insert(safe_rel(&it.path)?, (downward(pod, it, pod_ip, host_ip)?, im));
                }
            }
            if let Some(t) = &src.service_account_token {
                let tok = token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
                files.insert(safe_rel(&t.path)?, (tok, m));
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(files))
}

/// Write `files` as the whole content of `dir` (a fresh directory swapped in).
fn write_dir(dir: &Path, files: &Files) -> Result<(), String> {
    let parent = dir.parent().ok_or("volume directory has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp =
        parent.join(format!(".{}.new", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    for (rel, (body, mode)) in files {
        let p = tmp.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let old =
        parent.join(format!(".{}.old", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// A pod's claim volumes, resolved: volume name → the host directory of its
/// PersistentVolume and whether the pod mounts it read-only.
pub type Claims = BTreeMap<String, (PathBuf, bool)>;

/// Why a pod's claim volumes cannot be used (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Not yet: the claim is missing, not bound, its volume not there yet… (retried).
    Waiting(String),
    /// The claim's volume cannot be used on this node (another node's, an unsupported
    /// type, a missing directory): retried too, but it is an error to report.
    Failed(String),
}

impl ClaimError {
    pub fn message(&self) -> &str {
        match self {
            ClaimError::Waiting(m) | ClaimError::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

const CLAIMS_FILE: &str = "claims.json";

/// The claim a volume uses: `persistentVolumeClaim.claimName`, or a generic ephemeral
/// volume's `<pod>-<volume>`; with the volume's read-only flag.
fn claim_of(pod: &Pod, v: &Volume) -> Option<(String, bool)> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some((c.claim_name.clone(), c.read_only.unwrap_or(false)));
    }
    v.ephemeral.as_ref().map(|_| (format!("{}-{}", pod.metadata.name.as_deref().unwrap_or_default(), v.name), false))
}

/// The host directory of `claim`'s volume `pv` on this node (pure: the objects decide).
pub fn claim_dir(
    claim_name: &str,
    claim: Option<&PersistentVolumeClaim>,
    pv: Option<&PersistentVolume>,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> Result<PathBuf, ClaimError> {
    let Some(claim) = claim else {
        return Err(ClaimError::Waiting(format!("persistentvolumeclaim {claim_name:?} not found")));
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(ClaimError::Waiting(format!("persistentvolumeclaim {claim_name:?} is being deleted")));
    }
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    let phase = claim.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    if volume_name.is_empty() || phase != "Bound" {
        return Err(ClaimError::Waiting(format!(
            "waiting for persistentvolumeclaim {claim_name:?} to be bound (phase {phase})"
        )));
    }
    let Some(pv) = pv else {
        return Err(ClaimError::Waiting(format!(
            "persistentvolume {volume_name:?} of persistentvolumeclaim {claim_name:?} not found"
        )));
    };
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if claim_ref.is_none_or(|r| r.uid.is_some() && r.uid != claim.metadata.uid) {
        return Err(ClaimError::Failed(format!(
            "persistentvolume {volume_name:?} is not bound to persistentvolumeclaim {claim_name:?}"
        )));
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let terms = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms);
    if let Some(terms) = terms {
        let fits = terms.iter().any(|t| keelson_scheduler::node_selector::Term::parse(t).matches(node, node_labels));
        if !fits {
            return Err(ClaimError::Failed(format!(
                "persistentvolume {volume_name:?} of persistentvolumeclaim {claim_name:?} cannot be used on node \
                 {node:?}: its node affinity does not match this node"
            )));
        }
    }
    let path = match (&spec.local, &spec.host_path) {
        (Some(l), _) => PathBuf::from(&l.path),
        (None, Some(h)) => PathBuf::from(&h.path),
        (None, None) => {
            return Err(ClaimError::Failed(format!(
                "persistentvolume {volume_name:?} of persistentvolumeclaim {claim_name:?} has a volume type this \
                 node does not support (only local and hostPath)"
            )))
        }
    };
    if !path.is_dir() {
        return Err(ClaimError::Failed(format!(
            "persistentvolume {volume_name:?}: {} is not a directory on node {node:?}",
            path.display()
        )));
    }
    Ok(path)
}

/// The pod's claim volumes, resolved (once: then read back from the pod's directory).
/// A pod without claims costs nothing.
pub async fn claims(client: &kube::Client, pod: &Pod, node: &str, pod_dir: &Path) -> Result<Claims, ClaimError> {
    let wanted: Vec<(String, String, bool)> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| claim_of(pod, v).map(|(c, ro)| (v.name.clone(), c, ro)))
        .collect();
    if wanted.is_empty() {
        return Ok(Claims::new());
    }
    let file = pod_dir.join(CLAIMS_FILE);
    if let Some(known) = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Claims>(&b).ok()) {
        return Ok(known);
    }
    let api_err = |what: &str, e: kube::Error| ClaimError::Waiting(format!("reading {what}: {e}"));
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels: Option<BTreeMap<String, String>> = None;
    let mut out = Claims::new();
    for (volume, claim_name, read_only) in wanted {
        let claim = claims
            .get_opt(&claim_name)
            .await
            .map_err(|e| api_err(&format!("persistentvolumeclaim {claim_name:?}"), e))?;
        let pv_name =
            claim.as_ref().and_then(|c| c.spec.as_ref()).and_then(|s| s.volume_name.clone()).unwrap_or_default();
        let pv = match pv_name.is_empty() {
            true => None,
            false => {
                volumes.get_opt(&pv_name).await.map_err(|e| api_err(&format!("persistentvolume {pv_name:?}"), e))?
            }
        };
        if labels.is_none() && pv.is_some() {
            let n = nodes.get_opt(node).await.map_err(|e| api_err("this node", e))?;
            labels = Some(n.and_then(|n| n.metadata.labels).unwrap_or_default());
        }
        let dir =
            claim_dir(&claim_name, claim.as_ref(), pv.as_ref(), node, labels.as_ref().unwrap_or(&BTreeMap::new()))?;
        out.insert(volume, (dir, read_only));
    }
    std::fs::create_dir_all(pod_dir).map_err(|e| ClaimError::Failed(format!("{}: {e}", pod_dir.display())))?;
    let body = serde_json::to_vec(&out).map_err(|e| ClaimError::Failed(e.to_string()))?;
    let tmp = pod_dir.join(format!(".{CLAIMS_FILE}.new"));
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| ClaimError::Failed(format!("{}: {e}", file.display())))?;
    Ok(out)
}

/// Make every volume of the pod; their host directories by name.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: &str,
    host_ip: &str,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut out = HashMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = pod_dir.join("volumes").join(&v.name);
        if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => {
                    std::fs::create_dir_all(&p).map_err(|e| format!("hostPath {}: {e}", p.display()))?
                }
                "Directory" if !p.is_dir() => {
                    return Err(format!("hostPath type check failed: {} is not a directory", p.display()))
                }
                "File" if !p.is_file() => {
                    return Err(format!("hostPath type check failed: {} is not a file", p.display()))
                }
                "FileOrCreate" if !p.exists() => {
                    std::fs::write(&p, b"").map_err(|e| format!("hostPath {}: {e}", p.display()))?;
                }
                _ => {}
            }
            out.insert(v.name.clone(), p);
            continue;
        }
        if let Some(e) = &v.empty_dir {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if e.medium.as_deref() == Some("Memory") && !crate::kubelet::runtime::rootfs::is_mountpoint(&dir) {
                let size =
                    e.size_limit.as_ref().and_then(super::spec::bytes).map(|b| format!("size={b}")).unwrap_or_default();
                let data = std::ffi::CString::new(size).map_err(|e| e.to_string())?;
                rustix::mount::mount(
                    "tmpfs",
                    &dir,
                    "tmpfs",
                    rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
                    data.as_c_str(),
                )
                .map_err(|e| format!("mounting tmpfs for emptyDir {}: {e}", v.name))?;
            }
            out.insert(v.name.clone(), dir);
            continue;
        }
        if let Some((claim, _)) = claim_of(pod, &v) {
            // Resolved before the sandbox was made (see [`claims`]).
            let known = std::fs::read(pod_dir.join(CLAIMS_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
                .and_then(|c| c.get(&v.name).cloned());
            match known {
                Some((dir, _)) => out.insert(v.name.clone(), dir),
                None => return Err(format!("persistentvolumeclaim {claim:?} of volume {:?} is not resolved", v.name)),
            };
            continue;
        }
        match content(client, pod, &v, pod_ip, host_ip).await? {
            Some(files) => {
                write_dir(&dir, &files)?;
                out.insert(v.name.clone(), dir);
            }
            None => tracing::warn!(volume = %v.name, "volume type not supported yet; not mounted"),
        }
    }
    Ok(out)
}

/// The container's bind mounts: (host path, container path, read-only). A claim volume
/// the pod uses read-only (`persistentVolumeClaim.readOnly`) is mounted read-only everywhere.
pub fn mounts(
    pod: &Pod,
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<(PathBuf, String, bool)>, String> {
    let read_only_claims: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| claim_of(pod, v).is_some_and(|(_, ro)| ro))
        .map(|v| v.name.as_str())
        .collect();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(host) = volumes.get(&m.name) else {
            return Err(format!("volume {:?} of mount {:?} is not available on this node", m.name, m.mount_path));
        };
        let mut src = host.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            src = src.join(safe_rel(sub)?);
            if !src.exists() {
                std::fs::create_dir_all(&src).map_err(|e| format!("subPath {sub:?}: {e}"))?;
            }
        }
        let read_only = m.read_only.unwrap_or(false) || read_only_claims.contains(&m.name.as_str());
        out.push((src, m.mount_path.clone(), read_only));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_paths() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
        let mut f = Files::new();
        add_items(&mut f, &data, &None, 0o644, "cm", false).unwrap();
        assert_eq!(f.len(), 2);
        let items = Some(vec![KeyToPath { key: "b".into(), path: "dir/b.txt".into(), mode: Some(0o600) }]);
        let mut f = Files::new();
        add_items(&mut f, &data, &items, 0o644, "cm", false).unwrap();
        assert_eq!(f[Path::new("dir/b.txt")], (b"2".to_vec(), 0o600));
        let bad = Some(vec![KeyToPath { key: "b".into(), path: "../escape".into(), mode: None }]);
        assert!(add_items(&mut Files::new(), &data, &bad, 0o644, "cm", false).unwrap_err().contains(".."));
        let missing = Some(vec![KeyToPath { key: "z".into(), path: "z".into(), mode: None }]);
        assert!(add_items(&mut Files::new(), &data, &missing, 0o644, "cm", false).is_err());
        assert!(add_items(&mut Files::new(), &data, &missing, 0o644, "cm", true).is_ok());
        assert!(safe_rel("/abs").is_err());
    }

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn pv(path: &Path, node: &str, uid: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-u1"},
            "spec": {"local": {"path": path}, "claimRef": {"namespace": "d", "name": "data", "uid": uid},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn claims_are_waited_for_until_bound_then_their_volumes_used_here_only() {
        let d = tempfile::tempdir().unwrap();
        let labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]);
        let wait = |r: Result<PathBuf, ClaimError>| match r {
            Err(ClaimError::Waiting(m)) => m,
            other => panic!("{other:?}"),
        };
        let fail = |r: Result<PathBuf, ClaimError>| match r {
            Err(ClaimError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(claim_dir("data", None, None, "n1", &labels)), "persistentvolumeclaim \"data\" not found");
        let pending =
            claim(serde_json::json!({"metadata": {"name": "data", "uid": "u1"}, "status": {"phase": "Pending"}}));
        assert_eq!(
            wait(claim_dir("data", Some(&pending), None, "n1", &labels)),
            "waiting for persistentvolumeclaim \"data\" to be bound (phase Pending)"
        );
        let bound = claim(serde_json::json!({"metadata": {"name": "data", "uid": "u1"},
            "spec": {"volumeName": "pvc-u1"}, "status": {"phase": "Bound"}}));
        assert!(wait(claim_dir("data", Some(&bound), None, "n1", &labels)).contains("not found"));
        let here = pv(d.path(), "n1", "u1");
        assert_eq!(claim_dir("data", Some(&bound), Some(&here), "n1", &labels).unwrap(), d.path());
        // Another node's volume, another claim's, an unsupported type, a missing directory.
        let there = pv(d.path(), "n2", "u1");
        assert!(fail(claim_dir("data", Some(&bound), Some(&there), "n1", &labels))
            .contains("cannot be used on node \"n1\""));
        let theirs = pv(d.path(), "n1", "u2");
        assert!(fail(claim_dir("data", Some(&bound), Some(&theirs), "n1", &labels)).contains("is not bound to"));
        let mut nfs = here.clone();
        nfs.spec.as_mut().unwrap().local = None;
        nfs.spec.as_mut().unwrap().nfs =
            Some(serde_json::from_value(serde_json::json!({"server": "s", "path": "/x"})).unwrap());
        assert!(fail(claim_dir("data", Some(&bound), Some(&nfs), "n1", &labels)).contains("only local and hostPath"));
        let gone = pv(&d.path().join("nope"), "n1", "u1");
        assert!(fail(claim_dir("data", Some(&bound), Some(&gone), "n1", &labels)).contains("is not a directory"));
    }

    #[test]
    fn read_only_claims_are_mounted_read_only() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "volumes": [{"name": "ro", "persistentVolumeClaim": {"claimName": "a", "readOnly": true}},
                        {"name": "rw", "persistentVolumeClaim": {"claimName": "b"}},
                        {"name": "eph", "ephemeral": {}}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "ro", "mountPath": "/ro"},
                {"name": "rw", "mountPath": "/rw"}, {"name": "rw", "mountPath": "/rw2", "readOnly": true}]}]}}))
        .unwrap();
        let vols: HashMap<String, PathBuf> =
            [("ro", "/v/a"), ("rw", "/v/b")].iter().map(|(k, v)| (k.to_string(), PathBuf::from(v))).collect();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let m = mounts(&pod, c, &vols).unwrap();
        assert_eq!(
            m,
            vec![
                (PathBuf::from("/v/a"), "/ro".to_string(), true),
                (PathBuf::from("/v/b"), "/rw".to_string(), false),
                (PathBuf::from("/v/b"), "/rw2".to_string(), true),
            ]
        );
        let eph = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[2];
        assert_eq!(claim_of(&pod, eph), Some(("p-eph".to_string(), false)));
    }

    #[tokio::test]
    async fn resolved_claims_are_kept_in_the_pod_directory() {
        let d = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap();
        let known = Claims::from([("data".to_string(), (d.path().join("v"), false))]);
        std::fs::write(d.path().join(CLAIMS_FILE), serde_json::to_vec(&known).unwrap()).unwrap();
        // No API server is asked (this client points nowhere).
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        assert_eq!(claims(&client, &pod, "n1", d.path()).await.unwrap(), known);
        let plain: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": []}})).unwrap();
        assert!(claims(&client, &plain, "n1", &d.path().join("none")).await.unwrap().is_empty());
        let vols = prepare(&client, &pod, d.path(), "", "").await.unwrap();
        assert_eq!(vols["data"], d.path().join("v"));
    }

    #[test]
    fn a_rewrite_swaps_the_whole_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        write_dir(&dir, &Files::from([(PathBuf::from("x"), (b"1".to_vec(), 0o644))])).unwrap();
        write_dir(&dir, &Files::from([(PathBuf::from("y/z"), (b"2".to_vec(), 0o600))])).unwrap();
        assert!(!dir.join("x").exists());
        assert_eq!(std::fs::read(dir.join("y/z")).unwrap(), b"2");
        assert_eq!(std::fs::metadata(dir.join("y/z")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
