//! The admin kubeconfig: one cluster and context per master (so a user can switch when
//! one is down), the cluster CA and the admin client certificate embedded.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::json;

use crate::pki::Pki;

/// Write `path` with a context per `(master name, https URL)`; `current` is the default.
pub fn write(path: &Path, pki: &Pki, masters: &[(String, String)], current: &str) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let clusters: Vec<_> = masters
        .iter()
        .map(|(name, url)| {
            json!({"name": format!("keelson-{name}"), "cluster": {"server": url, "certificate-authority-data": b64(&pki.ca_cert)}})
        })
        .collect();
    let contexts: Vec<_> = masters
        .iter()
        .map(|(name, _)| json!({"name": format!("keelson-{name}"), "context": {"cluster": format!("keelson-{name}"), "user": "keelson-admin"}}))
        .collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "contexts": contexts,
        "current-context": format!("keelson-{current}"),
        "users": [{"name": "keelson-admin", "user": {
            "client-certificate-data": b64(&pki.admin_cert),
            "client-key-data": b64(&pki.admin_key),
        }}],
    });
    let text = serde_yaml_ng::to_string(&doc).context("cannot encode the kubeconfig")?;
    let tmp = path.with_extension("tmp");
    crate::pki::write_private(&tmp, &text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
