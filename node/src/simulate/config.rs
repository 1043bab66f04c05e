//! The simulation's settings and its node names (`{prefix}-{i}`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use super::SimError;

/// How many simulated nodes to run and what they look like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub count: usize,
    /// Nodes are `{name_prefix}-{i}` for `i` in `0..count`.
    pub name_prefix: String,
    /// Capacity (= allocatable) of every node.
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// Extra node labels (they may override the defaults, except `kubernetes.io/hostname`).
    pub labels: BTreeMap<String, String>,
    /// `spec.taints` of every node.
    pub taints: Vec<Taint>,
    /// The Lease's `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// How often each Lease is renewed (renewals are spread over the interval).
    pub renew_interval: Duration,
    /// How often each node's conditions heartbeat (`lastHeartbeatTime`) is refreshed.
    pub status_interval: Duration,
    /// How long a pod with restartPolicy Never/OnFailure runs before it completes.
    pub job_run: Duration,
    /// Delete the Nodes when stopped.
    pub delete_nodes_on_exit: bool,
    /// Serve the kubelet's `GET /metrics/resource` (and `/healthz`) over HTTPS on
    /// `127.0.0.1:port` for all the nodes, which then report it as their
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; `Some(0)` picks a free port (logged).
    /// `None`: no server, and no pod usage is tracked.
    pub kubelet_port: Option<u16>,
    /// The server's certificate and the CA its clients' certificates must chain to
    /// (required with `kubelet_port`).
    pub kubelet_tls: Option<KubeletTls>,
}

/// The kubelet endpoint's TLS material, as PEM: its certificate chain and key, and the CA
/// that signs the certificates clients must present.
#[derive(Clone)]
pub struct KubeletTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

impl fmt::Debug for KubeletTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeletTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .field("client_ca_pem", &format_args!("{} bytes", self.client_ca_pem.len()))
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 1,
            name_prefix: "sim".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: "110".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            job_run: Duration::from_secs(1),
            delete_nodes_on_exit: false,
            kubelet_port: None,
            kubelet_tls: None,
        }
    }
}

impl SimConfig {
    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i}", self.name_prefix)
    }

    /// The index of the node called `name`, if it is one of ours.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        node_index(&self.name_prefix, self.count, name)
    }

    /// Reject settings no run could work with.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        if !is_dns_subdomain(&self.name_prefix) {
            return bad(format!(
                "name prefix {:?} must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                self.name_prefix
            ));
        }
        // The longest name, `{prefix}-{count-1}`, must be a valid object name.
        if self.node_name(self.count.saturating_sub(1)).len() > 253 {
            return bad(format!("name prefix {:?} is too long", self.name_prefix));
        }
        if self.lease_duration_seconds <= 0 {
            return bad(format!("lease duration must be positive, not {}", self.lease_duration_seconds));
        }
        if self.renew_interval.is_zero() || self.status_interval.is_zero() {
            return bad("renew and status intervals must be positive".into());
        }
        for (what, v) in [("cpu", &self.cpu), ("memory", &self.memory), ("pods", &self.pods)] {
            if v.trim().is_empty() {
                return bad(format!("{what} capacity is empty"));
            }
        }
        if self.kubelet_port.is_some() && self.kubelet_tls.is_none() {
            return bad("the kubelet endpoint needs TLS: a certificate, its key and a client CA".into());
        }
        Ok(())
    }
}

/// `{prefix}-{i}` with `i < count` written canonically (no sign, no leading zeros).
pub fn node_index(prefix: &str, count: usize, name: &str) -> Option<usize> {
    let digits = name.strip_prefix(prefix)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let i: usize = digits.parse().ok()?;
    (i < count).then_some(i)
}

/// A DNS subdomain (lowercase alphanumerics, '-', '.'), starting and ending alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !s.is_empty() && s.bytes().all(ok_char) && alnum(s.as_bytes().first()) && alnum(s.as_bytes().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_reject_strangers() {
        let cfg = SimConfig { count: 12, name_prefix: "sim-a".into(), ..Default::default() };
        assert_eq!(cfg.node_name(11), "sim-a-11");
        assert_eq!(cfg.node_index("sim-a-11"), Some(11));
        assert_eq!(cfg.node_index("sim-a-0"), Some(0));
        for name in ["sim-a-12", "sim-a-01", "sim-a-", "sim-a-+1", "sim-a1", "sim-b-1", "sim-a-1x", "", "sim-a--1"] {
            assert_eq!(cfg.node_index(name), None, "{name}");
        }
        assert_eq!(node_index("p", usize::MAX, "p-99999999999999999999999999"), None);
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        assert!(SimConfig::default().validate().is_ok());
        let bad = [
            SimConfig { name_prefix: "".into(), ..Default::default() },
            SimConfig { name_prefix: "Sim".into(), ..Default::default() },
            SimConfig { name_prefix: "sim-".into(), ..Default::default() },
            SimConfig { name_prefix: "x".repeat(260), ..Default::default() },
            SimConfig { lease_duration_seconds: 0, ..Default::default() },
            SimConfig { renew_interval: Duration::ZERO, ..Default::default() },
            SimConfig { status_interval: Duration::ZERO, ..Default::default() },
            SimConfig { cpu: " ".into(), ..Default::default() },
            SimConfig { kubelet_port: Some(0), kubelet_tls: None, ..Default::default() },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(SimError::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn the_tls_key_is_not_printed() {
        let tls = KubeletTls { cert_pem: "CERT".into(), key_pem: "SECRET KEY".into(), client_ca_pem: "CA".into() };
        let shown = format!("{:?}", SimConfig { kubelet_tls: Some(tls), ..Default::default() });
        assert!(!shown.contains("SECRET") && shown.contains("<redacted>"), "{shown}");
    }
}
