//! What every cluster starts with: the namespaces `default`, `kube-system`, `kube-public`
//! and `kube-node-lease` (each with its `default` ServiceAccount), and the `kubernetes`
//! Service in `default` (the first ClusterIP, port 443). Created if absent, by whichever
//! master gets there first.

use keelson_store::Txn;
use serde_json::json;

use crate::serve::Api;
use crate::status::ApiError;

pub const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub(crate) async fn run(api: &Api) -> Result<(), ApiError> {
    let def =
        api.registry.find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    for ns in DEFAULT_NAMESPACES {
        let key = crate::storage::object_key(&def, None, ns);
        let mut obj = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}});
        crate::strategy::prepare_create(&def, &mut obj);
        let meta = crate::meta::metadata_mut(&mut obj);
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(crate::meta::now_rfc3339()));
        // Absent → create; present → leave it (the txn reads it back, nothing is written).
        api.store.txn(Txn::cas_put(key, crate::storage::encode(&obj)?, 0)).await?;
        default_service_account(api, ns).await?;
    }
    kubernetes_service(api).await
}

/// A namespace's `default` ServiceAccount, created if absent (pods run as it, and
/// ServiceAccount admission refuses pods whose account is missing). Written with every
/// namespace create and at startup for the built-in namespaces; the leader's ServiceAccount
/// controller will also recreate a deleted one once controllers run.
pub(crate) async fn default_service_account(api: &Api, ns: &str) -> Result<(), ApiError> {
    let def = api
        .registry
        .find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not registered"))?;
    let key = crate::storage::object_key(&def, Some(ns), "default");
    let obj = json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {
        "name": "default", "namespace": ns,
        "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": crate::meta::now_rfc3339()}});
    api.store.txn(Txn::cas_put(key, crate::storage::encode(&obj)?, 0)).await?;
    Ok(())
}

async fn kubernetes_service(api: &Api) -> Result<(), ApiError> {
    let def =
        api.registry.find("", "v1", "services").ok_or_else(|| ApiError::internal("services are not registered"))?;
    let key = crate::storage::object_key(&def, Some("default"), "kubernetes");
    let ip = api.ranges.first().to_string();
    let mut obj = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None", "type": "ClusterIP"},
    });
    crate::strategy::prepare_create(&def, &mut obj);
    let plan = crate::alloc::plan(&api.ranges, &mut obj, None)?;
    let meta = crate::meta::metadata_mut(&mut obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(crate::meta::now_rfc3339()));
    let mut txn = Txn::cas_put(key, crate::storage::encode(&obj)?, 0);
    crate::rest::alloc_ops(&mut txn, &plan, "default/kubernetes");
    // Absent → created with its address; present (or its address taken) → left alone.
    api.store.txn(txn).await?;
    Ok(())
}
