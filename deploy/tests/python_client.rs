//! The PyPI `kubernetes` client (in the venv `scripts/test.sh` creates) against
//! `keelson up`: watch from an old resourceVersion, CRUD with every patch type,
//! create_from_yaml, exact conflict errors (`tests/python/client_e2e.py`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("KEELSON_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = PathBuf::from(home).join(".cache/keelson/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/test.sh (it creates the venv with the `kubernetes` client) or set KEELSON_PYTHON",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_works_against_keelson() {
    let py = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("up.log")).expect("log");
    let mut up = Command::new(env!("CARGO_BIN_EXE_keelson"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--peer-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--etcd-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn keelson up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let kubeconfig = match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
        Ok(Ok(Some(l))) => l.trim().to_string(),
        other => panic!("keelson up printed no kubeconfig path: {other:?}"),
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_e2e.py");
    let run = Command::new(&py).arg(&script).arg(&kubeconfig).arg("py").kill_on_drop(true).output();
    let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(r) => r.expect("run python"),
        Err(_) => panic!("timed out after 120 s waiting for {}", script.display()),
    };
    let _ = up.start_kill();
    assert!(
        out.status.success(),
        "python client checks failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
