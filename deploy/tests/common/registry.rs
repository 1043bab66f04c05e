//! Debian's `docker-registry` on a loopback port, with a busybox image built from
//! busybox-static by `scripts/test-image.sh` (umoci + skopeo).

use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use super::{eventually, free_port};

pub struct Registry {
    pub child: tokio::process::Child,
    pub dir: TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The network namespace it serves in (`None`: this one).
    pub netns: Option<String>,
}

/// `cmd args…`, inside `netns` when given (`ip netns exec`).
fn command_in(netns: Option<&str>, cmd: &str) -> tokio::process::Command {
    match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, cmd]);
            c
        }
        None => tokio::process::Command::new(cmd),
    }
}

impl Registry {
    pub async fn start() -> Registry {
        Registry::start_at(None, &format!("127.0.0.1:{}", free_port())).await
    }

    /// Serving on `addr` inside network namespace `netns` (a test's own).
    pub async fn start_at(netns: Option<&str>, addr: &str) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = addr.to_string();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = command_in(netns, "docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn docker-registry (apt install docker-registry)");
        let url = format!("http://{addr}/v2/");
        eventually(Duration::from_secs(30), "docker-registry to answer /v2/", || {
            let url = url.clone();
            async move {
                let out = command_in(netns, "curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
                    .output()
                    .await
                    .ok()?;
                (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
            }
        })
        .await;
        Registry { child, dir, addr, netns: netns.map(str::to_string) }
    }

    /// Build busybox and push it as `repo:tag`; returns `ADDR/repo:tag`.
    pub async fn push_busybox(&self, repo_tag: &str) -> String {
        let script = super::manifest_dir().join("../scripts/test-image.sh");
        let out = command_in(self.netns.as_deref(), "bash")
            .arg(&script)
            .arg(&self.addr)
            .arg(repo_tag)
            .output()
            .await
            .expect("run scripts/test-image.sh");
        assert!(
            out.status.success(),
            "scripts/test-image.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}/{repo_tag}", self.addr)
    }
}
