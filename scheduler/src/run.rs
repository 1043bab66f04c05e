//! [`run`]: start the watches and the scheduling loop; stop both when told.

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::StorageClass,
};
use kube::Api;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    engine::{Receivers, Scheduler},
    informer::{self, CHANNEL_CAPACITY},
    node_info::NodeData,
    pod_info::PodInfo,
    volumes::{ClaimData, ClassData, VolumeData},
    Error, SchedulerConfig,
};

/// Schedule pending pods of `cfg.scheduler_name` until `stop` fires (then `Ok(())`,
/// promptly). An `Err` means the configuration is invalid or a watch ended; the caller may
/// simply run it again (all state is rebuilt from the watches).
pub async fn run(client: kube::Client, cfg: SchedulerConfig, stop: CancellationToken) -> Result<(), Error> {
    cfg.validate()?;
    let span = tracing::info_span!("scheduler", scheduler = %cfg.scheduler_name);
    async move {
        tracing::info!(
            bind_concurrency = cfg.bind_concurrency,
            percentage_of_nodes_to_score = ?cfg.percentage_of_nodes_to_score,
            "scheduler starting"
        );
        let mut watches = JoinSet::new();
        let (nodes_tx, nodes) = mpsc::channel(CHANNEL_CAPACITY);
        let (pods_tx, pods) = mpsc::channel(CHANNEL_CAPACITY);
        let (ns_tx, namespaces) = mpsc::channel(CHANNEL_CAPACITY);
        informer::spawn(
            &mut watches,
            Api::<Node>::all(client.clone()),
            "nodes",
            NodeData::from_node,
            nodes_tx,
            stop.clone(),
        );
        informer::spawn(&mut watches, Api::<Pod>::all(client.clone()), "pods", pod_info, pods_tx, stop.clone());
        informer::spawn(
            &mut watches,
            Api::<Namespace>::all(client.clone()),
            "namespaces",
            namespace_labels,
            ns_tx,
            stop.clone(),
        );
        let (claims_tx, claims) = mpsc::channel(CHANNEL_CAPACITY);
        let (volumes_tx, volumes) = mpsc::channel(CHANNEL_CAPACITY);
        let (classes_tx, classes) = mpsc::channel(CHANNEL_CAPACITY);
        informer::spawn(
            &mut watches,
            Api::<PersistentVolumeClaim>::all(client.clone()),
            "persistentvolumeclaims",
            ClaimData::from_claim,
            claims_tx,
            stop.clone(),
        );
        informer::spawn(
            &mut watches,
            Api::<PersistentVolume>::all(client.clone()),
            "persistentvolumes",
            VolumeData::from_volume,
            volumes_tx,
            stop.clone(),
        );
        informer::spawn(
            &mut watches,
            Api::<StorageClass>::all(client.clone()),
            "storageclasses",
            ClassData::from_class,
            classes_tx,
            stop.clone(),
        );
        let rx = Receivers { nodes, pods, namespaces, claims, volumes, classes };
        let result = Scheduler::new(client, cfg).run(rx, &stop).await;
        watches.shutdown().await;
        match &result {
            Ok(()) => tracing::info!("scheduler stopped"),
            Err(e) => tracing::warn!(error = %e, "scheduler failed"),
        }
        result
    }
    .instrument(span)
    .await
}

fn pod_info(p: &Pod) -> Arc<PodInfo> {
    Arc::new(PodInfo::from_pod(p))
}

fn namespace_labels(ns: &Namespace) -> (String, std::collections::BTreeMap<String, String>) {
    (ns.metadata.name.clone().unwrap_or_default(), ns.metadata.labels.clone().unwrap_or_default())
}
