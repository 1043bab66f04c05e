//! etcd `Lease`: grant, revoke, keep-alive stream, time-to-live, list.

use std::pin::Pin;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{status, Etcd};
use crate::error::StoreError;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::lease_server::Lease;

#[tonic::async_trait]
impl Lease for Etcd {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let (id, ttl, rev) = self.store.lease_grant(r.ttl, r.id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse { header: self.header(rev), id, ttl, error: String::new() }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let rev = self.store.lease_revoke(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: self.header(rev) }))
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let me = self.clone();
        let stop = self.store.stopped();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = stop.cancelled() => return,
                };
                let id = match msg {
                    Ok(Some(r)) => r.id,
                    Ok(None) | Err(_) => return,
                };
                let reply = match me.store.lease_keep_alive(id).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse { header: me.header(me.store.revision()), id, ttl }),
                    // etcd answers TTL 0 for a lease that does not exist (any more).
                    Err(StoreError::LeaseNotFound(_)) => {
                        Ok(pb::LeaseKeepAliveResponse { header: me.header(me.store.revision()), id, ttl: 0 })
                    }
                    Err(e) => Err(status(e)),
                };
                let fatal = reply.is_err();
                if tx.send(reply).await.is_err() || fatal {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let header = self.header(self.store.revision());
        match self.store.lease_time_to_live(r.id, r.keys).await {
            Ok((ttl, granted, keys)) => {
                Ok(Response::new(pb::LeaseTimeToLiveResponse { header, id: r.id, ttl, granted_ttl: granted, keys }))
            }
            // etcd: TTL -1 means the lease has expired or was revoked.
            Err(StoreError::LeaseNotFound(_)) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.store.linearize().await.map_err(status)?;
        let leases = self.store.leases().map_err(status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(self.store.revision()),
            leases: leases.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
