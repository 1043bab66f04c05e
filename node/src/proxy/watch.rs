//! Feeding the [`Proxier`] from the API server: reflectors over Services and
//! EndpointSlices; once both are listed, a sync after every burst of changes (gathered for
//! [`SETTLE`]; skipped when the table would not change) and a full rewrite every
//! `resync` (repairing a table someone else changed). A failed sync is retried with
//! backoff.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::reflect::reflect;

use super::{Proxier, ProxyError};

/// How long a burst of changes is gathered before one sync.
pub const SETTLE: Duration = Duration::from_millis(200);
/// First retry after a failed sync; doubled up to the resync period.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(client: kube::Client, mut proxier: Proxier, stop: CancellationToken) -> Result<(), ProxyError> {
    let resync = proxier.config().resync.max(Duration::from_secs(1));
    let changed = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let services = reflect::<Service>(&mut tasks, Api::all(client.clone()), &changed, slim_service, "proxy");
    let slices = reflect::<EndpointSlice>(&mut tasks, Api::all(client), &changed, slim_slice, "proxy");

    let synced = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.cancelled() => return Ok(()),
    }
    info!(table = %proxier.config().table, "proxy: Services and EndpointSlices listed; programming");

    let mut first = true;
    let mut retry = RETRY;
    let mut failed = false;
    let mut next_resync = Instant::now();
    let result = loop {
        let (s, e) = (services.state(), slices.state());
        let (svcs, eps) = (s.iter().map(|x| x.as_ref()), e.iter().map(|x| x.as_ref()));
        let full = failed || Instant::now() >= next_resync;
        let outcome =
            if full { proxier.sync(svcs, eps).await.map(|()| true) } else { proxier.sync_if_changed(svcs, eps).await };
        match outcome {
            Ok(wrote) => {
                if first {
                    info!(services = s.len(), slices = e.len(), "proxy: table programmed");
                }
                if wrote {
                    next_resync = Instant::now() + resync;
                }
                failed = false;
                retry = RETRY;
            }
            Err(e @ ProxyError::Exec(_)) if first => break Err(e),
            Err(e) => {
                warn!(error = %e, retry_in = ?retry, "proxy: sync failed");
                failed = true;
            }
        }
        first = false;
        let wake = if failed { Instant::now() + retry } else { next_resync };
        if failed {
            retry = (retry * 2).min(resync);
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop.cancelled() => break Ok(()),
        }
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => {}
            _ = stop.cancelled() => break Ok(()),
        }
    };
    tasks.abort_all();
    result
}

/// The proxy reads no annotations.
fn slim_slice(slice: &mut EndpointSlice) {
    slice.metadata.annotations = None;
}

/// The proxy reads neither annotations, selectors nor status.
fn slim_service(svc: &mut Service) {
    svc.metadata.annotations = None;
    svc.status = None;
    if let Some(spec) = svc.spec.as_mut() {
        spec.selector = None;
    }
}
