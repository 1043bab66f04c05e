//! Endpoints whose Service is gone: the controller's own are deleted (upstream deletes a
//! Service's Endpoints on its deletion and sweeps leftovers at start).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::{
    api::{DeleteParams, Preconditions},
    runtime::{controller::Action, reflector::ObjectRef},
    Api, ResourceExt,
};

use super::{
    desired::{CONTROLLER_NAME, LABEL_MANAGED_BY},
    State,
};
use crate::{util_api::is_conflict, util_api::is_not_found, Error};

/// Leader-election records live in Endpoints without a Service; never touch them.
const LEADER_ELECTION_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Whether `ep` is this controller's and its Service no longer exists.
pub fn is_orphan(ep: &Endpoints, service_exists: bool) -> bool {
    !service_exists
        && ep.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
        && !ep.annotations().contains_key(LEADER_ELECTION_ANNOTATION)
}

pub async fn reconcile(ep: Arc<Endpoints>, st: Arc<State>) -> Result<Action, Error> {
    if st.services.wait_until_ready().await.is_err() {
        return Ok(Action::await_change()); // stopping
    }
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let exists = st.services.get(&ObjectRef::<Service>::new(&name).within(&ns)).is_some();
    if !is_orphan(&ep, exists) {
        return Ok(Action::await_change());
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: ep.uid(), resource_version: None }),
        ..Default::default()
    };
    match Api::<Endpoints>::namespaced(st.client.clone(), &ns).delete(&name, &dp).await {
        Ok(_) => tracing::debug!(endpoints = %name, namespace = %ns, "deleted endpoints of a deleted service"),
        // Gone already, or replaced by a new object of the same name (whose Service is new).
        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn ep(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("web".into()),
                labels: Some(crate::util_endpoints::tests::labels(labels)),
                annotations: Some(crate::util_endpoints::tests::labels(annotations)),
                ..Default::default()
            },
            subsets: None,
        }
    }

    #[test]
    fn only_the_controllers_own_endpoints_without_a_service_are_orphans() {
        let ours = ep(&[(LABEL_MANAGED_BY, CONTROLLER_NAME)], &[]);
        assert!(is_orphan(&ours, false));
        assert!(!is_orphan(&ours, true));
        assert!(!is_orphan(&ep(&[], &[]), false), "user-made endpoints stay");
        assert!(!is_orphan(&ep(&[(LABEL_MANAGED_BY, "someone-else")], &[]), false));
        let lease = ep(&[(LABEL_MANAGED_BY, CONTROLLER_NAME)], &[(LEADER_ELECTION_ANNOTATION, "{}")]);
        assert!(!is_orphan(&lease, false));
    }
}
