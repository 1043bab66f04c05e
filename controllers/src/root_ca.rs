//! The root CA publisher: every namespace that is not being deleted has the ConfigMap
//! `kube-root-ca.crt` holding the cluster CA (`ca.crt`) and a description annotation; it is
//! put back if edited and recreated if deleted. Off when there is no CA to publish.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    api::{ObjectMeta, PostParams},
    runtime::{controller::Action, reflector::ObjectRef, watcher, Controller},
    Api, ResourceExt,
};

use crate::{
    serviceaccount::is_active,
    util_api::{is_namespace_terminating, is_not_found},
    util_runtime::{drive, retry_policy},
    Context, Error,
};

/// The ConfigMap's name.
pub const CONFIGMAP: &str = "kube-root-ca.crt";
/// Its key holding the CA.
pub const KEY: &str = "ca.crt";
/// The annotation describing it, and its value.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct State {
    client: kube::Client,
    ca: String,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let Some(ca) = ctx.config.root_ca_pem.clone() else {
        tracing::debug!("no root CA to publish");
        ctx.stop.cancelled().await;
        return Ok(());
    };
    let state = Arc::new(State { client: ctx.client.clone(), ca });
    let results = Controller::new(Api::<Namespace>::all(ctx.client.clone()), watcher::Config::default())
        .watches(
            Api::<ConfigMap>::all(ctx.client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
            |cm| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .with_config(kube::runtime::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(
            crate::observe::observed("root-ca-certificate-publisher", &ctx.config.write_traces, reconcile),
            retry_policy,
            state,
        );
    drive(results, &ctx.stop).await;
    Ok(())
}

/// What to do with a namespace's CA ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Unchanged,
    Create(ConfigMap),
    /// Replace it with this: `data` exactly the CA, the description set, other metadata kept.
    Update(ConfigMap),
}

/// Compare the current ConfigMap (if any) with what it should hold.
pub fn plan(current: Option<&ConfigMap>, ca: &str) -> Plan {
    let data = BTreeMap::from([(KEY.to_string(), ca.to_string())]);
    let Some(cm) = current else {
        return Plan::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP.into()),
                annotations: Some(BTreeMap::from([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        });
    };
    let described = cm.annotations().get(DESCRIPTION_ANNOTATION).is_some_and(|d| !d.is_empty());
    if cm.data.as_ref() == Some(&data) && described {
        return Plan::Unchanged;
    }
    let mut new = cm.clone();
    new.data = Some(data);
    new.annotations_mut().insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Plan::Update(new)
}

async fn reconcile(ns: Arc<Namespace>, st: Arc<State>) -> Result<Action, Error> {
    if !is_active(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ConfigMap> = Api::namespaced(st.client.clone(), &name);
    let current = api.get_opt(CONFIGMAP).await?;
    match plan(current.as_ref(), &st.ca) {
        Plan::Unchanged => {}
        Plan::Create(cm) => match api.create(&PostParams::default(), &cm).await {
            Ok(_) => tracing::debug!(namespace = %name, "published the root CA"),
            Err(e) if is_not_found(&e) || is_namespace_terminating(&e) => {}
            // Including a conflict (created meanwhile): the retry looks again.
            Err(e) => return Err(e.into()),
        },
        Plan::Update(cm) => {
            api.replace(CONFIGMAP, &PostParams::default(), &cm).await?;
            tracing::info!(namespace = %name, "restored the root CA configmap");
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_with_data_and_description() {
        let Plan::Create(cm) = plan(None, "PEM") else { panic!() };
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIGMAP));
        assert_eq!(cm.data.as_ref().unwrap().get(KEY).map(String::as_str), Some("PEM"));
        assert_eq!(cm.annotations().get(DESCRIPTION_ANNOTATION).map(String::as_str), Some(DESCRIPTION));
        assert_eq!(plan(Some(&cm), "PEM"), Plan::Unchanged);
    }

    #[test]
    fn edits_are_undone() {
        let Plan::Create(cm) = plan(None, "PEM") else { panic!() };
        let mut edited = cm.clone();
        edited.data.as_mut().unwrap().insert(KEY.into(), "tampered".into());
        edited.data.as_mut().unwrap().insert("extra".into(), "x".into());
        edited.metadata.resource_version = Some("7".into());
        edited.annotations_mut().insert("mine".into(), "kept".into());
        let Plan::Update(fixed) = plan(Some(&edited), "PEM") else { panic!() };
        assert_eq!(fixed.data, cm.data);
        assert_eq!(fixed.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(fixed.annotations().get("mine").map(String::as_str), Some("kept"));

        let mut undescribed = cm.clone();
        undescribed.metadata.annotations = None;
        let Plan::Update(fixed) = plan(Some(&undescribed), "PEM") else { panic!() };
        assert_eq!(fixed.annotations().get(DESCRIPTION_ANNOTATION).map(String::as_str), Some(DESCRIPTION));
        // A new CA replaces the old one.
        assert!(matches!(plan(Some(&cm), "NEW"), Plan::Update(_)));
    }
}
