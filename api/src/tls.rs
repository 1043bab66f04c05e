//! The server's TLS: rustls, TLS 1.2 and 1.3, ALPN h2 and http/1.1, client certificates
//! verified against the cluster CA when offered (bearer-token and anonymous requests are
//! decided later, by authentication).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// PEM material for serving.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The cluster CA (verifies client certificates).
    pub ca_pem: String,
    /// This master's serving certificate chain and key.
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn pem_err(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    move |e| TlsError::Pem { what, reason: e.to_string() }
}

/// The client side of the API server's connections to kubelets: the kubelet's serving
/// certificate must chain to the cluster CA; the API server presents `cert_pem`/`key_pem`.
pub fn kubelet_client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem_err("the CA certificate"))?).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pem_err("the kubelet client certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("the kubelet client key"))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Build the rustls server configuration.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(m.ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem_err("the CA certificate"))?).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pem_err("the serving certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).map_err(pem_err("the serving key"))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
