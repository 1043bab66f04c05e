//! A running master's store: opens the data directory, starts Raft and the peer
//! service, and exposes the store contract ([`Store`]) to the layers above.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::codec::{decode, encode};
use crate::config::{canonical_cluster, ClusterState, Identity, StoreConfig};
use crate::error::{Result, StoreError};
use crate::keys::KeyRange;
use crate::lease::{Lessor, LessorError};
use crate::log_store::{LogStats, LogStore};
use crate::mux::Mux;
use crate::network::RaftNet;
use crate::pb::peer::peer_server::PeerServer;
use crate::pb::peer::Blob;
use crate::peer::PeerService;
use crate::pool::PeerPool;
use crate::proposer::{BatchLimits, Proposer};
use crate::read_index::ReadIndexer;
use crate::router::{Route, Router};
use crate::sm::{SmShared, StateMachineStore};
use crate::types::{
    Command, CommandResult, Consistency, KeyValue, Leadership, Member, MemberInfo, NodeId, RangeRequest, RangeResult,
    Request, StoreStatus, TraceContext, Txn, TxnResult, TypeConfig,
};
use crate::validate::check_txn;
use crate::watch::{WatchRequest, Watcher};
use crate::wire::{ChangeReply, ClusterInfo, MembershipChange};

/// etcd's maximum lease TTL.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Internals shared by the public handle, the peer service and the background tasks.
pub(crate) struct Core {
    pub id: NodeId,
    pub cluster_id: u64,
    pub name: String,
    pub config: StoreConfig,
    pub raft: Raft<TypeConfig>,
    pub sm: Arc<SmShared>,
    pub lessor: Arc<Lessor>,
    pub router: Router,
    pub proposer: Proposer,
    pub reads: ReadIndexer,
    pub leadership: watch::Receiver<Leadership>,
    pub stop: CancellationToken,
    pub log_stats: Arc<LogStats>,
    pub standby: crate::stand::Standby,
}

