//! `keelson cluster up|status|down` as a user runs them: three masters (each in its own
//! network namespace on a bridge as root; on loopback addresses otherwise) and two
//! simulated nodes; kubectl with the admin kubeconfig sees the nodes; status shows three
//! members up, one leader, one term; SIGKILL the leader and status shows a new one at a
//! higher term; `down` leaves no process, namespace or bridge behind. A guard takes the
//! cluster down (and failing that kills the recorded PIDs and deletes the namespaces)
//! whether the test passes or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually_or, keelson_bin, run, within};
use keelson_chaos::cluster::{layout, netns};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// Takes the cluster in `dir` down when dropped, however the test ended.
struct Guard {
    dir: PathBuf,
    /// `netns` mode: the names to delete if `cluster down` could not.
    prefix: Option<String>,
    masters: usize,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let down = Command::new(keelson_bin()).args(["cluster", "down", "--dir"]).arg(&self.dir).output();
        if down.as_ref().is_ok_and(|o| o.status.success()) {
            return;
        }
        eprintln!("guard: `keelson cluster down` failed ({down:?}); killing the recorded processes");
        for pid in recorded_pids(&self.dir) {
            if keelson_process(pid, &self.dir) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        if let Some(prefix) = &self.prefix {
            for i in 1..=self.masters {
                let _ = Command::new("ip").args(["netns", "delete", &format!("{prefix}-m{i}")]).status();
            }
            let _ = Command::new("ip").args(["link", "delete", &format!("{prefix}-br")]).status();
        }
    }
}

fn cluster_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap_or_default()).unwrap_or(Value::Null)
}

/// Every master's and the agent's PID in `cluster.json`.
fn recorded_pids(dir: &Path) -> Vec<u32> {
    let state = cluster_json(dir);
    let masters = state["masters"].as_array().cloned().unwrap_or_default();
    masters.iter().chain([&state["agent"]]).filter_map(|m| m["pid"].as_u64()).map(|p| p as u32).collect()
}

