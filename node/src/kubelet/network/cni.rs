//! The CNI runtime side (spec 1.0.0): the node's network configuration list, and ADD,
//! DEL and CHECK of a pod sandbox against it.
//!
//! The list is one `bridge` plugin with `host-local` IPAM over the node's pod CIDR; the
//! `loopback` plugin brings `lo` up first with its own tiny configuration. Each plugin
//! is a binary found in [`CniConfig::plugin_dirs`], run with the `CNI_*` environment
//! and its configuration on stdin (the list's `name` and `cniVersion` injected, and the
//! previous plugin's result as `prevResult`); how it runs is behind [`PluginExec`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::exec::{find_plugin, CniCommand, PluginExec, PluginInvocation, PluginOutput, ProcessExec};
use super::result::{CniResult, IpNet};

/// The spec version keelson writes and expects back.
pub const CNI_VERSION: &str = "1.0.0";

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The plugin that brings up `lo` in every sandbox, outside the network list.
pub const LOOPBACK_PLUGIN: &str = "loopback";

/// Errors from setting up or tearing down a sandbox's network.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The [`CniConfig`] cannot produce a working network configuration.
    #[error("invalid CNI configuration: {0}")]
    InvalidConfig(String),
    /// A container ID, interface name or pod argument the spec does not allow.
    #[error("invalid CNI argument: {0}")]
    InvalidArgument(String),
    /// No executable named after the plugin's type in any plugin directory.
    #[error("CNI plugin {plugin:?} not found in {}", join_dirs(.dirs))]
    PluginNotFound {
        /// The plugin type looked for.
        plugin: String,
        /// The directories searched, in order.
        dirs: Vec<PathBuf>,
    },
    /// The plugin binary exists but could not be started.
    #[error("CNI plugin {plugin} ({}) could not be started: {source}", .path.display())]
    Spawn {
        /// The plugin type.
        plugin: String,
        /// The binary tried.
        path: PathBuf,
        /// Why the spawn failed.
        #[source]
        source: io::Error,
    },
    /// Talking to the running plugin (its pipes, waiting for it) failed.
    #[error("CNI plugin {plugin} {command}: I/O with the plugin failed: {source}")]
    Io {
        /// The plugin type.
        plugin: String,
        /// The verb it was running.
        command: CniCommand,
        /// The pipe or wait error.
        #[source]
        source: io::Error,
    },
    /// The plugin ran past the timeout and was killed with its process group.
    #[error("CNI plugin {plugin} {command} timed out after {after:?} and was killed")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The verb it was running.
        command: CniCommand,
        /// The timeout.
        after: Duration,
    },
    /// The plugin reported failure: a non-zero exit, with the spec's error object
    /// (`{"code", "msg", "details"}`) on stdout when it printed one.
    #[error("{}", plugin_error_message(.plugin, *.command, *.code, .msg, .details.as_deref()))]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The verb it was running.
        command: CniCommand,
        /// The spec's error code (1–99 are the spec's, 100+ the plugin's, 999 the
        /// plugins' catch-all); `None` when the plugin printed no error object.
        code: Option<u32>,
        /// What went wrong (or the plugin's stderr when it printed no error object).
        msg: String,
        /// Further detail, when given.
        details: Option<String>,
    },
    /// The plugin exited 0 but its stdout is not a result.
    #[error("CNI plugin {plugin} {command} printed an unusable result: {reason}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// The verb it was running.
        command: CniCommand,
        /// What is wrong with it.
        reason: String,
    },
}

impl CniError {
    /// The plugin's error code, for [`CniError::Plugin`].
    pub fn code(&self) -> Option<u32> {
        match self {
            CniError::Plugin { code, .. } => *code,
            _ => None,
        }
    }
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin directories configured)".to_string();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The meaning of the error codes the spec reserves.
pub fn well_known_code(code: u32) -> Option<&'static str> {
    Some(match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        _ => return None,
    })
}

fn plugin_error_message(
    plugin: &str,
    command: CniCommand,
    code: Option<u32>,
    msg: &str,
    details: Option<&str>,
) -> String {
    let mut s = format!("CNI plugin {plugin} {command} failed");
    match code.map(|c| (c, well_known_code(c))) {
        Some((c, Some(meaning))) => s.push_str(&format!(" (code {c}, {meaning})")),
        Some((c, None)) => s.push_str(&format!(" (code {c})")),
        None => {}
    }
    s.push_str(": ");
    s.push_str(msg);
    if let Some(details) = details.filter(|d| !d.is_empty()) {
        s.push_str(" (");
        s.push_str(details);
        s.push(')');
    }
    s
}

