//! The local-path provisioner (rancher's local-path-provisioner, plus the part of the PV
//! controller that binds what it makes), run by every real node for itself:
//!
//! - it makes sure the StorageClass `local-path` exists ([`PROVISIONER`],
//!   WaitForFirstConsumer, reclaim policy Delete, the default class);
//! - a claim of a class of [`PROVISIONER`] whose `volume.kubernetes.io/selected-node` names
//!   this node (the scheduler sets it when it places the claim's first pod) gets a
//!   directory `<dir>/pvc-<claim uid>` and a PersistentVolume there (`spec.local`, node
//!   affinity `kubernetes.io/hostname In [node]`, claimRef to the claim), and is bound to
//!   it: the volume says Bound, the claim names it and says Bound;
//! - when the claim of one of this node's volumes is gone, the volume is Released and —
//!   under reclaim policy Delete, once no pod on this node uses the claim any more — its
//!   directory is removed and the volume deleted;
//! - a claim that names no class at all gets the default class (the PV controller's
//!   retroactive default, which keelson has no one else for).
//!
//! A claim of an Immediate class that no scheduler placed is left alone: without a pod
//! there is no node to put its directory on (local-path-provisioner refuses these too).
//! Pre-made (static) volumes are not bound to claims.
//!
//! Every step is decided from the objects ([`volume`]), so a pass is idempotent and a
//! restart carries on where it stopped.

mod class;
mod controller;
pub mod volume;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

pub use class::{local_path_class, ANN_DEFAULT_CLASS};

/// The provisioner name of the classes this provisioner serves.
pub const PROVISIONER: &str = "keelson.io/local-path";
/// The class it creates.
pub const LOCAL_PATH_CLASS: &str = "local-path";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub node_name: String,
    /// Where this node's local volumes live (one directory per PersistentVolume).
    pub dir: PathBuf,
}

/// Provision and reclaim this node's local-path volumes until `stop`.
pub async fn run(client: kube::Client, cfg: StorageConfig, stop: CancellationToken) -> Result<(), StorageError> {
    controller::run(client, cfg, stop).await
}
