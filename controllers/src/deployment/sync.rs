//! One Deployment sync (upstream `syncDeployment`, `rolloutRolling`, `rolloutRecreate`,
//! `sync`/`scale`, `cleanupDeployment`, `syncRolloutStatus`): reads the ReplicaSet cache,
//! decides with [`super::rolling`] and [`super::status`], writes ReplicaSets and status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::SelectorExt;
use kube::runtime::controller::Action;
use serde_json::json;

use super::rolling::{self, Rs};
use super::status::{self, Inputs, RsCounts};
use super::{hash, selector, State, DESIRED_REPLICAS, MAX_REPLICAS, REVISION, REVISION_HISTORY};
use crate::{pods, Error};

pub(super) struct Sync<'a> {
    st: &'a State,
    d: &'a Deployment,
    ns: String,
    name: String,
    uid: String,
    replicas: i32,
    api: Api<ReplicaSet>,
    /// A `Progressing` event of this sync (status, reason, message).
    event: Option<(&'static str, &'static str, String)>,
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> i64 {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0)
}

fn counts(rs: &ReplicaSet) -> RsCounts {
    let s = rs.status.clone().unwrap_or_default();
    RsCounts {
        replicas: s.replicas,
        ready: s.ready_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
    }
}

fn as_rs(rs: &ReplicaSet) -> Rs {
    Rs {
        name: rs.metadata.name.clone().unwrap_or_default(),
        replicas: rs_replicas(rs),
        available: rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
        created: created(rs),
    }
}

