//! exec, attach, cp and port-forward against a real node, as root: `keelson up` (the
//! control plane), a `keelson agent --node-name` running a busybox pod in runc, and the
//! clients users have — kubectl 1.32 (WebSocket v5 for exec/attach/cp, SPDY tunnelled in a
//! WebSocket for port-forward), kubectl 1.28 (SPDY throughout), and the Python client
//! (WebSocket channels for exec and port-forward). Every byte goes through the API server's
//! pass-through to the kubelet endpoint. Everything the test makes (the agent, the bridge,
//! network namespaces, runc state, mounts) is removed by its guard, failed or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::registry::Registry;
use common::sim::{self, kubelet_cert, must_kubectl};
use common::{eventually_or, keelson_bin, within, Up};
use k8s_openapi::api::core::v1::Pod;
use keelson_node::kubelet::network::NetNs;
use keelson_node::kubelet::runtime::rootfs;
use kube::api::Api;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(90);
/// kubectl's WebSocket (v5) exec and tunnelled port-forward.
const KUBECTL_NEW: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
/// kubectl's SPDY exec and port-forward.
const KUBECTL_OLD: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28";

/// A real agent and everything it may leave behind.
struct Node {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    netns_prefix: String,
    kubeconfig: PathBuf,
    registry: String,
    /// The kubelet endpoint: port, serving certificate and key, client CA.
    endpoint: [String; 4],
}

impl Node {
    fn root(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("agent.log")).expect("log");
        let child = tokio::process::Command::new(keelson_bin())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &self.name, "--bridge", &self.bridge, "--netns-prefix", &self.netns_prefix])
            .args(["--proxy-table", &self.bridge])
            .args(["--insecure-registry", &self.registry, "--restart-backoff", "1s", "--lease-renew-interval", "1s"])
            .args(["--port", &self.endpoint[0], "--tls-cert-file", &self.endpoint[1]])
            .args(["--tls-private-key-file", &self.endpoint[2], "--client-ca-file", &self.endpoint[3]])
            .arg("--root-dir")
            .arg(self.root())
            .env("KEELSON_LOG", std::env::var("KEELSON_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn keelson agent");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        format!("\n--- agent log (last 60 lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    fn netns(&self) -> Vec<String> {
        NetNs::list_with_prefix(&self.netns_prefix)
    }

    fn runc_ids(&self) -> Vec<String> {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.root().join("runtime"))
            .args(["list", "-q"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        for id in self.runc_ids() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(self.root().join("runtime"))
                .args(["delete", "--force", &id])
                .output();
        }
        for ns in self.netns() {
            let _ = NetNs::delete_by_name(&ns);
        }
        for m in rootfs::mounts_under(self.dir.path()) {
            let _ = rootfs::unmount(&m);
        }
        let _ = std::process::Command::new("ip").args(["link", "delete", &self.bridge]).stderr(Stdio::null()).output();
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", &self.bridge])
            .stderr(Stdio::null())
            .output();
    }
}

/// A kubectl's exit code, stdout and stderr, with `stdin` written then closed.
async fn kubectl(bin: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let mut child = tokio::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.unwrap_or_default().to_vec();
    let writing = tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    let out =
        within(Duration::from_secs(120), &format!("{bin} {args:?}"), child.wait_with_output()).await.expect("kubectl");
    let _ = writing.await;
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// In the container, under `kubectl exec -it`: wait for the client's terminal size (a slow
/// client's first size may come after the command starts, then by SIGWINCH, as a shell's
/// prompt gets it), say it, wait for the client's terminal to change, read a line.
const RESIZED: &str = "tty; while [ -z \"$(stty size 2>/dev/null)\" ]; do sleep 0.1; done; stty size; echo ready; \
    while [ \"$(stty size)\" = \"40 100\" ]; do sleep 0.1; done; stty size; read l; echo got:$l; exit 4";

/// `kubectl exec -it` under a pseudo-terminal of 40 rows by 100 columns: once the command
/// says `ready`, the terminal grows to 50×120; once the command sees that, a line is typed.
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
out, stage, deadline = b"", 0, time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 1)
    if fd not in r:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    if stage == 0 and b"ready" in out:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        stage = 1
    if stage == 1 and b"50 120" in out:
        os.write(fd, b"typed\r")
        stage = 2
