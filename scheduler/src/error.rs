//! Why the scheduler stopped before it was told to.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    #[error("the {0} watch ended unexpectedly")]
    WatchEnded(&'static str),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}
