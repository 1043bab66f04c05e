//! The cluster's kubeconfigs, from the PKI the masters share (`D/pki`): `admin.kubeconfig`
//! with a context per master (current: m1) and `mI.kubeconfig` pinned to master I. JSON
//! (which is YAML), the CA and the admin certificate embedded, so a copy works anywhere.

use std::path::Path;

use serde_json::json;

use super::ClusterError;

/// The PKI files the kubeconfigs embed; `ca.crt` is written last by the master that
/// generates the PKI, so all three exist once it does.
pub const PKI_FILES: [&str; 3] = ["ca.crt", "admin.crt", "admin.key"];

/// Is the shared PKI complete?
pub fn pki_ready(pki: &Path) -> bool {
    PKI_FILES.iter().all(|f| pki.join(f).exists())
}

/// A kubeconfig for `masters` (name, https URL), `current` its default context.
pub fn render(pki: &Path, masters: &[(String, String)], current: &str) -> Result<String, ClusterError> {
    let read = |f: &str| {
        std::fs::read(pki.join(f)).map_err(|e| ClusterError::io(format!("cannot read {}", pki.join(f).display()), e))
    };
    let (ca, cert, key) = (base64(&read("ca.crt")?), base64(&read("admin.crt")?), base64(&read("admin.key")?));
    let clusters: Vec<_> = masters
        .iter()
        .map(|(n, url)| json!({"name": format!("keelson-{n}"), "cluster": {"server": url, "certificate-authority-data": ca}}))
        .collect();
    let contexts: Vec<_> = masters
        .iter()
        .map(|(n, _)| json!({"name": format!("keelson-{n}"), "context": {"cluster": format!("keelson-{n}"), "user": "keelson-admin"}}))
        .collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "contexts": contexts,
        "current-context": format!("keelson-{current}"),
        "users": [{"name": "keelson-admin", "user": {"client-certificate-data": cert, "client-key-data": key}}],
    });
    serde_json::to_string_pretty(&doc).map_err(|e| ClusterError::State(e.to_string()))
}

/// Write `text` to `path` readable by its owner only (it holds the admin key), atomically.
pub fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |e| ClusterError::io(format!("cannot write {}", path.display()), e);
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn renders_a_context_per_master() {
        let d = tempfile::tempdir().unwrap();
        assert!(!pki_ready(d.path()));
        for f in PKI_FILES {
            std::fs::write(d.path().join(f), f).unwrap();
        }
        assert!(pki_ready(d.path()));
        let masters = vec![
            ("m1".to_string(), "https://10.0.0.11:6443".to_string()),
            ("m2".into(), "https://10.0.0.12:6443".into()),
        ];
        let text = render(d.path(), &masters, "m2").unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "keelson-m2");
        assert_eq!(v["clusters"][1]["cluster"]["server"], "https://10.0.0.12:6443");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], base64(b"ca.crt"));
        assert_eq!(v["users"][0]["user"]["client-key-data"], base64(b"admin.key"));
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.contexts.len(), 2);
    }
}