# kubectl has closed the terminal or the deadline passed: it ends, or is ended.
for _ in range(50):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.1)
else:
    sys.stderr.write("kubectl did not end: killed\n")
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

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

fn pod_yaml(node: &str, image: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {image}
    command: [sh, -c, 'mkdir -p /www && echo hello from the pod > /www/index.html && exec httpd -f -p 8080 -h /www']
  - name: ticker
    image: {image}
    command: [sh, -c, 'while [ ! -e /tmp/go ]; do sleep 0.1; done; while [ ! -e /tmp/stop ]; do echo tick; sleep 0.2; done; echo bye >&2']
"
    )
}

/// The first `Forwarding from 127.0.0.1:PORT` a running `kubectl port-forward` prints.
async fn forwarded_port(pf: &mut tokio::process::Child) -> u16 {
    let stdout = pf.stdout.as_mut().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    within(Duration::from_secs(30), "kubectl port-forward to listen", async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a port");
            }
        }
        panic!("kubectl port-forward ended without listening");
    })
    .await
}

async fn curl(port: u16) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "20", &format!("http://127.0.0.1:{port}/")])
        .output()
        .await
        .expect("curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_cp_and_port_forward_on_a_real_node() {
    let registry = Registry::start().await;
    let image = registry.push_busybox("keelson/busybox:stream").await;
    let up = Up::start().await;
    let kubeconfig = up.kubeconfig.clone();
    let client = sim::client(&kubeconfig, None).await;
    let tag = std::process::id() % 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = kubelet_cert(&up.pki(), dir.path());
    let ca = up.pki().join("ca.crt").display().to_string();
    let mut node = Node {
        child: None,
        dir,
        endpoint: [common::free_port().to_string(), cert, key, ca],
        name: format!("stream-{tag}"),
        bridge: format!("ksb{tag}"),
        netns_prefix: format!("kss{tag}-"),
        kubeconfig: kubeconfig.clone(),
        registry: registry.addr.clone(),
    };
    node.start();

    tracing::info!("--- a pod on the real node");
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&pod_yaml(&node.name, &image))).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually_or(
        WAIT,
        "pod shell to be Running with both containers ready",
        || async {
            let p = pods.get_opt("shell").await.ok().flatten()?;
            let s = serde_json::to_value(p.status?).ok()?;
            let ready = s["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c["ready"] == true));
            (s["phase"] == "Running" && ready).then_some(())
        },
        || node.log(),
    )
    .await;

    for bin in [KUBECTL_NEW, KUBECTL_OLD] {
        tracing::info!(kubectl = bin, "--- exec: stdout, stderr and the exit code");
        let (code, out, err) = kubectl(
            bin,
            &kubeconfig,
            &["exec", "shell", "-c", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
            None,
        )
        .await;
        assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (3, "out\n"), "{bin}: {err}{}", node.log());
        assert!(err.starts_with("err\n") && err.contains("command terminated with exit code 3"), "{bin}: {err}");

        tracing::info!(kubectl = bin, "--- exec -i: stdin piped, larger than a frame");
        let input: Vec<u8> = (0..300_000u32).map(|i| b"abcdefghij\n"[(i % 11) as usize]).collect();
        let (code, out, err) = kubectl(
            bin,
            &kubeconfig,
            &["exec", "-i", "shell", "-c", "web", "--", "sh", "-c", "wc -c; echo after stdin"],
            Some(&input),
        )
        .await;
        assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (0, "300000\nafter stdin\n"), "{bin}: {err}");

        tracing::info!(kubectl = bin, "--- exec of a command that does not exist");
        let (code, _, err) =
            kubectl(bin, &kubeconfig, &["exec", "shell", "-c", "web", "--", "/no/such/command"], None).await;
        assert_ne!(code, 0);
        assert!(err.contains("/no/such/command"), "{bin}: {err}");

        tracing::info!(kubectl = bin, "--- cp in and back out");
        let local = node.dir.path().join("payload.bin");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&local, &payload).unwrap();
        let (code, _, err) = kubectl(
            bin,
            &kubeconfig,
            &["cp", "-c", "web", &local.display().to_string(), "shell:/tmp/payload.bin"],
            None,
        )
        .await;
        assert_eq!(code, 0, "{bin}: {err}");
        let back = node.dir.path().join("back.bin");
        let (code, _, err) = kubectl(
            bin,
            &kubeconfig,
            &["cp", "-c", "web", "shell:/tmp/payload.bin", &back.display().to_string()],
            None,
        )
        .await;
        assert_eq!(code, 0, "{bin}: {err}");
        assert!(std::fs::read(&back).unwrap() == payload, "{bin}: the file came back different");

        tracing::info!(kubectl = bin, "--- exec -it: a terminal of the client's size, resized, typed into");
        let out = within(
            Duration::from_secs(90),
            "kubectl exec -it under a pseudo-terminal",
            tokio::process::Command::new(python())
                .args(["-c", PTY_DRIVER, bin, "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["exec", "-it", "shell", "-c", "web", "--", "sh", "-c"])
                .arg(RESIZED)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("python");
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert_eq!(
            out.status.code(),
            Some(4),
            "{bin}: {text:?}\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        assert!(text.contains("/dev/pts/"), "{bin}: no terminal in the container: {text}");
        assert!(text.contains("40 100\nready\n") && text.contains("50 120\n"), "{bin}: sizes: {text}");
        assert!(text.contains("got:typed\n"), "{bin}: {text}");

        tracing::info!(kubectl = bin, "--- port-forward, two connections");
        let mut pf = tokio::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["port-forward", "pod/shell", ":8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl port-forward");
        let port = forwarded_port(&mut pf).await;
        for _ in 0..2 {
            let (ok, body) = curl(port).await;
            let mut err = String::new();
            if !ok {
                let _ = pf.start_kill();
                let _ = pf.stderr.take().unwrap().read_to_string(&mut err).await;
            }
            assert!(
                ok && body == "hello from the pod\n",
                "{bin}: curl through port-forward: {body:?} {err}{}",
                node.log()
            );
        }
        let _ = pf.start_kill();
        let _ = pf.wait().await;
    }

    tracing::info!("--- attach: the container's output from now on, until it ends");
    let mut attach = tokio::process::Command::new(KUBECTL_NEW)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["attach", "shell", "-c", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl attach");
    let mut attach_out = tokio::io::BufReader::new(attach.stdout.take().unwrap()).lines();
    must_kubectl(&kubeconfig, &["exec", "shell", "-c", "ticker", "--", "touch", "/tmp/go"], None).await;
    let first = within(Duration::from_secs(30), "attach to show the ticker's output", attach_out.next_line()).await;
    assert_eq!(first.ok().flatten().as_deref(), Some("tick"));
    must_kubectl(&kubeconfig, &["exec", "shell", "-c", "ticker", "--", "touch", "/tmp/stop"], None).await;
    let status =
        within(Duration::from_secs(30), "attach to end with the container", attach.wait()).await.expect("attach");
    let mut attach_err = String::new();
    attach.stderr.take().unwrap().read_to_string(&mut attach_err).await.unwrap();
    assert!(status.success(), "attach: {attach_err}");
    assert!(attach_err.contains("bye"), "the container's stderr: {attach_err:?}");
    // Its stdin cannot be attached to: said so, by the node.
    let (code, _, err) = kubectl(KUBECTL_NEW, &kubeconfig, &["attach", "-i", "shell", "-c", "web"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("attaching stdin is not supported"), "{err}");

    tracing::info!("--- the Python client: exec and port-forward over WebSocket channels");
    let script = common::manifest_dir().join("tests/python/stream_e2e.py");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .arg(&kubeconfig)
        .args(["default", "shell", "web", "8080"])
        .kill_on_drop(true)
        .output();
    let out = within(Duration::from_secs(180), "the Python client's checks", run).await.expect("python");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("all checks passed"),
        "python stream checks failed:\n{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );

    tracing::info!("--- the pod goes, and with it everything on the node");
    must_kubectl(&kubeconfig, &["delete", "pod", "shell", "--wait=false"], None).await;
    eventually_or(
        WAIT,
        "no network namespace, container or pod directory left",
        || async {
            let dirs = std::fs::read_dir(node.root().join("pods")).map(|d| d.count()).unwrap_or(0);
            let gone = pods.get_opt("shell").await.ok().flatten().is_none();
            (gone && node.netns().is_empty() && node.runc_ids().is_empty() && dirs == 0).then_some(())
        },
        || format!("netns {:?} runc {:?}{}", node.netns(), node.runc_ids(), node.log()),
    )
    .await;
}
