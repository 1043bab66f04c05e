//! The namespace controller: a namespace being deleted is emptied, its deletion conditions
//! kept up to date, and once nothing is left the `kubernetes` finalizer is removed from
//! `spec.finalizers` (`PUT …/finalize`), after which the API server deletes it.

pub mod conditions;
pub mod content;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus};
use kube::{
    api::PostParams,
    runtime::{controller::Action, watcher, Controller},
    Api, ResourceExt,
};

use crate::{
    util_api::{is_conflict, is_not_found, jittered},
    util_runtime::{drive, retry_policy},
    Context, Error,
};

/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

struct State {
    client: kube::Client,
}

pub async fn run(ctx: Context) -> Result<(), Error> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    let state = Arc::new(State { client: ctx.client.clone() });
    let results = Controller::new(api, watcher::Config::default())
        .with_config(kube::runtime::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned())
        .run(crate::observe::observed("namespace", &ctx.config.write_traces, reconcile), retry_policy, state);
    drive(results, &ctx.stop).await;
    Ok(())
}

/// `spec.finalizers` without ours (sorted and deduplicated, like upstream).
pub fn without_our_finalizer(finalizers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// How long to wait for content that is still going away (`estimate/2 + 1` seconds).
pub fn requeue_for(estimate_secs: i64) -> Duration {
    Duration::from_secs((estimate_secs.max(0) / 2 + 1) as u64)
}

async fn reconcile(ns: Arc<Namespace>, st: Arc<State>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api = Api::<Namespace>::all(st.client.clone());
    // Several writers touch a terminating namespace: work from its latest state.
    let Some(mut ns) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else { return Ok(Action::await_change()) };

    if ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating") {
        ns.status.get_or_insert_with(NamespaceStatus::default).phase = Some("Terminating".into());
        ns = match api.replace_status(&name, &PostParams::default(), &ns).await {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
    }
    let spec_finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if spec_finalizers.is_empty() {
        return Ok(Action::await_change()); // finalized: the API server takes it from here
    }

    let (resources, discovery_failures) = content::discover(&st.client).await;
    let (mut outcome, estimate) = content::delete_all(&st.client, &name, deleted_at.0, &resources).await;
    outcome.discovery_failures = discovery_failures;
    let mut status = ns.status.clone().unwrap_or_default();
    let mut conds = status.conditions.clone().unwrap_or_default();
    if conditions::update(&mut conds, &outcome, &crate::util_api::now()) {
        status.conditions = Some(conds);
        ns.status = Some(status);
        match api.replace_status(&name, &PostParams::default(), &ns).await {
            Ok(n) => ns = n,
            Err(e) => {
                tracing::info!(namespace = %name, error = %e, "could not update the namespace's deletion conditions")
            }
        }
    }
    let failed = !outcome.discovery_failures.is_empty() || !outcome.delete_errors.is_empty();
    if failed {
        tracing::warn!(
            namespace = %name,
            discovery = ?outcome.discovery_failures,
            errors = ?outcome.delete_errors,
            "namespace content not fully deleted; retrying"
        );
        return Ok(Action::requeue(jittered(Duration::from_secs(5))));
    }
    if estimate > 0 || !outcome.remaining.is_empty() {
        tracing::debug!(namespace = %name, estimate, remaining = ?outcome.remaining, "namespace content still going away");
        return Ok(Action::requeue(requeue_for(estimate)));
    }

    finalize(&api, ns).await?;
    tracing::info!(namespace = %name, "namespace emptied; finalizer removed");
    Ok(Action::await_change())
}

/// Remove our finalizer through `namespaces/{name}/finalize`, retrying on conflicts.
async fn finalize(api: &Api<Namespace>, mut ns: Namespace) -> Result<(), Error> {
    let name = ns.name_any();
    for _ in 0..5 {
        let current = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if !current.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        ns.spec.get_or_insert_with(Default::default).finalizers = Some(without_our_finalizer(&current));
        match api.replace_subresource("finalize", &name, &PostParams::default(), &ns).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if is_conflict(&e) => match api.get_opt(&name).await? {
                Some(latest) if latest.uid() == ns.uid() => ns = latest,
                _ => return Ok(()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid { what: format!("namespace {name}"), reason: "finalize kept conflicting".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_finalizer_is_removed_and_others_kept() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(without_our_finalizer(&f(&["kubernetes"])), Vec::<String>::new());
        assert_eq!(without_our_finalizer(&f(&["z.io/x", "kubernetes", "a.io/y", "a.io/y"])), f(&["a.io/y", "z.io/x"]));
    }

    #[test]
    fn requeue_is_half_the_estimate_plus_one() {
        assert_eq!(requeue_for(30), Duration::from_secs(16));
        assert_eq!(requeue_for(0), Duration::from_secs(1));
        assert_eq!(requeue_for(-5), Duration::from_secs(1));
    }
}