impl Core {
    pub fn is_leader(&self) -> bool {
        matches!(self.router.route(), Route::Local)
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| MemberInfo { id: *id, member: node.clone(), is_learner: !voters.contains(id) })
            .collect()
    }

    fn raft_err(e: impl std::fmt::Display) -> StoreError {
        StoreError::Membership(e.to_string())
    }

    /// Execute a membership change; this master must be the leader.
    pub async fn change_members_local(self: &Arc<Self>, change: MembershipChange) -> ChangeReply {
        let members = self.members();
        let find = |id: NodeId| members.iter().find(|m| m.id == id).cloned().ok_or(StoreError::MemberNotFound(id));
        match change {
            MembershipChange::Add { member, learner } => {
                if members.iter().any(|m| m.member.peer_addr == member.peer_addr) {
                    return Err(StoreError::Membership(format!(
                        "peer address {} is already a member",
                        member.peer_addr
                    )));
                }
                let mut id = rand::random::<u64>().max(1);
                while members.iter().any(|m| m.id == id) {
                    id = rand::random::<u64>().max(1);
                }
                let member = Member { voter: !learner, ..member };
                self.raft.add_learner(id, member.clone(), false).await.map_err(Self::raft_err)?;
                tracing::info!(member = %member, id = format_args!("{id:016x}"), learner, "added member as learner");
                if !learner {
                    let core = self.clone();
                    tokio::spawn(async move { core.promote_when_caught_up(id).await });
                }
                Ok((Some(id), self.members()))
            }
            MembershipChange::Remove { id } => {
                let m = find(id)?;
                let change = if m.is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await.map_err(Self::raft_err)?;
                tracing::info!(id = format_args!("{id:016x}"), "removed member");
                Ok((None, self.members()))
            }
            MembershipChange::Promote { id } => {
                let m = find(id)?;
                if !m.is_learner {
                    return Err(StoreError::Membership(format!("member {id:016x} is already a voter")));
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(Self::raft_err)?;
                tracing::info!(id = format_args!("{id:016x}"), "promoted member to voter");
                Ok((None, self.members()))
            }
            MembershipChange::Update { id, member } => {
                find(id)?;
                self.raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, member)])), false)
                    .await
                    .map_err(Self::raft_err)?;
                Ok((None, self.members()))
            }
        }
    }

    /// A learner added as a future voter becomes one once replication has caught up.
    async fn promote_when_caught_up(self: Arc<Self>, id: NodeId) {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut rx = self.raft.metrics();
        while Instant::now() < deadline && !self.stop.is_cancelled() {
            let ready = {
                let m = rx.borrow_and_update();
                if m.state != ServerState::Leader {
                    return;
                }
                let last = m.last_log_index.unwrap_or(0);
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .is_some_and(|matched| last.saturating_sub(matched.index) <= 64)
            };
            if ready {
                match self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
                    Ok(_) => {
                        tracing::info!(id = format_args!("{id:016x}"), "learner caught up; promoted to voter");
                        return;
                    }
                    Err(e) => tracing::info!(error = %e, "promotion not done yet, retrying"),
                }
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Wait (bounded) until this master's membership shows `change` (made by the leader).
    async fn wait_local_membership(
        &self,
        change: &MembershipChange,
        added: Option<NodeId>,
        deadline: Instant,
    ) -> Result<()> {
        let visible = |m: &openraft::Membership<NodeId, Member>| match change {
            MembershipChange::Add { .. } => added.is_none_or(|id| m.get_node(&id).is_some()),
            MembershipChange::Remove { id } => m.get_node(id).is_none(),
            MembershipChange::Promote { id } => m.voter_ids().any(|v| v == *id),
            _ => true,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .metrics(|m| visible(m.membership_config.membership()), "the membership change to reach this master")
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Timeout(format!("membership changed on the leader, not yet here: {e}")))
    }

    /// Route a membership change to the leader.
    pub async fn change_members(self: &Arc<Self>, change: MembershipChange) -> ChangeReply {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            match self.router.route() {
                Route::Local => match self.change_members_local(change.clone()).await {
                    Err(StoreError::Membership(msg)) if retryable_change(&msg) => {}
                    other => return other,
                },
                Route::Remote { addr, .. } => {
                    let mut client = self.router.pool.client(&addr)?;
                    let mut req = tonic::Request::new(Blob { data: encode(&change)? });
                    req.set_timeout(self.config.request_timeout);
                    match client.change_members(req).await {
                        Ok(r) => match decode::<ChangeReply>(&r.into_inner().data)? {
                            Err(StoreError::NotLeader { .. }) => {}
                            Err(StoreError::Membership(msg)) if retryable_change(&msg) => {}
                            Ok((id, members)) => {
                                // Committed by the leader; answer once this master sees it
                                // too, so `member add` here then a join that asks here works.
                                self.wait_local_membership(&change, id, deadline).await?;
                                return Ok((id, members));
                            }
                            other => return other,
                        },
                        Err(s) => tracing::debug!(error = %s, "membership change: leader unreachable, retrying"),
                    }
                }
                Route::Unknown => {}
            }
            if !self.router.wait_for_change(deadline).await {
                return Err(StoreError::Timeout("waiting for the leader to change the membership".into()));
            }
        }
    }
}

/// Membership errors that clear by themselves: the change reached a master that is not
/// leader any more, or another change (e.g. the bootstrap membership, or a promotion) is
/// still being committed — openraft allows one at a time.
fn retryable_change(msg: &str) -> bool {
    msg.contains("forward") || msg.contains("in progress") || msg.contains("undergoing a configuration change")
}

/// The store of one master: the contract the API server and the etcd endpoint use.
#[derive(Clone)]
pub struct Store {
    core: Arc<Core>,
}