/// The node's pod network: which plugins, which bridge, which addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Where plugin binaries are looked up, in order (also `CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The host bridge pods attach to (at most 15 bytes, a Linux interface name).
    pub bridge: String,
    /// The node's pod CIDR, e.g. `10.244.1.0/24`; the bridge takes its first address.
    pub pod_cidr: String,
    /// host-local's `dataDir`: one file per allocated address under `<dir>/<network>/`.
    pub ipam_data_dir: PathBuf,
    /// The MTU of the bridge and veths; the plugin's default (the bridge's) when `None`.
    pub mtu: Option<u32>,
    /// The network's `name` (also host-local's subdirectory).
    pub network_name: String,
}

impl CniConfig {
    /// A configuration for `pod_cidr` with the defaults: plugins in `/usr/lib/cni`,
    /// bridge `keelson0`, network `keelson`, addresses under `/var/lib/cni/networks`.
    pub fn new(pod_cidr: impl Into<String>) -> Self {
        Self {
            plugin_dirs: vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
            bridge: "keelson0".to_string(),
            pod_cidr: pod_cidr.into(),
            ipam_data_dir: PathBuf::from("/var/lib/cni/networks"),
            mtu: None,
            network_name: "keelson".to_string(),
        }
    }

    /// Checks what would otherwise fail late or confusingly inside a plugin. Whether
    /// the CIDR suits host-local (host bits, size) is left to host-local.
    pub fn validate(&self) -> Result<(), CniError> {
        let bad = |m: String| Err(CniError::InvalidConfig(m));
        if self.plugin_dirs.is_empty() {
            return bad("no plugin directories".into());
        }
        if let Some(d) =
            self.plugin_dirs.iter().find(|d| d.as_os_str().is_empty() || d.to_str().is_none_or(|s| s.contains(':')))
        {
            return bad(format!("plugin directory {:?} cannot be put in CNI_PATH", d.display()));
        }
        if let Err(reason) = check_ifname(&self.bridge) {
            return bad(format!("bridge name {:?}: {reason}", self.bridge));
        }
        if let Err(e) = self.pod_cidr.parse::<IpNet>() {
            return bad(format!("pod CIDR: {e}"));
        }
        if self.ipam_data_dir.as_os_str().is_empty() || self.ipam_data_dir.is_relative() {
            return bad(format!("IPAM data dir {:?} must be an absolute path", self.ipam_data_dir.display()));
        }
        if let Some(mtu) = self.mtu.filter(|m| !(68..=65535).contains(m)) {
            return bad(format!("MTU {mtu} is outside 68..=65535"));
        }
        if !is_cni_name(&self.network_name) {
            return bad(format!(
                "network name {:?} must start with a letter or digit, then letters, digits, '_', '.', '-'",
                self.network_name
            ));
        }
        Ok(())
    }

    /// The network configuration list: `bridge` (gateway on the bridge, hairpin on, no
    /// masquerading — nothing touches the host's iptables) with `host-local` IPAM and a
    /// default route via the bridge.
    pub fn conflist(&self) -> Value {
        let default_route = match self.pod_cidr.parse::<IpNet>() {
            Ok(net) if net.addr.is_ipv6() => "::/0",
            _ => "0.0.0.0/0",
        };
        let mut bridge = json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": default_route}],
                "dataDir": self.ipam_data_dir,
            },
        });
        if let Some(mtu) = self.mtu {
            bridge["mtu"] = json!(mtu);
        }
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.network_name,
            "plugins": [bridge],
        })
    }

    /// The loopback plugin's own configuration.
    pub fn loopback_config(&self) -> Value {
        json!({"cniVersion": CNI_VERSION, "name": "cni-loopback", "type": LOOPBACK_PLUGIN})
    }
}

