//! Container lifecycle hooks (upstream's handlerRunner): a handler — exec in the
//! container, an HTTP(S) GET against the pod, or a sleep. `postStart` runs right after
//! the container starts (the pod's next container waits for it; a failure kills the
//! container); `preStop` runs before the container is sent SIGTERM, within the pod's
//! grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::probe;
use crate::kubelet::runtime::Runtime;

/// Run `h` for container `c` (runtime id `id`) of a pod at `pod_ip`, for at most `limit`.
pub async fn run(
    h: &LifecycleHandler,
    c: &Container,
    pod_ip: &str,
    runtime: &Runtime,
    id: &str,
    limit: Duration,
) -> Result<(), String> {
    let attempt = async {
        if let Some(e) = &h.exec {
            return probe::exec_action(runtime, id, e, limit).await;
        }
        if let Some(g) = &h.http_get {
            return probe::http_get_action(g, c, pod_ip).await;
        }
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0))).await;
            return Ok(());
        }
        // The API accepts tcpSocket here for compatibility only; upstream's handler runner
        // fails it at run time (and the stop goes on), as it does a handler with nothing set.
        if h.tcp_socket.is_some() {
            return Err("tcpSocket is not supported as a lifecycle handler".into());
        }
        Err("the handler has no action (exec, httpGet or sleep)".into())
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("did not finish within {}s", limit.as_secs())),
    }
}

/// Run `hook` (a postStart hook) until it ends, the pod (as `updates` last said) is being
/// deleted or gone, or the agent stops; without `updates`, until it ends.
pub async fn unless_deleted(
    hook: impl Future<Output = Result<(), String>>,
    updates: Option<(watch::Receiver<Option<Arc<Pod>>>, CancellationToken)>,
) -> Result<(), String> {
    let Some((mut rx, stop)) = updates else { return hook.await };
    let deleted = async move {
        loop {
            let gone = rx.borrow_and_update().as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if gone || rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        r = hook => r,
        () = deleted => Err("the pod is being deleted".into()),
        () = stop.cancelled() => Err("the agent is stopping".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> Runtime {
        Runtime { binary: "/nonexistent/runc".into(), root: "/nonexistent".into(), shim_exe: "/nonexistent".into() }
    }

    #[tokio::test]
    async fn http_and_sleep_hooks_run_within_their_limit() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let n = s.read(&mut b).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&b[..n]).into_owned());
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        });
        let c: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let h: LifecycleHandler =
            serde_json::from_value(json!({"httpGet": {"path": "/drain", "port": port, "host": "127.0.0.1"}})).unwrap();
        assert_eq!(run(&h, &c, "10.0.0.9", &runtime(), "id", Duration::from_secs(5)).await, Ok(()));
        assert!(rx.recv().await.unwrap().starts_with("GET /drain HTTP/1.1\r\n"));

        let h: LifecycleHandler = serde_json::from_value(json!({"sleep": {"seconds": 30}})).unwrap();
        let t = std::time::Instant::now();
        let err = run(&h, &c, "", &runtime(), "id", Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("did not finish within") && t.elapsed() < Duration::from_secs(5), "{err}");
        let h: LifecycleHandler = serde_json::from_value(json!({"exec": {"command": ["true"]}})).unwrap();
        assert!(run(&h, &c, "", &runtime(), "id", Duration::from_secs(2)).await.is_err(), "no runtime: a failure");
        let h: LifecycleHandler = serde_json::from_value(json!({"tcpSocket": {"port": 80}})).unwrap();
        assert!(run(&h, &c, "", &runtime(), "id", Duration::from_secs(2)).await.unwrap_err().contains("tcpSocket"));
    }
}
