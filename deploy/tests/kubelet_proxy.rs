//! pods/log and exec through the API server to a kubelet: a stand-in kubelet (a TLS
//! server with a cluster-CA certificate that requires the API server's client
//! certificate) records what reaches it; real kubectl reads logs through `keelson up`,
//! and an exec upgrade is spliced byte for byte both ways.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{curl_api, within, Up};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

fn read(pki: &Path, f: &str) -> String {
    std::fs::read_to_string(pki.join(f)).unwrap()
}

/// Bytes up to and including the blank line that ends an HTTP head.
async fn head<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(r.read(&mut b).await.unwrap(), 1, "EOF inside an HTTP head: {}", String::from_utf8_lossy(&buf));
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// The stand-in kubelet: logs answer two lines; exec answers 101 and echoes.
async fn kubelet(pki: &Path) -> (u16, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let ca_key = rcgen::KeyPair::from_pem(&read(pki, "ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(pki, "ca.crt"), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(read(pki, "ca.crt").as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let h = head(&mut s).await;
                log.lock().unwrap().push(h.clone());
                if h.starts_with("GET /containerLogs/") {
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nline 1\nline 2\n").await;
                    let _ = s.shutdown().await;
                } else if h.starts_with("POST /attach/") {
                    // A refusal on a kept-alive connection: only Content-Length ends it.
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nno attach!\n").await;
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                } else if h.starts_with("POST /exec/") {
                    let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n").await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (port, seen, task)
}

async fn send(up: &Up, method: &str, path: &str, body: &str) -> (u16, String) {
    let args = ["-X", method, "-H", "Content-Type: application/json", "--data", body];
    curl_api(&up.pki(), true, 30, &up.api, &args, path).await
}

async fn kubectl(up: &Up, args: &[&str]) -> (bool, String) {
    let out = within(
        WAIT,
        &format!("kubectl {args:?}"),
        tokio::process::Command::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
            .arg("--kubeconfig")
            .arg(&up.kubeconfig)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_reach_the_pods_kubelet() {
    let up = Up::start().await;
    let pki = up.pki();
    let (port, seen, task) = kubelet(&pki).await;
    let (code, body) =
        send(&up, "POST", "/api/v1/nodes", r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#).await;
    assert_eq!(code, 201, "{body}");
    let status = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}},"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    let (code, body) = send(&up, "PUT", "/api/v1/nodes/n1/status", &status).await;
    assert_eq!(code, 200, "{body}");
    let pod = |name: &str, node: &str, containers: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{{node}"containers":{containers}}}}}"#
        )
    };
    let one = r#"[{"name":"c","image":"busybox"}]"#;
    let two = r#"[{"name":"a","image":"busybox"},{"name":"b","image":"busybox"}]"#;
    for (name, node, cs) in
        [("p", r#""nodeName":"n1","#, one), ("two", r#""nodeName":"n1","#, two), ("nowhere", "", one)]
    {
        let (code, body) = send(&up, "POST", "/api/v1/namespaces/default/pods", &pod(name, node, cs)).await;
        assert_eq!(code, 201, "{body}");
    }

    let (ok, out) = kubectl(&up, &["logs", "p", "--tail=5"]).await;
    assert!(ok, "{out}\n{}", up.log());
    assert_eq!(out, "line 1\nline 2\n");
    let first = seen.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(first.starts_with("GET /containerLogs/default/p/c?tailLines=5 HTTP/1.0\r\n"), "{first}");
    let (ok, out) = kubectl(&up, &["logs", "nowhere"]).await;
    assert!(!ok && out.contains("pod nowhere does not have a host assigned"), "{out}");
    let (code, body) = curl_api(&pki, true, 30, &up.api, &[], "/api/v1/namespaces/default/pods/two/log").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a container name must be specified for pod two, choose one of: [a b]"), "{body}");
    let (code, body) =
        curl_api(&pki, true, 30, &up.api, &[], "/api/v1/namespaces/default/pods/two/log?container=z").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("container z is not valid for pod two"), "{body}");

    // exec: the upgrade is answered by the kubelet and then spliced.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(read(&pki, "ca.crt").as_bytes()).unwrap()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(read(&pki, "admin.crt").as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(read(&pki, "admin.key").as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = up.api.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(b"POST /api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true&stdout=true HTTP/1.1\r\nHost: keelson\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n").await.unwrap();
    let h = within(WAIT, "the exec upgrade's answer", head(&mut s)).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert!(h.to_ascii_lowercase().contains("x-stream-protocol-version: v4.channel.k8s.io"), "{h}");
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(WAIT, "the kubelet's echo", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
    let last = seen.lock().unwrap().last().cloned().unwrap_or_default();
    assert!(last.starts_with("POST /exec/default/p/c?command=sh&stdin=true&stdout=true HTTP/1.1\r\n"), "{last}");
    assert!(last.to_ascii_lowercase().contains("upgrade: spdy/3.1"), "{last}");

    // A refused upgrade is answered with the kubelet's status and body, without waiting for
    // the kubelet to close.
    let (code, body) = within(
        WAIT,
        "the refused attach",
        curl_api(
            &pki,
            true,
            30,
            &up.api,
            &["--http1.1", "-X", "POST", "-H", "Connection: Upgrade", "-H", "Upgrade: SPDY/3.1"],
            "/api/v1/namespaces/default/pods/p/attach?stdout=true",
        ),
    )
    .await;
    assert_eq!((code, body.as_str()), (400, "no attach!\n"));

    // Container names are DNS labels in every list (they become kubelet path segments).
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"initContainers":[{"name":"x/../../run","image":"busybox"}],"containers":[{"name":"c","image":"busybox"}]}}"#;
    let (code, body) = send(&up, "POST", "/api/v1/namespaces/default/pods", bad).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("spec.initContainers[0].name"), "{body}");
    task.abort();
}