/// Which pod a sandbox belongs to, passed to plugins in `CNI_ARGS` the way the kubelet
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCniArgs {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

impl PodCniArgs {
    /// `IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…`
    pub fn cni_args(&self, container_id: &str) -> Result<String, CniError> {
        let pairs = [
            ("K8S_POD_NAMESPACE", self.namespace.as_str()),
            ("K8S_POD_NAME", self.name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", container_id),
            ("K8S_POD_UID", self.uid.as_str()),
        ];
        let mut args = String::from("IgnoreUnknown=1");
        for (key, value) in pairs {
            if value.is_empty() || value.chars().any(|c| c == ';' || c == '=' || c.is_control()) {
                return Err(CniError::InvalidArgument(format!(
                    "{key} {value:?} cannot be passed in CNI_ARGS (empty, or holds ';', '=' or a control character)"
                )));
            }
            args.push(';');
            args.push_str(key);
            args.push('=');
            args.push_str(value);
        }
        Ok(args)
    }
}

/// Runs the node's CNI plugins for pod sandboxes.
pub struct Cni {
    cfg: CniConfig,
    conflist: Value,
    /// Why `cfg` fails [`CniConfig::validate`], if it does.
    invalid: Option<String>,
    exec: Arc<dyn PluginExec>,
}

impl fmt::Debug for Cni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cni").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// What one call puts in every plugin's environment.
struct Call<'a> {
    container_id: &'a str,
    netns: String,
    ifname: &'a str,
    args: String,
}

impl Cni {
    /// Plugins run as processes, killed after
    /// [`DEFAULT_PLUGIN_TIMEOUT`](super::exec::DEFAULT_PLUGIN_TIMEOUT).
    ///
    /// An invalid `cfg` (see [`CniConfig::validate`]) is not refused here: every call
    /// then fails with [`CniError::InvalidConfig`], so the kubelet reports it on each pod.
    pub fn new(cfg: CniConfig) -> Self {
        Self::with_exec(cfg, Arc::new(ProcessExec::default()))
    }

    /// Plugins run by `exec` (a [`ProcessExec`] with another timeout, or a test double).
    pub fn with_exec(cfg: CniConfig, exec: Arc<dyn PluginExec>) -> Self {
        let invalid = match cfg.validate() {
            Ok(()) => None,
            Err(CniError::InvalidConfig(msg)) => Some(msg),
            Err(other) => Some(other.to_string()),
        };
        if let Some(msg) = &invalid {
            tracing::warn!(error = %msg, "invalid CNI configuration; every sandbox will fail");
        }
        let conflist = cfg.conflist();
        Self { cfg, conflist, invalid, exec }
    }

    fn ensure_valid(&self) -> Result<(), CniError> {
        match &self.invalid {
            None => Ok(()),
            Some(msg) => Err(CniError::InvalidConfig(msg.clone())),
        }
    }

    /// The configuration this runs.
    /// The bridge's address in the pod network (the first host of the podCIDR).
    pub fn gateway(&self) -> Option<std::net::IpAddr> {
        self.cfg.pod_cidr.parse::<IpNet>().ok().map(|n| n.first_host())
    }

    pub fn config(&self) -> &CniConfig {
        &self.cfg
    }

    /// Checks that every plugin the network needs (loopback, each plugin in the list,
    /// their IPAM plugins) is installed — for a clear error at kubelet start rather
    /// than at the first pod.
    pub fn verify_plugins(&self) -> Result<(), CniError> {
        self.ensure_valid()?;
        find_plugin(LOOPBACK_PLUGIN, &self.cfg.plugin_dirs)?;
        for plugin in self.plugins() {
            find_plugin(plugin_type(plugin), &self.cfg.plugin_dirs)?;
            if let Some(ipam) = plugin.pointer("/ipam/type").and_then(Value::as_str) {
                find_plugin(ipam, &self.cfg.plugin_dirs)?;
            }
        }
        Ok(())
    }

    /// Attaches the sandbox whose network namespace is `netns`: `lo` up, then each
    /// plugin of the list in order, each given the previous one's result. Returns the
    /// last plugin's result.
    ///
    /// When a plugin fails, everything is torn down again with [`Cni::del`] (the bridge
    /// plugin, for one, leaves its veth behind when IPAM fails) and the plugin's error
    /// returned. ADD twice for one container is therefore a caller bug: the second
    /// fails and takes the first attachment down with it.
    #[tracing::instrument(
        target = "keelson::trace",
        name = "cni.add",
        skip(self, pod),
        fields(otel.name = "CNI ADD", pod = %format_args!("{}/{}", pod.namespace, pod.name))
    )]
    pub async fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        pod: &PodCniArgs,
    ) -> Result<CniResult, CniError> {
        let call = self.call(container_id, Some(netns), ifname, pod.cni_args(container_id)?)?;
        if call.netns.is_empty() {
            return Err(CniError::InvalidArgument("ADD needs a network namespace path".into()));
        }
        match self.add_chain(&call).await {
            Ok(result) => {
                tracing::info!(pod_ip = ?result.pod_ip(), "sandbox network added");
                Ok(result)
            }
            Err(err) => {
                tracing::warn!(error = %err, "CNI ADD failed; tearing the attachment down");
                if let Err(del_err) = self.del_chain(&call).await {
                    tracing::warn!(error = %del_err, "cleanup DEL after a failed ADD also failed");
                }
                Err(err)
            }
        }
    }

    async fn add_chain(&self, call: &Call<'_>) -> Result<CniResult, CniError> {
        let loopback = self.cfg.loopback_config();
        self.invoke(&loopback, CniCommand::Add, &Call { ifname: "lo", ..call.clone_ref() }).await?;
        let mut prev: Option<Value> = None;
        let mut last_plugin = LOOPBACK_PLUGIN;
        for plugin in self.plugins() {
            let conf = self.plugin_config(plugin, prev.as_ref());
            let out = self.invoke(&conf, CniCommand::Add, call).await?;
            last_plugin = plugin_type(plugin);
            prev = Some(parse_result_json(last_plugin, &out)?);
        }
        let raw = prev.ok_or_else(|| CniError::InvalidConfig("the network list has no plugins".into()))?;
        CniResult::from_json(raw).map_err(|e| CniError::BadResult {
            plugin: last_plugin.to_string(),
            command: CniCommand::Add,
            reason: e.to_string(),
        })
    }

    /// Detaches the sandbox: each plugin in reverse order, then loopback, every one
    /// tried even if an earlier one failed (the first error is returned). Idempotent,
    /// and works after the namespace is gone — `CNI_NETNS` is then empty, as the spec
    /// allows, and the plugins still release the address.
    #[tracing::instrument(skip(self))]
    pub async fn del(&self, container_id: &str, netns: Option<&Path>, ifname: &str) -> Result<(), CniError> {
        let args = format!("IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID={container_id}");
        let call = self.call(container_id, netns, ifname, args)?;
        self.del_chain(&call).await?;
        tracing::info!("sandbox network deleted");
        Ok(())
    }

    async fn del_chain(&self, call: &Call<'_>) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in self.plugins().rev() {
            let conf = self.plugin_config(plugin, None);
            if let Err(e) = self.invoke(&conf, CniCommand::Del, call).await {
                tracing::warn!(error = %e, "CNI DEL failed; going on with the other plugins");
                first_err.get_or_insert(e);
            }
        }
        let loopback = self.cfg.loopback_config();
        if let Err(e) = self.invoke(&loopback, CniCommand::Del, &Call { ifname: "lo", ..call.clone_ref() }).await {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Checks the attachment against what ADD returned (`prev`, given to every plugin
    /// as `prevResult`): each plugin in order, then loopback.
    #[tracing::instrument(skip(self, pod, prev), fields(pod = %format_args!("{}/{}", pod.namespace, pod.name)))]
    pub async fn check(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        pod: &PodCniArgs,
        prev: &CniResult,
    ) -> Result<(), CniError> {
        let call = self.call(container_id, Some(netns), ifname, pod.cni_args(container_id)?)?;
        if call.netns.is_empty() {
            return Err(CniError::InvalidArgument("CHECK needs a network namespace path".into()));
        }
        for plugin in self.plugins() {
            let conf = self.plugin_config(plugin, Some(&prev.raw));
            self.invoke(&conf, CniCommand::Check, &call).await?;
        }
        let loopback = self.cfg.loopback_config();
        self.invoke(&loopback, CniCommand::Check, &Call { ifname: "lo", ..call.clone_ref() }).await?;
        Ok(())
    }

    fn call<'a>(
        &self,
        container_id: &'a str,
        netns: Option<&Path>,
        ifname: &'a str,
        args: String,
    ) -> Result<Call<'a>, CniError> {
        self.ensure_valid()?;
        if !is_cni_name(container_id) {
            return Err(CniError::InvalidArgument(format!(
                "container ID {container_id:?} must start with a letter or digit, then letters, digits, '_', '.', '-'"
            )));
        }
        check_ifname(ifname)
            .map_err(|reason| CniError::InvalidArgument(format!("interface name {ifname:?}: {reason}")))?;
        // A namespace that is gone is passed as "", which plugins accept for DEL.
        let netns = match netns {
            Some(p) if p.exists() => p
                .to_str()
                .ok_or_else(|| CniError::InvalidArgument(format!("netns path {p:?} is not UTF-8")))?
                .to_string(),
            Some(p) => {
                tracing::debug!(netns = %p.display(), "network namespace is gone");
                String::new()
            }
            None => String::new(),
        };
        Ok(Call { container_id, netns, ifname, args })
    }

    fn plugins(&self) -> impl DoubleEndedIterator<Item = &Value> {
        self.conflist["plugins"].as_array().into_iter().flatten()
    }

    /// One plugin's stdin: its object with the list's `name` and `cniVersion`, and
    /// `prevResult` when there is one.
    fn plugin_config(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("cniVersion".into(), self.conflist["cniVersion"].clone());
            obj.insert("name".into(), self.conflist["name"].clone());
            match prev {
                Some(prev) => obj.insert("prevResult".into(), prev.clone()),
                None => obj.remove("prevResult"),
            };
        }
        conf
    }

    async fn invoke(&self, conf: &Value, command: CniCommand, call: &Call<'_>) -> Result<PluginOutput, CniError> {
        let plugin = plugin_type(conf).to_string();
        let cni_path = self.cfg.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
        let env = vec![
            ("CNI_COMMAND".to_string(), command.as_str().to_string()),
            ("CNI_CONTAINERID".to_string(), call.container_id.to_string()),
            ("CNI_NETNS".to_string(), call.netns.clone()),
            ("CNI_IFNAME".to_string(), call.ifname.to_string()),
            ("CNI_ARGS".to_string(), call.args.clone()),
            ("CNI_PATH".to_string(), cni_path),
        ];
        let stdin = serde_json::to_vec(conf).map_err(|e| CniError::InvalidConfig(e.to_string()))?;
        tracing::debug!(%plugin, %command, ifname = call.ifname, netns = %call.netns, "running CNI plugin");
        let out = self
            .exec
            .exec(PluginInvocation {
                plugin: plugin.clone(),
                command,
                env,
                stdin,
                plugin_dirs: self.cfg.plugin_dirs.clone(),
            })
            .await?;
        if !out.stderr.is_empty() {
            tracing::debug!(%plugin, %command, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "CNI plugin stderr");
        }
        if out.success() {
            Ok(out)
        } else {
            Err(plugin_error(&plugin, command, &out))
        }
    }
}

