//! The image service against a real registry: Debian's `docker-registry` on a loopback
//! port, serving busybox images built by `scripts/test-image.sh` (umoci + skopeo).
//!
//! Needs root (unpacking keeps ownership; one check chroots into the image) and the
//! Debian packages docker-registry, skopeo, umoci and busybox-static. Every test starts
//! its own registry in its own temp dir and only talks to 127.0.0.1.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_node::kubelet::image::{Image, ImageError, ImageStore, PullPolicy};
use sha2::Digest as _;

const REGISTRY_START: Duration = Duration::from_secs(30);
const BUILD_IMAGE: Duration = Duration::from_secs(180);
const PULL: Duration = Duration::from_secs(120);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A `docker-registry serve` child on 127.0.0.1, killed (by its PID) on drop.
struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    fn must_start() -> Registry {
        let dir = tempfile::tempdir().expect("registry tempdir");
        let port = unused_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry (Debian: apt-get install docker-registry): {e}"));
        let mut registry = Registry { child: Some(child), addr, dir };
        registry.must_wait_ready();
        registry
    }

    /// Polls `GET /v2/` until it answers 200, failing fast if the registry exits.
    fn must_wait_ready(&mut self) {
        let deadline = Instant::now() + REGISTRY_START;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("docker-registry on {} exited early ({status}); its log:\n{}", self.addr, self.log());
                }
            }
            match http(&self.addr, "GET", "/v2/", &[], &[]) {
                Ok(response) if response.status == 200 => return,
                Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                result => panic!(
                    "docker-registry on {} did not answer GET /v2/ with 200 within {REGISTRY_START:?} \
                     (last: {:?}); its log:\n{}",
                    self.addr,
                    result.map(|r| r.status),
                    self.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Builds a busybox image and pushes it here as `repo_tag`; returns the digest the
    /// registry gives its manifest.
    fn must_push_busybox(&self, repo_tag: &str) -> String {
        // The runtime variable, not env!(): a test binary reused from a build of another
        // checkout (a shared CARGO_TARGET_DIR) must look in this one.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
        let dir = dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
        let script = dir.join("../scripts/test-image.sh");
        must_run(Command::new(&script).arg(&self.addr).arg(repo_tag), "scripts/test-image.sh", BUILD_IMAGE);
        let (repo, tag) = repo_tag.rsplit_once(':').expect("repo:tag");
        self.must_manifest_digest(repo, tag)
    }

    fn must_manifest_digest(&self, repo: &str, tag: &str) -> String {
        let response =
            http(&self.addr, "GET", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", OCI_MANIFEST)], &[])
                .expect("GET manifest");
        assert_eq!(response.status, 200, "GET {repo}:{tag}: {}", String::from_utf8_lossy(&response.body));
        let digest = response.header("docker-content-digest").expect("Docker-Content-Digest header").to_owned();
        assert_eq!(digest, format!("sha256:{}", hex::encode(sha2::Sha256::digest(&response.body))));
        digest
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (bound, then released).
fn unused_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 exchange (one request per connection) with bounded timeouts.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
    let socket: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    let _ = write!(request, "Content-Length: {}\r\n\r\n", body.len());
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: raw[split + 4..].to_vec() })
}

/// Runs a command to completion within `limit`, panicking with its output if it fails.
fn must_run(cmd: &mut Command, what: &str, limit: Duration) -> String {
    let out = tempfile::tempdir().expect("output tempdir");
    let stdout = out.path().join("stdout");
    let stderr = out.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).expect("stdout file"))
        .stderr(fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&stdout).unwrap_or_default();
    assert!(
        status.success(),
        "{what} failed ({status}); stdout:\n{stdout}\nstderr:\n{}",
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    stdout
}

async fn must_within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

fn must_open_store(root: &Path, registry: &str) -> ImageStore {
    ImageStore::new(root.to_path_buf(), vec![registry.to_owned()]).expect("open image store")
}

async fn must_ensure(store: &ImageStore, image: &str, policy: PullPolicy) -> Image {
    must_within(PULL, &format!("ensure({image}, {policy:?})"), store.ensure(image, policy))
        .await
        .unwrap_or_else(|e| panic!("ensure({image}, {policy:?}): {e}"))
}

