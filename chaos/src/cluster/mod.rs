//! A local multi-master keelson cluster: each master a `keelson server` process with its
//! own address — in `netns` mode its own network namespace on a bridge (so faults can cut
//! it off with nftables inside its namespace), in `loopback` mode its own 127.0.B.x
//! address — sharing one PKI (`D/pki`), with an admin kubeconfig (`D/admin.kubeconfig`,
//! one context per master; `D/mI.kubeconfig` pinned to master I) and optionally a
//! `keelson agent --simulate N`. `D/cluster.json` records it all, so `keelson cluster
//! status|down` (or [`Cluster::load`]) find it again.
//!
//! Masters are killed, restarted, paused and resumed by PID ([`Cluster::kill`],
//! [`Cluster::start`], [`Cluster::pause`], [`Cluster::resume`]); a PID loaded from
//! `cluster.json` is signalled only while `/proc/PID/cmdline` still names the master's
//! data directory. A cluster brought up in this process is torn down when dropped
//! (processes killed, namespaces and bridge deleted) unless [`Cluster::detach`]ed.
//!
//! Layout: `layout.rs` (addresses, names, subnet choice), `state.rs` (`cluster.json`),
//! `netns.rs` (namespaces, veths, bridge), `process.rs` (spawn, signal, reap),
//! `status.rs` (etcd `Maintenance.Status`), `kubeconfig.rs`.

pub mod kubeconfig;
pub mod layout;
pub mod netns;
pub mod nodes;
pub mod process;
pub mod state;
pub mod status;
pub mod tmpfs;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use rustix::process::Signal;

pub use layout::Net;
use layout::{master_name, API_PORT, ETCD_PORT, MAX_MASTERS, PEER_PORT};
use process::{Proc, ProcState};
pub use state::State;
use state::{AgentState, BridgeState, MasterState};
pub use status::MasterStatus;

/// How long [`Cluster::up`] waits for a leader and every API server.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` gives a process between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// How the masters are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace per master on a bridge (needs root, `ip` and `nsenter`).
    /// `subnet`: the /24 under 10.0.0.0/8 (default: a free one derived from the
    /// directory); `prefix`: names the namespaces `<prefix>-mI` and the bridge
    /// `<prefix>-br` (default `kc` + 6 hex digits of the directory; at most 12 characters).
    Netns { subnet: Option<Ipv4Addr>, prefix: Option<String> },
    /// Every master on its own loopback address (127.0.B.11, .12, …); no partitions.
    Loopback,
}

impl NetworkMode {
    /// `netns` when this process can make namespaces (root, `ip`, `nsenter`), else `loopback`.
    pub fn auto() -> NetworkMode {
        if netns::available().is_ok() {
            NetworkMode::Netns { subnet: None, prefix: None }
        } else {
            NetworkMode::Loopback
        }
    }
}

/// What [`Cluster::up`] starts.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many masters (1 to 9; 3 or 5 for a cluster that survives failures).
    pub masters: usize,
    /// Where everything goes: `mI/` (data), `mI.log`, `pki/`, kubeconfigs, `cluster.json`.
    pub dir: PathBuf,
    /// The `keelson` binary.
    pub binary: PathBuf,
    pub network: NetworkMode,
    /// `keelson server --election-timeout-ms` (the server's default when `None`).
    pub election_timeout_ms: Option<u64>,
    /// Also run `keelson agent --simulate N` against every master.
    pub simulate: Option<usize>,
    /// More `keelson server` arguments, for every master.
    pub server_args: Vec<String>,
    /// KEELSON_LOG of the masters and the agents (e.g. `info`).
    pub log_filter: String,
    /// Real nodes: `keelson agent --node-name nI`, each in its own namespace (netns only).
    pub agents: usize,
    /// More `keelson agent` arguments, for every real node.
    pub agent_args: Vec<String>,
}