impl Call<'_> {
    fn clone_ref(&self) -> Self {
        Call {
            container_id: self.container_id,
            netns: self.netns.clone(),
            ifname: self.ifname,
            args: self.args.clone(),
        }
    }
}

fn plugin_type(conf: &Value) -> &str {
    conf["type"].as_str().unwrap_or("")
}

/// A successful ADD's stdout: a JSON object.
fn parse_result_json(plugin: &str, out: &PluginOutput) -> Result<Value, CniError> {
    let bad = |reason: String| CniError::BadResult { plugin: plugin.to_string(), command: CniCommand::Add, reason };
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(bad(format!("expected a JSON object, got {other}"))),
        Err(e) => Err(bad(format!("{e}; stdout was {:?}", truncate(&String::from_utf8_lossy(&out.stdout), 512)))),
    }
}

/// A failed plugin's error: the spec's error object from stdout when it printed one,
/// else its stderr (or stdout) and exit status.
pub(crate) fn plugin_error(plugin: &str, command: CniCommand, out: &PluginOutput) -> CniError {
    #[derive(serde::Deserialize)]
    struct Wire {
        code: Option<u32>,
        #[serde(default)]
        msg: Option<String>,
        #[serde(default)]
        details: Option<String>,
    }
    let parsed = serde_json::from_slice::<Wire>(&out.stdout).ok().filter(|w| w.code.is_some() || w.msg.is_some());
    let (code, msg, details) = match parsed {
        Some(w) => (w.code, w.msg.unwrap_or_else(|| "(no message)".to_string()), w.details),
        None => {
            let status = match out.exit_code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            let text = [&out.stderr, &out.stdout]
                .into_iter()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .find(|s| !s.is_empty());
            let msg = match text {
                Some(t) => format!("{status}: {}", truncate(&t, 2048)),
                None => format!("{status}, no output"),
            };
            (None, msg, None)
        }
    };
    CniError::Plugin { plugin: plugin.to_string(), command, code, msg, details }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The spec's rule for network names and container IDs.
fn is_cni_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The spec's (and Linux's) rule for interface names.
pub(crate) fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not interface names");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Err("holds '/', ':', whitespace or a control character");
    }
    Ok(())
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;
