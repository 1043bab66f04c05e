//! Persistent volumes on a real node, end to end, as root: `keelson up` (control plane
//! only) and a real `keelson agent --node-name` running runc containers and its own
//! local-path provisioner. A StatefulSet's volumeClaimTemplate gets the default
//! class, the scheduler selects the node for the claim, the provisioner makes a directory
//! and a PersistentVolume there and binds them, the kubelet waits for the binding and
//! mounts the directory; the data outlives the pod; scaled to zero and the claim deleted,
//! the volume and its directory go too. Everything the test makes is removed by its guard,
//! failed or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::registry::Registry;
use common::sim::{self, must_kubectl};
use common::{eventually_or, keelson_bin, Up};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use keelson_node::kubelet::network::NetNs;
use keelson_node::kubelet::runtime::rootfs;
use kube::api::Api;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// A real agent, the provisioner running for it here, and everything they may leave behind.
struct Node {
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    netns_prefix: String,
    kubeconfig: PathBuf,
    registry: String,
}

impl Node {
    fn root(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// Where the agent's provisioner keeps this node's volumes.
    fn storage(&self) -> PathBuf {
        self.root().join("storage")
    }

    fn start(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("agent.log")).expect("log");
        let child = tokio::process::Command::new(keelson_bin())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &self.name, "--bridge", &self.bridge, "--netns-prefix", &self.netns_prefix])
            .args(["--proxy-table", &self.bridge, "--disable", "dns,proxy"])
            .args(["--insecure-registry", &self.registry, "--restart-backoff", "1s", "--lease-renew-interval", "1s"])
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
            common::kill_and_reap(c);
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
        // Mounts under our directory, deepest first.
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

fn to_value<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

async fn wait_pod(api: &Api<Pod>, name: &str, node: &Node, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let last = std::sync::Mutex::new(None::<Value>);
    eventually_or(
        WAIT,
        &format!("pod {name}: {what}"),
        || async {
            let p = to_value(&api.get_opt(name).await.ok().flatten()?);
            *last.lock().unwrap() = Some(p.clone());
            check(&p).then_some(p)
        },
        || format!("\nlast: {:?}{}", last.lock().unwrap(), node.log()),
    )
    .await
}

/// A client certificate for `cn` in `org` signed by the cluster CA, written to `dir`;
/// returns curl's arguments for it.
fn client_cert(pki: &Path, dir: &Path, cn: &str, org: &str) -> Vec<String> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.join("ca.crt")).unwrap(), &ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join(format!("{cn}.crt").replace(':', "_")), dir.join(format!("{cn}.key").replace(':', "_")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    vec!["--cert".into(), c.display().to_string(), "--key".into(), k.display().to_string()]
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_claims_get_local_volumes_that_outlive_their_pods() {
    let registry = Registry::start().await;
    let image = registry.push_busybox("keelson/busybox:1").await;
    let up = Up::start_with(&["--cluster-cidr", "10.252.0.0/16"]).await;
    let kubeconfig = up.kubeconfig.clone();
    let client = sim::client(&kubeconfig, None).await;
    let tag = std::process::id() % 100_000;
    let mut node = Node {
        child: None,
        dir: tempfile::tempdir().expect("tempdir"),
        name: format!("storage-{tag}"),
        bridge: format!("ks{tag}"),
        netns_prefix: format!("ks{tag}-"),
        kubeconfig: kubeconfig.clone(),
        registry: registry.addr.clone(),
    };
    node.start();

    // The node registers and is Ready; the provisioner made the default class.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    eventually_or(
        WAIT,
        "the real node to be Ready",
        || async {
            let n = nodes.get_opt(&node.name).await.ok().flatten()?;
            n.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
        },
        || node.log(),
    )
    .await;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = eventually_or(
        WAIT,
        "the local-path StorageClass",
        || async { classes.get_opt("local-path").await.ok().flatten() },
        || node.log(),
    )
    .await;
    assert_eq!(class.provisioner, "keelson.io/local-path");
    assert_eq!(class.volume_binding_mode.as_deref(), Some("WaitForFirstConsumer"));
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(
        class.metadata.annotations.unwrap_or_default().get("storageclass.kubernetes.io/is-default-class"),
        Some(&"true".to_string())
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());

    // A pod whose claim does not exist is unschedulable, saying so.
    let orphan = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: orphan}}
spec:
  containers: [{{name: main, image: {image}, command: [sleep, '3600']}}]
  volumes: [{{name: v, persistentVolumeClaim: {{claimName: nope}}}}]
