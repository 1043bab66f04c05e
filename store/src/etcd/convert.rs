//! etcd protobuf messages ↔ store types.

use tonic::Status;

use crate::keys::KeyRange;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget as PbTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder as PbOrder, SortTarget as PbSortTarget};
use crate::pb::etcdserverpb::request_op::Request as PbOp;
use crate::pb::etcdserverpb::response_op::Response as PbOpResult;
use crate::pb::mvccpb;
use crate::types::{
    Compare, CompareOp, CompareTarget, DeleteRequest, Event, EventKind, KeyValue, Op, OpResult, PutRequest,
    RangeRequest, RangeResult, SortOrder, SortTarget, Txn,
};

pub fn kv(k: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.key,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value,
        lease: k.lease,
    }
}

pub fn event(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
    }
}

pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, Status> {
    if r.key.is_empty() {
        return Err(super::status(crate::StoreError::EmptyKey));
    }
    let sort_order = match PbOrder::try_from(r.sort_order).unwrap_or(PbOrder::None) {
        PbOrder::None => SortOrder::None,
        PbOrder::Ascend => SortOrder::Ascend,
        PbOrder::Descend => SortOrder::Descend,
    };
    let sort_target = match PbSortTarget::try_from(r.sort_target).unwrap_or(PbSortTarget::Key) {
        PbSortTarget::Key => SortTarget::Key,
        PbSortTarget::Version => SortTarget::Version,
        PbSortTarget::Create => SortTarget::Create,
        PbSortTarget::Mod => SortTarget::Mod,
        PbSortTarget::Value => SortTarget::Value,
    };
    Ok(RangeRequest {
        range: KeyRange { key: r.key, range_end: r.range_end },
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_response(r: RangeResult, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse { header, kvs: r.kvs.into_iter().map(kv).collect(), more: r.more, count: r.count }
}

pub fn put_request(p: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_request(d: pb::DeleteRangeRequest) -> DeleteRequest {
    DeleteRequest { range: KeyRange { key: d.key, range_end: d.range_end }, prev_kv: d.prev_kv }
}

fn op(o: pb::RequestOp) -> Result<Op, Status> {
    match o.request {
        Some(PbOp::RequestRange(r)) => Ok(Op::Range(range_request(r)?)),
        Some(PbOp::RequestPut(p)) => Ok(Op::Put(put_request(p))),
        Some(PbOp::RequestDeleteRange(d)) => Ok(Op::Delete(delete_request(d))),
        Some(PbOp::RequestTxn(_)) => Err(Status::unimplemented("keelson: nested transactions are not supported")),
        None => Err(Status::invalid_argument("etcdserver: empty request operation")),
    }
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Err(_) => return Err(Status::invalid_argument(format!("etcdserver: unknown compare result {}", c.result))),
    };
    let target = match (PbTarget::try_from(c.target), c.target_union) {
        (Ok(PbTarget::Version), Some(TargetUnion::Version(v))) => CompareTarget::Version(v),
        (Ok(PbTarget::Version), None) => CompareTarget::Version(0),
        (Ok(PbTarget::Create), Some(TargetUnion::CreateRevision(v))) => CompareTarget::Create(v),
        (Ok(PbTarget::Create), None) => CompareTarget::Create(0),
        (Ok(PbTarget::Mod), Some(TargetUnion::ModRevision(v))) => CompareTarget::Mod(v),
        (Ok(PbTarget::Mod), None) => CompareTarget::Mod(0),
        (Ok(PbTarget::Value), Some(TargetUnion::Value(v))) => CompareTarget::Value(v),
        (Ok(PbTarget::Value), None) => CompareTarget::Value(Vec::new()),
        (Ok(PbTarget::Lease), Some(TargetUnion::Lease(v))) => CompareTarget::Lease(v),
        (Ok(PbTarget::Lease), None) => CompareTarget::Lease(0),
        (t, _) => {
            return Err(Status::invalid_argument(format!("etcdserver: compare target {t:?} does not match its value")))
        }
    };
    Ok(Compare { range: KeyRange { key: c.key, range_end: c.range_end }, op, target })
}

pub fn txn(t: pb::TxnRequest) -> Result<Txn, Status> {
    Ok(Txn {
        compares: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op).collect::<Result<_, _>>()?,
    })
}

pub fn op_result(r: OpResult, header: Option<pb::ResponseHeader>) -> pb::ResponseOp {
    let response = match r {
        OpResult::Range(rr) => PbOpResult::ResponseRange(range_response(rr, header)),
        OpResult::Put { prev_kv } => PbOpResult::ResponsePut(pb::PutResponse { header, prev_kv: prev_kv.map(kv) }),
        OpResult::Delete { deleted, prev_kvs } => PbOpResult::ResponseDeleteRange(pb::DeleteRangeResponse {
            header,
            deleted,
            prev_kvs: prev_kvs.into_iter().map(kv).collect(),
        }),
    };
    pb::ResponseOp { response: Some(response) }
}
