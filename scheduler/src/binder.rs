//! Binding a pod to its node: `POST pods/{name}/binding` with a v1 Binding (target kind
//! Node, the pod's UID as a precondition), like upstream's DefaultBinder.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Binding, ObjectReference, PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api,
};

/// A binding that takes longer than this is given up (and the pod retried).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a binding failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// 409: already bound, or the pod was replaced (UID precondition): nothing to retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 404: the pod is gone.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("binding timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Other(String),
}

/// The Binding of a pod to `node`; `traceparent` (the bind's trace) rides along as an
/// annotation, which the API server copies onto the pod like Kubernetes does.
pub fn binding(namespace: &str, name: &str, uid: &str, node: &str, traceparent: Option<&str>) -> Binding {
    Binding {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
            annotations: traceparent
                .map(|t| [(crate::trace::ANN_TRACEPARENT.to_string(), t.to_string())].into_iter().collect()),
            ..Default::default()
        },
        target: ObjectReference { kind: Some("Node".into()), name: Some(node.to_string()), ..Default::default() },
    }
}

pub async fn bind(
    client: kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    traceparent: Option<&str>,
) -> Result<(), BindError> {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let body = binding(namespace, name, uid, node, traceparent);
    let params = PostParams::default();
    let call = api.create_subresource::<_, serde_json::Value>("binding", name, &params, &body);
    match tokio::time::timeout(BIND_TIMEOUT, call).await {
        Err(_) => Err(BindError::Timeout(BIND_TIMEOUT)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(BindError::Conflict(s.message.clone())),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(BindError::NotFound(s.message.clone())),
        Ok(Err(e)) => Err(BindError::Other(e.to_string())),
    }
}

/// Select `node` for a claim of a WaitForFirstConsumer class (the `selected-node`
/// annotation its node's provisioner acts on), before the pod is bound there.
pub async fn select_node(client: kube::Client, namespace: &str, claim: &str, node: &str) -> Result<(), BindError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client, namespace);
    let patch = serde_json::json!({ "metadata": { "annotations": { crate::volumes::ANN_SELECTED_NODE: node } } });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let call = api.patch(claim, &params, &patch);
    match tokio::time::timeout(BIND_TIMEOUT, call).await {
        Err(_) => Err(BindError::Timeout(BIND_TIMEOUT)),
        Ok(Ok(_)) => Ok(()),
        // Whatever the claim's fate, the pod is retried (it is not the pod that is gone).
        Ok(Err(e)) => {
            Err(BindError::Other(format!("selecting node {node:?} for persistentvolumeclaim {claim:?}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_names_the_pod_and_node() {
        let b = binding("default", "web-1", "u-1", "node-a", None);
        let v = serde_json::to_value(&b).unwrap();
        assert!(v["metadata"].get("annotations").is_none(), "{v}");
        assert_eq!(v["metadata"]["name"], "web-1");
        assert_eq!(v["metadata"]["namespace"], "default");
        assert_eq!(v["metadata"]["uid"], "u-1");
        assert_eq!(v["target"]["kind"], "Node");
        assert_eq!(v["target"]["name"], "node-a");
        assert_eq!(v["kind"], "Binding");
        assert_eq!(v["apiVersion"], "v1");
    }

    #[test]
    fn a_traced_binding_carries_its_traceparent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let v = serde_json::to_value(binding("default", "web-1", "u-1", "node-a", Some(tp))).unwrap();
        assert_eq!(v["metadata"]["annotations"][crate::trace::ANN_TRACEPARENT], tp);
    }
}