"
    );
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&orphan)).await;
    wait_pod(&pods, "orphan", &node, "unschedulable for its missing claim", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["message"].as_str().is_some_and(|m| m.contains("persistentvolumeclaim \"nope\" not found"))
            })
        })
    })
    .await;
    must_kubectl(&kubeconfig, &["delete", "pod", "orphan", "--wait=false"], None).await;

    // A StatefulSet whose claim template names no class: it gets the default one. The pod
    // writes its UID into the volume; a later pod finding it says so.
    let sts = format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  replicas: 1
  serviceName: web
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, 'if [ -f /data/first ]; then echo \"saw $(cat /data/first) as $POD_UID\" > /data/seen; else echo $POD_UID > /data/first; fi; exec sleep 3600']
        env: [{{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"
    );
    must_kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&sts)).await;
    let first = wait_pod(&pods, "web-0", &node, "Running", |p| p["status"]["phase"] == "Running").await;
    let first_uid = first["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(first["spec"]["nodeName"], node.name.as_str());

    let claim = to_value(&claims.get("data-web-0").await.unwrap());
    assert_eq!(claim["spec"]["storageClassName"], "local-path", "the default class: {claim}");
    assert_eq!(claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], node.name.as_str(), "{claim}");
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["status"]["capacity"]["storage"], "64Mi", "{claim}");
    assert_eq!(claim["status"]["accessModes"], json!(["ReadWriteOnce"]), "{claim}");
    let claim_uid = claim["metadata"]["uid"].as_str().unwrap().to_string();
    let pv_name = format!("pvc-{claim_uid}");
    assert_eq!(claim["spec"]["volumeName"], pv_name.as_str(), "{claim}");

    let pv = to_value(&volumes.get(&pv_name).await.unwrap());
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    assert_eq!(pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "keelson.io/local-path", "{pv}");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node.name]}]}]),
        "{pv}"
    );
    let claim_ref = &pv["spec"]["claimRef"];
    assert_eq!((claim_ref["namespace"].as_str(), claim_ref["name"].as_str()), (Some("default"), Some("data-web-0")));
    assert_eq!(claim_ref["uid"], claim_uid.as_str(), "{pv}");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["capacity"]["storage"], "64Mi");
    let dir = node.storage().join(&pv_name);
    assert_eq!(pv["spec"]["local"]["path"], dir.display().to_string().as_str(), "{pv}");
    let written = eventually_or(
        WAIT,
        "the pod's write to land in the volume's directory on the node",
        || async { read(&dir.join("first")) },
        || node.log(),
    )
    .await;
    assert_eq!(written, first_uid);

    // The pod goes; its replacement (a new pod, same claim) finds the data.
    pods.delete("web-0", &Default::default()).await.unwrap();
    let second = wait_pod(&pods, "web-0", &node, "replaced and Running", |p| {
        p["metadata"]["uid"] != first_uid.as_str() && p["status"]["phase"] == "Running"
    })
    .await;
    let second_uid = second["metadata"]["uid"].as_str().unwrap().to_string();
    let seen = eventually_or(
        WAIT,
        "the replacement to see the first pod's file",
        || async { read(&dir.join("seen")) },
        || node.log(),
    )
    .await;
    assert_eq!(seen, format!("saw {first_uid} as {second_uid}"));
    assert_eq!(to_value(&claims.get("data-web-0").await.unwrap())["metadata"]["uid"], claim_uid.as_str());

    // The Node authorizer lets a kubelet read the claim of a pod bound to it and the volume
    // bound to that claim; another node's kubelet, neither.
    for (who, want) in [(node.name.as_str(), 200), ("elsewhere", 403)] {
        let cert = client_cert(&up.pki(), node.dir.path(), &format!("system:node:{who}"), "system:nodes");
        let args: Vec<&str> = cert.iter().map(String::as_str).collect();
        for path in [
            format!("/api/v1/persistentvolumes/{pv_name}"),
            "/api/v1/namespaces/default/persistentvolumeclaims/data-web-0".into(),
        ] {
            let (code, body) = common::curl_api(&up.pki(), false, 30, &up.api, &args, &path).await;
            assert_eq!(code, want, "{who} GET {path}: {body}");
        }
    }

    // Scaled to zero the claim stays (retention policy Retain); deleted, its volume and
    // directory go.
    must_kubectl(&kubeconfig, &["scale", "statefulset", "web", "--replicas=0"], None).await;
    eventually_or(
        WAIT,
        "the StatefulSet's pod to be gone",
        || async { pods.get_opt("web-0").await.ok().flatten().is_none().then_some(()) },
        || node.log(),
    )
    .await;
    assert!(claims.get_opt("data-web-0").await.unwrap().is_some());
    assert!(dir.join("seen").exists());
    must_kubectl(&kubeconfig, &["delete", "pvc", "data-web-0", "--wait=false"], None).await;
    eventually_or(
        WAIT,
        "the volume and its directory to be deleted with the claim",
        || async { (volumes.get_opt(&pv_name).await.ok()?.is_none() && !dir.exists()).then_some(()) },
        || format!("volume: {:?}{}", dir.exists(), node.log()),
    )
    .await;

    must_kubectl(&kubeconfig, &["delete", "statefulset", "web"], None).await;
}
