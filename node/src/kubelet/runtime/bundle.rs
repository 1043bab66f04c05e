//! A container's OCI runtime configuration (`config.json`), as containerd's CRI plugin
//! builds it: the image's entrypoint/cmd/env/workdir under the pod's command/args/env,
//! the pod's network namespace, the pod's `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf`, the securityContext and the resource limits.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::RuntimeError;

/// The capabilities a container gets by default (containerd's and Docker's set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Everything a container's configuration is made from.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The merged root filesystem (an overlay mount over the image).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `NAME=value`, the image's first, then the pod's (later ones win).
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// The pod's network namespace (`/run/netns/...`).
    pub netns: PathBuf,
    /// Bind mounts (host path, container path, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// `allowPrivilegeEscalation: false` (setuid binaries then gain nothing).
    pub no_new_privileges: bool,
    pub add_caps: Vec<String>,
    pub drop_caps: Vec<String>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// CPU limit in millicores (→ CFS quota over a 100 ms period).
    pub cpu_limit_millis: Option<i64>,
    /// CPU request in millicores (→ shares).
    pub cpu_request_millis: Option<i64>,
    /// The cgroup, e.g. `/keelson/<pod uid>-<container>`.
    pub cgroups_path: String,
}

/// `CAP_X` for `X` or `CAP_X` (Kubernetes capabilities come without the prefix).
fn cap_name(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

fn capabilities(spec: &ContainerSpec) -> Vec<String> {
    if spec.privileged {
        return ALL_CAPABILITIES.iter().map(|c| (*c).to_string()).collect();
    }
    let drop: Vec<String> = spec.drop_caps.iter().map(|c| cap_name(c)).collect();
    let drop_all = drop.iter().any(|c| c == "CAP_ALL");
    let mut caps: Vec<String> = if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_string()).filter(|c| !drop.contains(c)).collect()
    };
    for add in &spec.add_caps {
        let add = cap_name(add);
        if add == "CAP_ALL" {
            return ALL_CAPABILITIES.iter().map(|c| (*c).to_string()).collect();
        }
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps
}

const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
];

/// The CFS period the CPU limit is expressed over (the kubelet's 100 ms).
const CFS_PERIOD_US: u64 = 100_000;

/// cpu.shares for a request, as the kubelet computes them (min 2).
pub fn cpu_shares(request_millis: i64) -> u64 {
    u64::try_from(request_millis.saturating_mul(1024) / 1000).unwrap_or(0).max(2)
}

/// The container's `config.json`, checked against the OCI runtime spec's schema types.
pub fn config(spec: &ContainerSpec) -> Result<Value, RuntimeError> {
    let mut v = serde_json::to_value(oci_spec::runtime::Spec::default())
        .map_err(|e| RuntimeError::Bundle(format!("default spec: {e}")))?;
    let caps = capabilities(spec);
    v["hostname"] = json!(spec.hostname);
    v["root"] = json!({ "path": spec.rootfs, "readonly": spec.readonly_rootfs });
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(spec.args);
    v["process"]["env"] = json!(spec.env);
    v["process"]["cwd"] = json!(if spec.cwd.is_empty() { "/" } else { &spec.cwd });
    v["process"]["user"] = json!({ "uid": spec.uid, "gid": spec.gid });
    v["process"]["noNewPrivileges"] = json!(spec.no_new_privileges && !spec.privileged);
    v["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
    });
    // The node's own limits, as containerd's CRI plugin leaves them (a fixed NOFILE can
    // exceed the host's hard limit, and runc then fails to start anything).
    if let Some(p) = v["process"].as_object_mut() {
        p.remove("rlimits");
    }
    let mounts = v["mounts"].as_array_mut().ok_or_else(|| RuntimeError::Bundle("default spec has no mounts".into()))?;
    // sysfs read-only unless privileged, as containerd does.
    for m in mounts.iter_mut() {
        if m["destination"] == "/sys" && spec.privileged {
            m["options"] = json!(["nosuid", "noexec", "nodev"]);
        }
    }
    for (host, dest, ro) in &spec.binds {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if *ro { "ro" } else { "rw" });
        mounts.push(json!({ "destination": dest, "type": "bind", "source": host, "options": options }));
    }
    let linux = &mut v["linux"];
    let mut namespaces: Vec<Value> = ["pid", "ipc", "uts", "mount"].iter().map(|t| json!({ "type": t })).collect();
    namespaces.push(json!({ "type": "network", "path": spec.netns }));
    linux["namespaces"] = Value::Array(namespaces);
    linux["cgroupsPath"] = json!(spec.cgroups_path);
    if spec.privileged {
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    }
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(limit) = spec.memory_limit {
        resources["memory"] = json!({ "limit": limit });
    }
    let mut cpu = serde_json::Map::new();
    if let Some(millis) = spec.cpu_limit_millis {
        let quota = (u64::try_from(millis).unwrap_or(0) * CFS_PERIOD_US / 1000).max(1000);
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(CFS_PERIOD_US));
    }
    if let Some(millis) = spec.cpu_request_millis {
        cpu.insert("shares".into(), json!(cpu_shares(millis)));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    linux["resources"] = resources;
    // Validate against the typed spec: what runc would refuse to parse is refused here.
    let typed: oci_spec::runtime::Spec =
        serde_json::from_value(v.clone()).map_err(|e| RuntimeError::Bundle(format!("invalid runtime spec: {e}")))?;
    drop(typed);
    Ok(v)
}

