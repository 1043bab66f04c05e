//! What [`run`](super::run) can fail with. Everything after registration is retried
//! forever (with backoff) instead, so these are configuration mistakes and writes the API
//! server rejects as invalid.

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// The kubelet endpoint could not start (its TLS material, or binding its port).
    #[error("kubelet endpoint: {0}")]
    Kubelet(String),
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}
