//! Unit tests of `cni.rs` (conflists, arguments, chaining, errors) with a recording fake
//! plugin runner.

use super::*;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::Mutex;

fn cfg() -> CniConfig {
    CniConfig {
        plugin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        bridge: "keelson0".into(),
        pod_cidr: "10.244.1.0/24".into(),
        ipam_data_dir: "/var/lib/keelson/ipam".into(),
        mtu: Some(1400),
        network_name: "keelson".into(),
    }
}

fn pod() -> PodCniArgs {
    PodCniArgs { namespace: "default".into(), name: "web-0".into(), uid: "4f1c6a0e-7d3b-4c1e-9a51-2b1c3d4e5f60".into() }
}

#[test]
fn conflist_content() {
    let list = cfg().conflist();
    assert_eq!(
        list,
        json!({
            "cniVersion": "1.0.0",
            "name": "keelson",
            "plugins": [{
                "type": "bridge",
                "bridge": "keelson0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": 1400,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.244.1.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": "/var/lib/keelson/ipam"
                }
            }]
        })
    );
    let mut c = cfg();
    c.mtu = None;
    c.pod_cidr = "fd00:10:244:1::/64".into();
    let list = c.conflist();
    assert!(list["plugins"][0].get("mtu").is_none());
    assert_eq!(list["plugins"][0]["ipam"]["routes"], json!([{"dst": "::/0"}]));
    assert_eq!(c.loopback_config(), json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"}));
}

#[test]
fn config_validation() {
    assert!(cfg().validate().is_ok());
    assert!(CniConfig::new("10.244.0.0/24").validate().is_ok());
    type Mutation = fn(&mut CniConfig);
    let cases: Vec<(&str, Mutation)> = vec![
        ("bridge name", |c| c.bridge = "a-very-long-bridge-name".into()),
        ("bridge name", |c| c.bridge = String::new()),
        ("pod CIDR", |c| c.pod_cidr = "10.244.1.0".into()),
        ("pod CIDR", |c| c.pod_cidr = "10.244.1.0/40".into()),
        ("network name", |c| c.network_name = "-x".into()),
        ("network name", |c| c.network_name = "a/b".into()),
        ("MTU", |c| c.mtu = Some(20)),
        ("absolute", |c| c.ipam_data_dir = "rel/dir".into()),
        ("no plugin directories", |c| c.plugin_dirs.clear()),
        ("CNI_PATH", |c| c.plugin_dirs.push("/a:b".into())),
    ];
    for (want, mutate) in cases {
        let mut c = cfg();
        mutate(&mut c);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, CniError::InvalidConfig(_)));
        assert!(err.to_string().contains(want), "{err} should mention {want}");
        let cni = Cni::new(c);
        assert!(matches!(cni.verify_plugins(), Err(CniError::InvalidConfig(_))));
        let netns = Path::new("/proc/self/ns/net");
        let added = futures::executor::block_on(cni.add("abc", netns, "eth0", &pod()));
        assert!(matches!(added, Err(CniError::InvalidConfig(_))));
        let deleted = futures::executor::block_on(cni.del("abc", None, "eth0"));
        assert!(matches!(deleted, Err(CniError::InvalidConfig(_))));
    }
}

#[test]
fn cni_args_formatting() {
    assert_eq!(
        pod().cni_args("abc123").unwrap(),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
         K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=4f1c6a0e-7d3b-4c1e-9a51-2b1c3d4e5f60"
    );
    for bad in ["a;b", "a=b", "", "a\nb"] {
        let mut p = pod();
        p.name = bad.into();
        let err = p.cni_args("abc").unwrap_err();
        assert!(matches!(err, CniError::InvalidArgument(_)), "{bad:?}");
        assert!(err.to_string().contains("K8S_POD_NAME"), "{err}");
    }
}

fn output(code: i32, stdout: &str, stderr: &str) -> PluginOutput {
    PluginOutput { exit_code: Some(code), stdout: stdout.as_bytes().to_vec(), stderr: stderr.as_bytes().to_vec() }
}

