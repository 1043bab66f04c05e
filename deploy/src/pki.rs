//! The cluster's certificates and keys: a CA, an admin client certificate
//! (O=system:masters), a ServiceAccount signing key, and each master's serving
//! certificate with every master's addresses as SANs. Generated on first start into the
//! PKI directory (shared by all masters when `--pki-dir` points them at one place) or
//! taken from it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The shared material the API server and kubeconfig use, as PEM (`sa.key`/`sa.pub`, the
/// service-account signing key, are generated alongside for token issuing).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// The service-account signing key (PKCS#8 PEM) and its public half.
    pub sa_key: String,
    pub sa_pub: String,
}

const FILES: &[&str] = &["ca.key", "ca.crt", "admin.crt", "admin.key", "sa.key", "sa.pub"];

fn read(dir: &Path, f: &str) -> Result<String> {
    std::fs::read_to_string(dir.join(f)).with_context(|| format!("cannot read {}", dir.join(f).display()))
}

/// Write a file only its owner can read (keys, kubeconfigs).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn generate_into(dir: &Path) -> Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "keelson-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "kubernetes-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    for (f, text) in [
        ("ca.key", ca_key.serialize_pem()),
        ("ca.crt", ca_cert.pem()),
        ("admin.crt", admin_cert.pem()),
        ("admin.key", admin_key.serialize_pem()),
        ("sa.key", sa_key.serialize_pem()),
        ("sa.pub", sa_key.public_key_pem()),
    ] {
        write_private(&dir.join(f), &text)?;
    }
    Ok(())
}

/// Take the PKI from `dir`, generating it first when absent. Safe when several masters
/// start at once on one shared directory: one generates, the others wait for it.
pub fn load_or_create(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create --pki-dir {}", dir.display()))?;
    if !dir.join("ca.crt").exists() {
        let tmp = dir.join(format!(".gen-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&tmp)?;
        generate_into(&tmp)?;
        // ca.key is the claim: linking fails if another master got there first.
        let won = std::fs::hard_link(tmp.join("ca.key"), dir.join("ca.key")).is_ok();
        if won {
            // Everything else, ca.crt last (its presence means "complete").
            for f in FILES.iter().filter(|f| **f != "ca.key" && **f != "ca.crt") {
                std::fs::rename(tmp.join(f), dir.join(f))?;
            }
            std::fs::rename(tmp.join("ca.crt"), dir.join("ca.crt"))?;
            tracing::info!(dir = %dir.display(), "generated the cluster CA, admin certificate and service-account key");
        }
        let _ = std::fs::remove_dir_all(&tmp);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("ca.crt").exists() {
            if Instant::now() > deadline {
                bail!("{} has ca.key but no ca.crt after 30 s: another master's generation failed; remove the directory and start again", dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for f in FILES {
        if !dir.join(f).exists() {
            bail!("--pki-dir {} is incomplete: {f} is missing", dir.display());
        }
    }
    Ok(Pki {
        ca_cert: read(dir, "ca.crt")?,
        ca_key: read(dir, "ca.key")?,
        admin_cert: read(dir, "admin.crt")?,
        admin_key: read(dir, "admin.key")?,
        sa_key: read(dir, "sa.key")?,
        sa_pub: read(dir, "sa.pub")?,
    })
}

impl Pki {
    /// A serving certificate for this master, valid for `sans` (host names and IPs).
    pub fn serving_cert(&self, name: &str, sans: &[String]) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.ca_key).context("the CA key does not parse")?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, &ca_key).context("the CA certificate does not parse")?;
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans.to_vec())?;
        p.distinguished_name.push(DnType::CommonName, format!("keelson-apiserver-{name}"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl Pki {
    /// A client certificate for `cn` in group `org` (the API server's identity towards
    /// kubelets), signed by the cluster CA.
    pub fn client_cert(&self, cn: &str, org: &str) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.ca_key).context("the CA key does not parse")?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, &ca_key).context("the CA certificate does not parse")?;
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_loaded_after() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path()).unwrap();
        let b = load_or_create(d.path()).unwrap();
        assert_eq!(a.ca_cert, b.ca_cert);
        let (cert, key) = a.serving_cert("m1", &["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    }
}
