//! A `kube::Client` from a kubeconfig file (for `keelson agent` and
//! `keelson controllers`, which are ordinary Kubernetes clients).

use std::path::Path;

use anyhow::{Context, Result};

/// A client for `context` (default: the kubeconfig's current context) of `path`.
pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?;
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}
