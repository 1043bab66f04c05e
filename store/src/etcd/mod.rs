//! The etcd v3 gRPC endpoint (`--etcd-addr`): KV, Watch, Lease, Cluster and
//! Maintenance.Status over [`Store`], with etcd's error codes and messages so that
//! `etcdctl` and other etcd clients behave as they do against etcd.

mod cluster;
mod convert;
mod kv;
mod lease;
mod maintenance;
mod watch;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

use crate::error::StoreError;
use crate::node::Store;
use crate::pb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};

/// Largest gRPC message accepted, so that an oversized request gets etcd's clear
/// "request is too large" rather than a transport error.
const MAX_DECODE: usize = 16 << 20;

/// The version `Maintenance.Status` reports (the etcd API level keelson speaks).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Handlers share the store.
#[derive(Clone)]
pub(crate) struct Etcd {
    pub store: Store,
}

impl Etcd {
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.store.cluster_id(),
            member_id: self.store.member_id(),
            revision,
            raft_term: self.store.leadership().borrow().term,
        })
    }
}

/// etcd's status code and message for each store error (clients match on the text).
pub fn status(e: StoreError) -> Status {
    let (code, msg) = match &e {
        StoreError::Compacted { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
        }
        StoreError::FutureRevision { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into())
        }
        StoreError::LeaseNotFound(_) => (Code::NotFound, "etcdserver: requested lease not found".into()),
        StoreError::LeaseExists(_) => (Code::FailedPrecondition, "etcdserver: lease already exists".into()),
        StoreError::LeaseTtlTooLarge(_) => (Code::OutOfRange, "etcdserver: too large lease TTL".into()),
        StoreError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".into()),
        StoreError::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".into()),
        StoreError::TooManyOps { .. } => {
            (Code::InvalidArgument, "etcdserver: too many operations in txn request".into())
        }
        StoreError::RequestTooLarge { size, limit } => {
            (Code::InvalidArgument, format!("etcdserver: request is too large ({size} bytes > {limit} bytes)"))
        }
        StoreError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided".into()),
        StoreError::InvalidArgument(m) => (Code::InvalidArgument, format!("etcdserver: {m}")),
        StoreError::Unsupported(m) => (Code::Unimplemented, format!("keelson: not supported: {m}")),
        StoreError::NoLeader => (Code::Unavailable, "etcdserver: no leader".into()),
        StoreError::NotLeader { .. } => (Code::Unavailable, "etcdserver: not leader".into()),
        StoreError::Timeout(m) => (Code::Unavailable, format!("etcdserver: request timed out ({m})")),
        StoreError::Unknown(m) => {
            (Code::Unavailable, format!("etcdserver: request timed out, possibly due to connection lost ({m})"))
        }
        StoreError::TermMismatch { .. } => (Code::FailedPrecondition, format!("keelson: {e}")),
        StoreError::MemberNotFound(_) => (Code::NotFound, "etcdserver: member not found".into()),
        StoreError::Membership(m) => (Code::FailedPrecondition, format!("etcdserver: {m}")),
        StoreError::Shutdown => (Code::Unavailable, "etcdserver: server stopped".into()),
        StoreError::Storage(_) | StoreError::Raft(_) | StoreError::Peer(_) | StoreError::Config(_) => {
            (Code::Internal, format!("keelson: {e}"))
        }
    };
    Status::new(code, msg)
}

/// Serve the etcd endpoint on `listener` until `stop`.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let h = Etcd { store };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .add_service(KvServer::new(h.clone()).max_decoding_message_size(MAX_DECODE))
        .add_service(WatchServer::new(h.clone()).max_decoding_message_size(MAX_DECODE))
        .add_service(LeaseServer::new(h.clone()).max_decoding_message_size(MAX_DECODE))
        .add_service(ClusterServer::new(h.clone()).max_decoding_message_size(MAX_DECODE))
        .add_service(MaintenanceServer::new(h).max_decoding_message_size(MAX_DECODE))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop.cancelled_owned())
        .await
}