async fn must_fail(store: &ImageStore, image: &str, policy: PullPolicy) -> ImageError {
    match must_within(PULL, &format!("ensure({image}, {policy:?})"), store.ensure(image, policy)).await {
        Ok(found) => panic!("ensure({image}, {policy:?}) should fail, got {found:?}"),
        Err(e) => e,
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> =
        fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpacks_layers_and_reads_config() {
    tracing::info!("--- start a registry and push busybox");
    let registry = Registry::must_start();
    let digest = registry.must_push_busybox("busybox:latest");
    let dir = tempfile::tempdir().expect("store tempdir");
    let root = dir.path().join("images");
    let store = must_open_store(&root, &registry.addr);

    tracing::info!("--- pull with the default policy for :latest");
    let policy = PullPolicy::from_spec(None, &format!("{}/busybox", registry.addr));
    assert_eq!(policy, PullPolicy::Always);
    let image = must_ensure(&store, &format!("{}/busybox", registry.addr), policy).await;
    assert_eq!(image.reference, format!("{}/busybox:latest", registry.addr));
    assert_eq!(image.repo_digest, format!("{}/busybox@{digest}", registry.addr));
    let config_hex = image.id.strip_prefix("sha256:").expect("id is a sha256 digest");
    let config_blob = fs::read(root.join("blobs/sha256").join(config_hex)).expect("config blob stored");
    assert_eq!(hex::encode(sha2::Sha256::digest(&config_blob)), config_hex);
    assert_eq!(image.rootfs, root.join("rootfs").join(config_hex));

    tracing::info!("--- the rootfs is both layers applied");
    let rootfs = &image.rootfs;
    let busybox = fs::metadata(rootfs.join("bin/busybox")).expect("bin/busybox");
    assert!(busybox.is_file() && busybox.permissions().mode() & 0o111 == 0o111, "busybox not executable: {busybox:?}");
    assert_eq!(fs::read_link(rootfs.join("bin/sh")).expect("bin/sh symlink"), Path::new("/bin/busybox"));
    assert_eq!(fs::read_to_string(rootfs.join("etc/keelson-layer1")).expect("layer 1 file"), "layer 1\n");
    assert_eq!(fs::read_to_string(rootfs.join("etc/keelson-layer2")).expect("layer 2 file"), "layer 2\n");
    assert!(!rootfs.join("etc/keelson-layer1-only").exists(), "layer 2's whiteout was not applied");
    assert!(!rootfs.join("etc/.wh.keelson-layer1-only").exists(), "whiteout marker unpacked");
    assert_eq!(fs::metadata(rootfs.join("tmp")).expect("tmp").permissions().mode() & 0o7777, 0o1777);
    let hello = must_run(
        Command::new("chroot").arg(rootfs).args(["/bin/sh", "-c", "echo hello from $(basename $0)"]),
        "chroot into the image",
        Duration::from_secs(30),
    );
    assert_eq!(hello.trim(), "hello from sh");

    tracing::info!("--- config and local lookup");
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.config.entrypoint.is_empty(), "{:?}", image.config);
    assert_eq!(image.config.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/"));
    assert_eq!(image.config.user, None);
    assert_eq!(store.present(&format!("{}/busybox:latest", registry.addr)).as_ref(), Some(&image));
    assert_eq!(store.present(&format!("{}/busybox:other", registry.addr)), None);
    assert_eq!(entries(&root.join("tmp")), Vec::<PathBuf>::new(), "temporary files left behind");
    // Manifest, config and two layers.
    assert_eq!(entries(&root.join("blobs/sha256")).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_not_present_uses_the_local_copy_without_the_registry() {
    let mut registry = Registry::must_start();
    registry.must_push_busybox("app:1.0");
    let dir = tempfile::tempdir().expect("store tempdir");
    let root = dir.path().join("images");
    let store = must_open_store(&root, &registry.addr);
    let name = format!("{}/app:1.0", registry.addr);

    tracing::info!("--- Never does not pull even when the registry has the image");
    let err = must_fail(&store, &name, PullPolicy::Never).await;
    assert!(matches!(err, ImageError::NotPresent { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImageNeverPull");
    assert!(err.to_string().contains(&name), "{err}");

    tracing::info!("--- pull, then stop the registry");
    assert_eq!(PullPolicy::from_spec(None, &name), PullPolicy::IfNotPresent);
    let pulled = must_ensure(&store, &name, PullPolicy::IfNotPresent).await;
    registry.kill();

    tracing::info!("--- IfNotPresent and Never are served locally, also after a restart");
    assert_eq!(must_ensure(&store, &name, PullPolicy::IfNotPresent).await, pulled);
    assert_eq!(must_ensure(&store, &name, PullPolicy::Never).await, pulled);
    let reopened = must_open_store(&root, &registry.addr);
    assert_eq!(must_ensure(&reopened, &name, PullPolicy::IfNotPresent).await, pulled);

    tracing::info!("--- Always asks the registry, which is gone");
    let err = must_fail(&reopened, &name, PullPolicy::Always).await;
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_and_https_mismatch_are_clear_errors() {
    let registry = Registry::must_start();
    let dir = tempfile::tempdir().expect("store tempdir");
    let store = must_open_store(&dir.path().join("images"), &registry.addr);

    tracing::info!("--- an image the registry does not have");
    let name = format!("{}/no-such-image:v1", registry.addr);
    let err = must_fail(&store, &name, PullPolicy::IfNotPresent).await;
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    let message = err.to_string();
    assert!(message.contains(&name) && message.contains("not found"), "{message}");
    assert_eq!(store.present(&name), None);

    tracing::info!("--- an invalid name never reaches the registry");
    let err = must_fail(&store, &format!("{}/No-Such", registry.addr), PullPolicy::Always).await;
    assert_eq!(err.reason(), "InvalidImageName", "{err}");

    tracing::info!("--- a plain-HTTP registry not listed as insecure");
    let strict = ImageStore::new(dir.path().join("strict"), vec![]).expect("open strict store");
    let err = must_fail(&strict, &name, PullPolicy::IfNotPresent).await;
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(err.to_string().contains(&registry.addr), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_a_clear_error() {
    let addr = format!("127.0.0.1:{}", unused_port());
    let dir = tempfile::tempdir().expect("store tempdir");
    let store = must_open_store(&dir.path().join("images"), &addr);
    let err = must_fail(&store, &format!("{addr}/busybox:latest"), PullPolicy::IfNotPresent).await;
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    let message = err.to_string();
    assert!(message.contains(&format!("cannot reach registry {addr}")), "{message}");
    assert!(message.contains(&format!("{addr}/busybox:latest")), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_pull_once() {
    let registry = Registry::must_start();
    registry.must_push_busybox("busybox:latest");
    let dir = tempfile::tempdir().expect("store tempdir");
    let root = dir.path().join("images");
    let store = must_open_store(&root, &registry.addr);
    let name = format!("{}/busybox:latest", registry.addr);

    let pulls = (0..6).map(|_| {
        let store = store.clone();
        let name = name.clone();
        tokio::spawn(async move { store.ensure(&name, PullPolicy::IfNotPresent).await })
    });
    let results = must_within(PULL, "six concurrent ensures", futures::future::join_all(pulls)).await;
    let images: Vec<Image> = results
        .into_iter()
        .map(|r| r.expect("ensure task panicked").unwrap_or_else(|e| panic!("concurrent ensure: {e}")))
        .collect();
    assert!(images.windows(2).all(|w| w[0] == w[1]), "concurrent ensures disagree: {images:#?}");
    assert_eq!(entries(&root.join("rootfs")), vec![images[0].rootfs.clone()]);
    assert_eq!(entries(&root.join("tmp")), Vec::<PathBuf>::new());
    assert_eq!(entries(&root.join("refs")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_index_resolves_to_this_platform() {
    let registry = Registry::must_start();
    let host_manifest = registry.must_push_busybox("multi:host");
    let other_manifest = registry.must_push_busybox("multi:other");
    let dir = tempfile::tempdir().expect("store tempdir");
    let store = must_open_store(&dir.path().join("images"), &registry.addr);
    let host = must_ensure(&store, &format!("{}/multi:host", registry.addr), PullPolicy::Always).await;
    let other = must_ensure(&store, &format!("{}/multi:other", registry.addr), PullPolicy::Always).await;
    assert_ne!(host.id, other.id, "two builds should differ");

    tracing::info!("--- push an index listing another architecture first");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let not_arch = if arch == "s390x" { "ppc64le" } else { "s390x" };
    let entry = |digest: &str, arch: &str| {
        let get =
            http(&registry.addr, "GET", &format!("/v2/multi/manifests/{digest}"), &[("Accept", OCI_MANIFEST)], &[])
                .expect("GET manifest by digest");
        serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": get.body.len(),
            "platform": {"architecture": arch, "os": "linux"}
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry(&other_manifest, not_arch), entry(&host_manifest, arch)],
    }))
    .expect("index json");
    let put = http(&registry.addr, "PUT", "/v2/multi/manifests/index", &[("Content-Type", OCI_INDEX)], &index)
        .expect("PUT index");
    assert_eq!(put.status, 201, "PUT index: {}", String::from_utf8_lossy(&put.body));
    let index_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&index)));

    tracing::info!("--- the index resolves to the host's image; repo digest names the index");
    let multi = must_ensure(&store, &format!("{}/multi:index", registry.addr), PullPolicy::Always).await;
    assert_eq!(multi.id, host.id);
    assert_eq!(multi.rootfs, host.rootfs);
    assert_eq!(multi.repo_digest, format!("{}/multi@{index_digest}", registry.addr));

    tracing::info!("--- by digest, too");
    let by_digest = format!("{}/multi@{index_digest}", registry.addr);
    let pinned = must_ensure(&store, &by_digest, PullPolicy::from_spec(None, &by_digest)).await;
    assert_eq!(pinned.id, host.id);
    assert_eq!(pinned.reference, by_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_content_is_checked_before_use() {
    let registry = Registry::must_start();
    registry.must_push_busybox("busybox:latest");
    let dir = tempfile::tempdir().expect("store tempdir");
    let root = dir.path().join("images");
    let store = must_open_store(&root, &registry.addr);
    let get = http(&registry.addr, "GET", "/v2/busybox/manifests/latest", &[("Accept", OCI_MANIFEST)], &[])
        .expect("GET manifest");
    let mut manifest: serde_json::Value = serde_json::from_slice(&get.body).expect("manifest json");

    tracing::info!("--- zstd layers are refused before anything is downloaded");
    let mut zstd = manifest.clone();
    for layer in zstd["layers"].as_array_mut().expect("layers") {
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
    }
    let body = serde_json::to_vec(&zstd).expect("zstd manifest json");
    let put = http(&registry.addr, "PUT", "/v2/busybox/manifests/zstd", &[("Content-Type", OCI_MANIFEST)], &body)
        .expect("PUT manifest");
    assert_eq!(put.status, 201, "PUT zstd manifest: {}", String::from_utf8_lossy(&put.body));
    let err = must_fail(&store, &format!("{}/busybox:zstd", registry.addr), PullPolicy::IfNotPresent).await;
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(err.to_string().contains("zstd"), "{err}");
    assert_eq!(entries(&root.join("blobs/sha256")).len(), 1, "only the manifest should be stored");

    tracing::info!("--- a layer corrupted in the registry's storage is caught by its digest");
    let last = manifest["layers"].as_array_mut().and_then(|l| l.last_mut()).expect("a layer");
    let digest = last["digest"].as_str().expect("layer digest").to_owned();
    let hex = digest.strip_prefix("sha256:").expect("sha256 layer");
    let data = registry.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data");
    let size = fs::metadata(&data).unwrap_or_else(|e| panic!("registry blob {}: {e}", data.display())).len();
    fs::write(&data, vec![b'!'; usize::try_from(size).expect("size")]).expect("corrupt the blob");
    let err = must_fail(&store, &format!("{}/busybox:latest", registry.addr), PullPolicy::IfNotPresent).await;
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(err.to_string().contains(&digest), "{err}");
    assert!(!root.join("blobs/sha256").join(hex).exists(), "corrupt blob kept");
    assert_eq!(entries(&root.join("tmp")), Vec::<PathBuf>::new());
    assert_eq!(entries(&root.join("rootfs")), Vec::<PathBuf>::new());
}
