//! Talking to the kernel: `nft -j -f -` (inside `ip netns exec NS` when the proxy
//! programs another network namespace), reading back the affinity sets, and
//! `net.ipv4.ip_forward`.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nftables::schema::Nftables;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::rules::AffinityState;
use super::ProxyError;

/// One nft run may take this long (a big table is a few hundred ms).
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

fn nft(netns: Option<&str>) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// What the command line looks like, for errors.
fn shown(netns: Option<&str>, args: &str) -> String {
    match netns {
        Some(ns) => format!("ip netns exec {ns} nft {args}"),
        None => format!("nft {args}"),
    }
}

/// Run nft with `args`, `input` on its stdin; its stdout, or its stderr as the error.
async fn run_nft(netns: Option<&str>, args: &[&str], input: Option<&[u8]>) -> Result<String, ProxyError> {
    let what = shown(netns, &args.join(" "));
    let mut cmd = nft(netns);
    cmd.args(args);
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| ProxyError::Exec(format!("{what}: {e}")))?;
    let io = async {
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A write error (nft quit early) shows up as nft's own error below.
            let _ = stdin.write_all(input).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(NFT_TIMEOUT, io)
        .await
        .map_err(|_| ProxyError::Nft(format!("{what}: no answer in {NFT_TIMEOUT:?}")))?
        .map_err(|e| ProxyError::Exec(format!("{what}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ProxyError::Nft(format!("{what}: {}: {}", out.status, stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Apply one transaction (all of it or nothing).
pub async fn apply(netns: Option<&str>, ruleset: &Nftables<'_>) -> Result<(), ProxyError> {
    let json = serde_json::to_vec(ruleset).map_err(|e| ProxyError::Nft(format!("encoding the ruleset: {e}")))?;
    run_nft(netns, &["-j", "-f", "-"], Some(&json)).await.map(drop)
}

/// The entries of the table's `affinity-…` sets; empty when the table is not there.
pub async fn read_affinity(netns: Option<&str>, table: &str) -> Result<AffinityState, ProxyError> {
    match run_nft(netns, &["-j", "list", "sets", "table", "ip", table], None).await {
        Ok(json) => parse_affinity(&json),
        Err(ProxyError::Nft(e)) if e.contains("No such file or directory") => Ok(AffinityState::new()),
        Err(e) => Err(e),
    }
}

/// `nft -j list sets` output → the affinity sets' entries with their seconds left.
pub fn parse_affinity(json: &str) -> Result<AffinityState, ProxyError> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| ProxyError::Nft(format!("reading nft's set listing: {e}")))?;
    let mut out = AffinityState::new();
    for obj in v.get("nftables").and_then(Value::as_array).into_iter().flatten() {
        let Some(set) = obj.get("set") else { continue };
        let Some(name) = set.get("name").and_then(Value::as_str).filter(|n| n.starts_with("affinity-")) else {
            continue;
        };
        let elems = match set.get("elem") {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            Some(single) => vec![single],
            None => Vec::new(),
        };
        let entries: Vec<(Ipv4Addr, Option<u32>)> = elems
            .into_iter()
            .filter_map(|e| match e {
                Value::String(ip) => Some((ip.parse().ok()?, None)),
                Value::Object(_) => {
                    let e = e.get("elem")?;
                    let ip = e.get("val")?.as_str()?.parse().ok()?;
                    let left = e.get("expires").and_then(Value::as_u64).map(|s| u32::try_from(s).unwrap_or(u32::MAX));
                    Some((ip, left))
                }
                _ => None,
            })
            .collect();
        if !entries.is_empty() {
            out.insert(name.to_string(), entries);
        }
    }
    Ok(out)
}

/// Turn on `net.ipv4.ip_forward` in `netns` (here when `None`); whether it was off.
pub async fn ensure_ip_forward(netns: Option<&str>) -> Result<bool, ProxyError> {
    ensure_sysctl(netns, IP_FORWARD).await
}

/// Turn on `net.ipv4.conf.all.route_localnet` (NodePorts on 127.0.0.1, as kube-proxy's
/// iptables mode does: DNAT from a loopback source, masqueraded on the way out).
pub async fn ensure_route_localnet(netns: Option<&str>) -> Result<bool, ProxyError> {
    ensure_sysctl(netns, ROUTE_LOCALNET).await
}

/// Set the boolean sysctl at `path` to 1 in `netns` (here when `None`); whether it was 0.
///
/// The namespace is entered by a short-lived thread of its own (`setns`), so no runtime
/// thread ever leaves the agent's namespace and no `sysctl` binary is needed.
async fn ensure_sysctl(netns: Option<&str>, path: &'static str) -> Result<bool, ProxyError> {
    let netns = netns.map(|ns| PathBuf::from("/run/netns").join(ns));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("proxy-sysctl".into())
        .spawn(move || {
            let _ = tx.send(sysctl_in(netns, path));
        })
        .map_err(|e| ProxyError::Sysctl(format!("starting a thread: {e}")))?;
    rx.await.map_err(|_| ProxyError::Sysctl("the sysctl thread died".into()))?
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

fn sysctl_in(netns: Option<PathBuf>, path: &str) -> Result<bool, ProxyError> {
    let err = |what: &str, e: std::io::Error| ProxyError::Sysctl(format!("{what}: {e}"));
    if let Some(ns_path) = &netns {
        let ns = std::fs::File::open(ns_path).map_err(|e| err(&ns_path.display().to_string(), e))?;
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .map_err(|e| err(&format!("entering the network namespace {}", ns_path.display()), e.into()))?;
    }
    let now = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
    if now.trim() == "1" {
        return Ok(false);
    }
    // A fresh open: a sysctl write must start at offset 0.
    std::fs::write(path, b"1\n").map_err(|e| err(path, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_listing_is_read() {
        // As nft 1.0.6 prints it, plus a bare element and junk.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"set": {"family": "ip", "name": "affinity-ns/a/tcp/80__10.1.1.1/80", "table": "kx", "type": "ipv4_addr",
                   "flags": ["timeout"], "timeout": 10800,
                   "elem": [{"elem": {"val": "10.9.9.9", "expires": 499}}, "10.9.9.8", {"elem": {"val": "nope"}}]}},
          {"set": {"family": "ip", "name": "affinity-ns/a/tcp/80__10.1.1.2/80", "table": "kx", "type": "ipv4_addr"}},
          {"set": {"family": "ip", "name": "nodeport-ips", "table": "kx", "type": "ipv4_addr", "elem": ["10.1.2.3"]}}]}"#;
        let got = parse_affinity(json).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got["affinity-ns/a/tcp/80__10.1.1.1/80"],
            vec![("10.9.9.9".parse().unwrap(), Some(499)), ("10.9.9.8".parse().unwrap(), None)]
        );
        assert!(parse_affinity("not json").is_err());
        assert!(parse_affinity(r#"{"nftables": []}"#).unwrap().is_empty());
    }

    #[test]
    fn commands_are_shown_with_their_namespace() {
        assert_eq!(shown(Some("h"), "-j -f -"), "ip netns exec h nft -j -f -");
        assert_eq!(shown(None, "-j -f -"), "nft -j -f -");
    }
}