/// Ask the listed masters who is in the cluster (used by a master that joins).
async fn discover(cfg: &StoreConfig) -> Result<Identity> {
    let pool = PeerPool::new(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_err = String::from("no other master listed in --initial-cluster");
    while Instant::now() < deadline {
        for (name, addr) in cfg.initial_cluster.iter().filter(|(n, _)| n != &cfg.name) {
            let mut client = pool.client(addr)?;
            let mut req = tonic::Request::new(Blob { data: encode(&())? });
            req.set_timeout(Duration::from_secs(2));
            match client.cluster_info(req).await {
                Ok(r) => {
                    let info: ClusterInfo = decode(&r.into_inner().data)?;
                    let Some(me) = info.members.iter().find(|m| m.member.peer_addr == cfg.peer_addr) else {
                        return Err(StoreError::Config(format!(
                            "the cluster at {name} ({addr}) has no member with peer address {}; \
                             add it first (etcdctl member add {} --peer-urls=http://{})",
                            cfg.peer_addr, cfg.name, cfg.peer_addr
                        )));
                    };
                    return Ok(Identity {
                        cluster_id: info.cluster_id,
                        member_id: me.id,
                        name: cfg.name.clone(),
                        initial_cluster: canonical_cluster(&cfg.initial_cluster),
                        joined: true,
                    });
                }
                Err(s) => last_err = format!("{name} ({addr}): {}", s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(StoreError::Config(format!("could not reach the existing cluster to join it: {last_err}")))
}

impl Store {
    /// Open the data directory, start Raft and the peer service, and (for a new
    /// cluster) bootstrap the initial membership.
    pub async fn open(cfg: StoreConfig) -> Result<Store> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StoreError::Config(format!("cannot create --data-dir {}: {e}", cfg.data_dir.display())))?;
        let identity = match Identity::load(&cfg.data_dir)? {
            Some(id) => {
                id.check(&cfg)?;
                id
            }
            None => {
                if cfg.data_dir.join("raft").exists() || cfg.data_dir.join("sm").exists() {
                    return Err(StoreError::Config(format!(
                        "data dir {} holds store data but no member.json; refusing to start",
                        cfg.data_dir.display()
                    )));
                }
                let id = match cfg.initial_cluster_state {
                    ClusterState::New => Identity {
                        cluster_id: cfg.bootstrap_cluster_id(),
                        member_id: cfg.initial_member_id(&cfg.name),
                        name: cfg.name.clone(),
                        initial_cluster: canonical_cluster(&cfg.initial_cluster),
                        joined: false,
                    },
                    ClusterState::Existing => discover(&cfg).await?,
                };
                id.save(&cfg.data_dir)?;
                id
            }
        };
        let id = identity.member_id;
        let cluster_id = identity.cluster_id;
        tracing::info!(name = %cfg.name, id = format_args!("{id:016x}"), cluster = format_args!("{cluster_id:016x}"), "opening store");

        let listener = tokio::net::TcpListener::bind(&cfg.peer_addr)
            .await
            .map_err(|e| StoreError::Config(format!("cannot listen on --peer-addr {}: {e}", cfg.peer_addr)))?;

        let lessor = Arc::new(Lessor::new());
        let log = LogStore::open(&cfg.data_dir.join("raft"), id)?;
        let log_stats = log.stats();
        let sm = StateMachineStore::open(&cfg.data_dir, lessor.clone())?;
        let shared = sm.shared();
        let raft_config = openraft::Config {
            cluster_name: format!("keelson-{cluster_id:016x}"),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            election_timeout_min: cfg.election_timeout_min.as_millis() as u64,
            election_timeout_max: cfg.election_timeout_max.as_millis() as u64,
            max_payload_entries: 64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_after_entries),
            max_in_snapshot_log_to_keep: cfg.snapshot_keep_logs,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Config(format!("raft configuration: {e}")))?;
        let raft_pool = Arc::new(PeerPool::new(cluster_id));
        let raft_net = RaftNet { pool: raft_pool.clone(), mux: Arc::new(Mux::new(raft_pool)) };
        let raft = Raft::new(id, Arc::new(raft_config), raft_net, log, sm)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;

        let stop = CancellationToken::new();
        let forward_pool = Arc::new(PeerPool::new(cluster_id));
        let router = Router {
            id,
            raft: raft.clone(),
            pool: forward_pool.clone(),
            mux: Arc::new(Mux::new(forward_pool)),
            timeout: cfg.request_timeout,
            sm: shared.clone(),
            // Random start: ids from before a restart may still be in the log.
            seq: Arc::new(AtomicU64::new(rand::random::<u64>() >> 1)),
        };
        let limits = BatchLimits {
            max_commands: cfg.max_batch_commands,
            max_bytes: cfg.max_batch_bytes,
            max_inflight: cfg.max_inflight_batches,
        };
        let proposer = Proposer::start(router.clone(), limits, stop.clone(), log_stats.metrics.clone());
        let reads = ReadIndexer::start(router.clone(), stop.clone());
        let (lead_tx, lead_rx) = watch::channel(Leadership::default());
        let core = Arc::new(Core {
            id,
            cluster_id,
            name: cfg.name.clone(),
            config: cfg.clone(),
            raft: raft.clone(),
            sm: shared.clone(),
            lessor,
            router,
            proposer,
            reads,
            leadership: lead_rx,
            stop: stop.clone(),
            log_stats,
            standby: crate::stand::Standby::new(cfg.election_timeout_min),
        });

        let svc = PeerServer::new(PeerService { core: core.clone() })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(16 << 20))
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    serve_stop.cancelled_owned(),
                )
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "peer service stopped");
            }
        });

        if !identity.joined && !raft.is_initialized().await.map_err(|e| StoreError::Raft(e.to_string()))? {
            let members: BTreeMap<NodeId, Member> = cfg
                .initial_cluster
                .iter()
                // Every initial master must initialize with the identical config, so
                // client addresses are left out here and registered afterwards.
                .map(|(name, addr)| {
                    let m = Member {
                        name: name.clone(),
                        peer_addr: addr.clone(),
                        client_addr: String::new(),
                        voter: false,
                    };
                    (cfg.initial_member_id(name), m)
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!("bootstrapped a new cluster"),
                Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StoreError::Raft(format!("initialize: {e}"))),
            }
        }

        let store = Store { core };
        // Background tasks; each ends on the store's stop token.
        tokio::spawn(leadership_task(store.core.clone(), lead_tx));
        tokio::spawn(lease_expiry_task(store.clone()));
        tokio::spawn(compactor_task(store.core.clone()));
        tokio::spawn(register_self_task(store.core.clone()));
        tokio::spawn(crate::election_gate::run(store.clone(), cfg.election_timeout_max * 3));
        Ok(store)
    }

    /// The Raft handle (for the election gate).
    pub(crate) fn raft_handle(&self) -> Raft<TypeConfig> {
        self.core.raft.clone()
    }

    pub fn member_id(&self) -> NodeId {
        self.core.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.core.cluster_id
    }

    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub fn config(&self) -> &StoreConfig {
        &self.core.config
    }

    /// This master's current revision (its applied state).
    pub fn revision(&self) -> i64 {
        self.core.sm.revision()
    }

    pub fn compact_revision(&self) -> i64 {
        self.core.sm.compact_revision()
    }

    /// The trace context of this master's apply of the write that made `revision`, if that
    /// write was traced and is among the latest ones (see [`crate::trace::WriteTraces`]).
    pub fn write_trace(&self, revision: i64) -> Option<crate::trace::WriteTrace> {
        self.core.sm.write_traces.get(revision)
    }

    /// The store's Prometheus collectors (fsync durations, group-commit batch sizes,
    /// proposal failures), for the API server's `/metrics`.
    pub fn metrics(&self) -> crate::metrics::StoreMetrics {
        self.core.log_stats.metrics.clone()
    }

    pub fn log_stats(&self) -> Arc<LogStats> {
        self.core.log_stats.clone()
    }

    /// Wait until every write acknowledged before now is applied here.
    pub async fn linearize(&self) -> Result<()> {
        let index = self.core.reads.read_index().await?;
        let deadline = Instant::now() + self.core.config.request_timeout;
        self.core.router.wait_applied(index, deadline, "linearizable read").await
    }

    /// etcd Range: linearizable unless `req.serializable`.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResult> {
        if !req.serializable {
            self.linearize().await?;
        }
        self.core.sm.range(&req)
    }

    /// One key, latest.
    pub async fn get(&self, key: impl Into<Vec<u8>>, consistency: Consistency) -> Result<(Option<KeyValue>, i64)> {
        let mut req = RangeRequest::new(KeyRange::single(key));
        req.serializable = consistency == Consistency::Serializable;
        let mut r = self.range(req).await?;
        Ok((r.kvs.pop(), r.revision))
    }

    /// Number of keys in a range at the latest revision.
    pub async fn count(&self, range: KeyRange, consistency: Consistency) -> Result<(i64, i64)> {
        let mut req = RangeRequest::new(range);
        req.count_only = true;
        req.serializable = consistency == Consistency::Serializable;
        let r = self.range(req).await?;
        Ok((r.count, r.revision))
    }

    async fn propose(&self, command: Command, trace: TraceContext, fence_term: Option<u64>) -> Result<CommandResult> {
        self.core.proposer.propose(Request { command, trace, fence_term, origin: None }).await
    }

    /// Propose in a `raft.propose` span; the command carries that span's trace context
    /// (or `trace`, when the caller gives one) so every master's apply joins the trace.
    async fn propose_traced(
        &self,
        command: Command,
        trace: TraceContext,
        fence_term: Option<u64>,
    ) -> Result<CommandResult> {
        use tracing::Instrument;
        if !crate::trace::enabled() {
            return self.propose(command, trace, fence_term).await;
        }
        let span = tracing::info_span!(
            "raft.propose",
            otel.kind = "client",
            rpc.system = "raft",
            keelson.member = %self.core.name,
            keelson.leader = self.core.is_leader(),
        );
        async move {
            let trace = if trace.is_empty() { crate::trace::current() } else { trace };
            self.propose(command, trace, fence_term).await
        }
        .instrument(span)
        .await
    }

    /// A transaction (puts, deletes, CAS).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.txn_with(txn, TraceContext::new(), None).await
    }

    /// A transaction carrying a trace context, optionally fenced to a Raft term.
    pub async fn txn_with(&self, txn: Txn, trace: TraceContext, fence_term: Option<u64>) -> Result<TxnResult> {
        check_txn(&txn, &self.core.config)?;
        match self.propose_traced(Command::Txn(txn), trace, fence_term).await? {
            CommandResult::Txn(r) => Ok(r),
            other => Err(StoreError::Raft(format!("unexpected result {other:?}"))),
        }
    }

    /// Compact history below `revision`; returns the revision at the time.
    pub async fn compact(&self, revision: i64) -> Result<i64> {
        match self.propose(Command::Compact { revision }, TraceContext::new(), None).await? {
            CommandResult::Compacted { revision } => Ok(revision),
            other => Err(StoreError::Raft(format!("unexpected result {other:?}"))),
        }
    }

    /// Watch a key range from a revision.
    pub fn watch(&self, req: WatchRequest) -> Watcher {
        crate::watch::start(self.core.sm.clone(), req, self.core.config.progress_interval, self.core.stop.clone())
    }

    /// Grant a lease (`id == 0`: the store picks one). Returns (id, ttl, revision).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<(i64, i64, i64)> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge(ttl));
        }
        if id < 0 {
            return Err(StoreError::InvalidArgument(format!("lease id {id} is negative")));
        }
        let ttl = ttl.max(self.core.config.min_lease_ttl);
        for _ in 0..4 {
            let pick = if id != 0 { id } else { (rand::random::<u64>() >> 1).max(1) as i64 };
            match self.propose(Command::LeaseGrant { id: pick, ttl }, TraceContext::new(), None).await {
                Ok(CommandResult::LeaseGranted { id, ttl, revision }) => return Ok((id, ttl, revision)),
                Err(StoreError::LeaseExists(_)) if id == 0 => continue,
                Err(e) => return Err(e),
                Ok(other) => return Err(StoreError::Raft(format!("unexpected result {other:?}"))),
            }
        }
        Err(StoreError::Raft("could not pick a free lease id".into()))
    }

    /// Revoke a lease, deleting its keys. Returns the revision after.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64> {
        match self.propose(Command::LeaseRevoke { id }, TraceContext::new(), None).await? {
            CommandResult::LeaseRevoked { revision } => Ok(revision),
            other => Err(StoreError::Raft(format!("unexpected result {other:?}"))),
        }
    }

    async fn lease_at_leader<T: serde::de::DeserializeOwned>(
        &self,
        id: i64,
        local: impl Fn(&Lessor) -> std::result::Result<T, LessorError>,
        remote: bool,
    ) -> Result<T> {
        let deadline = Instant::now() + self.core.config.request_timeout;
        loop {
            match self.core.router.route() {
                Route::Local => match local(&self.core.lessor) {
                    Ok(v) => return Ok(v),
                    Err(LessorError::NotFound) => return Err(StoreError::LeaseNotFound(id)),
                    Err(LessorError::NotPrimary) => {}
                },
                Route::Remote { addr, .. } => {
                    let mut client = self.core.router.pool.client(&addr)?;
                    let mut req = tonic::Request::new(Blob { data: encode(&id)? });
                    req.set_timeout(Duration::from_secs(2));
                    let call =
                        if remote { client.lease_time_to_live(req).await } else { client.lease_keep_alive(req).await };
                    match call {
                        Ok(r) => match decode::<Result<T>>(&r.into_inner().data)? {
                            Err(StoreError::NotLeader { .. }) => {}
                            other => return other,
                        },
                        Err(s) => tracing::debug!(error = %s, "lease call to leader failed, retrying"),
                    }
                }
                Route::Unknown => {}
            }
            if !self.core.router.wait_for_change(deadline).await {
                return Err(StoreError::NoLeader);
            }
        }
    }

    /// Keep a lease alive; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.lease_at_leader(id, |l| l.renew(id), false).await
    }

    /// (remaining seconds, granted TTL, attached keys if asked).
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<(i64, i64, Vec<Vec<u8>>)> {
        let (left, granted): (i64, i64) = self.lease_at_leader(id, |l| l.remaining(id), true).await?;
        let keys = if keys { self.core.sm.lease_keys(id)? } else { Vec::new() };
        Ok((left, granted, keys))
    }

    /// Every lease id.
    pub fn leases(&self) -> Result<Vec<i64>> {
        Ok(self.core.sm.leases()?.into_keys().collect())
    }

    /// Leadership changes, for the layers that run only on the leader.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.core.leadership.clone()
    }

    /// Wait until some master leads; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut rx = self.core.raft.metrics();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = rx.borrow_and_update().current_leader {
                return Ok(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(StoreError::NoLeader);
            }
        }
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.core.members()
    }

    /// Add a master; it joins as a learner and, unless `learner`, is promoted to voter
    /// once it has caught up. Returns its id and the members after.
    pub async fn add_member(&self, member: Member, learner: bool) -> Result<(NodeId, Vec<MemberInfo>)> {
        let (id, members) = self.core.change_members(MembershipChange::Add { member, learner }).await?;
        Ok((id.unwrap_or(0), members))
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        Ok(self.core.change_members(MembershipChange::Remove { id }).await?.1)
    }

    pub async fn promote_member(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        Ok(self.core.change_members(MembershipChange::Promote { id }).await?.1)
    }

    /// This master's view of itself.
    pub async fn status(&self) -> StoreStatus {
        let m = self.core.raft.metrics().borrow().clone();
        let commit_index =
            self.core.raft.with_raft_state(|s| s.committed.map(|l| l.index)).await.ok().flatten().unwrap_or(0);
        let is_learner = !m.membership_config.membership().voter_ids().any(|v| v == self.core.id);
        StoreStatus {
            cluster_id: self.core.cluster_id,
            member_id: self.core.id,
            name: self.core.name.clone(),
            leader: m.current_leader,
            term: m.current_term,
            commit_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            revision: self.core.sm.revision(),
            compact_revision: self.core.sm.compact_revision(),
            db_size: self.core.sm.db_size(),
            is_learner,
        }
    }

    /// Stop every task and Raft.
    pub async fn shutdown(&self) {
        self.core.stop.cancel();
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // The state machine writes no WAL: flush so a restart need not re-apply the log.
        if let Err(e) = self.core.sm.db().flush() {
            tracing::warn!(error = %e, "state machine flush");
        }
    }

    /// Resolves, with the reason, when Raft stops by itself — a storage error (a failed
    /// log write or apply), a panic in its core. A master in that state can neither
    /// write nor serve linearizable reads, so the server exits on it (fail-stop, as etcd
    /// does on a failed WAL write) and a supervisor restarts it from its durable state.
    /// Never resolves once [`Store::shutdown`] has begun.
    pub async fn raft_failed(&self) -> String {
        let mut rx = self.core.raft.metrics();
        loop {
            let failed = rx.borrow_and_update().running_state.as_ref().err().map(|e| e.to_string());
            if let Some(why) = failed {
                if !self.core.stop.is_cancelled() {
                    return why;
                }
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() && !self.core.stop.is_cancelled() {
                        return "the Raft core task ended".into();
                    }
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                _ = self.core.stop.cancelled() => return std::future::pending().await,
            }
        }
    }

    /// A token cancelled when the store shuts down.
    pub fn stopped(&self) -> CancellationToken {
        self.core.stop.clone()
    }
}

