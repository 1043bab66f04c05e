//! Delay and loss on one master's peer (Raft) links, through TCP proxies in the chaos
//! process (tc netem is not available here).
//!
//! The fault picks a target master `t` (the leader half the time) and, for every other
//! master `p`, starts two proxies ([`Link`], in `proxy/link.rs`) on the bridge's host
//! address — one for `t → p` forwarding to `p`'s peer address, one for `p → t`
//! forwarding to `t`'s. An nftables table in each master's namespace (`proxy/rules.rs`)
//! DNATs that master's new connections to the other end of each of its affected links
//! onto the link's proxy, and resets its connections that still go there directly, so
//! the masters reconnect — through the proxies. After a hold of 3–8 election timeouts
//! every proxied connection is reset and the proxies stop, then the tables are deleted,
//! so the masters reconnect directly again. That order matters: conntrack follows a namespace's connections only
//! while a table needs it, so a proxied connection still open when its table goes would
//! leave a stale DNAT entry behind, which a later connection reusing its source port
//! would follow to whatever proxy then holds that port. (Connections the masters open in
//! the few milliseconds between are refused by the closed proxy port; they retry.) The
//! heal runs on every path: an error or a dropped fault future heals through
//! `Installed`'s `Drop` (tables first there: it cannot wait for the resets).
//!
//! Models (each per direction of each proxied connection, on the chunks `read` returns):
//! - `delay`: a base latency of 20–400 ms (chosen per fault) ±25 % jitter on every
//!   chunk, order preserved (a chunk is never released before the one ahead of it).
//! - `drop`: packet loss as TCP shows it to the application. Each transmission of a chunk
//!   is lost with probability p (5–30 %, per fault); a lost chunk and, in order,
//!   everything behind it wait for a retransmission timeout — 200 ms, doubling for each
//!   further loss of the same chunk, at most 1.6 s each (head-of-line blocking). And each
//!   connection is reset (RST to both ends) at an exponentially distributed time, at
//!   0.05–0.3 resets per second (per fault), as a middlebox or a give-up would.
//!
//! The description counts the connections and bytes that went through the proxies; a
//! fault through which nothing went is an error (the rules did not take).

mod link;
mod rules;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tracing::Instrument;

use super::FaultError;
use crate::cluster::Cluster;
pub use link::{Counts, Link, Mode};
pub use rules::{Redirect, TABLE};

/// Retransmission timeout of the `drop` model, and its cap.
const RTO: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_millis(1600);

/// `delay`: one master's peer links slowed. Returns the targets and a description.
pub async fn delay(
    cluster: &mut Cluster,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    let t = pick_target(cluster.len(), leader, rng);
    let base = Duration::from_millis(rng.gen_range(20..=400));
    let mode = Mode::Delay { base, jitter: 0.25 };
    let what = format!("delayed {} ms ±25%", base.as_millis());
    through_proxies(cluster, t, leader, rng, election_ms, mode, &what).await
}

/// `drop`: one master's peer links lossy. Returns the targets and a description.
pub async fn drop_links(
    cluster: &mut Cluster,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
) -> Result<(Vec<usize>, String), FaultError> {
    let t = pick_target(cluster.len(), leader, rng);
    let loss = rng.gen_range(5..=30) as f64 / 100.0;
    let resets_per_s = rng.gen_range(5..=30) as f64 / 100.0;
    let mode = Mode::Loss { loss, rto: RTO, rto_max: RTO_MAX, resets_per_s };
    let what = format!(
        "losing {:.0}% of chunks (RTO {}–{} ms), {resets_per_s:.2} resets/s",
        loss * 100.0,
        RTO.as_millis(),
        RTO_MAX.as_millis()
    );
    through_proxies(cluster, t, leader, rng, election_ms, mode, &what).await
}

/// The leader half the time (when known), else any master.
fn pick_target(n: usize, leader: Option<usize>, rng: &mut StdRng) -> usize {
    let coin = rng.gen_bool(0.5);
    match leader {
        Some(l) if l < n && coin => l,
        _ => rng.gen_range(0..n.max(1)),
    }
}

/// The directed links touching `t`: `(from, to)` for every other master.
pub fn links_of(t: usize, n: usize) -> Vec<(usize, usize)> {
    (0..n).filter(|&p| p != t).flat_map(|p| [(t, p), (p, t)]).collect()
}

fn peer_addr(cluster: &Cluster, i: usize) -> Result<SocketAddrV4, FaultError> {
    let a = cluster.peer_addr(i);
    a.parse().map_err(|_| FaultError::Unavailable(format!("{}'s peer address {a:?} is not IPv4:port", cluster.name(i))))
}

/// One running link and the masters it joins.
struct Running {
    from: usize,
    to: usize,
    link: Link,
}

/// What the fault has set up; healed by [`Installed::heal`], or on drop if not.
struct Installed {
    /// Namespaces that may hold the table.
    netns: Vec<String>,
    links: Vec<Running>,
    healed: bool,
}

impl Installed {
    /// Reset every proxied connection and stop the listeners, then delete the tables (see
    /// the module doc for why in this order). Returns each link's final counts.
    async fn heal(mut self) -> (Vec<(usize, usize, Counts)>, Result<(), FaultError>) {
        self.healed = true;
        let links = std::mem::take(&mut self.links);
        let stopped = futures::future::join_all(links.into_iter().map(|r| async move {
            let c = r.link.stop().await;
            (r.from, r.to, c)
        }))
        .await;
        (stopped, remove_tables(&self.netns))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.healed {
            return;
        }
        if let Err(e) = remove_tables(&self.netns) {
            tracing::warn!(error = %e, "proxy fault: healing on drop");
        }
        // Dropping a link cancels it: its connections are reset by its tasks.
        self.links.clear();
        tracing::info!("fault healed (on drop): peer links direct again");
    }
}

