//! Simulated nodes (`keelson agent --simulate N`) and kubectl/kube-rs helpers for the
//! controller and scheduler tests. The agent is killed (by its PID) on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tempfile::TempDir;

use super::{keelson_bin, within};

pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// A kube-rs client for one context of a kubeconfig.
pub async fn client(kubeconfig: &Path, context: Option<&str>) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

/// `keelson agent --simulate N`.
pub struct Agent {
    pub child: tokio::process::Child,
    pub dir: TempDir,
}

impl Agent {
    pub fn start(kubeconfig: &Path, context: Option<&str>, n: usize, extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let mut cmd = tokio::process::Command::new(keelson_bin());
        cmd.arg("agent").args(["--simulate", &n.to_string()]).arg("--kubeconfig").arg(kubeconfig);
        if let Some(c) = context {
            cmd.args(["--context", c]);
        }
        let child = cmd
            .args(extra)
            .env("KEELSON_LOG", std::env::var("KEELSON_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keelson agent");
        Agent { child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// kubectl 1.33 against `kubeconfig`; returns (success, stdout, stderr).
pub async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let cache = kubeconfig.with_extension("kubectl-cache");
    let mut c = tokio::process::Command::new(KUBECTL);
    c.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--request-timeout", "30s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input.as_bytes()).await.expect("write stdin");
    }
    drop(child.stdin.take());
    let out = within(Duration::from_secs(120), &format!("kubectl {args:?}"), child.wait_with_output())
        .await
        .expect("kubectl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// kubectl that must succeed.
pub async fn must_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = kubectl(kubeconfig, args, stdin).await;
    assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
    out
}

/// A pod watch recorded as the sequence of states the namespace went through: after each
/// event, `check` sees the pods (by name) as of that revision; violations are kept.
pub struct History {
    pub states: Arc<Mutex<Vec<BTreeMap<String, Pod>>>>,
    pub created: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl History {
    pub fn start(client: kube::Client, namespace: &str, label_selector: &str) -> History {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let states: Arc<Mutex<Vec<BTreeMap<String, Pod>>>> = Arc::default();
        let created: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, c) = (states.clone(), created.clone());
        let cfg = watcher::Config::default().labels(label_selector);
        let task = tokio::spawn(async move {
            let mut cur: BTreeMap<String, Pod> = BTreeMap::new();
            let mut listing: Option<BTreeMap<String, Pod>> = None;
            let mut stream = watcher(api, cfg).boxed();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                match ev {
                    watcher::Event::Init => listing = Some(BTreeMap::new()),
                    watcher::Event::InitApply(p) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(p.metadata.name.clone().unwrap_or_default(), p);
                        }
                    }
                    watcher::Event::InitDone => {
                        if let Some(l) = listing.take() {
                            for n in l.keys().filter(|n| !cur.contains_key(*n)) {
                                c.lock().unwrap().push(n.clone());
                            }
                            cur = l;
                            s.lock().unwrap().push(cur.clone());
                        }
                    }
                    watcher::Event::Apply(p) => {
                        let n = p.metadata.name.clone().unwrap_or_default();
                        if !cur.contains_key(&n) {
                            c.lock().unwrap().push(n.clone());
                        }
                        cur.insert(n, p);
                        s.lock().unwrap().push(cur.clone());
                    }
                    watcher::Event::Delete(p) => {
                        cur.remove(p.metadata.name.as_deref().unwrap_or_default());
                        s.lock().unwrap().push(cur.clone());
                    }
                }
            }
        });
        History { states, created, task }
    }

    pub fn snapshot(&self) -> Vec<BTreeMap<String, Pod>> {
        self.states.lock().unwrap().clone()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && p.metadata.deletion_timestamp.is_none()
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

pub fn image_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.containers.first()?.image.clone()
}

/// The admin kubeconfig a master wrote (a context per master).
pub fn kubeconfig_of(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// A kubelet serving certificate for 127.0.0.1 signed by the cluster CA, written to `dir`.
pub fn kubelet_cert(pki: &Path, dir: &Path) -> (String, String) {
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt"), &ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("sign");
    let (c, k) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c.display().to_string(), k.display().to_string())
}
