//! etcd `KV`: Range, Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use super::{convert, status, Etcd};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::types::{Op, OpResult, Txn};

#[tonic::async_trait]
impl Kv for Etcd {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let r = convert::range_request(req.into_inner())?;
        let res = self.store.range(r).await.map_err(status)?;
        let header = self.header(res.revision);
        Ok(Response::new(convert::range_response(res, header)))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let p = convert::put_request(req.into_inner());
        let txn = Txn { success: vec![Op::Put(p)], ..Default::default() };
        let res = self.store.txn(txn).await.map_err(status)?;
        let prev_kv = match res.responses.into_iter().next() {
            Some(OpResult::Put { prev_kv }) => prev_kv.map(convert::kv),
            _ => None,
        };
        Ok(Response::new(pb::PutResponse { header: self.header(res.revision), prev_kv }))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let d = req.into_inner();
        if d.key.is_empty() {
            return Err(status(crate::StoreError::EmptyKey));
        }
        let txn = Txn { success: vec![Op::Delete(convert::delete_request(d))], ..Default::default() };
        let res = self.store.txn(txn).await.map_err(status)?;
        let (deleted, prev_kvs) = match res.responses.into_iter().next() {
            Some(OpResult::Delete { deleted, prev_kvs }) => (deleted, prev_kvs.into_iter().map(convert::kv).collect()),
            _ => (0, Vec::new()),
        };
        Ok(Response::new(pb::DeleteRangeResponse { header: self.header(res.revision), deleted, prev_kvs }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let txn = convert::txn(req.into_inner())?;
        // Read-only transactions go through the log as well: compares and reads then
        // see one consistent revision, linearizably.
        let res = self.store.txn(txn).await.map_err(status)?;
        let header = self.header(res.revision);
        Ok(Response::new(pb::TxnResponse {
            header: header.clone(),
            succeeded: res.succeeded,
            responses: res.responses.into_iter().map(|r| convert::op_result(r, header.clone())).collect(),
        }))
    }

    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        let rev = self.store.compact(req.into_inner().revision).await.map_err(status)?;
        Ok(Response::new(pb::CompactionResponse { header: self.header(rev) }))
    }
}