/// Publish (is_leader, term, leader) and move the lessor with leadership.
async fn leadership_task(core: Arc<Core>, tx: watch::Sender<Leadership>) {
    let mut rx = core.raft.metrics();
    let mut was_leader = false;
    loop {
        let now = {
            let m = rx.borrow_and_update();
            Leadership { is_leader: m.state == ServerState::Leader, term: m.current_term, leader: m.current_leader }
        };
        if now.is_leader && !was_leader {
            match core.sm.leases() {
                Ok(leases) => core.lessor.promote(&leases),
                Err(e) => tracing::error!(error = %e, "cannot load leases on becoming leader"),
            }
            // Learners added as future voters under an earlier leader: promote them here.
            let pending: Vec<NodeId> = {
                let m = rx.borrow();
                let membership = m.membership_config.membership();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                membership.nodes().filter(|(id, n)| n.voter && !voters.contains(id)).map(|(id, _)| *id).collect()
            };
            for id in pending {
                tracing::info!(id = format_args!("{id:016x}"), "learner awaiting promotion; promoting once caught up");
                let core = core.clone();
                tokio::spawn(async move { core.promote_when_caught_up(id).await });
            }
            tracing::info!(term = now.term, "became leader");
        } else if !now.is_leader && was_leader {
            core.lessor.demote();
            tracing::info!(term = now.term, leader = ?now.leader, "no longer leader");
        }
        was_leader = now.is_leader;
        tx.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = core.stop.cancelled() => break,
        }
    }
    core.lessor.demote();
}

