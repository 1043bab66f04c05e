//! What every controller gets: a client, a stop token and the cluster's settings.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Settings shared by the controllers (kube-controller-manager's flags of the same names).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `--cluster-cidr`: where node podCIDRs come from (`None` = node IPAM off).
    pub cluster_cidr: Option<String>,
    /// `--node-cidr-mask-size` (IPv4).
    pub node_cidr_mask_size: u8,
    /// `--node-monitor-grace-period`: a node whose Lease is older is NotReady/Unknown.
    pub node_monitor_grace: Duration,
    /// `--node-monitor-period`: how often node health is checked.
    pub node_monitor_period: Duration,
    /// The cluster CA (PEM), published as each namespace's `kube-root-ca.crt` ConfigMap.
    pub root_ca_pem: Option<String>,
    /// Concurrent reconciles per controller (`--concurrent-*-syncs`).
    pub concurrency: u16,
    /// `--horizontal-pod-autoscaler-sync-period`: how often each HPA is reconciled.
    pub hpa_sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`: the default scale-down window.
    pub hpa_downscale_stabilization: Duration,
    /// Where an object's last write's trace is found: each reconcile continues it.
    pub write_traces: keelson_scheduler::trace::WriteTraces,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_cidr: None,
            node_cidr_mask_size: 24,
            node_monitor_grace: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            root_ca_pem: None,
            concurrency: 5,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            write_traces: Default::default(),
        }
    }
}

/// A controller's world.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub config: ControllerConfig,
    /// Fires when this master stops being leader (or the process stops).
    pub stop: CancellationToken,
}