/// Remove the table from every namespace, trying them all; the first error.
fn remove_tables(netns: &[String]) -> Result<(), FaultError> {
    let mut first = None;
    for ns in netns {
        if let Err(e) = rules::apply(ns, &[]) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

async fn through_proxies(
    cluster: &Cluster,
    t: usize,
    leader: Option<usize>,
    rng: &mut StdRng,
    election_ms: u64,
    mode: Mode,
    what: &str,
) -> Result<(Vec<usize>, String), FaultError> {
    let n = cluster.len();
    if n < 2 {
        return Err(FaultError::Unavailable("the delay and drop faults need at least two masters".into()));
    }
    let hold = Duration::from_millis(rng.gen_range(election_ms.saturating_mul(3)..=election_ms.saturating_mul(8)));
    let seed: u64 = rng.gen();
    let (_, bridge_ip) = cluster.bridge().ok_or(FaultError::NoNetns)?;
    let peers = (0..n).map(|i| peer_addr(cluster, i)).collect::<Result<Vec<_>, _>>()?;
    let netns = (0..n)
        .map(|i| cluster.netns(i).map(str::to_string).ok_or(FaultError::NoNetns))
        .collect::<Result<Vec<_>, _>>()?;
    let target = format!("{}{}", cluster.name(t), if leader == Some(t) { " (leader)" } else { "" });
    let span = tracing::info_span!("proxy_fault", master = cluster.name(t), ?mode, hold_ms = hold.as_millis() as u64);
    async {
        let mut installed = Installed { netns: netns.clone(), links: Vec::new(), healed: false };
        for (from, to) in links_of(t, n) {
            let bind = SocketAddr::new(IpAddr::V4(bridge_ip), 0);
            let link = Link::start(bind, SocketAddr::V4(peers[to]), mode, link::mix(seed, (from * 16 + to) as u64))
                .await
                .map_err(|e| FaultError::Unavailable(format!("cannot start a proxy on {bind}: {e}")))?;
            installed.links.push(Running { from, to, link });
        }
        for (i, ns) in netns.iter().enumerate() {
            let redirects: Vec<Redirect> = installed
                .links
                .iter()
                .filter(|r| r.from == i)
                .filter_map(|r| match r.link.addr() {
                    SocketAddr::V4(proxy) => Some(Redirect { dest: peers[r.to], proxy }),
                    SocketAddr::V6(_) => None,
                })
                .collect();
            rules::apply(ns, &redirects)?;
        }
        tracing::info!(links = installed.links.len(), "fault: peer links of {target} {what}");
        tokio::time::sleep(hold).await;
        let (counts, removed) = installed.heal().await;
        removed?;
        let total = counts.iter().fold(Counts::default(), |mut a, (_, _, c)| {
            a += *c;
            a
        });
        tracing::info!(
            connections = total.connections,
            bytes_up = total.bytes_up,
            bytes_down = total.bytes_down,
            lost = total.lost,
            resets = total.resets,
            "fault healed: peer links of {target} direct again"
        );
        let per_link = counts
            .iter()
            .map(|(f, t, c)| {
                format!("{}→{} {}c {}/{}B", cluster.name(*f), cluster.name(*t), c.connections, c.bytes_up, c.bytes_down)
            })
            .collect::<Vec<_>>()
            .join(", ");
        if total.connections == 0 || total.bytes_up + total.bytes_down == 0 {
            return Err(FaultError::Unavailable(format!(
                "no peer traffic went through the proxies of {target}'s links in {} ms ({per_link}): \
                 the nftables redirection did not take",
                hold.as_millis()
            )));
        }
        let loss = match mode {
            Mode::Loss { .. } => {
                format!(", {} chunk transmissions lost, {} connections reset", total.lost, total.resets)
            }
            Mode::Delay { .. } => String::new(),
        };
        let description = format!(
            "peer links of {target} {what} for {} ms: {} connections, {} B there / {} B back through {} proxies{loss}, \
             {} connect failures [{per_link}]",
            hold.as_millis(),
            total.connections,
            total.bytes_up,
            total.bytes_down,
            counts.len(),
            total.connect_failures,
        );
        Ok((vec![t], description))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn links_touch_only_the_target() {
        assert_eq!(links_of(1, 3), vec![(1, 0), (0, 1), (1, 2), (2, 1)]);
        assert_eq!(links_of(0, 1), vec![]);
        assert_eq!(links_of(4, 5).len(), 8);
    }

    #[test]
    fn targets_are_seeded_and_favour_the_leader() {
        let picks = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..400).map(|_| pick_target(5, Some(2), &mut r)).collect::<Vec<_>>()
        };
        let a = picks(7);
        assert_eq!(a, picks(7));
        let leader = a.iter().filter(|&&t| t == 2).count();
        // 1/2 + 1/2 × 1/5 = 60 % of 400.
        assert!((200..280).contains(&leader), "leader picked {leader} times");
        assert!((0..5).all(|i| a.contains(&i)));
        let mut r = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| pick_target(3, None, &mut r) < 3));
        assert!((0..100).all(|_| pick_target(3, Some(9), &mut r) < 3));
    }
}
