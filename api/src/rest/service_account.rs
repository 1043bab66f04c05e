//! ServiceAccount admission for pods being created (Kubernetes'
//! `plugin/pkg/admission/serviceaccount`): the pod runs as `default` unless it names an
//! account; the account must exist; unless automounting is off (on the pod, else on the
//! account) every container mounts the `kube-api-access-*` projected volume (a bound token,
//! the cluster CA, the namespace) at the well-known path; the account's imagePullSecrets
//! are copied to a pod that has none. Mirror pods may not name an account.

use serde_json::{json, Map, Value};

use super::Ctx;
use crate::status::ApiError;
use crate::storage;

pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// A projected token's lifetime when admission adds it (Kubernetes' 1 h + 7 s).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

fn forbidden(pod: &str, msg: String) -> ApiError {
    let mut e = ApiError::forbidden(format!("pods \"{pod}\" is forbidden: {msg}"));
    e.reason = "Forbidden";
    e
}

/// The projected volume Kubernetes adds: token, `kube-root-ca.crt`'s ca.crt, namespace.
fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}})
}

/// Mount the token volume in every container (and init container) that has nothing at the
/// token path; add the volume if one does.
fn mount_token(spec: &mut Map<String, Value>, volume_name: String) {
    let existing = spec.get("volumes").and_then(Value::as_array).and_then(|vs| {
        vs.iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| n.starts_with(VOLUME_PREFIX))
            .map(str::to_string)
    });
    let name = existing.clone().unwrap_or(volume_name);
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else { continue };
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let vs = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(vs) = vs.as_array_mut() {
            vs.push(token_volume(&name));
        }
    }
}

/// The account, from this master's store, else (just created elsewhere?) the leader's.
async fn lookup(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    let Some(def) = ctx.api.registry.find("", "v1", "serviceaccounts") else { return Ok(None) };
    let key = storage::object_key(&def, Some(ns), name);
    storage::get_local_or_latest(&ctx.api.store, &key).await?.as_ref().map(storage::decode).transpose()
}

/// ServiceAccount admission on a pod being created.
pub async fn admit(ctx: &Ctx, pod: &mut Value) -> Result<(), ApiError> {
    let Some(ns) = ctx.namespace().map(str::to_string) else { return Ok(()) };
    let pod_name = crate::meta::name(pod).unwrap_or_default().to_string();
    let mirror = pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION)).is_some();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let named = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|f| spec.get(*f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string));
    if mirror {
        if named.is_some() {
            return Err(forbidden(&pod_name, "a mirror pod may not reference service accounts".into()));
        }
        return Ok(());
    }
    let sa_name = named.unwrap_or_else(|| "default".into());
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let Some(sa) = lookup(ctx, &ns, &sa_name).await? else {
        return Err(forbidden(
            &pod_name,
            format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
        ));
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if automount {
        let suffix: String = super::write::random_suffix();
        mount_token(spec, format!("{VOLUME_PREFIX}{suffix}"));
    }
    let has_pull_secrets = spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !has_pull_secrets {
        if let Some(ps) = sa.get("imagePullSecrets").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            let names: Vec<Value> = ps.iter().filter_map(|p| p.get("name")).map(|n| json!({"name": n})).collect();
            spec.insert("imagePullSecrets".into(), Value::Array(names));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_token_volume_unless_it_has_the_path() {
        let mut pod = json!({"containers": [
            {"name": "a"},
            {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}
        ], "initContainers": [{"name": "i"}]});
        let spec = pod.as_object_mut().unwrap();
        mount_token(spec, "kube-api-access-abcde".into());
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["name"], "kube-api-access-abcde");
        assert_eq!(pod["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        assert_eq!(pod["initContainers"][0]["volumeMounts"][0]["mountPath"], TOKEN_MOUNT_PATH);
        assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["path"], "token");
        // Admitted again (an existing kube-api-access volume): reused, not doubled.
        let spec = pod.as_object_mut().unwrap();
        mount_token(spec, "kube-api-access-zzzzz".into());
        assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(pod["containers"][0]["volumeMounts"].as_array().unwrap().len(), 1);
    }
}
