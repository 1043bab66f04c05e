//! etcd `Maintenance.Status` (what `etcdctl endpoint status` shows).

use tonic::{Request, Response, Status};

use super::{Etcd, ETCD_API_VERSION};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;

#[tonic::async_trait]
impl Maintenance for Etcd {
    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.store.status().await;
        let mut header = self.header(s.revision);
        if let Some(h) = header.as_mut() {
            h.raft_term = s.term;
        }
        Ok(Response::new(pb::StatusResponse {
            header,
            version: ETCD_API_VERSION.to_string(),
            db_size: s.db_size as i64,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: s.db_size as i64,
            is_learner: s.is_learner,
        }))
    }
}
