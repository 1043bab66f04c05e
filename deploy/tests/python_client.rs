//! The PyPI `kubernetes` client (in the venv `scripts/test.sh` creates) against
//! `keelson up`: watch from an old resourceVersion, CRUD with every patch type,
//! create_from_yaml, exact conflict errors (`tests/python/client_e2e.py`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Up;
use tokio::process::Command;

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
    let up = Up::start().await;
    let kubeconfig = up.kubeconfig.display().to_string();
    let script = common::manifest_dir().join("tests/python/client_e2e.py");
    let run = Command::new(&py).arg(&script).arg(&kubeconfig).arg("py").kill_on_drop(true).output();
    let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(r) => r.expect("run python"),
        Err(_) => panic!("timed out after 120 s waiting for {}", script.display()),
    };
    assert!(
        out.status.success(),
        "python client checks failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        up.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
