//! The node's own objects: its Node (capacity from the host, addresses, node info,
//! conditions — Ready once pod networking can work), its Lease in `kube-node-lease`, and
//! the podCIDR node IPAM gives it.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::KubeletConfig;
use super::KubeletError;
use crate::simulate::lease::{self, LEASE_NAMESPACE};
use crate::simulate::node_object;
use crate::simulate::retry::{is_conflict, is_not_found, sleep_or_stop, Backoff};

pub const FIELD_MANAGER: &str = "keelson-kubelet";
pub const KUBELET_VERSION: &str = "v1.33.0-keelson";

/// What the host has, as the Node's capacity.
pub fn host_capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .unwrap_or(0);
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{mem_kib}Ki"))),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ])
}

fn uname() -> (String, String) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into());
    (release, os)
}

/// The conditions: the kubelet's usual four, Ready only with pod networking.
pub fn conditions(existing: &[NodeCondition], now: Timestamp, network_ready: bool) -> Vec<NodeCondition> {
    let mut out = node_object::conditions(existing, now);
    if !network_ready {
        if let Some(c) = out.iter_mut().find(|c| c.type_ == "Ready") {
            let was_false = existing.iter().any(|e| e.type_ == "Ready" && e.status == "False");
            c.status = "False".into();
            c.reason = Some("KubeletNotReady".into());
            c.message = Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the node has no podCIDR yet".into());
            if !was_false {
                c.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            } else if let Some(e) = existing.iter().find(|e| e.type_ == "Ready") {
                c.last_transition_time.clone_from(&e.last_transition_time);
            }
        }
    }
    out
}

/// The node's status patch.
pub fn status_patch(
    cfg: &KubeletConfig,
    runtime_version: &str,
    existing: &[NodeCondition],
    network_ready: bool,
) -> Value {
    let now = Timestamp::now();
    let cap = host_capacity();
    let (kernel, os_image) = uname();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    json!({ "status": {
        "capacity": cap,
        "allocatable": cap,
        "addresses": [
            { "type": "InternalIP", "address": cfg.node_ip.to_string() },
            { "type": "Hostname", "address": if hostname.is_empty() { cfg.node_name.clone() } else { hostname } },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": cfg.kubelet_port } },
        "nodeInfo": {
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
            "containerRuntimeVersion": runtime_version,
            "kernelVersion": kernel,
            "kubeProxyVersion": "",
            "kubeletVersion": KUBELET_VERSION,
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "operatingSystem": "linux",
            "osImage": os_image,
            "systemUUID": "",
        },
        "conditions": conditions(existing, now, network_ready),
    }})
}

fn node_object(cfg: &KubeletConfig) -> Node {
    let mut labels = cfg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), cfg.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), std::env::consts::ARCH.replace("x86_64", "amd64"));
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": cfg.node_name, "labels": labels },
    }))
    .unwrap_or_default()
}

/// Register the Node (or take over the one there); returns it. Retries until stopped.
pub async fn register(
    client: &kube::Client,
    cfg: &KubeletConfig,
    stop: &CancellationToken,
) -> Result<Option<Node>, KubeletError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(7));
    loop {
        let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let r = match api.create(&pp, &node_object(cfg)).await {
            Ok(n) => Ok(n),
            Err(e) if is_conflict(&e) => {
                let labels = node_object(cfg).metadata.labels.unwrap_or_default();
                let ppatch = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                api.patch(&cfg.node_name, &ppatch, &Patch::Merge(json!({ "metadata": { "labels": labels } }))).await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(n) => return Ok(Some(n)),
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 || s.code == 403 => {
                return Err(KubeletError::Register(s.message));
            }
            Err(e) => tracing::warn!(error = %e, "registering the node failed; retrying"),
        }
        if !sleep_or_stop(stop, backoff.next_delay()).await {
            return Ok(None);
        }
    }
}

/// Keep the Lease renewed and the status fresh until stopped; `cidr` receives the
/// node's podCIDR as soon as it has one.
pub async fn heartbeat(
    client: kube::Client,
    cfg: std::sync::Arc<KubeletConfig>,
    runtime_version: String,
    cidr: tokio::sync::watch::Sender<Option<String>>,
    stop: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let mut last_status = tokio::time::Instant::now() - cfg.status_interval;
    let mut network_was = None;
    loop {
        let node = match nodes.get(&cfg.node_name).await {
            Ok(n) => Some(n),
            Err(e) if is_not_found(&e) => {
                tracing::warn!("our Node is gone; registering again");
                let _ = register(&client, &cfg, &stop).await;
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading our Node failed");
                None
            }
        };
        if let Some(node) = node {
            let pod_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            if pod_cidr.is_some() && *cidr.borrow() != pod_cidr {
                cidr.send_replace(pod_cidr.clone());
            }
            let uid = node.metadata.uid.clone();
            if let Err(e) = lease::renew(&leases, &pp, &cfg.node_name, cfg.lease_duration_seconds, uid.as_deref()).await
            {
                tracing::warn!(error = %e, "renewing the node lease failed");
            }
            let network_ready = pod_cidr.is_some();
            if last_status.elapsed() >= cfg.status_interval || network_was != Some(network_ready) {
                let existing = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                let patch = status_patch(&cfg, &runtime_version, &existing, network_ready);
                match nodes.patch_status(&cfg.node_name, &pp, &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        last_status = tokio::time::Instant::now();
                        network_was = Some(network_ready);
                    }
                    Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
                }
            }
        }
        // Until the node has its podCIDR, look again soon.
        let wait = if cidr.borrow().is_none() { Duration::from_millis(250) } else { cfg.renew_interval };
        if !sleep_or_stop(&stop, wait).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_waits_for_the_network() {
        let now = Timestamp::now();
        let c = conditions(&[], now, false);
        let ready = c.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.as_deref().unwrap().contains("NetworkReady=false"));
        let c2 = conditions(&c, now, true);
        assert_eq!(c2.iter().find(|c| c.type_ == "Ready").unwrap().status, "True");
        let cap = host_capacity();
        assert!(cap["memory"].0.ends_with("Ki") && cap["cpu"].0.parse::<u32>().unwrap() >= 1);
    }

    #[test]
    fn the_status_says_what_runs_here() {
        let cfg = KubeletConfig { node_name: "n1".into(), ..Default::default() };
        let p = status_patch(&cfg, "runc://1.1.5", &[], true);
        assert_eq!(p["status"]["nodeInfo"]["containerRuntimeVersion"], "runc://1.1.5");
        assert_eq!(p["status"]["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(p["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(node_object(&cfg).metadata.labels.unwrap()["kubernetes.io/hostname"], "n1");
    }
}