/// Write `config.json` into `bundle` (created if missing).
pub fn write(bundle: &Path, spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let cfg = config(spec)?;
    std::fs::create_dir_all(bundle).map_err(|e| RuntimeError::io(bundle, e))?;
    let path = bundle.join("config.json");
    let body = serde_json::to_vec_pretty(&cfg).map_err(|e| RuntimeError::Bundle(e.to_string()))?;
    std::fs::write(&path, body).map_err(|e| RuntimeError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/r".into(),
            args: vec!["httpd".into(), "-f".into()],
            env: vec!["PATH=/bin".into()],
            netns: "/run/netns/p".into(),
            hostname: "web-0".into(),
            cgroups_path: "/keelson/u-c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_config_joins_the_pod_network_and_runs_the_command() {
        let c = config(&base()).unwrap();
        assert_eq!(c["process"]["args"], json!(["httpd", "-f"]));
        assert_eq!(c["process"]["cwd"], "/");
        assert_eq!(c["hostname"], "web-0");
        assert_eq!(c["root"]["path"], "/r");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({ "type": "network", "path": "/run/netns/p" })));
        assert!(ns.contains(&json!({ "type": "pid" })));
        assert_eq!(c["process"]["capabilities"]["bounding"].as_array().unwrap().len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(c["process"]["noNewPrivileges"], false, "escalation is allowed unless disallowed");
        let c = config(&ContainerSpec { no_new_privileges: true, ..base() }).unwrap();
        assert_eq!(c["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn security_context_and_resources() {
        let mut s = base();
        s.drop_caps = vec!["NET_RAW".into(), "chown".into()];
        s.add_caps = vec!["NET_ADMIN".into()];
        s.readonly_rootfs = true;
        s.uid = 1000;
        s.memory_limit = Some(64 << 20);
        s.cpu_limit_millis = Some(250);
        s.cpu_request_millis = Some(100);
        s.binds = vec![("/var/x/hosts".into(), "/etc/hosts".into(), false)];
        let c = config(&s).unwrap();
        let caps: Vec<String> = serde_json::from_value(c["process"]["capabilities"]["effective"].clone()).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()) && !caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["process"]["user"]["uid"], 1000);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(c["linux"]["resources"]["cpu"]["shares"], 102);
        assert!(c["mounts"].as_array().unwrap().iter().any(|m| m["destination"] == "/etc/hosts"));
        s.drop_caps = vec!["ALL".into()];
        s.add_caps = vec![];
        let c = config(&s).unwrap();
        assert_eq!(c["process"]["capabilities"]["bounding"], json!([]));
    }

    #[test]
    fn shares_have_a_floor() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(1000), 1024);
    }
}