#[test]
fn error_parsing() {
    let e = plugin_error(
        "bridge",
        CniCommand::Add,
        &output(1, r#"{"code": 999, "msg": "invalid CIDR address: 10.250.999.0/24"}"#, ""),
    );
    assert!(matches!(
        &e,
        CniError::Plugin { plugin, command: CniCommand::Add, code: Some(999), msg, details: None }
            if plugin == "bridge" && msg == "invalid CIDR address: 10.250.999.0/24"
    ));
    assert_eq!(e.code(), Some(999));
    assert_eq!(e.to_string(), "CNI plugin bridge ADD failed (code 999): invalid CIDR address: 10.250.999.0/24");

    // The spec's example, with details and a reserved code.
    let e = plugin_error(
        "host-local",
        CniCommand::Del,
        &output(
            1,
            r#"{"cniVersion": "1.0.0", "code": 7, "msg": "Invalid Configuration", "details": "Network 192.168.0.0/31 too small to allocate from."}"#,
            "",
        ),
    );
    assert_eq!(
        e.to_string(),
        "CNI plugin host-local DEL failed (code 7, invalid network config): Invalid Configuration \
         (Network 192.168.0.0/31 too small to allocate from.)"
    );

    // No error object: stderr and the exit status stand in.
    let e = plugin_error("weird", CniCommand::Check, &output(2, "", "panic: boom\n"));
    assert_eq!(e.code(), None);
    assert_eq!(e.to_string(), "CNI plugin weird CHECK failed: exit status 2: panic: boom");
    let e = plugin_error("weird", CniCommand::Add, &output(2, "not json", ""));
    assert_eq!(e.to_string(), "CNI plugin weird ADD failed: exit status 2: not json");
    let e = plugin_error("weird", CniCommand::Add, &PluginOutput { exit_code: None, stdout: vec![], stderr: vec![] });
    assert_eq!(e.to_string(), "CNI plugin weird ADD failed: killed by a signal, no output");
    // A JSON object that is not an error object is not mistaken for one.
    let e = plugin_error("weird", CniCommand::Add, &output(1, r#"{"cniVersion":"1.0.0"}"#, ""));
    assert_eq!(e.code(), None);
}

#[test]
fn not_found_names_plugin_and_dirs() {
    let e =
        CniError::PluginNotFound { plugin: "bridge".into(), dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()] };
    assert_eq!(e.to_string(), "CNI plugin \"bridge\" not found in /opt/cni/bin, /usr/lib/cni");
}

/// Records invocations and answers from a script of outputs (success `{}` when the
/// script runs out).
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<PluginInvocation>>,
    answers: Mutex<VecDeque<PluginOutput>>,
}

impl Recorder {
    fn answer(&self, out: PluginOutput) {
        self.answers.lock().unwrap().push_back(out);
    }
    fn calls(&self) -> Vec<PluginInvocation> {
        self.calls.lock().unwrap().clone()
    }
}

impl PluginExec for Recorder {
    fn exec(&self, inv: PluginInvocation) -> BoxFuture<'_, Result<PluginOutput, CniError>> {
        self.calls.lock().unwrap().push(inv);
        let out = self.answers.lock().unwrap().pop_front().unwrap_or_else(|| output(0, "{}", ""));
        Box::pin(async move { Ok(out) })
    }
}

fn stdin_json(inv: &PluginInvocation) -> Value {
    serde_json::from_slice(&inv.stdin).unwrap()
}

/// A two-plugin list, to see prevResult chained and DEL reversed.
fn two_plugin_cni(rec: Arc<Recorder>) -> Cni {
    let mut cni = Cni::with_exec(cfg(), rec);
    cni.conflist["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "1"}}));
    cni
}

const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"keelson0"},{"name":"eth0","sandbox":"/proc/self/ns/net"}],"ips":[{"interface":1,"address":"10.244.1.5/24","gateway":"10.244.1.1"}]}"#;

