//! openraft's network over the masters' gRPC `Peer` service: append-entries and votes
//! as calls multiplexed on one long-lived stream per peer (`mux.rs`), full snapshots as
//! a client stream of file chunks.

use std::future::Future;
use std::sync::Arc;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{OptionalSend, Snapshot, Vote};
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::codec::{decode, encode};
use crate::mux::{Kind, Mux};
use crate::pb::peer::SnapshotChunk;
use crate::pool::PeerPool;
use crate::sm::snapshot::SnapshotDir;
use crate::types::{Member, NodeId, TypeConfig};

const CHUNK: usize = 1 << 20;

/// Creates one [`RaftPeer`] per replication target.
pub(crate) struct RaftNet {
    pub pool: Arc<PeerPool>,
    pub mux: Arc<Mux>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> RaftPeer {
        RaftPeer { target, addr: node.peer_addr.clone(), pool: self.pool.clone(), mux: self.mux.clone() }
    }
}

pub(crate) struct RaftPeer {
    target: NodeId,
    addr: String,
    pool: Arc<PeerPool>,
    mux: Arc<Mux>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl RaftPeer {
    async fn call<Req, Resp>(&self, kind: Kind, req: &Req, option: &RPCOption) -> Result<Resp, RpcErr>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .mux
            .call(&self.addr, kind, data, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let res: Result<Resp, RaftError<NodeId>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Kind::AppendEntries, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Kind::Vote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let dir: SnapshotDir = *snapshot.snapshot;
        let files = dir.files().map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // The header lists every file and its size: a stream that ends early (this side
        // cancelled, or a file failed to read) is then refused by the receiver instead of
        // being installed half-written.
        let header = encode(&(vote, snapshot.meta.clone(), files.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let producer = tokio::spawn(async move {
            if tx.send(SnapshotChunk { header, ..Default::default() }).await.is_err() {
                return;
            }
            for (name, _) in files {
                let Ok(mut f) = tokio::fs::File::open(dir.path.join(&name)).await else { return };
                let mut offset = 0u64;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let Ok(n) = f.read(&mut buf).await else { return };
                    buf.truncate(n);
                    let done = n == 0;
                    let chunk =
                        SnapshotChunk { header: Vec::new(), file: name.clone(), offset, data: buf, file_done: done };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                    offset += n as u64;
                    if done {
                        break;
                    }
                }
            }
        });
        let mut client = self.pool.client(&self.addr).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let call = client.install_snapshot(ReceiverStream::new(rx));
        let reply = tokio::select! {
            r = call => r,
            closed = cancel => {
                producer.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        producer.abort();
        let reply = reply.map_err(|s| match s.code() {
            tonic::Code::Unavailable => StreamingError::Unreachable(Unreachable::new(&s)),
            _ => StreamingError::Network(NetworkError::new(&s)),
        })?;
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(&reply.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
