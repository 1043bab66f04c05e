//! The serviceaccount controller: every namespace that is not being deleted has the
//! ServiceAccount `default` (created if missing, recreated if deleted).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    api::{ObjectMeta, PostParams},
    runtime::{controller::Action, reflector::ObjectRef, watcher, Controller},
    Api, ResourceExt,
};

use crate::{
    util_api::{is_conflict, is_namespace_terminating, is_not_found},
    util_runtime::{drive, retry_policy},
    Context, Error,
};

/// The ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

struct State {
    client: kube::Client,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let state = Arc::new(State { client: ctx.client.clone() });
    let results = Controller::new(Api::<Namespace>::all(ctx.client.clone()), watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(ctx.client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
            |sa| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .with_config(kube::runtime::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("serviceaccount", &ctx.config.write_traces, reconcile), retry_policy, state);
    drive(results, &ctx.stop).await;
    Ok(())
}

/// A namespace that may get new content: not being deleted.
pub fn is_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// The ServiceAccount to create in a namespace that lacks one.
pub fn default_service_account() -> ServiceAccount {
    ServiceAccount { metadata: ObjectMeta { name: Some(DEFAULT.into()), ..Default::default() }, ..Default::default() }
}

async fn reconcile(ns: Arc<Namespace>, st: Arc<State>) -> Result<Action, Error> {
    if !is_active(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(st.client.clone(), &name);
    if api.get_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    match api.create(&PostParams::default(), &default_service_account()).await {
        Ok(_) => tracing::info!(namespace = %name, "created the default service account"),
        // Created meanwhile, or the namespace is going away.
        Err(e) if is_conflict(&e) || is_not_found(&e) || is_namespace_terminating(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn terminating_namespaces_are_not_active() {
        let mut ns = Namespace::default();
        assert!(is_active(&ns));
        ns.status = Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() });
        assert!(is_active(&ns));
        ns.status = Some(NamespaceStatus { phase: Some("Terminating".into()), ..Default::default() });
        assert!(!is_active(&ns));
        let mut deleting = Namespace::default();
        deleting.metadata.deletion_timestamp = Some(crate::util_api::now());
        assert!(!is_active(&deleting));
    }

    #[test]
    fn the_default_account_is_just_a_name() {
        let sa = default_service_account();
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        assert!(sa.metadata.namespace.is_none() && sa.secrets.is_none());
    }
}