#[tokio::test]
async fn add_runs_loopback_then_chain_with_prev_result() {
    let rec = Arc::new(Recorder::default());
    let cni = two_plugin_cni(rec.clone());
    rec.answer(output(0, r#"{"cniVersion":"1.0.0"}"#, "")); // loopback
    rec.answer(output(0, BRIDGE_RESULT, "")); // bridge
    rec.answer(output(0, BRIDGE_RESULT, "")); // tuning passes it on
    let netns = Path::new("/proc/self/ns/net");
    let result = cni.add("abc123", netns, "eth0", &pod()).await.unwrap();
    assert_eq!(result.pod_ip(), Some("10.244.1.5".parse().unwrap()));
    assert_eq!(result.gateway, Some("10.244.1.1".parse().unwrap()));

    let calls = rec.calls();
    let plugins: Vec<_> = calls.iter().map(|c| c.plugin.as_str()).collect();
    assert_eq!(plugins, ["loopback", "bridge", "tuning"]);
    let lo = &calls[0];
    assert_eq!(lo.env_var("CNI_IFNAME"), Some("lo"));
    assert_eq!(stdin_json(lo), cfg().loopback_config());
    let bridge = &calls[1];
    assert_eq!(
        bridge.env,
        vec![
            ("CNI_COMMAND".to_string(), "ADD".to_string()),
            ("CNI_CONTAINERID".into(), "abc123".into()),
            ("CNI_NETNS".into(), "/proc/self/ns/net".into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_ARGS".into(), pod().cni_args("abc123").unwrap()),
            ("CNI_PATH".into(), "/opt/cni/bin:/usr/lib/cni".into()),
        ]
    );
    let conf = stdin_json(bridge);
    assert_eq!(conf["name"], "keelson");
    assert_eq!(conf["cniVersion"], "1.0.0");
    assert_eq!(conf["type"], "bridge");
    assert!(conf.get("prevResult").is_none());
    let conf = stdin_json(&calls[2]);
    assert_eq!(conf["name"], "keelson");
    assert_eq!(conf["prevResult"], serde_json::from_str::<Value>(BRIDGE_RESULT).unwrap());
}

#[tokio::test]
async fn failed_add_is_torn_down_and_reports_the_plugin_error() {
    let rec = Arc::new(Recorder::default());
    let cni = two_plugin_cni(rec.clone());
    rec.answer(output(0, "{}", ""));
    rec.answer(output(0, BRIDGE_RESULT, ""));
    rec.answer(output(1, r#"{"code":7,"msg":"bad sysctl"}"#, ""));
    let err = cni.add("abc123", Path::new("/proc/self/ns/net"), "eth0", &pod()).await.unwrap_err();
    assert!(matches!(&err, CniError::Plugin { plugin, code: Some(7), .. } if plugin == "tuning"), "{err}");
    let calls = rec.calls();
    let seq: Vec<_> = calls.iter().map(|c| format!("{} {}", c.command, c.plugin)).collect();
    assert_eq!(seq, ["ADD loopback", "ADD bridge", "ADD tuning", "DEL tuning", "DEL bridge", "DEL loopback"]);
}

#[tokio::test]
async fn unparseable_add_result_is_an_error() {
    let rec = Arc::new(Recorder::default());
    let cni = Cni::with_exec(cfg(), rec.clone());
    rec.answer(output(0, "{}", ""));
    rec.answer(output(0, "garbage", ""));
    let err = cni.add("abc123", Path::new("/proc/self/ns/net"), "eth0", &pod()).await.unwrap_err();
    assert!(matches!(&err, CniError::BadResult { plugin, .. } if plugin == "bridge"), "{err}");
    assert!(err.to_string().contains("garbage"), "{err}");
}

#[tokio::test]
async fn del_reverses_keeps_going_and_blanks_a_missing_netns() {
    let rec = Arc::new(Recorder::default());
    let cni = two_plugin_cni(rec.clone());
    rec.answer(output(1, r#"{"code":11,"msg":"busy"}"#, "")); // tuning fails
    let err = cni.del("abc123", Some(Path::new("/run/netns/keelson-test-gone")), "eth0").await.unwrap_err();
    assert_eq!(err.code(), Some(11));
    let calls = rec.calls();
    let seq: Vec<_> = calls.iter().map(|c| format!("{} {}", c.command, c.plugin)).collect();
    assert_eq!(seq, ["DEL tuning", "DEL bridge", "DEL loopback"]);
    for c in &calls {
        assert_eq!(c.env_var("CNI_NETNS"), Some(""));
        assert_eq!(c.env_var("CNI_ARGS"), Some("IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=abc123"));
        assert!(stdin_json(c).get("prevResult").is_none());
    }
}

#[tokio::test]
async fn check_gives_every_plugin_the_add_result() {
    let rec = Arc::new(Recorder::default());
    let cni = two_plugin_cni(rec.clone());
    let prev = CniResult::from_json(serde_json::from_str(BRIDGE_RESULT).unwrap()).unwrap();
    cni.check("abc123", Path::new("/proc/self/ns/net"), "eth0", &pod(), &prev).await.unwrap();
    let calls = rec.calls();
    let seq: Vec<_> = calls.iter().map(|c| format!("{} {}", c.command, c.plugin)).collect();
    assert_eq!(seq, ["CHECK bridge", "CHECK tuning", "CHECK loopback"]);
    assert_eq!(stdin_json(&calls[0])["prevResult"], prev.raw);
    assert_eq!(stdin_json(&calls[1])["prevResult"], prev.raw);
}

#[tokio::test]
async fn arguments_are_validated_before_anything_runs() {
    let rec = Arc::new(Recorder::default());
    let cni = Cni::with_exec(cfg(), rec.clone());
    let ns = Path::new("/proc/self/ns/net");
    for (id, ifname) in
        [("", "eth0"), ("-x", "eth0"), ("a;b", "eth0"), ("abc", ""), ("abc", "a/b"), ("abc", "sixteen-chars-xx")]
    {
        let err = cni.add(id, ns, ifname, &pod()).await.unwrap_err();
        assert!(matches!(err, CniError::InvalidArgument(_)), "{id:?} {ifname:?}: {err}");
        let err = cni.del(id, None, ifname).await.unwrap_err();
        assert!(matches!(err, CniError::InvalidArgument(_)), "{id:?} {ifname:?}: {err}");
    }
    let err = cni.add("abc", Path::new("/run/netns/keelson-test-gone"), "eth0", &pod()).await.unwrap_err();
    assert!(matches!(err, CniError::InvalidArgument(_)), "{err}");
    assert!(rec.calls().is_empty());
}

#[test]
fn verify_plugins_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.plugin_dirs = vec![dir.path().to_path_buf()];
    let cni = Cni::new(c);
    let err = cni.verify_plugins().unwrap_err();
    assert!(matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "loopback"), "{err}");
}
