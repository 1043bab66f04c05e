//! The verbs on resources: dispatch by method, path shape and subresource.

mod admission;
mod apply;
mod binding;
mod delete;
mod finalize;
pub(crate) mod kubelet;
mod patch;
mod quota;
mod read;
mod review;
mod scale;
mod service_account;
mod token;
mod watch;
pub(crate) mod watch_lines;
mod write;

#[cfg(test)]
pub(crate) use patch::apply_patch;
pub(crate) use patch::merge_key_at;
pub(crate) use write::alloc_ops;
pub(crate) use write::is_apply_media;

use std::sync::Arc;

/// How many times a read-modify-write (patch, scale, apply, binding, delete) re-reads and
/// retries when another write got in first. Upstream's GuaranteedUpdate retries such CAS
/// failures without bound; every round has a winner, so a writer loses this many rounds
/// in a row only against this many concurrent writers of the same object.
pub(crate) const UPDATE_RETRIES: usize = 128;

use bytes::Bytes;
use http::{Method, Request, Response};
use serde_json::Value;

use crate::authn::UserInfo;
use crate::authz::{allowed, forbidden, Attributes};
use crate::reqinfo::{Query, ResourcePath};
use crate::resources::{ResourceDef, Storage};
use crate::selector::{FieldSelector, LabelSelector};
use crate::serve::{negotiate, Api, Body, Output};
use crate::status::ApiError;

/// One resource request, decoded.
pub(crate) struct Ctx {
    pub api: Arc<Api>,
    pub def: Arc<ResourceDef>,
    pub path: ResourcePath,
    pub query: Query,
    pub user: UserInfo,
    pub output: Output,
    pub content_type: Option<String>,
    /// The client's `User-Agent` (the default field manager's name comes from it).
    pub user_agent: Option<String>,
    /// `Warning` headers for the response (unknown fields under fieldValidation=Warn).
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// The Raft term the caller's writes are fenced to (the leader's in-process
    /// controllers), see [`crate::Fence`].
    pub fence: Option<u64>,
}

impl Ctx {
    /// Write through the store, fenced to the caller's term when it has one.
    pub async fn txn(&self, txn: keelson_store::Txn) -> Result<keelson_store::TxnResult, keelson_store::StoreError> {
        let r = self.api.store.txn_with(txn, Default::default(), self.fence).await;
        if let Err(keelson_store::StoreError::TermMismatch { expected, actual }) = &r {
            tracing::info!(expected, actual, user = %self.user.username, "fenced write refused: issued in another term");
        }
        r
    }

    pub fn namespace(&self) -> Option<&str> {
        if self.def.namespaced {
            self.path.namespace.as_deref()
        } else {
            None
        }
    }

    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }

    pub fn key(&self, name: &str) -> String {
        crate::storage::object_key(&self.def, self.namespace(), name)
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.def.plural, &self.def.group, name)
    }

    /// The field manager of a write: `fieldManager`, else the User-Agent's product name
    /// (Kubernetes' default).
    pub fn manager(&self) -> String {
        if let Some(m) = self.query.field_manager.as_deref().filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let ua = self.user_agent.as_deref().unwrap_or("unknown");
        ua.split('/').next().unwrap_or(ua).chars().filter(|c| !c.is_control()).take(128).collect()
    }

    /// How lists merge for this kind (a CRD schema's list types, or the built-in keys).
    pub fn lists(&self) -> crate::managed::Lists<'_> {
        match &self.def.custom {
            Some(c) => crate::managed::Lists::Schema(&c.schema),
            None => crate::managed::Lists::Builtin,
        }
    }

    pub fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.query.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(
            self.query.field_selector.as_deref().unwrap_or(""),
            &self.def.group,
            &self.def.plural,
        )?;
        Ok((labels, fields))
    }

    /// A stored object as the client asked to see it: in the URL's version, whole or as
    /// metadata only.
    pub fn present(&self, obj: Value) -> Value {
        let obj = self.def.served(obj);
        match self.output {
            Output::Metadata => crate::meta::partial_object_metadata(&obj),
            _ => obj,
        }
    }
}

/// The Kubernetes verb of a request.
pub(crate) fn verb(method: &Method, path: &ResourcePath, query: &Query) -> Result<&'static str, ApiError> {
    let named = path.name.is_some();
    Ok(match *method {
        Method::GET if path.legacy_watch || query.watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(ApiError::method_not_allowed(format!("{method} is not supported"))),
    })
}

