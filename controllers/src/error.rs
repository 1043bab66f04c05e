//! Errors a controller's reconcile can return (each is retried with backoff).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no {1}")]
    Missing(String, &'static str),
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
}
