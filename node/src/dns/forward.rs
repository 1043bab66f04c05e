//! Relaying questions outside the cluster zone to the upstream servers: the client's own
//! message goes out over UDP under a fresh random id from a fresh socket, falls back to TCP
//! when the answer comes back truncated, and the next upstream is tried on a timeout, an
//! error, SERVFAIL or REFUSED.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one upstream gets to answer before the next is tried. A client's own resolver
/// waits 5 s (glibc's default) before it retries, so two upstreams fit in one client try.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream DNS servers")]
    NoUpstreams,
    #[error("no upstream answered: {0}")]
    Failed(String),
}

/// The upstream servers and how long each gets.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstreams, timeout }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Relay the client's message `raw` (whose questions are `questions`) and return the
    /// upstream's answer, or the last SERVFAIL/REFUSED one when no upstream did better.
    pub async fn forward(&self, raw: &[u8], questions: &[Query]) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        if raw.len() < 12 {
            return Err(ForwardError::Failed("message shorter than a header".into()));
        }
        let mut last_bad = None;
        let mut errors = Vec::new();
        for upstream in &self.upstreams {
            let mut msg = raw.to_vec();
            let id: u16 = rand::random();
            msg[..2].copy_from_slice(&id.to_be_bytes());
            match self.exchange(*upstream, &msg, id, questions).await {
                Ok(resp) if matches!(resp.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) => {
                    errors.push(format!("{upstream}: {}", resp.metadata.response_code));
                    last_bad = Some(resp);
                }
                Ok(resp) => return Ok(resp),
                Err(e) => errors.push(format!("{upstream}: {e}")),
            }
        }
        last_bad.ok_or_else(|| ForwardError::Failed(errors.join("; ")))
    }

    /// Ask the upstreams `name`/`qtype` (recursion desired), for chasing a CNAME out of the zone.
    pub async fn query(&self, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
        let q = Query::query(name.clone(), qtype);
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.metadata.op_code = OpCode::Query;
        m.add_query(q.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        let raw = m.to_vec().map_err(|e| ForwardError::Failed(e.to_string()))?;
        self.forward(&raw, &[q]).await
    }

    async fn exchange(&self, upstream: SocketAddr, msg: &[u8], id: u16, questions: &[Query]) -> io::Result<Message> {
        let resp = timeout(self.timeout, udp_exchange(upstream, msg, id, questions))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out (UDP)"))??;
        if !resp.metadata.truncation {
            return Ok(resp);
        }
        timeout(self.timeout, tcp_exchange(upstream, msg, id, questions))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out (TCP)"))?
    }
}

/// Whether `resp` answers the message we sent (`id`, the same questions in any case).
fn answers(resp: &Message, id: u16, questions: &[Query]) -> bool {
    resp.metadata.id == id
        && resp.metadata.message_type == MessageType::Response
        && resp.queries.len() == questions.len()
        && resp.queries.iter().zip(questions).all(|(a, b)| {
            a.name() == b.name() && a.query_type() == b.query_type() && a.query_class() == b.query_class()
        })
}

async fn udp_exchange(upstream: SocketAddr, msg: &[u8], id: u16, questions: &[Query]) -> io::Result<Message> {
    let bind: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (IpAddr::from([0, 0, 0, 0]), 0).into(),
        IpAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything that is not the answer (a stray or spoofed datagram) is ignored.
        if let Ok(resp) = Message::from_vec(&buf[..n]) {
            if answers(&resp, id, questions) {
                return Ok(resp);
            }
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, msg: &[u8], id: u16, questions: &[Query]) -> io::Result<Message> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    let mut s = TcpStream::connect(upstream).await?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    loop {
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        let resp = Message::from_vec(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if answers(&resp, id, questions) {
            return Ok(resp);
        }
    }
}

/// The `nameserver` lines of a resolv.conf, on port 53.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // A link-local IPv6 server carries its interface (`fe80::1%eth0`); the scope is dropped.
        .filter_map(|addr| addr.split('%').next().and_then(|a| a.parse::<IpAddr>().ok()))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The upstreams to use: `configured` if any, else the host's resolv.conf servers less any
/// that is this server itself (which would loop).
pub fn upstreams(configured: &[SocketAddr], resolv_conf: &str, listen: &[SocketAddr]) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    resolv_conf_nameservers(resolv_conf)
        .into_iter()
        .filter(|u| {
            !listen
                .iter()
                .any(|l| l.port() == u.port() && (l.ip() == u.ip() || l.ip().is_unspecified() && u.ip().is_loopback()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0 # v6\n;nameserver 1.1.1.1\noptions ndots:2\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec!["10.0.0.2:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn configured_upstreams_win_and_self_is_skipped() {
        let conf = "nameserver 10.0.0.2\nnameserver 10.88.0.1\nnameserver 127.0.0.53\n";
        let listen: Vec<SocketAddr> = vec!["10.88.0.1:53".parse().unwrap()];
        assert_eq!(
            upstreams(&[], conf, &listen),
            vec!["10.0.0.2:53".parse().unwrap(), "127.0.0.53:53".parse().unwrap()]
        );
        let wildcard: Vec<SocketAddr> = vec!["0.0.0.0:53".parse().unwrap()];
        assert_eq!(
            upstreams(&[], conf, &wildcard),
            vec!["10.0.0.2:53".parse().unwrap(), "10.88.0.1:53".parse().unwrap()]
        );
        let mine: Vec<SocketAddr> = vec!["192.0.2.1:5353".parse().unwrap()];
        assert_eq!(upstreams(&mine, conf, &listen), mine);
    }
}