/// Is `pid` alive (not a zombie) and a keelson process of the cluster in `dir`?
fn keelson_process(pid: u32, dir: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !matches!(state, "" | "Z" | "X") && String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

fn keelson(args: &[&str], dir: &Path) -> (bool, String, String) {
    run(Command::new(keelson_bin()).args(args).arg("--dir").arg(dir))
}

/// `keelson cluster status --json`.
fn status(dir: &Path) -> Value {
    let (ok, out, err) = keelson(&["cluster", "status", "--json"], dir);
    assert!(ok, "keelson cluster status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
}

/// (leader's name, its term) when every master in `names` is up, exactly one of them
/// leads and they all have the same term.
fn agreed_leader(st: &Value, names: &[&str]) -> Option<(String, u64)> {
    let masters: Vec<&Value> =
        st["masters"].as_array()?.iter().filter(|m| names.contains(&m["name"].as_str().unwrap_or(""))).collect();
    if masters.len() != names.len() || !masters.iter().all(|m| m["up"] == true) {
        return None;
    }
    let leaders: Vec<&&Value> = masters.iter().filter(|m| m["is_leader"] == true).collect();
    let term = masters[0]["term"].as_u64()?;
    if leaders.len() != 1 || !masters.iter().all(|m| m["term"].as_u64() == Some(term)) {
        return None;
    }
    let name = leaders[0]["name"].as_str()?.to_string();
    (st["leader"].as_str() == Some(name.as_str())).then_some((name, term))
}

fn logs(dir: &Path) -> String {
    ["m1", "m2", "m3", "agent"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!("\n--- {n}.log (last 15 lines):\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_status_leader_kill_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let netns_mode = match netns::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("no network namespaces here ({why}): testing the loopback network");
            false
        }
    };
    let prefix = format!("kt{:x}", std::process::id() & 0xf_ffff);
    let mut args: Vec<String> = ["cluster", "up", "--masters", "3", "--simulate", "2", "--timeout", "90s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if netns_mode {
        let seed = layout::fnv1a(dir.as_os_str().as_encoded_bytes());
        let subnet = layout::choose_subnet(seed, &layout::used_routes()).expect("a free /24 for the test");
        args.extend(["--network", "netns", "--subnet", &subnet.to_string(), "--prefix", &prefix].map(String::from));
    } else {
        args.extend(["--network", "loopback"].map(String::from));
    }
    let _guard = Guard { dir: dir.clone(), prefix: netns_mode.then(|| prefix.clone()), masters: 3 };

    let mut up = tokio::process::Command::new(keelson_bin());
    up.args(&args).arg("--dir").arg(&dir).kill_on_drop(true);
    let out =
        within(Duration::from_secs(120), "keelson cluster up", up.output()).await.expect("run keelson cluster up");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "keelson cluster up failed:\n{stderr}{}", logs(&dir));
    let kubeconfig = dir.canonicalize().unwrap().join("admin.kubeconfig");
    assert_eq!(stdout.trim(), kubeconfig.display().to_string(), "up prints the admin kubeconfig's path");
    for i in 1..=3 {
        assert!(dir.join(format!("m{i}.kubeconfig")).exists(), "m{i}.kubeconfig");
    }
    let state = cluster_json(&dir);
    assert_eq!(state["masters"].as_array().map(Vec::len), Some(3), "cluster.json: {state}");
    let ips: Vec<&str> = state["masters"].as_array().unwrap().iter().map(|m| m["ip"].as_str().unwrap()).collect();
    assert_eq!(ips.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "distinct addresses: {ips:?}");
    if netns_mode {
        for i in 1..=3 {
            assert!(Path::new(&format!("/run/netns/{prefix}-m{i}")).exists(), "namespace {prefix}-m{i}");
            assert_eq!(state["masters"][i - 1]["netns"], format!("{prefix}-m{i}"));
        }
        assert!(Path::new(&format!("/sys/class/net/{prefix}-br")).exists(), "bridge {prefix}-br");
    }

    // The admin kubeconfig works with kubectl; the agent registered its two nodes.
    eventually_or(
        WAIT,
        "kubectl get nodes to list sim-0 and sim-1",
        || async {
            let mut kubectl = tokio::process::Command::new("kubectl");
            kubectl.arg("--kubeconfig").arg(&kubeconfig).args(["get", "nodes", "-o", "name", "--request-timeout=5s"]);
            let out = kubectl.kill_on_drop(true).output().await.ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            (out.status.success() && text.contains("node/sim-0") && text.contains("node/sim-1")).then_some(())
        },
        || logs(&dir),
    )
    .await;

    // Three members up, exactly one leader, one term.
    let all = ["m1", "m2", "m3"];
    let (leader, term) = eventually_or(
        WAIT,
        "status to show 3 members up with one leader and one term",
        || async { agreed_leader(&status(&dir), &all) },
        || format!("\nlast status: {}{}", status(&dir), logs(&dir)),
    )
    .await;
    let st = status(&dir);
    assert_eq!(st["masters"].as_array().map(Vec::len), Some(3));
    assert!(st["masters"].as_array().unwrap().iter().all(|m| m["running"] == true && m["pid"].as_u64().is_some()));

    // SIGKILL the leader: the other two elect a new one at a higher term.
    let li: usize = leader[1..].parse::<usize>().unwrap() - 1;
    let leader_pid = cluster_json(&dir)["masters"][li]["pid"].as_u64().expect("leader pid") as u32;
    assert!(keelson_process(leader_pid, &dir), "pid {leader_pid} is the leader's keelson server");
    let (ok, _, err) = run(Command::new("kill").args(["-KILL", &leader_pid.to_string()]));
    assert!(ok, "kill -KILL {leader_pid}: {err}");
    let survivors: Vec<&str> = all.iter().copied().filter(|n| *n != leader).collect();
    let (new_leader, new_term) = eventually_or(
        WAIT,
        "a new leader among the survivors",
        || async {
            let st = status(&dir);
            let killed = st["masters"].as_array()?.iter().find(|m| m["name"] == leader.as_str())?.clone();
            if killed["up"] == true || killed["running"] == true {
                return None;
            }
            agreed_leader(&st, &survivors)
        },
        || format!("\nlast status: {}{}", status(&dir), logs(&dir)),
    )
    .await;
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "new term {new_term} > {term}");

    // Down: no process, namespace or bridge left.
    let pids = recorded_pids(&dir);
    assert_eq!(pids.len(), 4, "three masters and the agent recorded: {}", cluster_json(&dir));
    let (ok, _, err) = keelson(&["cluster", "down"], &dir);
    assert!(ok, "keelson cluster down failed: {err}");
    assert!(err.contains("kept"), "down says the data is kept: {err}");
    for pid in pids.iter().chain([&leader_pid]) {
        assert!(!keelson_process(*pid, &dir), "pid {pid} still runs after cluster down");
    }
    assert!(recorded_pids(&dir).is_empty(), "cluster.json records no PIDs after down");
    assert!(dir.join("m1").is_dir(), "the data is kept");
    if netns_mode {
        for i in 1..=3 {
            assert!(!Path::new(&format!("/run/netns/{prefix}-m{i}")).exists(), "namespace {prefix}-m{i} deleted");
            assert!(!Path::new(&format!("/sys/class/net/{prefix}-m{i}")).exists(), "veth {prefix}-m{i} deleted");
        }
        assert!(!Path::new(&format!("/sys/class/net/{prefix}-br")).exists(), "bridge {prefix}-br deleted");
    }
    let (ok, _, err) = keelson(&["cluster", "status"], &dir);
    assert!(ok, "status of a cluster that is down: {err}");
}

