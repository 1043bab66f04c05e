//! keelson-api: the Kubernetes REST API over keelson's Raft store, served over HTTPS on
//! every master.
//!
//! A request flows through `serve.rs` (TLS, HTTP/1.1 and HTTP/2) → `authn.rs` (who is
//! calling) → `reqinfo.rs` (what the path and query ask for) → `authz.rs` (may they) →
//! `discovery.rs` or `rest/` (the verbs) → `storage.rs` (objects as JSON in the store
//! under `/registry/<resource>/<namespace>/<name>`). Kinds are described once in
//! `resources.rs`; their defaults and validation in `strategy.rs`; `kubectl get` columns
//! in `table.rs`. Every error leaves as a Kubernetes `Status` (`status.rs`).

pub mod alloc;
pub mod authn;
pub mod authz;
pub mod authz_node;
mod body;
pub mod bootstrap;
pub mod convert;
pub mod crd;
pub mod discovery;
mod events;
pub mod managed;
mod meta;
mod metrics;
pub mod openapi;
pub mod openapi_v2;
mod printers;
#[cfg(test)]
mod proptests;
pub mod proto;
pub mod quantity;
pub mod reqinfo;
pub mod resource_metrics;
pub mod resources;
mod rest;
pub mod selector;
pub mod serve;
pub mod status;
pub mod storage;
mod strategy;
pub mod table;
pub mod tls;
pub mod tokens;

pub use serve::{ApiConfig, ApiServer};

/// A request extension: the Raft term this request's writes are fenced to. Only the
/// in-process client ([`ApiServer::handle_local`]) sets it — the leader's controllers and
/// scheduler — so a write issued in one term is refused if it commits in another and a
/// deposed leader can never act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence(pub u64);
pub use status::ApiError;

/// The Kubernetes version this API server implements (k8s-openapi's `v1_33` types).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
