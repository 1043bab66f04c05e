//! `/metrics` in the Prometheus text format: the API server's request metrics under the
//! names Kubernetes dashboards already use (`apiserver_request_total`,
//! `apiserver_request_duration_seconds`, `apiserver_watch_events_total`), the store's
//! (`keelson_store_*`) and Raft health (`keelson_raft_*`: term, leader changes, commit and
//! applied index, apply lag, proposal failures, group-commit batch sizes, fsync durations).
//! Store and Raft gauges are read from the store when scraped.

use keelson_store::Store;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// Kubernetes' request-duration buckets (seconds).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0,
];
const REQUEST_LABELS: &[&str] = &["verb", "group", "version", "resource", "subresource", "scope", "component"];

/// One finished request, as the metrics label it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLabels {
    /// Kubernetes' upper-case verb: GET, LIST, WATCH, POST, PUT, PATCH, APPLY, DELETE,
    /// DELETECOLLECTION, CONNECT (non-resource requests: the HTTP method).
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// `resource` (one named object), `namespace`, `cluster`, or empty.
    pub scope: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    watch_events: IntCounterVec,
    watchers: IntGauge,
    db_size: IntGauge,
    revision: IntGauge,
    compact_revision: IntGauge,
    term: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    apply_lag: IntGauge,
    is_leader: IntGauge,
    has_leader: IntGauge,
    leader_changes: IntCounter,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new(store: &Store) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let mut labels = REQUEST_LABELS.to_vec();
        labels.push("code");
        let requests = IntCounterVec::new(
            Opts::new("apiserver_request_total", "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code."),
            &labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        let durations = HistogramVec::new(
            HistogramOpts::new("apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component (watches excluded).")
                .buckets(DURATION_BUCKETS.to_vec()),
            REQUEST_LABELS,
        )?;
        registry.register(Box::new(durations.clone()))?;
        let watch_events = IntCounterVec::new(
            Opts::new("apiserver_watch_events_total", "Number of events sent in watch clients"),
            &["group", "version", "kind"],
        )?;
        registry.register(Box::new(watch_events.clone()))?;
        let leader_changes = IntCounter::new(
            "keelson_raft_leader_changes_total",
            "Leader changes (new term with a leader) this master has seen since it started",
        )?;
        registry.register(Box::new(leader_changes.clone()))?;
        for c in store.metrics().collectors() {
            registry.register(c)?;
        }
        Ok(Metrics {
            watchers: gauge(
                &registry,
                "keelson_store_watchers",
                "Store watches open for API watch requests on this master",
            )?,
            db_size: gauge(&registry, "keelson_store_db_size_bytes", "Size of the state machine's RocksDB files")?,
            revision: gauge(&registry, "keelson_store_revision", "The store revision applied on this master")?,
            compact_revision: gauge(
                &registry,
                "keelson_store_compact_revision",
                "The revision the store is compacted to",
            )?,
            term: gauge(&registry, "keelson_raft_term", "The current Raft term")?,
            commit_index: gauge(&registry, "keelson_raft_commit_index", "The highest Raft log index known committed")?,
            applied_index: gauge(&registry, "keelson_raft_applied_index", "The highest Raft log index applied here")?,
            apply_lag: gauge(&registry, "keelson_raft_apply_lag", "Committed Raft entries not yet applied here")?,
            is_leader: gauge(&registry, "keelson_raft_is_leader", "1 when this master is the Raft leader")?,
            has_leader: gauge(&registry, "keelson_raft_has_leader", "1 when this master knows a Raft leader")?,
            registry,
            requests,
            durations,
            watch_events,
            leader_changes,
        })
    }

    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    /// A finished request: counted with its code; timed unless it is a watch.
    pub fn request(&self, l: &RequestLabels, code: u16, seconds: f64) {
        let base = [
            l.verb.as_str(),
            l.group.as_str(),
            l.version.as_str(),
            l.resource.as_str(),
            l.subresource.as_str(),
            l.scope,
            "apiserver",
        ];
        let code = code.to_string();
        let mut with_code = base.to_vec();
        with_code.push(&code);
        self.requests.with_label_values(&with_code).inc();
        if l.verb != "WATCH" {
            self.durations.with_label_values(&base).observe(seconds);
        }
    }

    pub fn watch_event(&self, group: &str, version: &str, kind: &str) {
        self.watch_events.with_label_values(&[group, version, kind]).inc();
    }

    /// A store watch opened for an API watch; closed when the guard drops.
    pub fn watcher(&self) -> WatcherGuard {
        self.watchers.inc();
        WatcherGuard(self.watchers.clone())
    }

    /// The text exposition, with the store and Raft gauges read now.
    pub async fn render(&self, store: &Store) -> Result<String, prometheus::Error> {
        let s = store.status().await;
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.db_size.set(i(s.db_size));
        self.revision.set(s.revision);
        self.compact_revision.set(s.compact_revision);
        self.term.set(i(s.term));
        self.commit_index.set(i(s.commit_index));
        self.applied_index.set(i(s.applied_index));
        self.apply_lag.set(i(s.commit_index.saturating_sub(s.applied_index)));
        self.is_leader.set(i64::from(s.leader == Some(s.member_id)));
        self.has_leader.set(i64::from(s.leader.is_some()));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Count leader changes from the store's leadership stream until `stop`.
    pub async fn follow_leadership(&self, store: Store, stop: CancellationToken) {
        // Like etcd's leader_changes_seen: the first leader seen counts too.
        let mut rx = store.leadership();
        let mut seen = keelson_store::Leadership::default();
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = rx.changed() => if r.is_err() { return },
                }
            }
            first = false;
            let now = *rx.borrow_and_update();
            if now.leader.is_some() && (now.term != seen.term || now.leader != seen.leader) {
                self.leader_changes.inc();
            }
            seen = now;
        }
    }
}

/// Keeps `keelson_store_watchers` counted while a watch runs.
pub(crate) struct WatcherGuard(IntGauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
