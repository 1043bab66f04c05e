//! Real `etcdctl` (3.4, ETCDCTL_API=3) against real keelson masters, bad input on the
//! etcd endpoint (an oversized put, malformed gRPC messages), and a data dir refused
//! when started with other flags.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use keelson_store::pb::etcdserverpb::kv_client::KvClient;
use keelson_store::pb::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_util::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

fn etcdctl(ep: &str) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", ep, "--dial-timeout", "5s", "--command-timeout", "15s"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Run etcdctl to completion (feeding `stdin`); panics unless it succeeds. Returns stdout.
async fn must_etcdctl_stdin(ep: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = etcdctl(ep);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("etcdctl stdin");
        w.write_all(input.as_bytes()).await.expect("write etcdctl stdin");
    } // dropping `w` closes stdin
    let out = within(WAIT, &format!("etcdctl {args:?} at {ep}"), child.wait_with_output()).await.expect("etcdctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "etcdctl {args:?} at {ep} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

async fn must_etcdctl(ep: &str, args: &[&str]) -> String {
    must_etcdctl_stdin(ep, args, None).await
}

async fn must_etcdctl_json(ep: &str, args: &[&str]) -> Value {
    let out = must_etcdctl(ep, &[args, &["-w", "json"]].concat()).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?} -w json printed {out:?}: {e}"))
}

/// `etcdctl put -w json`; returns the revision of the write.
async fn must_put_rev(ep: &str, key: &str, value: &str) -> i64 {
    let v = must_etcdctl_json(ep, &["put", key, value]).await;
    v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("put {key}: no header.revision in {v}"))
}

/// The non-empty lines of etcdctl's simple output.
fn lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.is_empty()).collect()
}

/// Standard base64, as Go's encoding/json prints []byte.
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// (create_revision, mod_revision, version) of a kv in etcdctl's JSON.
fn revs(kv: &Value) -> (Option<i64>, Option<i64>, Option<i64>) {
    (kv["create_revision"].as_i64(), kv["mod_revision"].as_i64(), kv["version"].as_i64())
}

/// `etcdctl lease grant <ttl>`; returns the lease ID as etcdctl prints it (hex).
async fn must_grant(ep: &str, ttl: u32) -> String {
    let out = must_etcdctl(ep, &["lease", "grant", &ttl.to_string()]).await;
    match out.split_whitespace().collect::<Vec<_>>()[..] {
        ["lease", id, "granted", "with", t] if t == format!("TTL({ttl}s)") => id.to_string(),
        _ => panic!("unexpected lease grant output {out:?}"),
    }
}

/// A long-running etcdctl (watch, lease keep-alive) whose stdout is read line by line.
struct EtcdctlChild {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl EtcdctlChild {
    fn spawn(ep: &str, args: &[&str]) -> EtcdctlChild {
        let mut child = etcdctl(ep).args(args).stdout(Stdio::piped()).spawn().expect("spawn etcdctl");
        let out = BufReader::new(child.stdout.take().expect("etcdctl stdout")).lines();
        EtcdctlChild { child, out, seen: Vec::new() }
    }

