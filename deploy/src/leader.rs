//! On the Raft leader only: the controllers and the scheduler, against an in-process
//! `kube::Client` whose transport is this master's API router (no TCP, the same
//! authorization, admission and strategy as any client). They start when this master
//! becomes leader and are cancelled when it stops being leader (or its term changes);
//! every write they make is fenced to the term they started in, so a deposed leader's
//! late writes are refused by the store (DESIGN.md, data path step 4).

use std::time::Duration;

use keelson_api::authn::UserInfo;
use keelson_api::ApiServer;
use keelson_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the leader runs, and with which settings.
#[derive(Clone)]
pub struct LeaderOptions {
    pub controllers: keelson_controllers::ControllerConfig,
    pub scheduler: keelson_scheduler::SchedulerConfig,
}

/// How long a stepping-down leader waits for its loops to return before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// An in-process client acting as `user`, its writes fenced to `term`.
pub fn local_client(server: ApiServer, user: UserInfo, term: Option<u64>) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let server = server.clone();
        let user = user.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await?;
            let resp = server.handle_local(http::Request::from_parts(parts, bytes), user, term).await;
            Ok::<_, kube::Error>(resp)
        }
    });
    kube::Client::new(svc, "default")
}

/// The loops find the trace of an object's last write in this master's store (each
/// master remembers its recent traced writes by revision = `resourceVersion`).
fn write_traces(store: &Store) -> keelson_scheduler::trace::WriteTraces {
    let store = store.clone();
    keelson_scheduler::trace::WriteTraces::new(move |rv| {
        let w = store.write_trace(rv.parse().ok()?)?;
        Some((w.context.into_iter().collect(), w.trace_started.elapsed()))
    })
}

fn user(name: &str) -> UserInfo {
    // Until RBAC is evaluated (a later issue), the control plane's own identities are
    // cluster admins, like kubeadm's `system:masters` for its components' bootstrap.
    UserInfo {
        username: name.to_string(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// Follow this master's leadership until `stop`: run the controllers and the scheduler
/// for as long as it leads one term.
pub async fn run(store: Store, server: ApiServer, mut opts: LeaderOptions, stop: CancellationToken) {
    if keelson_store::trace::enabled() {
        let traces = write_traces(&store);
        opts.controllers.write_traces = traces.clone();
        opts.scheduler.write_traces = traces;
    }
    let mut lead = store.leadership();
    loop {
        let now = lead.borrow_and_update().clone();
        if now.is_leader {
            let term = now.term;
            let span = tracing::info_span!("leader", term, member = %store.name());
            let closed = lead_one_term(&mut lead, &server, &opts, term, &stop).instrument(span).await;
            // A closed leadership stream means the store stopped: nothing more to lead.
            if closed || stop.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = lead.changed() => if r.is_err() { return },
        }
    }
}

async fn lead_one_term(
    lead: &mut tokio::sync::watch::Receiver<keelson_store::types::Leadership>,
    server: &ApiServer,
    opts: &LeaderOptions,
    term: u64,
    stop: &CancellationToken,
) -> bool {
    let token = stop.child_token();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let ctx = keelson_controllers::Context {
        client: local_client(server.clone(), user("system:kube-controller-manager"), Some(term)),
        config: opts.controllers.clone(),
        stop: token.clone(),
    };
    tasks.spawn(keelson_controllers::run(ctx).in_current_span());
    let sched_client = local_client(server.clone(), user("system:kube-scheduler"), Some(term));
    let (sched_cfg, sched_stop) = (opts.scheduler.clone(), token.clone());
    tasks.spawn(run_scheduler(sched_client, sched_cfg, sched_stop).in_current_span());
    tracing::info!("leading: controllers and scheduler started");
    let mut closed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = lead.changed() => {
                if r.is_err() {
                    closed = true;
                    break;
                }
                let l = lead.borrow().clone();
                if !l.is_leader || l.term != term {
                    break;
                }
            }
        }
    }
    token.cancel();
    tracing::info!(led_for = ?started.elapsed(), "no longer leading: stopping controllers and scheduler");
    // Drain in the background: the next term's loops must not wait for these (a loop may
    // sit in a read that only times out), and nothing they still write can land — their
    // writes are fenced to this term.
    tokio::spawn(
        async move {
            let drained = tokio::time::timeout(STOP_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                tracing::info!("controllers still busy after {STOP_GRACE:?}; aborting them");
                tasks.shutdown().await;
            }
            tracing::info!("controllers and scheduler of this term stopped");
        }
        .in_current_span(),
    );
    closed
}

/// The scheduler until `stop`, restarted with backoff if it fails (it rebuilds all its
/// state from its watches, so a restart loses nothing).
pub async fn run_scheduler(client: kube::Client, cfg: keelson_scheduler::SchedulerConfig, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match keelson_scheduler::run(client.clone(), cfg.clone(), stop.clone()).await {
            Ok(()) if stop.is_cancelled() => return,
            Ok(()) => tracing::warn!("scheduler returned before stop; restarting"),
            Err(e) => tracing::warn!(error = %e, "scheduler failed; restarting"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