/// On the leader, revoke leases whose deadline passed.
async fn lease_expiry_task(store: Store) {
    let stop = store.core.stop.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => return,
        }
        for id in store.core.lessor.take_expired(Duration::from_secs(3)) {
            let s = store.clone();
            tokio::spawn(async move {
                match s.lease_revoke(id).await {
                    Ok(_) | Err(StoreError::LeaseNotFound(_)) => tracing::debug!(lease = id, "lease expired"),
                    Err(e) => tracing::info!(lease = id, error = %e, "revoking expired lease failed; will retry"),
                }
            });
        }
    }
}

/// Physically remove compacted history in the background, in bounded steps.
async fn compactor_task(core: Arc<Core>) {
    loop {
        tokio::select! {
            _ = core.sm.compacted.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = core.stop.cancelled() => return,
        }
        loop {
            let sm = core.sm.clone();
            let step = tokio::task::spawn_blocking(move || -> Result<bool> {
                sm.compact_step(10_000)?;
                sm.needs_compaction()
            })
            .await;
            match step {
                Ok(Ok(true)) if !core.stop.is_cancelled() => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "physical compaction failed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "physical compaction task failed");
                    break;
                }
            }
        }
    }
}

/// Make this master's membership record carry its name and client address.
async fn register_self_task(core: Arc<Core>) {
    let mut me = Member {
        name: core.name.clone(),
        peer_addr: core.config.peer_addr.clone(),
        client_addr: core.config.client_addr.clone(),
        voter: false,
    };
    for attempt in 0u32..600 {
        let current = core.members().into_iter().find(|m| m.id == core.id);
        if let Some(cur) = current {
            // Keep the promotion intent the record already carries.
            me.voter = cur.member.voter;
            if cur.member == me {
                return;
            }
            match core.change_members(MembershipChange::Update { id: core.id, member: me.clone() }).await {
                Ok(_) => {
                    tracing::info!(member = %me, "registered client address");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, attempt, "registering client address, will retry"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = core.stop.cancelled() => return,
        }
    }
}
