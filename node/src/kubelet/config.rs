//! What a real node is configured with.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The kubelet's configuration (`keelson agent` flags).
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// Everything the node keeps: pods' directories, images, the runtime's state.
    pub root_dir: PathBuf,
    /// `runc` or `crun` (a path).
    pub runtime: PathBuf,
    /// The executable that runs the container shim (`<exe> shim …`): this program.
    pub shim_exe: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The node's bridge for pod networking.
    pub bridge: String,
    /// Registries reached over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// The address the node reports (InternalIP).
    pub node_ip: IpAddr,
    pub labels: std::collections::BTreeMap<String, String>,
    pub lease_duration_seconds: i32,
    pub renew_interval: Duration,
    pub status_interval: Duration,
    /// The first crash-loop back-off (doubling to [`KubeletConfig::max_backoff`]); the
    /// kubelet's is 10 s.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Events written per second (`--event-qps`; 0: no limit) and the burst above that.
    pub event_qps: f64,
    pub event_burst: u32,
    /// Network namespaces of this node's pods are named `<netns_prefix><pod uid>`.
    pub netns_prefix: String,
    /// The kubelet endpoint's port (reported in the Node's daemonEndpoints; 0: any free).
    pub kubelet_port: u16,
    /// Its TLS material; without it there is no endpoint (no `kubectl logs`).
    pub kubelet_tls: Option<crate::simulate::KubeletTls>,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Nameservers of ClusterFirst pods; empty: this node's own DNS on its bridge address
    /// when [`KubeletConfig::serve_dns`], else the host's resolv.conf.
    pub cluster_dns: Vec<IpAddr>,
    /// Serve cluster DNS on the bridge's address (port 53).
    pub serve_dns: bool,
    /// Program Services into nftables (table [`KubeletConfig::proxy_table`]).
    pub proxy: bool,
    pub proxy_table: String,
    /// Provision local-path PersistentVolumes under [`KubeletConfig::storage_dir`].
    pub local_storage: bool,
}

impl KubeletConfig {
    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.root_dir.join("runtime")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.root_dir.join("ipam")
    }
    pub fn storage_dir(&self) -> PathBuf {
        self.root_dir.join("storage")
    }
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "node".into(),
            root_dir: "/var/lib/keelson/agent".into(),
            runtime: "runc".into(),
            shim_exe: "keelson".into(),
            cni_bin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            bridge: "keelson0".into(),
            insecure_registries: Vec::new(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            labels: Default::default(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            event_qps: 50.0,
            event_burst: 100,
            netns_prefix: "keelson-".into(),
            kubelet_port: 10250,
            kubelet_tls: None,
            cluster_domain: "cluster.local".into(),
            cluster_dns: Vec::new(),
            serve_dns: true,
            proxy: true,
            proxy_table: "keelson".into(),
            local_storage: true,
        }
    }
}