impl<'a> Sync<'a> {
    pub fn new(st: &'a State, d: &'a Deployment) -> Result<Sync<'a>, Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        Ok(Sync {
            st,
            d,
            api: Api::namespaced(st.ctx.client.clone(), &ns),
            ns,
            name: d.metadata.name.clone().unwrap_or_default(),
            uid: d.metadata.uid.clone().unwrap_or_default(),
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            event: None,
        })
    }

    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(self.name.clone()),
            namespace: Some(self.ns.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        }
    }

    fn rolling(&self) -> bool {
        self.d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) != Some("Recreate")
    }

    fn fenceposts(&self) -> (i32, i32) {
        if !self.rolling() {
            return (0, 0);
        }
        let ru = self.d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
        rolling::fenceposts(
            ru.and_then(|r| r.max_surge.as_ref()),
            ru.and_then(|r| r.max_unavailable.as_ref()),
            self.replicas,
        )
    }

    pub async fn run(mut self) -> Result<Action, Error> {
        let Some(sel) = selector(self.d) else {
            self.st.events.warning(
                self.reference(),
                "SelectingAll",
                "Sync",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Action::await_change());
        };
        let owned = self.claim(&sel).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            return self.sync_status(&owned, None).await;
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut news: Vec<&Arc<ReplicaSet>> = owned
            .iter()
            .filter(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| hash::equal_ignore_hash(t, &template))
            })
            .collect();
        news.sort_by_key(|rs| (created(rs), rs.metadata.name.clone()));
        let new = news.first().map(|r| (*r).clone());
        let old: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|r| Some(r.metadata.uid.clone()) != new.as_ref().map(|n| n.metadata.uid.clone()))
            .cloned()
            .collect();

        let scaling = owned.iter().filter(|r| rs_replicas(r) > 0).any(|r| {
            r.metadata.annotations.as_ref().and_then(|a| a.get(DESIRED_REPLICAS)).and_then(|v| v.parse::<i32>().ok())
                != Some(self.replicas)
        });
        if paused || (scaling && new.is_some()) {
            let new = match new {
                Some(n) => Some(self.sync_revision(n, &old).await?),
                None => None,
            };
            self.scale(new.as_ref(), &old).await?;
            if paused {
                self.cleanup(new.as_ref(), &old).await?;
            }
            let all = self.current(&sel)?;
            return self.sync_status(&all, new.as_ref().and_then(|n| n.metadata.name.clone())).await;
        }
        if self.rolling() {
            self.rollout_rolling(new, &old, &sel).await
        } else {
            self.rollout_recreate(new, &old, &sel).await
        }
    }

    /// The ReplicaSets of this Deployment from the cache (after this sync's writes the
    /// cache may lag; status is recomputed on the next event).
    fn current(&self, sel: &kube::core::Selector) -> Result<Vec<Arc<ReplicaSet>>, Error> {
        Ok(self
            .st
            .rss
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(self.ns.as_str()))
            .filter(|r| {
                pods::controller_of(&r.metadata).is_some_and(|c| c.uid == self.uid)
                    && sel.matches(&pods::labels(&r.metadata))
            })
            .collect())
    }

    /// Own, adopt and release ReplicaSets (upstream `getReplicaSetsForDeployment`).
    async fn claim(&self, sel: &kube::core::Selector) -> Result<Vec<Arc<ReplicaSet>>, Error> {
        let mut owned = vec![];
        let mut adopt = vec![];
        for rs in self.st.rss.state() {
            if rs.metadata.namespace.as_deref() != Some(self.ns.as_str()) {
                continue;
            }
            let selected = sel.matches(&pods::labels(&rs.metadata));
            match pods::controller_of(&rs.metadata) {
                Some(c) if c.uid == self.uid => {
                    if selected || self.d.metadata.deletion_timestamp.is_some() {
                        owned.push(rs.clone());
                    } else {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r.uid != self.uid)
                            .collect();
                        let patch = json!({"metadata": {"resourceVersion": rs.metadata.resource_version, "ownerReferences": refs}});
                        let name = rs.metadata.name.clone().unwrap_or_default();
                        if let Err(e) = self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                            tracing::debug!(rs = %name, error = %e, "release failed");
                        }
                    }
                }
                Some(_) => {}
                None if selected
                    && rs.metadata.deletion_timestamp.is_none()
                    && self.d.metadata.deletion_timestamp.is_none() =>
                {
                    adopt.push(rs.clone())
                }
                None => {}
            }
        }
        if !adopt.is_empty() {
            // Adopt only for a Deployment that still exists as this object (read fresh).
            let dapi: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
            let fresh = dapi.get_opt(&self.name).await?;
            if fresh.is_some_and(|f| {
                f.metadata.uid.as_deref() == Some(self.uid.as_str()) && f.metadata.deletion_timestamp.is_none()
            }) {
                for rs in adopt {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(pods::controller_ref("apps/v1", "Deployment", &self.name, &self.uid));
                    let patch =
                        json!({"metadata": {"resourceVersion": rs.metadata.resource_version, "ownerReferences": refs}});
                    let name = rs.metadata.name.clone().unwrap_or_default();
                    match self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        Ok(r) => owned.push(Arc::new(r)),
                        Err(e) => tracing::debug!(rs = %name, error = %e, "adoption failed"),
                    }
                }
            }
        }
        Ok(owned)
    }

    fn max_old_revision(old: &[Arc<ReplicaSet>]) -> i64 {
        old.iter().map(|r| revision_of(r)).max().unwrap_or(0)
    }

    /// Give the new ReplicaSet the next revision (keeping the one it had in
    /// `revision-history`, as after `rollout undo`) and the Deployment the same.
    async fn sync_revision(&mut self, new: Arc<ReplicaSet>, old: &[Arc<ReplicaSet>]) -> Result<Arc<ReplicaSet>, Error> {
        let next = Self::max_old_revision(old) + 1;
        let have = revision_of(&new);
        let mut new = new;
        let (surge, _) = self.fenceposts();
        let ann = new.metadata.annotations.clone().unwrap_or_default();
        let desired = self.replicas.to_string();
        let max = (self.replicas + surge).to_string();
        let mut patch_ann = serde_json::Map::new();
        if have < next {
            patch_ann.insert(REVISION.into(), json!(next.to_string()));
            if have > 0 {
                let mut hist: Vec<String> =
                    ann.get(REVISION_HISTORY).map(|h| h.split(',').map(str::to_string).collect()).unwrap_or_default();
                hist.push(have.to_string());
                patch_ann.insert(REVISION_HISTORY.into(), json!(hist.join(",")));
            }
        }
        if ann.get(DESIRED_REPLICAS) != Some(&desired) && rs_replicas(&new) > 0 {
            patch_ann.insert(DESIRED_REPLICAS.into(), json!(desired));
            patch_ann.insert(MAX_REPLICAS.into(), json!(max));
        }
        if !patch_ann.is_empty() {
            let name = new.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": patch_ann}});
            new = Arc::new(self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?);
        }
        self.set_deployment_revision(revision_of(&new)).await?;
        let name = new.metadata.name.clone().unwrap_or_default();
        self.event = Some(("True", "FoundNewReplicaSet", format!("Found new replica set \"{name}\"")));
        Ok(new)
    }

    async fn set_deployment_revision(&self, rev: i64) -> Result<(), Error> {
        let have = self.d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        if have.as_deref() != Some(rev.to_string().as_str()) && rev > 0 {
            let dapi: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            dapi.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(())
    }

    /// Create the ReplicaSet of the current template (`getNewReplicaSet`), `replicas` big.
    async fn create_new(&mut self, old: &[Arc<ReplicaSet>], replicas: i32) -> Result<Arc<ReplicaSet>, Error> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let h = hash::compute(&spec.template, collisions);
        let mut template = spec.template.clone();
        let tmeta = template.metadata.get_or_insert_with(ObjectMeta::default);
        tmeta.labels.get_or_insert_with(BTreeMap::new).insert(hash::LABEL.into(), h.clone());
        let mut sel: LabelSelector = spec.selector.clone();
        sel.match_labels.get_or_insert_with(BTreeMap::new).insert(hash::LABEL.into(), h.clone());
        let mut labels = tmeta.labels.clone().unwrap_or_default();
        labels.insert(hash::LABEL.into(), h.clone());
        let (surge, _) = self.fenceposts();
        let revision = Self::max_old_revision(old) + 1;
        let mut annotations = self.d.metadata.annotations.clone().unwrap_or_default();
        // Upstream copies the Deployment's annotations except its own bookkeeping.
        annotations.retain(|k, _| k != "kubectl.kubernetes.io/last-applied-configuration" && k != REVISION_HISTORY);
        annotations.insert(REVISION.into(), revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), self.replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (self.replicas + surge).to_string());
        let mut name = format!("{}-{h}", self.name);
        if name.len() > 253 {
            name.truncate(253);
        }
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![pods::controller_ref("apps/v1", "Deployment", &self.name, &self.uid)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector: sel,
                template: Some(template.clone()),
            }),
            status: None,
        };
        match self.api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.st.events.normal(
                    self.reference(),
                    "ScalingReplicaSet",
                    "Scale",
                    format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
                self.set_deployment_revision(revision).await?;
                self.event = Some(("True", "NewReplicaSetCreated", format!("Created new replica set \"{name}\"")));
                Ok(Arc::new(created))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours with this template already (the cache lagged): use it. Otherwise a
                // hash collision: count it, so the next sync picks another name.
                if let Some(existing) = self.api.get_opt(&name).await? {
                    let ours = pods::controller_of(&existing.metadata).is_some_and(|c| c.uid == self.uid);
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| hash::equal_ignore_hash(t, &template));
                    if ours && same {
                        return Ok(Arc::new(existing));
                    }
                }
                let dapi: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
                let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
                dapi.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                Err(Error::Invalid {
                    what: format!("replicaset {name}"),
                    reason: "hash collision; retrying with a new name".into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Set a ReplicaSet's size (and the desired/max annotations).
    async fn scale_rs(&self, rs: &ReplicaSet, to: i32) -> Result<(), Error> {
        let from = rs_replicas(rs);
        let name = rs.metadata.name.clone().unwrap_or_default();
        let (surge, _) = self.fenceposts();
        let ann = rs.metadata.annotations.clone().unwrap_or_default();
        let desired = self.replicas.to_string();
        if from == to && ann.get(DESIRED_REPLICAS) == Some(&desired) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: (self.replicas + surge).to_string()}},
            "spec": {"replicas": to},
        });
        self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.st.events.normal(
                self.reference(),
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled {dir} replica set {name} from {from} to {to}"),
            );
        }
        Ok(())
    }

    async fn rollout_rolling(
        mut self,
        new: Option<Arc<ReplicaSet>>,
        old: &[Arc<ReplicaSet>],
        sel: &kube::core::Selector,
    ) -> Result<Action, Error> {
        let (surge, unavailable) = self.fenceposts();
        let new = match new {
            Some(n) => self.sync_revision(n, old).await?,
            None => {
                let all: Vec<Rs> = old.iter().map(|r| as_rs(r)).collect();
                let empty = Rs { name: String::new(), replicas: 0, available: 0, created: i64::MAX };
                let start = rolling::new_rs_replicas(self.replicas, surge, &all, &empty);
                self.create_new(old, start).await?
            }
        };
        let new_rs = as_rs(&new);
        let all: Vec<Rs> = old.iter().map(|r| as_rs(r)).chain(std::iter::once(new_rs.clone())).collect();
        // Scale the new ReplicaSet up (or down to the desired size).
        let target = if new_rs.replicas > self.replicas {
            self.replicas
        } else {
            rolling::new_rs_replicas(self.replicas, surge, &all, &new_rs)
        };
        if target != new_rs.replicas {
            self.scale_rs(&new, target).await?;
            return self.sync_status_after(sel, &new).await;
        }
        // Scale old ReplicaSets down within the availability budget.
        let old_rs: Vec<Rs> = old.iter().map(|r| as_rs(r)).collect();
        let downs = rolling::scale_down_old(self.replicas, unavailable, Some(&new_rs), &old_rs);
        for (name, to) in &downs {
            if let Some(rs) = old.iter().find(|r| r.metadata.name.as_deref() == Some(name.as_str())) {
                self.scale_rs(rs, *to).await?;
            }
        }
        if !downs.is_empty() {
            return self.sync_status_after(sel, &new).await;
        }
        self.cleanup(Some(&new), old).await?;
        self.sync_status_after(sel, &new).await
    }

    async fn rollout_recreate(
        mut self,
        new: Option<Arc<ReplicaSet>>,
        old: &[Arc<ReplicaSet>],
        sel: &kube::core::Selector,
    ) -> Result<Action, Error> {
        // 1. every old ReplicaSet to zero.
        let mut scaled = false;
        for rs in old.iter().filter(|r| rs_replicas(r) > 0) {
            self.scale_rs(rs, 0).await?;
            scaled = true;
        }
        let new_name = new.as_ref().and_then(|n| n.metadata.name.clone());
        if scaled {
            let all = self.current(sel)?;
            return self.sync_status(&all, new_name).await;
        }
        // 2. wait until no old pod runs: none counted by its ReplicaSet, and none in the
        //    pod cache that is not finished (terminating pods still run).
        if !self.old_pods_gone(old).await {
            let all = self.current(sel)?;
            self.sync_status(&all, new_name).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        // 3. the new ReplicaSet, at full size.
        let new = match new {
            Some(n) => self.sync_revision(n, old).await?,
            None => self.create_new(old, self.replicas).await?,
        };
        if rs_replicas(&new) != self.replicas {
            self.scale_rs(&new, self.replicas).await?;
        }
        self.cleanup(Some(&new), old).await?;
        self.sync_status_after(sel, &new).await
    }

    /// Upstream `oldPodsRunning`, negated: no pod of an old ReplicaSet is still running.
    async fn old_pods_gone(&self, old: &[Arc<ReplicaSet>]) -> bool {
        if old.iter().any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0)) {
            return false;
        }
        let store = &self.st.pods.store;
        if !matches!(tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready()).await, Ok(Ok(()))) {
            return false;
        }
        let uids: std::collections::HashSet<&str> = old.iter().filter_map(|r| r.metadata.uid.as_deref()).collect();
        !store.state().iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
            p.metadata.namespace.as_deref() == Some(self.ns.as_str())
                && pods::controller_of(&p.metadata).is_some_and(|c| uids.contains(c.uid.as_str()))
                && phase != "Succeeded"
                && phase != "Failed"
        })
    }

    /// Resize active ReplicaSets to a changed `spec.replicas` (upstream `scale`).
    async fn scale(&self, new: Option<&Arc<ReplicaSet>>, old: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        let mut active: Vec<&Arc<ReplicaSet>> = old.iter().chain(new).filter(|r| rs_replicas(r) > 0).collect();
        if active.len() <= 1 {
            // One active (or none: the newest) takes the whole size.
            let target = match active.pop() {
                Some(r) => Some(r.clone()),
                None => {
                    new.cloned().or_else(|| old.iter().max_by_key(|r| (created(r), r.metadata.name.clone())).cloned())
                }
            };
            if let Some(rs) = target {
                self.scale_rs(&rs, self.replicas).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet saturated: the old ones go.
        if let Some(n) = new {
            if rs_replicas(n) == self.replicas
                && n.status.as_ref().and_then(|s| s.available_replicas) == Some(self.replicas)
            {
                for rs in old.iter().filter(|r| rs_replicas(r) > 0) {
                    self.scale_rs(rs, 0).await?;
                }
                return Ok(());
            }
        }
        if self.rolling() {
            let (surge, _) = self.fenceposts();
            let allowed = if self.replicas > 0 { self.replicas + surge } else { 0 };
            let rs: Vec<Rs> = active.iter().map(|r| as_rs(r)).collect();
            for (name, to) in rolling::proportional(&rs, allowed) {
                if let Some(r) = active.iter().find(|r| r.metadata.name.as_deref() == Some(name.as_str())) {
                    self.scale_rs(r, to).await?;
                }
            }
        }
        Ok(())
    }

    /// Delete old, empty ReplicaSets beyond `revisionHistoryLimit` (oldest revision first).
    async fn cleanup(&self, new: Option<&Arc<ReplicaSet>>, old: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        let limit = self.d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        let mut empty: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|r| Some(&r.metadata.uid) != new.map(|n| &n.metadata.uid))
            .filter(|r| {
                rs_replicas(r) == 0
                    && r.status.as_ref().is_none_or(|s| s.replicas == 0)
                    && r.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|r| (revision_of(r), created(r)));
        let n = empty.len() - limit;
        for rs in empty.into_iter().take(n) {
            let name = rs.metadata.name.clone().unwrap_or_default();
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_status_after(&self, sel: &kube::core::Selector, new: &Arc<ReplicaSet>) -> Result<Action, Error> {
        let mut all = self.current(sel)?;
        // The cache may not show a ReplicaSet this sync created yet.
        if !all.iter().any(|r| r.metadata.uid == new.metadata.uid) {
            all.push(new.clone());
        }
        self.sync_status(&all, new.metadata.name.clone()).await
    }

    /// Write the status computed from `all` (upstream `syncRolloutStatus`).
    async fn sync_status(&self, all: &[Arc<ReplicaSet>], new_name: Option<String>) -> Result<Action, Error> {
        let (_, unavailable) = self.fenceposts();
        let new = new_name.as_ref().and_then(|n| all.iter().find(|r| r.metadata.name.as_ref() == Some(n)));
        let replica_failure = new.and_then(|n| {
            n.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .map(|c| (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
        });
        let spec = self.d.spec.clone().unwrap_or_default();
        let inputs = Inputs {
            replicas: self.replicas,
            generation: self.d.metadata.generation,
            max_unavailable: unavailable,
            paused: spec.paused.unwrap_or(false),
            progress_deadline_seconds: Some(spec.progress_deadline_seconds.unwrap_or(600)),
            new_rs: new.map(|n| (n.metadata.name.as_deref().unwrap_or(""), counts(n))),
            all: all.iter().map(|r| counts(r)).collect(),
            previous: self.d.status.as_ref(),
            event: self.event.clone(),
            replica_failure,
            now: Timestamp::now(),
        };
        let (next, recheck) = status::calculate(&inputs);
        let unchanged = self.d.status.as_ref().is_some_and(|s| status::same(s, &next));
        if !unchanged {
            let dapi: Api<Deployment> = Api::namespaced(self.st.ctx.client.clone(), &self.ns);
            let patch = json!({"status": next});
            dapi.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(match recheck {
            Some(s) => Action::requeue(Duration::from_secs(s.clamp(1, 600) as u64)),
            None => Action::await_change(),
        })
    }
}
