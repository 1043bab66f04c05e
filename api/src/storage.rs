//! Objects in the store: where each lives, how it is encoded (JSON, without
//! `resourceVersion` — that is the key's mod revision), and the reads the verbs share:
//! one object, a page of a list at a pinned revision, continue tokens.

use base64::Engine;
use keelson_store::keys::prefix_end;
use keelson_store::{Consistency, KeyRange, KeyValue, RangeRequest, Store};
use serde_json::Value;

use crate::resources::ResourceDef;
use crate::status::ApiError;

/// `/registry/pods/<ns>/<name>`, `/registry/namespaces/<name>`.
pub fn object_key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{ns}/{name}", def.key_prefix),
        _ => format!("{}{name}", def.key_prefix),
    }
}

/// The prefix of every object in a namespace (or of the kind, for `-A` and cluster kinds).
pub fn list_prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}{ns}/", def.key_prefix),
        _ => def.key_prefix.clone(),
    }
}

/// The bytes stored for an object: its JSON without `metadata.resourceVersion`.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut obj = obj.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&obj).map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// An object read back, with `resourceVersion` set from the key's mod revision.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object at {} is not JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    crate::meta::set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// How fresh a read must be, from `resourceVersion` (Kubernetes' rules for get/list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Unset: the latest state (a linearizable read).
    Latest,
    /// `"0"`: whatever this master has.
    Any,
    /// `N` (NotOlderThan): at least revision N.
    NotOlderThan(i64),
    /// `N` with `resourceVersionMatch=Exact`, or a continue token: exactly N.
    Exact(i64),
}

pub fn parse_rv(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        ApiError::bad_request(format!("invalid resource version {rv:?}: must be a non-negative integer"))
    })
}

/// Bring this master to `freshness` and return the revision to read at (0 = latest local).
pub async fn settle(store: &Store, freshness: Freshness) -> Result<(i64, bool), ApiError> {
    match freshness {
        Freshness::Latest => Ok((0, false)),
        Freshness::Any => Ok((0, true)),
        Freshness::NotOlderThan(n) => {
            if store.revision() < n {
                store.linearize().await?;
                if store.revision() < n {
                    let mut e =
                        ApiError::timeout(format!("Too large resource version: {n}, current: {}", store.revision()));
                    e.details =
                        Some(Box::new(crate::status::Details { retry_after_seconds: Some(1), ..Default::default() }));
                    return Err(e);
                }
            }
            Ok((0, true))
        }
        Freshness::Exact(n) => {
            if store.revision() < n {
                store.linearize().await?;
            }
            if n < store.compact_revision() {
                return Err(ApiError::gone(format!(
                    "The resourceVersion for the provided list is too old (requested {n}, compacted at {}).",
                    store.compact_revision()
                )));
            }
            Ok((n, true))
        }
    }
}

/// One object (its key-value) at the given freshness.
pub async fn get(store: &Store, key: &str, freshness: Freshness) -> Result<(Option<KeyValue>, i64), ApiError> {
    let (_, serializable) = settle(store, freshness).await?;
    let consistency = if serializable { Consistency::Serializable } else { Consistency::Linearizable };
    Ok(store.get(key.as_bytes().to_vec(), consistency).await?)
}

/// An object from this master's store, else (maybe just written through another master)
/// from the leader: cheap when present, never a false "absent".
pub async fn get_local_or_latest(store: &Store, key: &str) -> Result<Option<KeyValue>, ApiError> {
    for freshness in [Freshness::Any, Freshness::Latest] {
        if let (Some(kv), _) = get(store, key, freshness).await? {
            return Ok(Some(kv));
        }
    }
    Ok(None)
}