    /// Read lines until `done(non-empty lines so far)`, failing after WAIT or if the output ends.
    async fn must_read_until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let (out, seen) = (&mut self.out, &mut self.seen);
        let read = tokio::time::timeout(WAIT, async {
            while !done(seen) {
                match out.next_line().await {
                    Ok(Some(l)) if l.is_empty() => {}
                    Ok(Some(l)) => seen.push(l),
                    other => panic!("etcdctl output ended ({other:?}) before {what}; it printed {seen:?}"),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "timed out after {WAIT:?} waiting for {what}; etcdctl printed {:?}", self.seen);
    }

    /// SIGKILL this etcdctl (by its PID) and reap it.
    async fn kill(mut self) {
        self.child.kill().await.expect("kill etcdctl");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_txn_watch_and_lease_commands() {
    init_tracing();
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let ep = |i: usize| c.masters[i].etcd_addr.clone();
    let (pod0, pod1, pod2) =
        ("/registry/pods/default/web-0", "/registry/pods/default/web-1", "/registry/pods/default/web-2");

    tracing::info!("--- put (to followers and the leader) and get --prefix");
    let r0 = must_put_rev(&ep(f1), pod0, "v0").await;
    let r1 = must_put_rev(&ep(leader), pod1, "v1").await;
    assert_eq!(must_etcdctl(&ep(f2), &["put", "/registry/secrets/default/web", "svc"]).await.trim(), "OK");
    assert!(r1 > r0, "revisions must grow: {r0} then {r1}");
    let got = must_etcdctl(&ep(f2), &["get", "--prefix", "/registry/pods/default/"]).await;
    assert_eq!(lines(&got), [pod0, "v0", pod1, "v1"]);
    let keys = must_etcdctl(&ep(leader), &["get", "--prefix", "--keys-only", "/registry/pods/"]).await;
    assert_eq!(lines(&keys), [pod0, pod1]);
    let v = must_etcdctl_json(&ep(f1), &["get", "--prefix", "/registry/pods/"]).await;
    assert_eq!(v["count"], 2, "{v}");
    assert_eq!(v["header"]["revision"], r1 + 1, "header revision is the latest write (the secret): {v}");
    let kvs = v["kvs"].as_array().unwrap_or_else(|| panic!("no kvs in {v}"));
    assert_eq!(kvs.len(), 2, "{v}");
    for (kv, (key, value, rev)) in kvs.iter().zip([(pod0, "v0", r0), (pod1, "v1", r1)]) {
        assert_eq!((kv["key"].as_str(), kv["value"].as_str()), (Some(&*b64(key)), Some(&*b64(value))), "{v}");
        assert_eq!(revs(kv), (Some(rev), Some(rev), Some(1)), "create/mod revision and version of {key}: {v}");
    }
    let r3 = must_put_rev(&ep(f2), pod0, "v0b").await;
    let v = must_etcdctl_json(&ep(leader), &["get", pod0]).await;
    assert_eq!(revs(&v["kvs"][0]), (Some(r0), Some(r3), Some(2)), "an update keeps create_revision: {v}");

    tracing::info!("--- del, single and --prefix, printing the count");
    assert_eq!(must_etcdctl(&ep(f1), &["del", pod0]).await.trim(), "1");
    assert_eq!(must_etcdctl(&ep(leader), &["del", pod0]).await.trim(), "0");
    must_put_rev(&ep(leader), pod2, "v2").await;
    assert_eq!(must_etcdctl(&ep(f2), &["del", "--prefix", "/registry/pods/"]).await.trim(), "2");
    assert_eq!(must_etcdctl(&ep(f1), &["get", "--prefix", "/registry/pods/"]).await, "");
    let svc = must_etcdctl(&ep(f1), &["get", "--prefix", "/registry/secrets/"]).await;
    assert_eq!(lines(&svc), ["/registry/secrets/default/web", "svc"], "del --prefix must not reach other prefixes");

    tracing::info!("--- txn with a mod() compare: SUCCESS, then FAILURE on the stale revision");
    let cfg = "/registry/configmaps/kube-system/cfg";
    let rev = must_put_rev(&ep(leader), cfg, "v1").await;
    let script = format!("mod(\"{cfg}\") = \"{rev}\"\n\nput {cfg} v2\n\nget {cfg}\n\n");
    let out = must_etcdctl_stdin(&ep(f1), &["txn"], Some(&script)).await;
    assert_eq!(lines(&out), ["SUCCESS", "OK"], "{out:?}");
    let out = must_etcdctl_stdin(&ep(f2), &["txn"], Some(&script)).await;
    assert_eq!(lines(&out), ["FAILURE", cfg, "v2"], "{out:?}");
    let v = must_etcdctl_json(&ep(leader), &["get", cfg]).await;
    assert_eq!((v["kvs"][0]["value"].as_str(), revs(&v["kvs"][0]).2), (Some(&*b64("v2")), Some(2)), "{v}");

    tracing::info!("--- watch --prefix --rev: history, then live events, until killed");
    let (wa, wb) = ("/registry/configmaps/watched/a", "/registry/configmaps/watched/b");
    let wrev = must_put_rev(&ep(f2), wa, "a1").await;
    let mut watch = EtcdctlChild::spawn(
        &ep(f1),
        &["watch", "--prefix", "/registry/configmaps/watched/", "--rev", &wrev.to_string()],
    );
    must_put_rev(&ep(leader), "/registry/configmaps/other/x", "not watched").await;
    must_put_rev(&ep(leader), wb, "b1").await;
    assert_eq!(must_etcdctl(&ep(f2), &["del", wa]).await.trim(), "1");
    let expected = ["PUT", wa, "a1", "PUT", wb, "b1", "DELETE", wa];
    watch.must_read_until("the watch to print two puts and a delete", |seen| seen.len() >= expected.len()).await;
    assert_eq!(watch.seen, expected);
    watch.kill().await;

    tracing::info!("--- lease grant, put --lease, timetolive --keys, keep-alive, revoke");
    let id = must_grant(&ep(f1), 60).await;
    let ev = "/registry/events/default/web-0.1";
    assert_eq!(must_etcdctl(&ep(f2), &["put", "--lease", &id, ev, "scheduled"]).await.trim(), "OK");
    let ttl = must_etcdctl(&ep(leader), &["lease", "timetolive", "--keys", &id]).await;
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{ttl:?}");
    assert!(ttl.trim_end().ends_with(&format!("attached keys([{ev}])")), "{ttl:?}");
    // etcdctl sends a keep-alive every TTL/3: a 3 s lease gives two within ~1 s.
    let short_id = must_grant(&ep(f2), 3).await;
    let mut ka = EtcdctlChild::spawn(&ep(f1), &["lease", "keep-alive", &short_id]);
    let want = format!("lease {short_id} keepalived with TTL(3)");
    ka.must_read_until("two keep-alive responses", |seen| seen.iter().filter(|l| **l == want).count() >= 2).await;
    ka.kill().await;
    assert_eq!(must_etcdctl(&ep(f2), &["lease", "revoke", &id]).await.trim(), format!("lease {id} revoked"));
    assert_eq!(must_etcdctl(&ep(f1), &["get", ev]).await, "", "revoking the lease deletes its key");
    assert_eq!(
        must_etcdctl(&ep(leader), &["lease", "timetolive", &id]).await.trim(),
        format!("lease {id} already expired")
    );
}

/// `etcdctl member list` rows (ID, status, name, peer URLs, client URLs, learner), by name.
async fn must_member_rows(ep: &str) -> Vec<Vec<String>> {
    let out = must_etcdctl(ep, &["member", "list"]).await;
    let mut rows: Vec<Vec<String>> = lines(&out).iter().map(|l| l.split(", ").map(String::from).collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 6), "member list printed {out:?}");
    rows.sort_by(|a, b| a[2].cmp(&b[2]));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_list_and_endpoint_status() {
    init_tracing();
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let follower = (leader + 1) % 3;
    let ep = c.masters[follower].etcd_addr.clone();

    tracing::info!("--- member list: m1..m3 with their IDs, peer and client URLs");
    // Each master registers its client URL through the leader shortly after start.
    let rows = eventually(WAIT, "every member's client URL in member list", || async {
        let rows = must_member_rows(&ep).await;
        (rows.len() == 3 && rows.iter().all(|r| !r[4].is_empty())).then_some(rows)
    })
    .await;
    for (row, m) in rows.iter().zip(&c.masters) {
        let want = [
            &row[0],
            "started",
            &m.name,
            &format!("http://{}", m.peer_addr),
            &format!("http://{}", m.etcd_addr),
            "false",
        ];
        assert_eq!(row.iter().map(String::as_str).collect::<Vec<_>>(), want, "member list row for {}", m.name);
    }

    tracing::info!("--- endpoint status -w json on all three endpoints");
    let eps = c.masters.iter().map(|m| m.etcd_addr.as_str()).collect::<Vec<_>>().join(",");
    let v = must_etcdctl_json(&eps, &["endpoint", "status"]).await;
    let arr = v.as_array().unwrap_or_else(|| panic!("endpoint status is not an array: {v}"));
    assert_eq!(arr.len(), 3, "{v}");
    let leader_id = arr[0]["Status"]["leader"].as_u64().expect("leader");
    for (s, m) in arr.iter().zip(&c.masters) {
        assert_eq!(s["Endpoint"], m.etcd_addr, "{v}");
        let st = &s["Status"];
        assert_eq!(st["leader"].as_u64(), Some(leader_id), "every master names the same leader: {v}");
        let raft = ["raftTerm", "raftIndex", "raftAppliedIndex"].map(|f| st[f].as_u64().unwrap_or(0));
        assert!(raft.iter().all(|&n| n >= 1) && st["version"] == "3.4.0", "raft term/index, version: {st}");
        // The member ID it reports is its own in `member list`.
        // etcdctl prints member IDs in hex without leading zeros.
        let id = format!("{:x}", st["header"]["member_id"].as_u64().expect("member_id"));
        assert!(rows.iter().any(|r| r[0] == id && r[2] == m.name), "{id} is {} in member list {rows:?}", m.name);
    }
    assert_eq!(arr[leader]["Status"]["header"]["member_id"].as_u64(), Some(leader_id), "the harness's leader: {v}");
}

async fn must_range(kv: &mut KvClient<Channel>, key: &str) -> RangeResponse {
    let req = RangeRequest { key: key.into(), ..Default::default() };
    within(WAIT, "a range", kv.range(req)).await.unwrap_or_else(|e| panic!("range {key}: {e}")).into_inner()
}

/// Passes raw bytes through gRPC framing, to send what no generated client would.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_call(c: &Cluster, i: usize, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(c.channel(i).await);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let call = grpc.unary(tonic::Request::new(body), path, RawCodec);
    within(Duration::from_secs(10), "an answer to a raw gRPC call", call).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused() {
    init_tracing();
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(&[0, 1, 2]).await;
    let follower = (leader + 1) % 3;

    tracing::info!("--- a 2 MiB put, at a follower and at the leader");
    let key = "/registry/secrets/default/huge";
    for i in [follower, leader] {
        let mut kv = c.kv(i).await;
        let before = must_range(&mut kv, key).await.header.expect("header").revision;
        let put = PutRequest { key: key.into(), value: vec![b'x'; 2 << 20], ..Default::default() };
        let err =
            within(WAIT, "the oversized put to be refused", kv.put(put)).await.expect_err("a 2 MiB put must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("etcdserver: request is too large"), "{err:?}");
        let after = must_range(&mut kv, key).await;
        assert!(after.kvs.is_empty() && after.count == 0, "the oversized key must not exist: {after:?}");
        assert_eq!(after.header.expect("header").revision, before, "a refused put must not move the revision");
    }

    tracing::info!("--- malformed PutRequests on /etcdserverpb.KV/Put get an error, not a hang");
    let put_path = "/etcdserverpb.KV/Put";
    // First a well-formed PutRequest (key, value) through the same raw codec.
    let ok_key = "/registry/raw/ok";
    let good = [&[0x0a, ok_key.len() as u8][..], ok_key.as_bytes(), &[0x12, 1, b'v']].concat();
    raw_call(&c, follower, put_path, good).await.expect("a well-formed raw PutRequest succeeds");
    let garbage: [(&str, Vec<u8>); 4] = [
        ("field 1 (key, bytes) sent as a varint", vec![0x08, 0x05]),
        ("a length prefix past the end", [&[0x0a, 0x7f][..], b"short"].concat()),
        ("an endless varint", vec![0xff; 16]),
        ("field 0", vec![0x00, 0x01]),
    ];
    for i in [follower, leader] {
        for (what, body) in &garbage {
            let err = raw_call(&c, i, put_path, body.clone()).await.expect_err(what);
            tracing::info!(what, code = ?err.code(), msg = err.message(), "refused");
            assert_ne!(err.code(), Code::Ok, "{what}");
        }
        let err = raw_call(&c, i, "/etcdserverpb.KV/NoSuchMethod", vec![]).await.expect_err("unknown method");
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        let err = raw_call(&c, i, put_path, vec![]).await.expect_err("an empty PutRequest has no key");
        assert!(err.code() == Code::InvalidArgument && err.message().contains("key is not provided"), "{err:?}");
    }

    tracing::info!("--- every master still serves, and is still running");
    for i in 0..3 {
        let mut kv = c.kv(i).await;
        let k = format!("/registry/configmaps/default/after-{i}");
        must_put(&mut kv, &k, "fine").await;
        assert_eq!(must_get(&mut kv, &k, false).await.as_deref(), Some(&b"fine"[..]));
        let child = c.masters[i].child.as_mut().expect("child");
        assert!(child.try_wait().expect("try_wait").is_none(), "master {i} exited:\n{}", c.log_text(i));
    }
    assert_eq!(must_get(&mut c.kv(leader).await, ok_key, false).await.as_deref(), Some(&b"v"[..]));
}

/// Start master `i` with the cluster's current flags; it must exit non-zero saying why.
async fn must_refuse(c: &Cluster, i: usize, what: &str) {
    let mut cmd = Command::from(c.command(i));
    cmd.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let out = within(WAIT, &format!("a master started with {what} to exit"), cmd.output()).await.expect("run keelson");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with {what}, it must fail: {stderr}");
    let reason = stderr.lines().find(|l| l.contains("refusing to start"));
    assert!(reason.is_some(), "started with {what}: stderr must say \"refusing to start\":\n{stderr}");
    tracing::info!(reason = reason.unwrap(), "refused {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_refuses_other_flags_and_keeps_its_data() {
    init_tracing();
    let mut c = Cluster::start(1).await;
    let key = "/registry/namespaces/kept";
    must_put(&mut c.kv(0).await, key, "v1").await;
    c.stop(0);

    tracing::info!("--- another --initial-cluster");
    let original = c.initial_cluster.clone();
    c.initial_cluster = format!("{original},m2=127.0.0.1:{}", free_port());
    must_refuse(&c, 0, "another --initial-cluster").await;

    tracing::info!("--- another --name");
    c.masters[0].name = "m9".into();
    c.initial_cluster = format!("m9={}", c.masters[0].peer_addr);
    must_refuse(&c, 0, "another --name").await;

    tracing::info!("--- the original flags: it starts and still has the data");
    c.masters[0].name = "m1".into();
    c.initial_cluster = original;
    c.spawn(0);
    c.wait_leader(&[0]).await;
    let mut kv = c.kv(0).await;
    assert_eq!(must_get(&mut kv, key, false).await.as_deref(), Some(&b"v1"[..]));
    must_put(&mut kv, "/registry/namespaces/new", "v2").await;
}
