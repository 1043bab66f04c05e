//! A pod's volumes on this node, under `<pod dir>/volumes/<name>`: emptyDir (a tmpfs for
//! medium Memory), hostPath, configMap, secret, downwardAPI and projected (configMap,
//! secret, downwardAPI, serviceAccountToken from TokenRequest). Content volumes are
//! (re)written before each container start; containers bind-mount them by volumeMounts.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, ServiceAccount, Volume};
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

/// The container's bind mounts: (host path, container path, read-only).
pub fn mounts(c: &Container, volumes: &HashMap<String, PathBuf>) -> Result<Vec<(PathBuf, String, bool)>, String> {
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
        out.push((src, m.mount_path.clone(), m.read_only.unwrap_or(false)));
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
