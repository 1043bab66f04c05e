//! `/metrics/resource` of a real node: what its running containers use, read from their
//! cgroups ([`cgroup`]), and what the node uses, from `/proc` ([`host`]) — the series
//! metrics-server (here, every master's scraper) turns into the resource metrics API for
//! `kubectl top` and the HPA. A pod's usage is the sum of its running containers'.

pub mod cgroup;
pub mod host;

use std::collections::HashMap;
use std::sync::OnceLock;

use jiff::Timestamp;

use super::pod::{container, Shared};
use crate::simulate::usage::{ContainerSample, NodeSample, PodSample, Sample};

/// The host's cgroup layout, detected once.
fn layout() -> Option<&'static cgroup::Layout> {
    static LAYOUT: OnceLock<Option<cgroup::Layout>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let l = cgroup::Layout::detect();
            if l.is_none() {
                tracing::warn!("no cgroup v1 cpuacct+memory or cgroup2 mount: container usage is not reported");
            }
            l
        })
        .as_ref()
}

/// The container name in a runtime id of ours (`k-<uid>-<name>-<attempt>`).
fn container_name(id: &str, uid: &str) -> Option<String> {
    let rest = id.strip_prefix("k-")?.strip_prefix(uid)?.strip_prefix('-')?;
    let (name, attempt) = rest.rsplit_once('-')?;
    (!name.is_empty() && attempt.parse::<u32>().is_ok()).then(|| name.to_string())
}

/// Read the node and every running container of a pod bound here, now.
pub async fn sample(shared: &Shared) -> Result<(Sample, Timestamp), String> {
    let listed = shared.runtime.list().await.map_err(|e| format!("listing containers: {e}"))?;
    let pods: HashMap<String, (String, String)> = {
        let names = shared.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        names.iter().map(|(k, uid)| (uid.clone(), k.clone())).collect()
    };
    let now = Timestamp::now();
    let (cpu, memory) = host::read()?;
    let mut by_pod: HashMap<(String, String), Vec<ContainerSample>> = HashMap::new();
    if let Some(layout) = layout() {
        for c in listed.iter().filter(|c| c.status == "running") {
            let Some(uid) = container::uid_of_runtime_id(&c.id) else { continue };
            let (Some(key), Some(name)) = (pods.get(uid), container_name(&c.id, uid)) else { continue };
            // Where the bundle put it (see `worker`'s `cgroups_path`).
            let usage = match cgroup::read(layout, &format!("/keelson/{}", c.id)) {
                Ok(u) => u,
                Err(e) => {
                    // Most often it ended between the listing and the read.
                    tracing::debug!(container = %c.id, error = %e, "reading a container's cgroup failed");
                    continue;
                }
            };
            let started = c.created.as_deref().and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(now);
            by_pod.entry(key.clone()).or_default().push(ContainerSample {
                name,
                cpu_core_seconds: usage.cpu_ns as f64 / 1e9,
                memory_bytes: usage.memory_bytes,
                started,
            });
        }
    }
    let mut pods: Vec<PodSample> = by_pod
        .into_iter()
        .map(|((namespace, name), mut containers)| {
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            PodSample {
                namespace,
                name,
                cpu_core_seconds: containers.iter().map(|c| c.cpu_core_seconds).sum(),
                memory_bytes: containers.iter().map(|c| c.memory_bytes).sum(),
                containers,
            }
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let node = NodeSample { node: 0, cpu_core_seconds: cpu, memory_bytes: memory };
    Ok((Sample { nodes: vec![node], pods }, now))
}

/// The `/metrics/resource` text (a real kubelet's node series carry no `node` label).
pub async fn render(shared: &Shared) -> Result<String, String> {
    let (sample, now) = sample(shared).await?;
    Ok(crate::simulate::kubelet_server::render(&sample, None, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_runtime_ids() {
        let uid = "0b9f0c1e-1111-2222-3333-444455556666";
        assert_eq!(container_name(&format!("k-{uid}-web-0"), uid).as_deref(), Some("web"));
        assert_eq!(container_name(&format!("k-{uid}-side-car-12"), uid).as_deref(), Some("side-car"));
        assert_eq!(container_name(&format!("k-{uid}--3"), uid), None);
        assert_eq!(container_name(&format!("k-{uid}-web-x"), uid), None);
        assert_eq!(container_name(&format!("k-{uid}-web-0"), "other"), None);
    }
}