pub(crate) async fn dispatch<B>(
    api: &Arc<Api>,
    req: Request<B>,
    path: ResourcePath,
    query: Query,
    user: UserInfo,
    accept: &str,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let def = api
        .registry
        .find(&path.group, &path.version, &path.resource)
        .ok_or_else(|| ApiError::no_route(req.uri().path()))?;
    if def.namespaced && path.namespace.is_none() && path.name.is_some() {
        return Err(ApiError::no_route(req.uri().path()));
    }
    if let Some(sub) = &path.subresource {
        if !def.has_subresource(sub) {
            return Err(ApiError::no_route(req.uri().path()));
        }
    }
    let verb = verb(req.method(), &path, &query)?;
    let attrs = Attributes {
        verb,
        group: &def.group,
        resource: &def.plural,
        subresource: path.subresource.as_deref(),
        namespace: path.namespace.as_deref(),
        name: path.name.as_deref(),
    };
    let ok = match crate::authz_node::node_name(&user) {
        Some(node) if !allowed(&user, &attrs) => crate::authz_node::allowed(api, node, &attrs).await,
        _ => allowed(&user, &attrs),
    };
    if !ok {
        return Err(forbidden(&user, &attrs));
    }
    let output = negotiate(accept)?;
    let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let ctx = Ctx {
        api: api.clone(),
        def: def.clone(),
        path,
        query,
        user,
        output,
        content_type,
        user_agent: req.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
        warnings: std::sync::Mutex::new(Vec::new()),
        fence: req.extensions().get::<crate::Fence>().map(|f| f.0),
    };
    let mut resp = route_verb(&ctx, req, verb).await?;
    let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    Ok(resp)
}

async fn route_verb<B>(ctx: &Ctx, req: Request<B>, verb: &'static str) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let def = ctx.def.clone();
    if def.storage == Storage::Metrics {
        return crate::resource_metrics::serve::handle(ctx, verb).await;
    }
    if def.storage == Storage::Virtual {
        if verb != "create" {
            return Err(ApiError::method_not_allowed(format!("{verb} is not supported on {}", def.plural)));
        }
        let body = crate::body::read(req.into_body()).await?;
        return review::create(ctx, &body);
    }
    let sub = ctx.path.subresource.clone();
    match (verb, sub.as_deref()) {
        ("get", None) => read::get(ctx).await,
        ("list", None) => read::list(ctx).await,
        ("watch", None) => watch::watch(ctx).await,
        ("create", None) => {
            let body = crate::body::read(req.into_body()).await?;
            write::create(ctx, &body).await
        }
        ("update", None | Some("status")) => {
            let body = crate::body::read(req.into_body()).await?;
            write::update(ctx, &body).await
        }
        ("patch", None | Some("status")) => {
            let body = crate::body::read(req.into_body()).await?;
            patch::patch(ctx, &body).await
        }
        ("delete", None) => {
            let body = crate::body::read(req.into_body()).await?;
            delete::delete(ctx, &body).await
        }
        ("deletecollection", None) => {
            let body = crate::body::read(req.into_body()).await?;
            delete::delete_collection(ctx, &body).await
        }
        ("get", Some("status")) => read::get(ctx).await,
        ("create", Some("token")) if def.group.is_empty() && def.plural == "serviceaccounts" => {
            let body = crate::body::read(req.into_body()).await?;
            token::create(ctx, &body).await
        }
        ("create", Some("binding")) if def.group.is_empty() && def.plural == "pods" => {
            let body = crate::body::read(req.into_body()).await?;
            binding::create(ctx, &body).await
        }
        ("update", Some("finalize")) if def.group.is_empty() && def.plural == "namespaces" => {
            let body = crate::body::read(req.into_body()).await?;
            finalize::update(ctx, &body).await
        }
        ("get", Some("scale")) => scale::get(ctx).await,
        ("get", Some(s @ "log")) | ("get" | "create", Some(s @ ("exec" | "attach" | "portforward")))
            if def.group.is_empty() && def.plural == "pods" =>
        {
            kubelet::proxy(ctx, req, s).await
        }
        ("update" | "patch", Some("scale")) => {
            let body = crate::body::read(req.into_body()).await?;
            scale::update(ctx, &body, verb == "patch").await
        }
        (v, Some(s)) => {
            Err(ApiError::method_not_allowed(format!("{v} on {}/{s} is not served yet by keelson", def.plural)))
        }
        (v, None) => Err(ApiError::method_not_allowed(format!("{v} is not supported on {}", def.plural))),
    }
}