#[test]
fn status_and_down_without_a_cluster_say_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for cmd in [["cluster", "status"], ["cluster", "down"]] {
        let (ok, _, err) = keelson(&cmd, tmp.path());
        assert!(!ok && err.contains("no cluster in") && err.contains("cluster up"), "{cmd:?}: {err}");
    }
}

/// The library as the chaos runner uses it, in this process: SIGKILL the leader and start
/// it again, SIGSTOP/SIGCONT a follower; dropping the cluster kills the masters and
/// deletes its namespaces and bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_kill_start_pause_resume_and_drop() {
    use keelson_chaos::cluster::{Cluster, ClusterSpec, NetworkMode};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("lib");
    let mut spec = ClusterSpec::new(3, &dir, keelson_bin());
    let prefix = format!("kl{:x}", std::process::id() & 0xf_ffff);
    if let NetworkMode::Netns { .. } = spec.network {
        let seed = layout::fnv1a(dir.as_os_str().as_encoded_bytes()).wrapping_add(7919);
        let subnet = layout::choose_subnet(seed, &layout::used_routes()).expect("a free /24 for the test");
        spec.network = NetworkMode::Netns { subnet: Some(subnet), prefix: Some(prefix.clone()) };
    }
    spec.election_timeout_ms = Some(200);
    let netns_mode = spec.network != NetworkMode::Loopback;
    let _guard = Guard { dir: dir.clone(), prefix: netns_mode.then(|| prefix.clone()), masters: 3 };
    let mut c = Cluster::up(spec).await.unwrap_or_else(|e| panic!("Cluster::up: {e}"));
    assert_eq!(c.len(), 3);
    assert_eq!(c.netns(0).is_some(), c.net().is_netns());
    let leader = c.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}"));
    let term = c.status().await[leader].term;

    // Kill the leader: another takes over at a higher term; the old one comes back as a follower.
    let old_pid = c.pid(leader).expect("leader pid");
    c.kill(leader).unwrap();
    assert!(!c.is_running(leader) && c.pid(leader).is_none());
    assert!(std::fs::metadata(format!("/proc/{old_pid}")).is_err(), "the killed master was reaped");
    let next = eventually_or(
        WAIT,
        "a new leader",
        || async { c.leader().await.filter(|&l| l != leader) },
        || (0..3).map(|i| c.log_tail(i, 15)).collect::<Vec<_>>().join("\n---\n"),
    )
    .await;
    assert!(c.status().await[next].term > term);
    c.start(leader).unwrap();
    assert!(c.is_running(leader) && c.pid(leader) != Some(old_pid));
    assert_eq!(cluster_json(&dir)["masters"][leader]["pid"].as_u64(), c.pid(leader).map(u64::from), "saved");
    eventually_or(
        WAIT,
        "the restarted master to answer as a follower",
        || async { c.status().await[leader].up.then_some(()) },
        || c.log_tail(leader, 30),
    )
    .await;

    // Pause a follower: it stops answering; resumed, it answers again.
    let now = c.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}"));
    let f = (0..3).find(|&i| i != now).unwrap();
    c.pause(f).unwrap();
    assert!(c.is_paused(f));
    let st = c.status().await;
    assert!(!st[f].up && st[f].paused && st[f].running, "{:?}", st[f]);
    c.resume(f).unwrap();
    assert!(!c.is_paused(f));
    eventually_or(WAIT, "the resumed master to answer", || async { c.status().await[f].up.then_some(()) }, String::new)
        .await;

    // A client pinned to a master, failing fast.
    let client = c.kube_client(f).await.unwrap();
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    ns.get("default").await.expect("the default namespace through the pinned client");

    let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
    let netns_names: Vec<String> = (0..3).filter_map(|i| c.netns(i).map(String::from)).collect();
    c.pause(f).unwrap();
    drop(c);
    for pid in pids {
        assert!(!keelson_process(pid, &dir), "pid {pid} still runs after the cluster was dropped");
    }
    for ns in netns_names {
        assert!(!Path::new(&format!("/run/netns/{ns}")).exists(), "namespace {ns} deleted on drop");
    }
    assert!(!Path::new(&format!("/sys/class/net/{prefix}-br")).exists(), "bridge deleted on drop");
}