impl ClusterSpec {
    /// `masters` masters in `dir` running `binary`, the network chosen by
    /// [`NetworkMode::auto`], everything else default.
    pub fn new(masters: usize, dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> ClusterSpec {
        ClusterSpec {
            masters,
            dir: dir.into(),
            binary: binary.into(),
            network: NetworkMode::auto(),
            election_timeout_ms: None,
            simulate: None,
            server_args: Vec::new(),
            log_filter: "info".into(),
            agents: 0,
            agent_args: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Spec(String),
    #[error("no cluster in {}: it has no cluster.json (was `keelson cluster up --dir {}` run?)", .0.display(), .0.display())]
    NotFound(PathBuf),
    #[error("a cluster is already running in {}: {why}; run `keelson cluster down --dir {}` first", dir.display(), dir.display())]
    AlreadyUp { dir: PathBuf, why: String },
    #[error("{0}")]
    State(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("network setup: {0}")]
    Network(String),
    #[error("{0}")]
    Spawn(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("there is no master {0} (masters are numbered from 0 to len-1)")]
    NoSuchMaster(usize),
    #[error("{0}")]
    Kube(String),
    #[error("{name} exited while the cluster was starting ({status}); its log {}:\n{tail}", log.display())]
    Exited { name: String, status: String, log: PathBuf, tail: String },
    #[error("timed out after {after:?} waiting for {what}{logs}")]
    Timeout { what: String, after: Duration, logs: String },
    #[error("could not take everything down: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

impl ClusterError {
    pub fn io(what: String, source: std::io::Error) -> ClusterError {
        ClusterError::Io { what, source }
    }
}

/// A running (or recorded) cluster.
pub struct Cluster {
    dir: PathBuf,
    state: State,
    /// Master `i`'s process while it runs.
    procs: Vec<Option<Proc>>,
    agent: Option<Proc>,
    /// Real node `i`'s agent while it runs.
    node_procs: Vec<Option<Proc>>,
    /// Brought up by this process: torn down on drop unless detached.
    owned: bool,
    detached: bool,
    torn_down: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("dir", &self.dir).field("state", &self.state).finish()
    }
}

impl Cluster {
    /// Start a cluster and wait (at most [`READY_TIMEOUT`]) until its masters agree on a
    /// leader and every API server answers the admin; then start the simulated agent.
    pub async fn up(spec: ClusterSpec) -> Result<Cluster, ClusterError> {
        Cluster::up_within(spec, READY_TIMEOUT).await
    }

    /// [`Cluster::up`] waiting at most `timeout`.
    pub async fn up_within(spec: ClusterSpec, timeout: Duration) -> Result<Cluster, ClusterError> {
        if spec.masters == 0 || spec.masters > MAX_MASTERS {
            return Err(ClusterError::Spec(format!("--masters {}: from 1 to {MAX_MASTERS}", spec.masters)));
        }
        if !spec.binary.is_file() {
            return Err(ClusterError::Spec(format!("the keelson binary {} does not exist", spec.binary.display())));
        }
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| ClusterError::io(format!("cannot create {}", spec.dir.display()), e))?;
        let dir = spec
            .dir
            .canonicalize()
            .map_err(|e| ClusterError::io(format!("cannot resolve {}", spec.dir.display()), e))?;
        let binary = spec.binary.canonicalize().unwrap_or(spec.binary.clone());

        // A cluster that was here before keeps its addresses: its Raft membership names them.
        let prior = match State::read(&dir) {
            Ok(s) => Some(s),
            Err(ClusterError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(p) = &prior {
            let old = Cluster::from_state(dir.clone(), p.clone());
            let running: Vec<String> = (0..old.len())
                .filter(|&i| old.is_running(i))
                .map(|i| format!("{} (pid {})", old.name(i), old.pid(i).unwrap_or(0)))
                .chain(old.agent.as_ref().filter(|a| a.is_running()).map(|a| format!("agent (pid {})", a.pid)))
                .chain(old.running_nodes().map(|(n, pid)| format!("node {n} (pid {pid})")))
                .collect();
            if !running.is_empty() {
                return Err(ClusterError::AlreadyUp {
                    dir: dir.clone(),
                    why: format!("{} still running", running.join(", ")),
                });
            }
            if p.masters.len() != spec.masters {
                return Err(ClusterError::Spec(format!(
                    "{} holds a {}-master cluster's data; start it with --masters {} or remove it (`keelson cluster down --purge`)",
                    dir.display(),
                    p.masters.len(),
                    p.masters.len()
                )));
            }
        }
        let net = netns::resolve_net(&spec.network, &dir, spec.masters, prior.as_ref().map(|p| &p.net))?;
        let nodes = nodes::plan(&net, &dir, spec.agents)?;

        let masters = (0..spec.masters)
            .map(|i| MasterState {
                name: master_name(i),
                ip: net.ip(i),
                peer_port: PEER_PORT,
                etcd_port: ETCD_PORT,
                api_port: API_PORT,
                pid: None,
                netns: net.netns(i),
                data_dir: dir.join(master_name(i)),
                log: dir.join(format!("{}.log", master_name(i))),
            })
            .collect();
        let state = State {
            version: state::STATE_VERSION,
            binary,
            net: net.clone(),
            election_timeout_ms: spec.election_timeout_ms,
            server_args: spec.server_args.clone(),
            log_filter: spec.log_filter.clone(),
            masters,
            bridge: net.bridge().map(|(name, ip)| BridgeState { name, ip }),
            agent: spec.simulate.map(|n| AgentState { simulate: n, pid: None, log: dir.join("agent.log") }),
            nodes,
            agent_args: spec.agent_args.clone(),
        };

        netns::create(&net, spec.masters)?;
        if let (Some((bridge, bridge_ip)), false) = (net.bridge(), state.nodes.is_empty()) {
            if let Err(e) = nodes::create(&state.nodes, (&bridge, bridge_ip)) {
                netns::delete(&net, spec.masters);
                return Err(e);
            }
        }
        let mut c = Cluster::from_state(dir, state);
        c.owned = true;
        for i in 0..c.len() {
            c.spawn_master(i)?;
        }
        c.save()?;
        c.wait_ready(timeout).await?;
        if spec.simulate.is_some() {
            c.spawn_agent()?;
            c.save()?;
        }
        if !c.state.nodes.is_empty() {
            c.start_nodes(timeout).await?;
        }
        Ok(c)
    }

    /// The cluster recorded in `dir/cluster.json` (its processes adopted by PID).
    pub fn load(dir: &Path) -> Result<Cluster, ClusterError> {
        let dir = dir.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClusterError::NotFound(dir.to_path_buf()),
            _ => ClusterError::io(format!("cannot resolve {}", dir.display()), e),
        })?;
        let state = State::read(&dir)?;
        Ok(Cluster::from_state(dir, state))
    }

    fn from_state(dir: PathBuf, state: State) -> Cluster {
        let procs =
            state.masters.iter().map(|m| m.pid.map(|pid| Proc::adopt(pid, m.data_dir.clone()))).collect::<Vec<_>>();
        let agent = state.agent.as_ref().and_then(|a| a.pid).map(|pid| Proc::adopt(pid, dir.join("admin.kubeconfig")));
        let node_procs = state.nodes.iter().map(|n| n.pid.map(|pid| Proc::adopt(pid, n.root_dir.clone()))).collect();
        Cluster { dir, state, procs, agent, node_procs, owned: false, detached: false, torn_down: false }
    }

    /// Leave the processes, namespaces and bridge running when this value is dropped
    /// (`keelson cluster up` does, so the cluster outlives it).
    pub fn detach(&mut self) {
        self.detached = true;
    }

    pub fn len(&self) -> usize {
        self.state.masters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.masters.is_empty()
    }

    /// `m1`, `m2`, … (index `i` from 0).
    pub fn name(&self, i: usize) -> &str {
        &self.state.masters[i].name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `cluster.json` holds (addresses, ports, PIDs as last saved).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The network, resolved.
    pub fn net(&self) -> &Net {
        &self.state.net
    }

    /// `https://IP:PORT` of master `i`'s Kubernetes API.
    pub fn api_url(&self, i: usize) -> String {
        let m = &self.state.masters[i];
        format!("https://{}:{}", m.ip, m.api_port)
    }

    /// `http://IP:PORT` of master `i`'s etcd endpoint.
    pub fn etcd_endpoint(&self, i: usize) -> String {
        let m = &self.state.masters[i];
        format!("http://{}:{}", m.ip, m.etcd_port)
    }

    /// `IP:PORT` of master `i`'s peer (Raft) listener.
    pub fn peer_addr(&self, i: usize) -> String {
        let m = &self.state.masters[i];
        format!("{}:{}", m.ip, m.peer_port)
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.state.masters[i].ip)
    }

    /// Master `i`'s network namespace (`None` in loopback mode: no partitions there).
    pub fn netns(&self, i: usize) -> Option<&str> {
        self.state.masters[i].netns.as_deref()
    }

    /// The bridge's name and address (netns mode).
    pub fn bridge(&self) -> Option<(&str, Ipv4Addr)> {
        self.state.bridge.as_ref().map(|b| (b.name.as_str(), b.ip))
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.state.masters[i].data_dir
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The admin kubeconfig (a context per master, master 1 current).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The admin kubeconfig pinned to master `i`.
    pub fn kubeconfig_path_for(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.kubeconfig", self.name(i)))
    }

    /// A kube client config for master `i` (admin), failing fast: 2 s to connect, 5 s to
    /// read or write, no automatic retries. Adjust and build a client from it where that
    /// doesn't fit (a watch idle for longer than the read timeout is cut).
    pub async fn kube_config(&self, i: usize) -> Result<kube::Config, ClusterError> {
        self.check(i)?;
        let path = self.kubeconfig_path_for(i);
        let kc = kube::config::Kubeconfig::read_from(&path)
            .map_err(|e| ClusterError::Kube(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Kube(format!("{}: {e}", path.display())))?;
        cfg.connect_timeout = Some(Duration::from_secs(2));
        cfg.read_timeout = Some(Duration::from_secs(5));
        cfg.write_timeout = Some(Duration::from_secs(5));
        cfg.reset_reader_on_write = true;
        cfg.default_retry = false;
        Ok(cfg)
    }

    /// An admin client pinned to master `i` (see [`Cluster::kube_config`]).
    pub async fn kube_client(&self, i: usize) -> Result<kube::Client, ClusterError> {
        let cfg = self.kube_config(i).await?;
        kube::Client::try_from(cfg).map_err(|e| ClusterError::Kube(format!("a client for {}: {e}", self.name(i))))
    }

    /// A channel to master `i`'s etcd endpoint, connected lazily (1 s connect timeout).
    pub async fn etcd_channel(&self, i: usize) -> Result<tonic::transport::Channel, ClusterError> {
        self.check(i)?;
        status::channel(&self.etcd_endpoint(i))
    }

    /// Every master's status (each asked at once, 1 s each).
    pub async fn status(&self) -> Vec<MasterStatus> {
        let futs = (0..self.len()).map(|i| {
            let st = self.proc_state(i);
            let base = MasterStatus::down(
                self.name(i).to_string(),
                self.ip(i),
                self.pid(i),
                st != ProcState::Gone,
                st == ProcState::Stopped,
                String::new(),
            );
            let ep = self.etcd_endpoint(i);
            async move { status::query(&ep, base).await }
        });
        futures::future::join_all(futs).await
    }

    /// The master that says it leads with the highest term, agreed on by a majority of
    /// the masters that answer.
    pub async fn leader(&self) -> Option<usize> {
        status::leader_of(&self.status().await)
    }

    /// Wait until [`Cluster::leader`] names one.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timeout("the masters to agree on a leader", timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Master `i`'s PID while it runs (as far as this value knows).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.get(i)?.as_ref().map(|p| p.pid)
    }

    fn proc_state(&self, i: usize) -> ProcState {
        self.procs.get(i).and_then(|p| p.as_ref()).map_or(ProcState::Gone, |p| p.state())
    }

    /// Is master `i`'s process alive (running or paused)?
    pub fn is_running(&self, i: usize) -> bool {
        self.proc_state(i) != ProcState::Gone
    }

    /// Is master `i` SIGSTOPped?
    pub fn is_paused(&self, i: usize) -> bool {
        self.proc_state(i) == ProcState::Stopped
    }

    /// The simulated agent's PID, if one runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().filter(|a| a.is_running()).map(|a| a.pid)
    }

    fn check(&self, i: usize) -> Result<(), ClusterError> {
        if i >= self.len() {
            return Err(ClusterError::NoSuchMaster(i));
        }
        Ok(())
    }

    fn running_proc(&self, i: usize) -> Result<&Proc, ClusterError> {
        self.check(i)?;
        self.procs[i]
            .as_ref()
            .filter(|p| p.is_running())
            .ok_or_else(|| ClusterError::NotRunning(format!("{} is not running", self.name(i))))
    }

    /// SIGKILL master `i` and reap it (`cluster.json` is updated).
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        let Some(mut p) = self.procs[i].take() else {
            return Err(ClusterError::NotRunning(format!("{} is not running", self.name(i))));
        };
        if let Err(e) = p.kill(Duration::from_secs(10)) {
            self.procs[i] = Some(p);
            return Err(e);
        }
        self.save()
    }

    /// Start master `i` again (after [`Cluster::kill`] or a crash) with the same arguments
    /// and data; `cluster.json` records its new PID.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if let Some(p) = self.procs[i].as_mut() {
            p.try_reap();
            if p.is_running() {
                let pid = p.pid;
                return Err(ClusterError::Spec(format!("{} is already running (pid {pid})", self.name(i))));
            }
        }
        self.spawn_master(i)?;
        self.save()
    }

    /// Start master `i` afresh as a new member of the running cluster: its data directory
    /// is deleted and it starts with `--initial-cluster-state existing` (the caller has
    /// removed its old member and added one with its peer address first). Later
    /// [`Cluster::start`]s restart it from the new data as usual.
    pub fn rejoin(&mut self, i: usize) -> Result<(), ClusterError> {
        self.check(i)?;
        if let Some(p) = self.procs[i].as_mut() {
            p.try_reap();
            if p.is_running() {
                let pid = p.pid;
                return Err(ClusterError::Spec(format!("{} is still running (pid {pid})", self.name(i))));
            }
        }
        let m = &self.state.masters[i];
        match std::fs::remove_dir_all(&m.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClusterError::io(format!("cannot delete {}", m.data_dir.display()), e)),
        }
        let mut cmd = self.master_command(i);
        cmd.args(["--initial-cluster-state", "existing"]);
        let m = &self.state.masters[i];
        let p = Proc::spawn(cmd, &m.log, &m.name, m.data_dir.clone())?;
        self.procs[i] = Some(p);
        self.save()
    }

    /// Start master `i` (not running) with more environment, e.g. libfaketime's
    /// `LD_PRELOAD`/`FAKETIME` for a clock offset. A later [`Cluster::start`] drops it.
    pub fn start_with_env(&mut self, i: usize, env: &[(String, String)]) -> Result<(), ClusterError> {
        self.check(i)?;
        if let Some(p) = self.procs[i].as_mut() {
            p.try_reap();
            if p.is_running() {
                let pid = p.pid;
                return Err(ClusterError::Spec(format!("{} is already running (pid {pid})", self.name(i))));
            }
        }
        let mut cmd = self.master_command(i);
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let m = &self.state.masters[i];
        let p = Proc::spawn(cmd, &m.log, &m.name, m.data_dir.clone())?;
        self.procs[i] = Some(p);
        self.save()
    }

    /// SIGSTOP master `i`; returns once it is stopped (at most 1 s).
    pub fn pause(&self, i: usize) -> Result<(), ClusterError> {
        let p = self.running_proc(i)?;
        p.signal(Signal::STOP)?;
        self.settle(p, ProcState::Stopped, "stop")
    }

    /// SIGCONT master `i`; returns once it runs again (at most 1 s).
    pub fn resume(&self, i: usize) -> Result<(), ClusterError> {
        let p = self.running_proc(i)?;
        p.signal(Signal::CONT)?;
        self.settle(p, ProcState::Running, "continue")
    }

    /// Signals are delivered asynchronously: wait until `p` is in `want`.
    fn settle(&self, p: &Proc, want: ProcState, what: &str) -> Result<(), ClusterError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            match p.state() {
                s if s == want => return Ok(()),
                ProcState::Gone => return Err(ClusterError::NotRunning(format!("process {} exited", p.pid))),
                _ if std::time::Instant::now() >= deadline => {
                    return Err(ClusterError::NotRunning(format!("process {} did not {what} within 1 s", p.pid)))
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.state.masters[i].log.clone()
    }

    /// The last `lines` lines of master `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        process::tail(&self.log_path(i), lines)
    }

    /// The simulated agent's log.
    pub fn agent_log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Write `cluster.json` (PIDs as they are now).
    pub fn save(&self) -> Result<(), ClusterError> {
        let mut st = self.state.clone();
        for (m, p) in st.masters.iter_mut().zip(&self.procs) {
            m.pid = p.as_ref().map(|p| p.pid);
        }
        if let Some(a) = st.agent.as_mut() {
            a.pid = self.agent.as_ref().map(|p| p.pid);
        }
        for (n, p) in st.nodes.iter_mut().zip(&self.node_procs) {
            n.pid = p.as_ref().map(|p| p.pid);
        }
        st.write(&self.dir)
    }

    /// Stop everything: SIGTERM (SIGCONT first, for paused ones), SIGKILL what is left
    /// after [`TERM_GRACE`]; delete the namespaces and the bridge. The data stays unless
    /// `purge` (then everything this cluster wrote in its directory goes).
    pub async fn down(mut self, purge: bool) -> Result<(), ClusterError> {
        self.torn_down = true;
        let mut procs: Vec<(String, Proc)> = Vec::new();
        if let Some(a) = self.agent.take() {
            procs.push(("agent".into(), a));
        }
        for (n, p) in self.state.nodes.iter().zip(self.node_procs.iter_mut()) {
            if let Some(p) = p.take() {
                procs.push((format!("node {}", n.name), p));
            }
        }
        for i in 0..self.len() {
            if let Some(p) = self.procs[i].take() {
                procs.push((self.name(i).to_string(), p));
            }
        }
        for (_, p) in &procs {
            p.term();
        }
        let deadline = tokio::time::Instant::now() + TERM_GRACE;
        while tokio::time::Instant::now() < deadline && procs.iter_mut().any(|(_, p)| !p.gone_now()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut failed = Vec::new();
        let left: Vec<usize> = (0..procs.len()).filter(|&k| !procs[k].1.gone_now()).collect();
        for &k in &left {
            procs[k].1.kill_nowait();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && left.iter().any(|&k| !procs[k].1.gone_now()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for &k in &left {
            if !procs[k].1.gone_now() {
                failed.push(format!("{} (pid {}) is still there after SIGKILL", procs[k].0, procs[k].1.pid));
            }
        }
        failed.extend(self.remove_nodes());
        failed.extend(netns::delete(&self.state.net, self.len()));
        // A disk-full fault interrupted midway leaves a data dir on a tmpfs: unmount it
        // (its data copied back to disk first unless purging).
        for i in 0..self.len() {
            if let Err(e) = self.release_data_tmpfs(i, !purge) {
                failed.push(e.to_string());
            }
        }
        if purge {
            self.purge_files(&mut failed);
        } else if let Err(e) = self.save() {
            failed.push(e.to_string());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Teardown(failed))
        }
    }

    /// Remove what this cluster wrote in its directory, then the directory if empty.
    fn purge_files(&self, failed: &mut Vec<String>) {
        let mut paths: Vec<PathBuf> =
            self.state.masters.iter().flat_map(|m| [m.data_dir.clone(), m.log.clone()]).collect();
        paths.extend((0..self.len()).map(|i| self.kubeconfig_path_for(i)));
        paths.extend([self.pki_dir(), self.kubeconfig_path(), self.agent_log_path(), State::path(&self.dir)]);
        paths.extend(self.state.nodes.iter().flat_map(|n| [n.root_dir.clone(), n.log.clone()]));
        paths.extend(
            (0..self.len())
                .flat_map(|i| [self.data_aside_dir(i), self.data_saved_dir(i), self.data_tmpfs_live_marker(i)]),
        );
        for p in paths {
            let res = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failed.push(format!("cannot remove {}: {e}", p.display())),
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// Master `i`'s command line.
    fn master_command(&self, i: usize) -> Command {
        let m = &self.state.masters[i];
        let mut cmd = match &m.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", netns::netns_path(ns))).arg("--").arg(&self.state.binary);
                c
            }
            None => Command::new(&self.state.binary),
        };
        cmd.args(["server", "--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--peer-addr", &format!("{}:{}", m.ip, m.peer_port)])
            .args(["--etcd-addr", &format!("{}:{}", m.ip, m.etcd_port)])
            .args(["--api-addr", &format!("{}:{}", m.ip, m.api_port)])
            .args(["--initial-cluster", &self.initial_cluster()])
            .arg("--pki-dir")
            .arg(self.pki_dir());
        if let Some(ms) = self.state.election_timeout_ms {
            cmd.args(["--election-timeout-ms", &ms.to_string()]);
        }
        cmd.args(&self.state.server_args).env("KEELSON_LOG", &self.state.log_filter);
        cmd
    }

    fn initial_cluster(&self) -> String {
        self.state.masters.iter().map(|m| format!("{}={}:{}", m.name, m.ip, m.peer_port)).collect::<Vec<_>>().join(",")
    }

    fn spawn_master(&mut self, i: usize) -> Result<(), ClusterError> {
        let cmd = self.master_command(i);
        let m = &self.state.masters[i];
        let p = Proc::spawn(cmd, &m.log, &m.name, m.data_dir.clone())?;
        self.procs[i] = Some(p);
        Ok(())
    }

    fn spawn_agent(&mut self) -> Result<(), ClusterError> {
        let Some(a) = self.state.agent.clone() else { return Ok(()) };
        let servers = (0..self.len()).map(|i| self.api_url(i)).collect::<Vec<_>>().join(",");
        let mut cmd = Command::new(&self.state.binary);
        cmd.args(["agent", "--simulate", &a.simulate.to_string()])
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(["--server", &servers])
            .env("KEELSON_LOG", &self.state.log_filter);
        self.agent = Some(Proc::spawn(cmd, &a.log, "agent", self.kubeconfig_path())?);
        Ok(())
    }

    /// Wait until a leader is elected, the PKI exists (then write the kubeconfigs) and
    /// every API server answers an admin request that reads the store.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stage = "the masters to elect a leader".to_string();
        let mut kubeconfigs = false;
        loop {
            for i in 0..self.len() {
                if let Some(status) = self.procs[i].as_mut().and_then(|p| p.try_reap()) {
                    self.procs[i] = None;
                    return Err(ClusterError::Exited {
                        name: self.name(i).to_string(),
                        status: status.to_string(),
                        log: self.log_path(i),
                        tail: self.log_tail(i, 30),
                    });
                }
            }
            if self.leader().await.is_some() {
                if !kubeconfigs {
                    if kubeconfig::pki_ready(&self.pki_dir()) {
                        self.write_kubeconfigs()?;
                        kubeconfigs = true;
                    } else {
                        stage = format!("the masters to write the cluster PKI into {}", self.pki_dir().display());
                    }
                }
                if kubeconfigs {
                    let answers = futures::future::join_all((0..self.len()).map(|i| self.api_answers(i))).await;
                    let silent: Vec<String> = answers
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("{} ({e})", self.name(i))))
                        .collect();
                    if silent.is_empty() {
                        return Ok(());
                    }
                    stage = format!("every API server to answer; not yet: {}", silent.join(", "));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let mut e = self.timeout(&stage, timeout);
                if let (ClusterError::Timeout { logs, .. }, true) = (&mut e, self.state.net.is_netns()) {
                    logs.push_str(
                        "\n(if the masters can't reach each other across the bridge, check the host's firewall: \
                         with br_netfilter loaded, bridged traffic passes the FORWARD chain)",
                    );
                }
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Does master `i`'s API server serve the admin a read of the `default` namespace?
    async fn api_answers(&self, i: usize) -> Result<(), String> {
        let client = self.kube_client(i).await.map_err(|e| e.to_string())?;
        let api: kube::Api<Namespace> = kube::Api::all(client);
        tokio::time::timeout(Duration::from_secs(3), api.get("default"))
            .await
            .map_err(|_| "no answer within 3s".to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Write `admin.kubeconfig` (every master, m1 current) and `mI.kubeconfig`.
    pub fn write_kubeconfigs(&self) -> Result<(), ClusterError> {
        let all: Vec<(String, String)> = (0..self.len()).map(|i| (self.name(i).to_string(), self.api_url(i))).collect();
        kubeconfig::write_private(&self.kubeconfig_path(), &kubeconfig::render(&self.pki_dir(), &all, &all[0].0)?)?;
        for (i, m) in all.iter().enumerate() {
            let text = kubeconfig::render(&self.pki_dir(), std::slice::from_ref(m), &m.0)?;
            kubeconfig::write_private(&self.kubeconfig_path_for(i), &text)?;
        }
        Ok(())
    }

    fn timeout(&self, what: &str, after: Duration) -> ClusterError {
        let logs: String = (0..self.len())
            .map(|i| {
                format!(
                    "\n--- {} ({}), last 20 lines:\n{}",
                    self.name(i),
                    self.log_path(i).display(),
                    self.log_tail(i, 20)
                )
            })
            .collect();
        ClusterError::Timeout { what: what.to_string(), after, logs }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned || self.detached || self.torn_down {
            return;
        }
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill(Duration::from_secs(5));
        }
        for p in self.node_procs.iter_mut() {
            if let Some(mut p) = p.take() {
                let _ = p.kill(Duration::from_secs(5));
            }
        }
        for e in self.remove_nodes() {
            tracing::warn!(error = %e, "cluster teardown");
        }
        for p in self.procs.iter_mut() {
            if let Some(mut p) = p.take() {
                let _ = p.kill(Duration::from_secs(5));
            }
        }
        for e in netns::delete(&self.state.net, self.len()) {
            tracing::warn!(error = %e, "cluster teardown");
        }
        for i in 0..self.len() {
            if let Err(e) = self.release_data_tmpfs(i, true) {
                tracing::warn!(error = %e, "cluster teardown");
            }
        }
        let _ = self.save();
    }
}
