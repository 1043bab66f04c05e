//! One pod's worker (upstream's podWorkers + SyncPod): it drives the pod from what the API
//! says toward running — sandbox, init containers in order, containers, restarts with
//! back-off — writes its status back, and on deletion stops it gracefully and undoes it
//! all. Level-triggered: every pass looks at the pod, the records on disk and the runtime,
//! so a restarted kubelet adopts running pods as they are.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::container::{self, Record, Terminated};
use super::probe::{Kind, Tracker};
use super::sandbox::{self, Sandbox};
use super::spec;
use super::start::StartTrace;
use super::status::{self, ContainerStatus, Observed, State};
use super::volumes;
use super::Shared;
use crate::kubelet::image::PullPolicy;
use crate::kubelet::runtime::{bundle, rootfs, Started};
use crate::simulate::retry::{is_not_found, sleep_or_stop};

/// How often a pod with running containers is looked at to see exits the shims do not
/// report (those of containers started before the agent restarted): a shim started by
/// this agent wakes the worker as it ends.
const EXIT_POLL: Duration = Duration::from_secs(2);
/// After SIGKILL, how long a container may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// SIGTERM's time after the preStop hooks, however long they took (upstream's minimum).
const MIN_GRACE_AFTER_HOOKS: Duration = Duration::from_secs(2);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The longest a postStart hook may run (upstream sets none; the pod's deletion or the
/// agent's stop also end it).
const POST_START_LIMIT: Duration = Duration::from_secs(300);

/// A container's back-off (crash loops and image pulls).
#[derive(Debug, Default, Clone)]
struct Backoff {
    until: Option<Instant>,
    next: Option<Duration>,
}

impl Backoff {
    fn active(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }
    fn bump(&mut self, first: Duration, max: Duration) {
        let d = self.next.unwrap_or(first);
        self.until = Some(Instant::now() + d);
        self.next = Some((d * 2).min(max));
    }
}

#[derive(Debug, Default)]
struct Ctr {
    crash: Backoff,
    pull: Backoff,
    /// Why it is not running, when it has not started.
    waiting: Option<(String, Option<String>)>,
    /// The probes of the running instance (its attempt number).
    probes: Option<(u32, Vec<Tracker>)>,
    /// A failed liveness/startup probe's kill: SIGKILL after this.
    killing: Option<(u32, Instant)>,
}

pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    dir: PathBuf,
    ctrs: HashMap<String, Ctr>,
    sandbox: Option<Sandbox>,
    sandbox_error: Option<(String, String)>,
    sandbox_backoff: Backoff,
    /// The pod has finished (Succeeded/Failed): its sandbox is released, nothing runs again.
    finished: bool,
    last_status: Option<Value>,
    start_time: String,
    /// Notified when a container's shim ends.
    exited: Arc<tokio::sync::Notify>,
    /// Why the pod's claim volumes cannot be used, as last said.
    claims_error: Option<String>,
    /// The pod's start: its span and its duration.
    start: StartTrace,
    /// The pod as the API last said and the agent's stop, for what must end early (a
    /// postStart hook when the pod is deleted).
    updates: Option<(watch::Receiver<Option<Arc<Pod>>>, CancellationToken)>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, uid: String) -> Worker {
        let dir = shared.cfg.pods_dir().join(&uid);
        Worker {
            shared,
            uid,
            dir,
            ctrs: HashMap::new(),
            sandbox: None,
            sandbox_error: None,
            sandbox_backoff: Backoff::default(),
            finished: false,
            last_status: None,
            start_time: crate::kubelet::now(),
            exited: Arc::new(tokio::sync::Notify::new()),
            claims_error: None,
            start: StartTrace::new(),
            updates: None,
        }
    }

    /// Run until the pod is gone and undone (or `stop`: then leave it running).
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>, stop: CancellationToken) {
        self.updates = Some((rx.clone(), stop.clone()));
        // A pod the API forgot at once (grace 0) stops as last seen (its grace period and
        // preStop hooks, as upstream's), not with a default 30 s.
        let mut last: Option<Arc<Pod>> = None;
        loop {
            let pod = rx.borrow_and_update().clone();
            let wait = match &pod {
                Some(p) if p.metadata.deletion_timestamp.is_none() => {
                    last = Some(p.clone());
                    match self.start.span_for(p) {
                        Some(span) => self.sync(p).instrument(span).await,
                        None => self.sync(p).await,
                    }
                }
                Some(p) => {
                    self.terminate(Some(p), true, &stop).await;
                    return;
                }
                None => {
                    self.terminate(last.as_deref(), false, &stop).await;
                    return;
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                () = self.exited.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn policy(pod: &Pod) -> String {
        pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    /// One pass; returns when to look again.
    async fn sync(&mut self, pod: &Pod) -> Duration {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.finished || matches!(phase, Some("Succeeded" | "Failed")) {
            // A finished pod never runs again (as upstream): give back its address, netns
            // and mounts now rather than when it is deleted (Jobs keep theirs).
            if !self.finished {
                self.release().await;
            }
            self.start.observe_phase(phase.unwrap_or("Succeeded"));
            return Duration::from_secs(3600);
        }
        let mut next = Duration::from_secs(30);
        let observed = self.drive(pod, &mut next).await;
        self.write_status(pod, &observed).await;
        self.start.observe_phase(status::phase(&observed));
        next
    }

    /// Release a finished pod's sandbox and filesystems (its records and logs stay).
    async fn release(&mut self) {
        if let Err(e) = unmount_all(&self.dir) {
            tracing::warn!(error = %e, "unmounting a finished pod's filesystems failed");
            return;
        }
        let sb = self.sandbox.take().or_else(|| sandbox::load(&self.dir));
        let cni = self.shared.cni.borrow().clone();
        if let Some(sb) = sb {
            if let Err(e) = sandbox::remove(&sb, cni.as_deref()).await {
                tracing::warn!(error = %e, "releasing a finished pod's sandbox failed");
                self.sandbox = Some(sb);
                return;
            }
        }
        let _ = std::fs::remove_file(self.dir.join("sandbox.json"));
        self.finished = true;
        tracing::info!("pod finished; its sandbox is released");
    }

    async fn drive(&mut self, pod: &Pod, next: &mut Duration) -> Observed {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = Self::policy(pod);
        let mut o = Observed {
            restart_policy: policy.clone(),
            host_ip: self.shared.cfg.node_ip.to_string(),
            start_time: Some(self.start_time.clone()),
            ..Default::default()
        };
        // Claim volumes before anything runs (upstream's volume manager): until they can be
        // used the pod waits in ContainerCreating, saying why.
        if let Err(e) = volumes::claims(&self.shared.client, pod, &self.shared.cfg.node_name, &self.dir).await {
            return self.waiting_for_claims(pod, &e, o, next).await;
        }
        self.claims_error = None;
        // The sandbox first.
        if self.sandbox.is_none() {
            self.sandbox = sandbox::load(&self.dir).filter(|s| s.netns_path.exists());
        }
        if self.sandbox.is_none() && !self.sandbox_backoff.active() {
            let cni = self.shared.cni.borrow().clone();
            match cni {
                None => {
                    self.sandbox_error = Some(("NetworkNotReady".into(), "the node has no podCIDR yet".into()));
                    *next = Duration::from_millis(250);
                }
                Some(cni) => match sandbox::ensure(
                    pod,
                    &self.dir,
                    &cni,
                    &self.shared.cfg.netns_prefix,
                    &self.shared.cluster_dns(&cni),
                )
                .await
                {
                    Ok(s) => {
                        self.sandbox = Some(s);
                        self.sandbox_error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "creating the pod sandbox failed");
                        self.sandbox_error = Some(("FailedCreatePodSandBox".into(), e));
                        self.sandbox_backoff.bump(Duration::from_secs(1), Duration::from_secs(30));
                    }
                },
            }
        }
        let init: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let main: Vec<Container> = spec.containers.clone();
        let Some(sb) = self.sandbox.clone() else {
            if let Some(u) = self.sandbox_backoff.until {
                *next = (*next).min(u.saturating_duration_since(Instant::now()));
            }
            o.init = init.iter().map(|c| self.waiting_status(c, "PodInitializing")).collect();
            o.containers = main.iter().map(|c| self.waiting_status(c, "ContainerCreating")).collect();
            o.sandbox_error.clone_from(&self.sandbox_error);
            return o;
        };
        o.sandbox_ready = true;
        o.pod_ip.clone_from(&sb.ip);
        // Init containers, one after the other, each to success.
        o.initialized = true;
        for c in &init {
            let record = container::load(&self.dir, &c.name);
            let ended = record.as_ref().and_then(|r| container::terminated(&self.dir, &c.name, r));
            match (&record, &ended) {
                (Some(_), Some(t)) if t.exit_code == 0 => continue,
                (Some(_), None) => {
                    o.initialized = false;
                    *next = (*next).min(EXIT_POLL);
                    break;
                }
                (Some(_), Some(_)) if policy == "Never" => {
                    o.initialized = false;
                    break;
                }
                _ => {
                    o.initialized = false;
                    self.start_if_due(pod, c, record.as_ref(), ended.as_ref(), &sb, next).await;
                    break;
                }
            }
        }
        o.init = init.iter().map(|c| self.observe(c, false)).collect();
        if o.initialized {
            for c in &main {
                let record = container::load(&self.dir, &c.name);
                let ended = record.as_ref().and_then(|r| container::terminated(&self.dir, &c.name, r));
                let restart = match &ended {
                    None => record.is_none(),
                    Some(t) => policy == "Always" || (policy == "OnFailure" && t.exit_code != 0),
                };
                if restart {
                    self.start_if_due(pod, c, record.as_ref(), ended.as_ref(), &sb, next).await;
                } else if let (Some(r), None) = (&record, &ended) {
                    *next = (*next).min(EXIT_POLL);
                    self.probe(pod, c, r, &sb, next).await;
                }
            }
            o.containers = main.iter().map(|c| self.observe(c, true)).collect();
        } else {
            o.containers = main.iter().map(|c| self.waiting_status(c, "PodInitializing")).collect();
        }
        o
    }

    /// The status of a pod whose claim volumes are not usable (yet): retried soon; a
    /// volume that cannot be used here is also a `FailedMount` event and the pod's reason.
    async fn waiting_for_claims(
        &mut self,
        pod: &Pod,
        e: &volumes::ClaimError,
        mut o: Observed,
        next: &mut Duration,
    ) -> Observed {
        if self.claims_error.as_deref() != Some(e.message()) {
            tracing::info!(reason = %e, "the pod waits for its volumes");
            if let volumes::ClaimError::Failed(m) = e {
                let note = format!("Unable to attach or mount volumes: {m}");
                self.shared.events.pod(pod, None, true, "FailedMount", note);
            }
            self.claims_error = Some(e.message().to_string());
        }
        *next = (*next).min(Duration::from_secs(1));
        let spec = pod.spec.clone().unwrap_or_default();
        let waiting = |c: &Container, reason: &str| {
            let mut s = self.waiting_status(c, reason);
            s.state = State::waiting(reason, Some(e.to_string()));
            s
        };
        o.init = spec.init_containers.iter().flatten().map(|c| waiting(c, "PodInitializing")).collect();
        o.containers = spec.containers.iter().map(|c| waiting(c, "ContainerCreating")).collect();
        if let volumes::ClaimError::Failed(m) = e {
            o.sandbox_error = Some(("FailedMount".into(), m.clone()));
        }
        o
    }

    /// Run `c`'s due probes; a failed liveness (or startup) probe kills the instance
    /// (SIGTERM, SIGKILL after the grace period) so it restarts by the restart policy.
    async fn probe(&mut self, pod: &Pod, c: &Container, r: &Record, sb: &Sandbox, next: &mut Duration) {
        let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        let runtime = self.shared.runtime.clone();
        let ctr = self.ctrs.entry(c.name.clone()).or_default();
        if let Some((attempt, deadline)) = ctr.killing {
            if attempt == r.attempt {
                if Instant::now() >= deadline {
                    let _ = runtime.kill(&r.id, "KILL").await;
                }
                return;
            }
            ctr.killing = None;
        }
        if ctr.probes.as_ref().is_none_or(|(a, _)| *a != r.attempt) {
            ctr.probes = Some((r.attempt, Tracker::for_container(c, Instant::now())));
        }
        let Some((_, trackers)) = ctr.probes.as_mut() else { return };
        let ip = sb.ip.clone().unwrap_or_default();
        let started = trackers.iter().find(|t| t.kind == Kind::Startup).is_none_or(|t| t.ok);
        let mut kill = None;
        for t in trackers.iter_mut() {
            let runs = match t.kind {
                Kind::Startup => !t.ok,
                _ => started,
            };
            if !runs {
                continue;
            }
            if t.due(Instant::now()) {
                let result = t.run(c, &ip, &runtime, &r.id).await;
                if let Err(e) = &result {
                    let note = format!("{:?} probe failed: {e}", t.kind);
                    self.shared.events.pod(pod, Some(&c.name), true, "Unhealthy", note);
                }
                let changed = t.record(result.is_ok(), result.err(), Instant::now());
                if changed || t.last_error.is_some() {
                    tracing::info!(container = %c.name, probe = ?t.kind, ok = t.ok, error = t.last_error.as_deref(), "probe");
                }
                let fatal = match t.kind {
                    Kind::Startup => !t.ok && t.failed(),
                    Kind::Liveness => !t.ok,
                    Kind::Readiness => false,
                };
                if fatal {
                    kill = Some(format!("{:?} probe failed: {}", t.kind, t.last_error.clone().unwrap_or_default()));
                    break;
                }
            }
            *next = (*next).min(t.next_at().saturating_duration_since(Instant::now()));
        }
        if let Some(why) = kill {
            tracing::info!(container = %c.name, reason = %why, "killing the container; it will be restarted");
            let kind = why.split(' ').next().unwrap_or_default().to_ascii_lowercase();
            let note = format!("Container {} failed {kind} probe, will be restarted", c.name);
            self.shared.events.pod(pod, Some(&c.name), false, "Killing", note);
            let _ = runtime.kill(&r.id, "TERM").await;
            ctr.killing = Some((r.attempt, Instant::now() + grace_period(grace)));
            ctr.probes = None;
        }
    }

    /// Whether the probes of `c`'s current instance say it is started and ready.
    fn probed_ready(&self, c: &Container, attempt: u32) -> bool {
        let Some((a, trackers)) = self.ctrs.get(&c.name).and_then(|x| x.probes.as_ref()) else {
            // Not probed yet: ready unless it has probes that must pass first.
            return c.readiness_probe.is_none() && c.startup_probe.is_none();
        };
        *a == attempt && trackers.iter().filter(|t| t.kind != Kind::Liveness).all(|t| t.ok)
    }

    /// Whether `c`'s current instance is past its startup probe (if it has one).
    fn probe_started(&self, c: &Container, attempt: u32) -> bool {
        match self.ctrs.get(&c.name).and_then(|x| x.probes.as_ref()) {
            Some((a, trackers)) => *a == attempt && trackers.iter().filter(|t| t.kind == Kind::Startup).all(|t| t.ok),
            None => c.startup_probe.is_none(),
        }
    }

    fn waiting_status(&self, c: &Container, reason: &str) -> ContainerStatus {
        let record = container::load(&self.dir, &c.name);
        ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id: None,
            state: State::waiting(reason, None),
            last_state: record.and_then(|r| r.last.map(|t| t.state())),
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    /// What container `c` is doing, for the status.
    fn observe(&self, c: &Container, main: bool) -> ContainerStatus {
        let record = container::load(&self.dir, &c.name);
        let ctr = self.ctrs.get(&c.name);
        let Some(r) = record else {
            let (reason, message) = ctr
                .and_then(|c| c.waiting.clone())
                .unwrap_or_else(|| (if main { "ContainerCreating" } else { "PodInitializing" }.to_string(), None));
            let mut s = self.waiting_status(c, &reason);
            s.state = State::Waiting { reason, message };
            return s;
        };
        let ended = container::terminated(&self.dir, &c.name, &r);
        let (state, last) = match (&ended, ctr.and_then(|c| c.waiting.clone())) {
            // Ended, and waiting to start again (back-off, a pull): its end is the last state.
            (Some(t), Some((reason, message))) => (State::Waiting { reason, message }, Some(t.state())),
            (Some(t), None) => (t.state(), r.last.as_ref().map(Terminated::state)),
            (None, _) => (
                State::Running { started_at: r.started_at.clone().unwrap_or_default() },
                r.last.as_ref().map(Terminated::state),
            ),
        };
        let running = matches!(state, State::Running { .. });
        ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: r.image_id.clone(),
            container_id: Some(format!("{}://{}", self.shared.runtime.name(), r.id)),
            state,
            last_state: last,
            restart_count: i32::try_from(r.attempt).unwrap_or(i32::MAX),
            ready: main && running && self.probed_ready(c, r.attempt),
            started: running && self.probe_started(c, r.attempt),
        }
    }

    /// Start `c` (again) unless it is backing off.
    async fn start_if_due(
        &mut self,
        pod: &Pod,
        c: &Container,
        record: Option<&Record>,
        ended: Option<&Terminated>,
        sb: &Sandbox,
        next: &mut Duration,
    ) {
        let cfg = self.shared.cfg.clone();
        let ctr = self.ctrs.entry(c.name.clone()).or_default();
        if let Some(t) = ended {
            // It ran long enough: forget earlier crashes.
            let ran_long = record
                .and_then(|r| r.started_at.as_deref())
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .zip(t.finished_at.parse::<jiff::Timestamp>().ok())
                .is_some_and(|(a, b)| (b - a).get_seconds() >= BACKOFF_RESET.as_secs() as i64);
            if ran_long {
                ctr.crash = Backoff::default();
            }
            if ctr.crash.next.is_none() {
                // The first crash restarts at once; back-off starts with the second.
                ctr.crash.next = Some(cfg.initial_backoff);
            } else if ctr.crash.until.is_none() {
                ctr.crash.bump(cfg.initial_backoff, cfg.max_backoff);
                let left = ctr.crash.until.map(|u| u.saturating_duration_since(Instant::now())).unwrap_or_default();
                self.shared.events.pod(
                    pod,
                    Some(&c.name),
                    true,
                    "BackOff",
                    format!("Back-off restarting failed container {} in pod {}", c.name, pod_title(pod)),
                );
                ctr.waiting = Some((
                    "CrashLoopBackOff".into(),
                    Some(format!(
                        "back-off {}s restarting failed container={} pod={}",
                        left.as_secs().max(1),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default()
                    )),
                ));
            }
            if ctr.crash.active() {
                if let Some(u) = ctr.crash.until {
                    *next = (*next).min(u.saturating_duration_since(Instant::now()));
                }
                return;
            }
        }
        if ctr.pull.active() {
            // ErrImagePull was said once; until the next try it is ImagePullBackOff.
            if let Some((reason, _)) = ctr.waiting.as_mut() {
                if reason == "ErrImagePull" {
                    *reason = "ImagePullBackOff".into();
                    let image = c.image.clone().unwrap_or_default();
                    self.shared.events.pod(
                        pod,
                        Some(&c.name),
                        false,
                        "BackOff",
                        format!("Back-off pulling image {image:?}"),
                    );
                }
            }
            if let Some(u) = ctr.pull.until {
                *next = (*next).min(u.saturating_duration_since(Instant::now()));
            }
            return;
        }
        match self.start(pod, c, record, ended, sb).await {
            Ok(()) => {
                let ctr = self.ctrs.entry(c.name.clone()).or_default();
                ctr.waiting = None;
                ctr.crash.until = None;
                ctr.pull = Backoff::default();
                *next = (*next).min(EXIT_POLL);
            }
            Err((reason, message, pull)) => {
                tracing::warn!(container = %c.name, reason, message, "container not started");
                if reason == "CreateContainerConfigError" || reason == "RunContainerError" {
                    self.shared.events.pod(pod, Some(&c.name), true, "Failed", format!("Error: {message}"));
                }
                let ctr = self.ctrs.entry(c.name.clone()).or_default();
                let b = if pull { &mut ctr.pull } else { &mut ctr.crash };
                b.bump(cfg.initial_backoff, cfg.max_backoff);
                if let Some(u) = b.until {
                    *next = (*next).min(u.saturating_duration_since(Instant::now()));
                }
                ctr.waiting = Some((reason, Some(message)));
                if pull {
                    // Look again soon to say ImagePullBackOff.
                    *next = (*next).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Start a new instance of `c`: (reason, message, whether it is a pull error) if not.
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        record: Option<&Record>,
        ended: Option<&Terminated>,
        sb: &Sandbox,
    ) -> Result<(), (String, String, bool)> {
        let image_ref = c.image.clone().unwrap_or_default();
        if image_ref.is_empty() {
            return Err(("InvalidImageName".into(), "the container has no image".into(), false));
        }
        let policy = PullPolicy::from_spec(c.image_pull_policy.as_deref(), &image_ref);
        {
            let ctr = self.ctrs.entry(c.name.clone()).or_default();
            if ctr.waiting.is_none() {
                ctr.waiting = Some(("ContainerCreating".into(), None));
            }
        }
        let events = &self.shared.events;
        let mut pull_started = None;
        let on_pull = || {
            events.pod(pod, Some(&c.name), false, "Pulling", format!("Pulling image {image_ref:?}"));
            pull_started = Some(Instant::now());
        };
        let image = self.shared.images.ensure_noting_pull(&image_ref, policy, on_pull).await.map_err(|e| {
            let reason = e.reason().to_string();
            let (why, note) = match reason.as_str() {
                "ErrImagePull" => ("Failed", format!("Failed to pull image {image_ref:?}: {e}")),
                r => (r, e.to_string()),
            };
            events.pod(pod, Some(&c.name), true, why, note);
            (reason, e.to_string(), true)
        })?;
        let note = match pull_started {
            None => format!("Container image {image_ref:?} already present on machine"),
            Some(t) => format!("Successfully pulled image {image_ref:?} in {:.3}s", t.elapsed().as_secs_f64()),
        };
        events.pod(pod, Some(&c.name), false, "Pulled", note);
        let config_err = |m: String| ("CreateContainerConfigError".to_string(), m, false);
        let sources = self.sources(pod, c).await.map_err(config_err)?;
        let pod_ip = sb.ip.clone().unwrap_or_default();
        let host_ip = self.shared.cfg.node_ip.to_string();
        let env = spec::env(pod, c, &image.config.env, &sources, &pod_ip, &host_ip).map_err(config_err)?;
        let args = spec::args(c, &image.config, &env).map_err(config_err)?;
        let (uid, gid) = spec::user(pod, c, image.config.user.as_deref(), &image.rootfs).map_err(config_err)?;
        if let Some(prev) = record {
            // The previous instance is normally gone with its `runc run`; if its shim was lost
            // it may not be: never let two run.
            if let Err(e) = self.shared.runtime.delete_force(&prev.id).await {
                return Err(("RunContainerError".into(), format!("removing the previous instance: {e}"), false));
            }
        }
        let attempt = record.map_or(0, |r| r.attempt + 1);
        let id = container::runtime_id(&self.uid, &c.name, attempt);
        let files = container::instance(&self.dir, &c.name, attempt);
        let overlay = files.rootfs();
        let fail = |m: String| ("RunContainerError".to_string(), m, false);
        overlay.mount(&image.rootfs).map_err(|e| fail(format!("mounting the root filesystem: {e}")))?;
        let sc = c.security_context.as_ref();
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let res = c.resources.as_ref();
        let limit = |k: &str| res.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(k));
        let request = |k: &str| res.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(k)).or_else(|| limit(k));
        let volumes =
            volumes::prepare(&self.shared.client, pod, &self.dir, &pod_ip, &host_ip).await.map_err(config_err)?;
        let mut binds: Vec<(PathBuf, String, bool)> =
            sandbox::etc_files(&self.dir).into_iter().map(|(h, p)| (h, p.to_string(), false)).collect();
        binds.extend(volumes::mounts(pod, c, &volumes).map_err(config_err)?);
        let cs = bundle::ContainerSpec {
            rootfs: overlay.merged.clone(),
            args,
            env,
            cwd: c.working_dir.clone().or_else(|| image.config.working_dir.clone()).unwrap_or_else(|| "/".into()),
            uid,
            gid,
            hostname: sandbox::hostname(pod),
            netns: sb.netns_path.clone(),
            binds,
            readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
            privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
            no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            add_caps: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            drop_caps: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            memory_limit: limit("memory").and_then(spec::bytes),
            cpu_limit_millis: limit("cpu").and_then(spec::millis),
            cpu_request_millis: request("cpu").and_then(spec::millis),
            cgroups_path: format!("/keelson/{id}"),
        };
        bundle::write(&files.bundle(), &cs).map_err(|e| fail(e.to_string()))?;
        let mut running = false;
        let mut rec = Record {
            attempt,
            id: id.clone(),
            image: image.reference.clone(),
            image_id: image.repo_digest.clone(),
            started_at: None,
            start_error: None,
            last: ended.cloned(),
        };
        container::save(&self.dir, &c.name, &rec).map_err(|e| fail(format!("recording the container: {e}")))?;
        self.start.container_started();
        match self.shared.runtime.start(&id, &files, self.exited.clone()).await {
            Ok(Started::Running { .. }) => {
                rec.started_at = Some(crate::kubelet::now());
                running = true;
            }
            // It ran, briefly, or it could not start (then the runtime said why).
            Ok(Started::Exited { exit, error: Some(e) }) if exit.exit_code != 0 => rec.start_error = Some(e),
            Ok(Started::Exited { exit, .. }) => rec.started_at = Some(exit.finished_at),
            Err(e) => rec.start_error = Some(e.to_string()),
        }
        if let Some(prev) = attempt.checked_sub(1) {
            // The previous instance's filesystem is no longer needed.
            let _ = container::instance(&self.dir, &c.name, prev).rootfs().unmount();
        }
        container::save(&self.dir, &c.name, &rec).map_err(|e| fail(format!("recording the container: {e}")))?;
        tracing::info!(container = %c.name, id, attempt, error = rec.start_error.as_deref(), "container started");
        match &rec.start_error {
            None => {
                events.pod(pod, Some(&c.name), false, "Created", format!("Created container: {}", c.name));
                events.pod(pod, Some(&c.name), false, "Started", format!("Started container {}", c.name));
            }
            Some(e) => events.pod(pod, Some(&c.name), true, "Failed", format!("Error: {e}")),
        }
        let post_start = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
        if let (true, Some(h)) = (running, post_start) {
            // As upstream: the next container starts, and this one counts as running, only
            // once the hook is done; a failed hook kills the container, which then restarts
            // as its pod's restartPolicy says.
            let pod_ip = sb.ip.as_deref().unwrap_or_default();
            let hook = super::hook::run(h, c, pod_ip, &self.shared.runtime, &id, POST_START_LIMIT);
            if let Err(e) = super::hook::unless_deleted(hook, self.updates.clone()).await {
                tracing::warn!(container = %c.name, error = %e, "postStart hook failed; killing the container");
                events.pod(pod, Some(&c.name), true, "FailedPostStartHook", format!("PostStartHook failed: {e}"));
                events.pod(
                    pod,
                    Some(&c.name),
                    false,
                    "Killing",
                    format!("FailedPostStartHook: stopping container {}", c.name),
                );
                if let Err(k) = self.shared.runtime.kill(&id, "KILL").await {
                    tracing::warn!(id, error = %k, "killing the container failed");
                }
                return Err(("PostStartHookError".into(), e, false));
            }
            tracing::info!(container = %c.name, "postStart hook ran");
        }
        Ok(())
    }

    /// The ConfigMaps and Secrets `c`'s environment uses.
    async fn sources(&self, pod: &Pod, c: &Container) -> Result<spec::Sources, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = spec::Sources::new();
        for (kind, name, optional) in spec::referenced(c) {
            let client = &self.shared.client;
            let data = if kind == "ConfigMap" {
                volumes::config_map(client, &ns, &name).await?
            } else {
                volumes::secret(client, &ns, &name).await?
            }
            .map(|d| d.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect());
            match data {
                Some(d) => {
                    out.insert((kind, name), d);
                }
                None if optional => {}
                None => return Err(format!("{} {name:?} not found", kind.to_ascii_lowercase())),
            }
        }
        Ok(out)
    }

    async fn write_status(&mut self, pod: &Pod, o: &Observed) {
        let previous = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
        let now = crate::kubelet::now();
        let mut status = status::build(o, &previous, &now);
        if let Some(st) = previous["startTime"].as_str() {
            status["startTime"] = json!(st);
            self.start_time = st.to_string();
        }
        if self.last_status.as_ref() == Some(&status) && same_as_api(&previous, &status) {
            return;
        }
        let api: Api<Pod> =
            Api::namespaced(self.shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let pp = PatchParams { field_manager: Some(crate::kubelet::node::FIELD_MANAGER.into()), ..Default::default() };
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api.patch_status(&name, &pp, &Patch::Merge(json!({ "status": status }))).await {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::warn!(error = %e, "writing the pod status failed"),
        }
    }

    /// Stop the pod within its grace period, undo its sandbox and files and, when it is
    /// still stored (`in_api`: being deleted), finish its deletion.
    async fn terminate(&mut self, pod: Option<&Pod>, in_api: bool, stop: &CancellationToken) {
        let grace = pod
            .and_then(|p| {
                p.metadata
                    .deletion_grace_period_seconds
                    .or(p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            })
            .unwrap_or(30);
        let grace = grace_period(grace);
        let live = self.live_instances();
        tracing::info!(containers = live.len(), grace_s = grace.as_secs(), "stopping the pod");
        // preStop hooks first, all at once (as upstream), within the grace period; what
        // they leave of it (at least 2 s, upstream's minimum) is SIGTERM's.
        let hooks_started = Instant::now();
        if let Some(pod) = pod {
            self.pre_stop(pod, &live, grace).await;
        }
        let grace = grace.saturating_sub(hooks_started.elapsed()).max(MIN_GRACE_AFTER_HOOKS);
        for (name, id, _) in &live {
            if let Some(pod) = pod {
                self.shared.events.pod(pod, Some(name), false, "Killing", format!("Stopping container {name}"));
            }
            if let Err(e) = self.shared.runtime.kill(id, "TERM").await {
                tracing::warn!(id, error = %e, "SIGTERM failed");
            }
        }
        let all_ended = |live: &[(String, String, u32)]| {
            live.iter().all(|(name, _, attempt)| {
                crate::kubelet::runtime::shim::read_exit(&container::instance(&self.dir, name, *attempt).exit_file())
                    .is_some()
            })
        };
        let deadline = Instant::now() + grace;
        while !all_ended(&live) && Instant::now() < deadline {
            if !sleep_or_stop(stop, Duration::from_millis(50)).await {
                return;
            }
        }
        if !all_ended(&live) {
            for (_, id, _) in &live {
                let _ = self.shared.runtime.kill(id, "KILL").await;
            }
            let deadline = Instant::now() + KILL_WAIT;
            while !all_ended(&live) && Instant::now() < deadline {
                if !sleep_or_stop(stop, Duration::from_millis(50)).await {
                    return;
                }
            }
        }
        for (_, id, _) in &live {
            if let Err(e) = self.shared.runtime.delete_force(id).await {
                tracing::warn!(id, error = %e, "removing the container failed");
            }
        }
        if let Err(e) = super::undo(&self.shared, &self.uid).await {
            tracing::warn!(error = %e, "cleaning up the pod failed; it is retried at the next start");
        }
        let Some(pod) = pod.filter(|_| in_api) else { return };
        let api: Api<Pod> =
            Api::namespaced(self.shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp).await {
            Ok(_) => tracing::info!("pod deleted"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(error = %e, "finishing the pod's deletion failed"),
        }
    }

    /// (container, runtime id, attempt) of every instance that has not ended.
    /// Run the preStop hooks of the live containers that have one, at once, for at most
    /// `grace`; a failed hook is logged and the stop goes on (as upstream).
    async fn pre_stop(&self, pod: &Pod, live: &[(String, String, u32)], grace: Duration) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let pod_ip = self.sandbox.as_ref().and_then(|s| s.ip.clone()).unwrap_or_default();
        let runtime = &self.shared.runtime;
        let hooks = live.iter().filter_map(|(name, id, _)| {
            let c = spec.containers.iter().find(|c| &c.name == name)?;
            let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
            let pod_ip = pod_ip.as_str();
            Some(async move {
                match super::hook::run(h, c, pod_ip, runtime, id, grace).await {
                    Ok(()) => tracing::info!(container = %c.name, "preStop hook ran"),
                    Err(e) => {
                        tracing::warn!(container = %c.name, error = %e, "preStop hook failed");
                        let note = format!("PreStopHook failed: {e}");
                        self.shared.events.pod(pod, Some(&c.name), true, "FailedPreStopHook", note);
                    }
                }
            })
        });
        futures::future::join_all(hooks).await;
    }

    fn live_instances(&self) -> Vec<(String, String, u32)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("containers")) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let r = container::load(&self.dir, &name)?;
                container::terminated(&self.dir, &name, &r).is_none().then_some((name, r.id, r.attempt))
            })
            .collect()
    }
}

/// `name_namespace(uid)`, as upstream names a pod in messages.
fn pod_title(pod: &Pod) -> String {
    let m = &pod.metadata;
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    format!("{}_{}({})", s(&m.name), s(&m.namespace), s(&m.uid))
}

/// A grace period in seconds as a duration (negative: none; capped at a day, so no
/// deadline arithmetic can overflow).
fn grace_period(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs.clamp(0, 86_400)).unwrap_or(0))
}

/// Whether the API's status already says what we would write (then nothing is written).
fn same_as_api(api: &Value, ours: &Value) -> bool {
    ["phase", "podIP", "containerStatuses", "initContainerStatuses"].iter().all(|k| api.get(*k) == ours.get(*k))
        && api["conditions"].as_array().map(Vec::len) == ours["conditions"].as_array().map(Vec::len)
}

/// Unmount everything under `dir` (deepest first).
pub fn unmount_all(dir: &std::path::Path) -> Result<(), String> {
    for m in rootfs::mounts_under(dir) {
        rootfs::unmount(&m).map_err(|e| e.to_string())?;
    }
    Ok(())
}
