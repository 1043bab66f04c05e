//! etcd `Cluster`: MemberList, MemberAdd (learner, then voter once caught up),
//! MemberRemove, MemberPromote.

use tonic::{Request, Response, Status};

use super::{status, Etcd};
use crate::config::strip_scheme;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::types::{Member, MemberInfo};

fn member(m: MemberInfo) -> pb::Member {
    let urls = |a: &str| if a.is_empty() { Vec::new() } else { vec![format!("http://{a}")] };
    pb::Member {
        id: m.id,
        name: m.member.name,
        peer_ur_ls: urls(&m.member.peer_addr),
        client_ur_ls: urls(&m.member.client_addr),
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl Cluster for Etcd {
    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        let [peer] = req.peer_ur_ls.as_slice() else {
            return Err(Status::invalid_argument("etcdserver: give exactly one peer URL"));
        };
        let peer_addr = strip_scheme(peer).to_string();
        if !peer_addr.contains(':') {
            return Err(Status::invalid_argument(format!("etcdserver: peer URL {peer:?} has no port")));
        }
        let new = Member { name: String::new(), peer_addr, client_addr: String::new(), voter: false };
        let (id, members) = self.store.add_member(new, req.is_learner).await.map_err(status)?;
        let added = members.iter().find(|m| m.id == id).cloned().map(member);
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(self.store.revision()),
            member: added,
            members: members.into_iter().map(member).collect(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let members = self.store.remove_member(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(self.store.revision()),
            members: members.into_iter().map(member).collect(),
        }))
    }

    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(self.store.revision()),
            members: self.store.members().into_iter().map(member).collect(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let members = self.store.promote_member(req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(self.store.revision()),
            members: members.into_iter().map(member).collect(),
        }))
    }
}
