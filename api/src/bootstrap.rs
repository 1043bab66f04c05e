//! What every cluster starts with: the namespaces `default`, `kube-system`, `kube-public`
//! and `kube-node-lease` (each with its `default` ServiceAccount and `kube-root-ca.crt`
//! ConfigMap), and the `kubernetes` Service in `default` (the first ClusterIP, port 443).
//! Created if absent, by whichever master gets there first.

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
        crate::meta::stamp_new(&mut obj);
        // Absent → create; present → leave it (the txn reads it back, nothing is written).
        api.store.txn(Txn::cas_put(key, crate::storage::encode(&obj)?, 0)).await?;
        namespace_defaults(api, ns).await?;
    }
    kubernetes_service(api).await
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// What every namespace holds, created if absent: the `default` ServiceAccount (pods run as
/// it; ServiceAccount admission refuses pods whose account is missing) and the
/// `kube-root-ca.crt` ConfigMap (the CA in every pod's kube-api-access volume). Written with
/// every namespace create and at startup for the built-in namespaces; the leader's
/// ServiceAccount and root-CA controllers will also recreate deleted ones once controllers run.
pub(crate) async fn namespace_defaults(api: &Api, ns: &str) -> Result<(), ApiError> {
    let objects = [
        ("serviceaccounts", "default", json!({"kind": "ServiceAccount", "apiVersion": "v1"})),
        (
            "configmaps",
            "kube-root-ca.crt",
            json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"ca.crt": api.ca_pem},
                "metadata": {"annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}}}),
        ),
    ];
    for (plural, name, mut obj) in objects {
        let def = api
            .registry
            .find("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} are not registered")))?;
        let key = crate::storage::object_key(&def, Some(ns), name);
        let meta = crate::meta::metadata_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        crate::meta::stamp_new(&mut obj);
        api.store.txn(Txn::cas_put(key, crate::storage::encode(&obj)?, 0)).await?;
    }
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
    crate::meta::stamp_new(&mut obj);
    let mut txn = Txn::cas_put(key, crate::storage::encode(&obj)?, 0);
    crate::rest::alloc_ops(&mut txn, &plan, "default/kubernetes");
    // Absent → created with its address; present (or its address taken) → left alone.
    api.store.txn(txn).await?;
    Ok(())
}
