//! The master-to-master gRPC service: Raft RPCs, snapshot streams, and the leader-only
//! work that followers forward (writes, read index, lease keep-alives, membership).

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Snapshot, SnapshotMeta, Vote};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::lease::LessorError;
use crate::node::Core;
use crate::pb::peer::peer_server::Peer;
use crate::pb::peer::{Blob, SnapshotChunk};
use crate::pool::CLUSTER_HEADER;
use crate::types::{Member, NodeId, Request as StoreRequest, TypeConfig};
use crate::wire::{ClusterInfo, MembershipChange, ProposeReply};

pub(crate) struct PeerService {
    pub core: Arc<Core>,
}

fn bad_request(e: StoreError) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn blob<T: serde::Serialize>(v: &T) -> Result<Response<Blob>, Status> {
    encode(v).map(|data| Response::new(Blob { data })).map_err(|e| Status::internal(e.to_string()))
}

impl PeerService {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let want = format!("{:016x}", self.core.cluster_id);
        match req.metadata().get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) {
            Some(got) if got == want => Ok(()),
            Some(got) => Err(Status::failed_precondition(format!(
                "cluster id mismatch: this master belongs to cluster {want}, the caller to {got}"
            ))),
            None => Err(Status::failed_precondition("missing keelson-cluster-id")),
        }
    }

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader { leader: self.core.router.leader_id() }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad_request)?;
        blob(&self.core.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<NodeId> = decode(&req.into_inner().data).map_err(bad_request)?;
        blob(&self.core.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, Member>) = decode(&first.header).map_err(bad_request)?;
        let dir = self.core.raft.begin_receiving_snapshot().await.map_err(|e| Status::internal(e.to_string()))?;
        let received = async {
            let mut file: Option<(String, tokio::fs::File)> = None;
            while let Some(chunk) = stream.message().await? {
                if chunk.file.is_empty() || chunk.file.contains('/') || chunk.file.starts_with('.') {
                    return Err(Status::invalid_argument(format!("bad snapshot file name {:?}", chunk.file)));
                }
                if file.as_ref().is_none_or(|(n, _)| n != &chunk.file) {
                    let f = tokio::fs::File::create(dir.path.join(&chunk.file)).await?;
                    file = Some((chunk.file.clone(), f));
                }
                if let Some((_, f)) = file.as_mut() {
                    f.write_all(&chunk.data).await?;
                    if chunk.file_done {
                        f.sync_all().await?;
                    }
                }
            }
            Ok::<(), Status>(())
        }
        .await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_dir_all(&dir.path).await;
            return Err(e);
        }
        tracing::info!(snapshot = %meta.snapshot_id, "received snapshot");
        let res = self.core.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: dir }).await;
        blob(&res)
    }

    async fn propose(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let reqs: Vec<StoreRequest> = decode(&req.into_inner().data).map_err(bad_request)?;
        let reply = match self.core.router.write_local(reqs).await {
            Ok(Some((results, log_index))) => ProposeReply::Applied { results, log_index },
            Ok(None) => ProposeReply::NotLeader { leader: self.core.router.leader_id() },
            Err(e) => ProposeReply::Failed(e),
        };
        blob(&reply)
    }

    async fn read_index(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let res = if self.core.is_leader() { self.core.reads.read_index().await } else { Err(self.not_leader()) };
        blob(&res)
    }

    async fn lease_keep_alive(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let id: i64 = decode(&req.into_inner().data).map_err(bad_request)?;
        let res = match self.core.lessor.renew(id) {
            Ok(ttl) => Ok(ttl),
            Err(LessorError::NotFound) => Err(StoreError::LeaseNotFound(id)),
            Err(LessorError::NotPrimary) => Err(self.not_leader()),
        };
        blob(&res)
    }

    async fn lease_time_to_live(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let id: i64 = decode(&req.into_inner().data).map_err(bad_request)?;
        let res = match self.core.lessor.remaining(id) {
            Ok(v) => Ok(v),
            Err(LessorError::NotFound) => Err(StoreError::LeaseNotFound(id)),
            Err(LessorError::NotPrimary) => Err(self.not_leader()),
        };
        blob(&res)
    }

    async fn change_members(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let change: MembershipChange = decode(&req.into_inner().data).map_err(bad_request)?;
        let res =
            if self.core.is_leader() { self.core.change_members_local(change).await } else { Err(self.not_leader()) };
        blob(&res)
    }

    async fn cluster_info(&self, _req: Request<Blob>) -> Result<Response<Blob>, Status> {
        blob(&ClusterInfo {
            cluster_id: self.core.cluster_id,
            members: self.core.members(),
            leader: self.core.router.leader_id(),
        })
    }
}