/// A continue token: the revision the list is pinned at and the key to resume from,
/// encoded as Kubernetes encodes it (`{"v":"meta.k8s.io/v1","rv":N,"start":"…"}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContinueToken {
    pub v: String,
    pub rv: i64,
    pub start: String,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(s: &str) -> Result<ContinueToken, ApiError> {
        let bad =
            || ApiError::bad_request("continue key is not valid: the token is not a continue token from this server");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
            .map_err(|_| bad())?;
        let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
        if t.v != "meta.k8s.io/v1" || t.rv <= 0 || t.start.contains("..") {
            return Err(bad());
        }
        Ok(t)
    }
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// List objects under `prefix` at a pinned revision, filtered by `keep`, filling up to
/// `limit` matches (Kubernetes keeps reading pages until the limit is met or the range ends).
pub async fn list(
    store: &Store,
    prefix: &str,
    freshness: Freshness,
    start_after: Option<&str>,
    limit: Option<i64>,
    keep: &(dyn Fn(&Value) -> bool + Sync),
    filtered: bool,
) -> Result<Page, ApiError> {
    let (mut revision, serializable) = settle(store, freshness).await?;
    let end = prefix_end(prefix.as_bytes());
    let mut start: Vec<u8> = match start_after {
        Some(s) => format!("{prefix}{s}").into_bytes(),
        None => prefix.as_bytes().to_vec(),
    };
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let mut req = RangeRequest::new(KeyRange { key: start.clone(), range_end: end.clone() });
        req.revision = revision;
        req.serializable = serializable || !first;
        if let Some(l) = limit {
            req.limit = (l - items.len() as i64).max(1) + if filtered { 16 } else { 0 };
        }
        let r = store.range(req).await?;
        if revision == 0 {
            revision = r.revision;
        }
        first = false;
        let mut last_key: Option<Vec<u8>> = None;
        let n = r.kvs.len();
        for (i, kv) in r.kvs.iter().enumerate() {
            let obj = decode(kv)?;
            last_key = Some(kv.key.clone());
            if keep(&obj) {
                items.push(obj);
                if let Some(l) = limit {
                    if items.len() as i64 >= l {
                        let more = r.more || i + 1 < n;
                        if !more {
                            return Ok(Page { items, revision, continue_token: None, remaining: None });
                        }
                        let mut next = kv.key[prefix.len()..].to_vec();
                        next.push(0);
                        let token = ContinueToken {
                            v: "meta.k8s.io/v1".into(),
                            rv: revision,
                            start: String::from_utf8_lossy(&next).into_owned(),
                        };
                        let remaining = (!filtered).then(|| (r.count - (i as i64 + 1)).max(0));
                        return Ok(Page { items, revision, continue_token: Some(token.encode()), remaining });
                    }
                }
            }
        }
        match (r.more, last_key) {
            (true, Some(mut k)) => {
                k.push(0);
                start = k;
            }
            _ => return Ok(Page { items, revision, continue_token: None, remaining: None }),
        }
    }
}

/// A core/v1 object by namespace and name (a linearizable read), decoded.
pub(crate) async fn get_core(
    api: &crate::serve::Api,
    plural: &str,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let Some(def) = api.registry.find("", "v1", plural) else { return Ok(None) };
    let (kv, _) = get(&api.store, &object_key(&def, Some(ns), name), Freshness::Latest).await?;
    kv.as_ref().map(decode).transpose()
}

/// A cluster-scoped core/v1 object (a Node) by name (a linearizable read), decoded.
pub(crate) async fn get_cluster(api: &crate::serve::Api, plural: &str, name: &str) -> Result<Option<Value>, ApiError> {
    let Some(def) = api.registry.find("", "v1", plural) else { return Ok(None) };
    let (kv, _) = get(&api.store, &object_key(&def, None, name), Freshness::Latest).await?;
    kv.as_ref().map(decode).transpose()
}

/// The uid of an object that is not being deleted (what a token bound to it checks).
pub(crate) fn live_uid(obj: &Value) -> Option<String> {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    Some(crate::meta::str_field(obj, "uid").unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken { v: "meta.k8s.io/v1".into(), rv: 42, start: "web\u{0}".into() };
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
        assert!(ContinueToken::decode("!!!").is_err());
        assert!(ContinueToken::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{}")).is_err());
    }
}
