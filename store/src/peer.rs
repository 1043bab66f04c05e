//! The master-to-master gRPC service: Raft RPCs, snapshot streams, and the leader-only
//! work that followers forward (writes, read index, lease keep-alives, membership).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Snapshot, SnapshotMeta, Vote};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{decode, encode};
use crate::error::StoreError;
use crate::lease::LessorError;
use crate::mux::Kind;
use crate::node::Core;
use crate::pb::peer::peer_server::Peer;
use crate::pb::peer::{Blob, Frame, SnapshotChunk};
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

/// Serve one frame of the multiplexed stream; the reply is the bincode of the result
/// (a reply that does not decode tells the caller the request was malformed).
async fn dispatch(core: &Arc<Core>, kind: u32, data: &[u8]) -> Vec<u8> {
    fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
        encode(v).unwrap_or_default()
    }
    let bad = |e: StoreError| enc(&Err::<(), String>(format!("undecodable peer message: {e}")));
    match Kind::from_u32(kind) {
        Some(Kind::AppendEntries) => match decode::<AppendEntriesRequest<TypeConfig>>(data) {
            Ok(rpc) => {
                let res = core.raft.append_entries(rpc).await;
                if matches!(&res, Ok(r) if r.is_success()) {
                    core.standby.heard_leader();
                }
                enc(&res)
            }
            Err(e) => bad(e),
        },
        Some(Kind::Vote) => match decode::<VoteRequest<NodeId>>(data) {
            Ok(rpc) => {
                let res = core.raft.vote(rpc.clone()).await;
                if let Ok(resp) = &res {
                    core.standby.after_vote(&core.raft, &rpc, resp).await;
                }
                enc(&res)
            }
            Err(e) => bad(e),
        },
        Some(Kind::Propose) => match decode::<Vec<StoreRequest>>(data) {
            Ok(reqs) => enc(&match {
                // A forwarded batch's commands may belong to several traces: each traced
                // one gets a span, parented on its carried context, for the leader's part.
                let spans: Vec<tracing::Span> = if crate::trace::enabled() {
                    reqs.iter()
                        .filter(|r| !r.trace.is_empty())
                        .map(|r| {
                            let s = tracing::info_span!(
                                parent: None,
                                "raft.propose.forwarded",
                                otel.kind = "server",
                                rpc.system = "raft",
                                keelson.member = %core.name,
                            );
                            crate::trace::adopt(&s, &r.trace);
                            s
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let r = core.router.write_local(reqs).await;
                drop(spans);
                r
            } {
                Ok(Some((results, log_index))) => ProposeReply::Applied { results, log_index },
                Ok(None) => ProposeReply::NotLeader { leader: core.router.leader_id() },
                Err(e) => ProposeReply::Failed(e),
            }),
            Err(e) => bad(e),
        },
        Some(Kind::ReadIndex) => enc(&core.reads.for_peer().await),
        None => bad(StoreError::InvalidArgument(format!("unknown frame kind {kind}"))),
    }
}

/// Did every file of the snapshot's manifest arrive whole (all its bytes, and its last
/// chunk)? `written`: bytes received per file and whether its last chunk came.
fn check_complete(manifest: &[(String, u64)], written: &HashMap<String, (u64, bool)>) -> Result<(), String> {
    for (name, size) in manifest {
        match written.get(name) {
            Some((got, true)) if got == size => {}
            other => {
                return Err(format!(
                    "incomplete snapshot stream: {name} has {} of {size} bytes{}",
                    other.map_or(0, |(got, _)| *got),
                    if other.is_some_and(|(_, done)| !done) { ", last chunk missing" } else { "" }
                ))
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<Blob>, Status> {
        self.check(&req)?;
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta, manifest): (Vote<NodeId>, SnapshotMeta<NodeId, Member>, Vec<(String, u64)>) =
            decode(&first.header).map_err(bad_request)?;
        let dir = self.core.raft.begin_receiving_snapshot().await.map_err(|e| Status::internal(e.to_string()))?;
        let received = async {
            let mut file: Option<(String, tokio::fs::File)> = None;
            let mut written: HashMap<String, (u64, bool)> = HashMap::new();
            while let Some(chunk) = stream.message().await? {
                if !manifest.iter().any(|(n, _)| n == &chunk.file)
                    || chunk.file.contains('/')
                    || chunk.file.starts_with('.')
                {
                    return Err(Status::invalid_argument(format!("bad snapshot file name {:?}", chunk.file)));
                }
                if file.as_ref().is_none_or(|(n, _)| n != &chunk.file) {
                    let f = tokio::fs::File::create(dir.path.join(&chunk.file)).await?;
                    file = Some((chunk.file.clone(), f));
                }
                if let Some((_, f)) = file.as_mut() {
                    f.write_all(&chunk.data).await?;
                    let w = written.entry(chunk.file.clone()).or_default();
                    w.0 += chunk.data.len() as u64;
                    if chunk.file_done {
                        f.sync_all().await?;
                        w.1 = true;
                    }
                }
            }
            // The stream ended: install only if every listed file arrived whole.
            check_complete(&manifest, &written).map_err(Status::aborted)
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

    type StreamStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Self::StreamStream>, Status> {
        self.check(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4096);
        let core = self.core.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(f)) => f,
                        _ => break,
                    },
                    _ = core.stop.cancelled() => break,
                };
                // Raft frames come one at a time from the leader's replication stream
                // (and votes rarely): serve them in line, saving a task per frame.
                // Forwarded writes and read-index requests wait on commits: each gets
                // its own task so none holds up the next.
                let inline = matches!(Kind::from_u32(frame.kind), Some(Kind::AppendEntries | Kind::Vote));
                if inline {
                    let data = dispatch(&core, frame.kind, &frame.data).await;
                    if tx.send(Ok(Frame { id: frame.id, kind: frame.kind, data })).await.is_err() {
                        break;
                    }
                    continue;
                }
                let core = core.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let data = dispatch(&core, frame.kind, &frame.data).await;
                    let _ = tx.send(Ok(Frame { id: frame.id, kind: frame.kind, data })).await;
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_stream_cut_short_is_refused() {
        let manifest = vec![("000004.log".to_string(), 0), ("000009.sst".to_string(), 10), ("CURRENT".to_string(), 16)];
        let mut written: HashMap<String, (u64, bool)> =
            [("000004.log".to_string(), (0, true)), ("000009.sst".to_string(), (10, true))].into();
        let err = check_complete(&manifest, &written).unwrap_err();
        assert!(err.contains("CURRENT has 0 of 16 bytes"), "{err}");
        written.insert("CURRENT".into(), (16, false));
        assert!(check_complete(&manifest, &written).unwrap_err().contains("last chunk missing"));
        written.insert("CURRENT".into(), (12, true));
        assert!(check_complete(&manifest, &written).is_err(), "short file");
        written.insert("CURRENT".into(), (16, true));
        assert_eq!(check_complete(&manifest, &written), Ok(()));
    }
}
