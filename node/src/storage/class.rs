//! The `local-path` StorageClass every node's provisioner makes sure exists.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::{LOCAL_PATH_CLASS, PROVISIONER};

/// Marks the class claims without one get.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// `local-path`: volumes made by [`PROVISIONER`] on the node a pod is scheduled to
/// (WaitForFirstConsumer), deleted with their claim, and the default class.
pub fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(LOCAL_PATH_CLASS.into()),
            annotations: Some(BTreeMap::from([(ANN_DEFAULT_CLASS.to_string(), "true".to_string())])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// Create the class unless it exists (whoever made it, however it was changed since).
pub async fn ensure(client: &kube::Client) -> Result<bool, kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt(LOCAL_PATH_CLASS).await?.is_some() {
        return Ok(false);
    }
    match api.create(&PostParams::default(), &local_path_class()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_is_the_default_and_waits_for_a_consumer() {
        let v = serde_json::to_value(local_path_class()).unwrap();
        assert_eq!(v["apiVersion"], "storage.k8s.io/v1");
        assert_eq!(v["kind"], "StorageClass");
        assert_eq!(v["metadata"]["name"], "local-path");
        assert_eq!(v["metadata"]["annotations"][ANN_DEFAULT_CLASS], "true");
        assert_eq!(v["provisioner"], "keelson.io/local-path");
        assert_eq!(v["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(v["reclaimPolicy"], "Delete");
    }
}
