//! Calls multiplexed over one long-lived gRPC stream per peer. Every hot-path call
//! between masters (append-entries, votes, forwarded writes, read index) is a frame on
//! the stream instead of its own HTTP/2 request: about half the CPU per call, which is
//! most of a write's cost on a small machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::pb::peer::Frame;
use crate::pool::PeerPool;

/// What a frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    AppendEntries = 1,
    Vote = 2,
    Propose = 3,
    ReadIndex = 4,
}

impl Kind {
    pub fn from_u32(k: u32) -> Option<Kind> {
        match k {
            1 => Some(Kind::AppendEntries),
            2 => Some(Kind::Vote),
            3 => Some(Kind::Propose),
            4 => Some(Kind::ReadIndex),
            _ => None,
        }
    }
}

/// Why a call got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    /// The call never left this master (no stream could be opened or it was closed).
    #[error("not delivered to {addr}: {reason}")]
    NotDelivered { addr: String, reason: String },
    /// The stream broke after the call was sent: the peer may or may not have acted.
    #[error("stream to {addr} broke with the call outstanding")]
    Lost { addr: String },
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

struct Conn {
    tx: mpsc::Sender<Frame>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One stream per peer address, opened on first use and again after it breaks.
pub(crate) struct Mux {
    pool: Arc<PeerPool>,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Mux {
    pub fn new(pool: Arc<PeerPool>) -> Self {
        Mux { pool, conns: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    async fn conn(&self, addr: &str) -> Result<Arc<Conn>, CallError> {
        if let Some(c) = lock(&self.conns).get(addr) {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let not_delivered = |reason: String| CallError::NotDelivered { addr: addr.to_string(), reason };
        let mut client = self.pool.client(addr).map_err(|e| not_delivered(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Frame>(4096);
        let open = tokio::time::timeout(Duration::from_secs(2), client.stream(ReceiverStream::new(rx)))
            .await
            .map_err(|_| not_delivered("timed out opening the stream".into()))?
            .map_err(|s| not_delivered(s.to_string()))?;
        let mut inbound = open.into_inner();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let conn = Arc::new(Conn { tx, pending: pending.clone(), alive: alive.clone() });
        tokio::spawn(async move {
            while let Ok(Some(frame)) = inbound.message().await {
                if let Some(waiter) = lock(&pending).remove(&frame.id) {
                    let _ = waiter.send(frame.data);
                }
            }
            alive.store(false, Ordering::Release);
            // Dropping the waiters tells every outstanding call that its reply is lost.
            lock(&pending).clear();
        });
        lock(&self.conns).insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Send one call and wait (at most `timeout`) for its reply.
    pub async fn call(&self, addr: &str, kind: Kind, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let conn = self.conn(addr).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        if conn.tx.send(Frame { id, kind: kind as u32, data }).await.is_err() {
            lock(&conn.pending).remove(&id);
            conn.alive.store(false, Ordering::Release);
            return Err(CallError::NotDelivered { addr: addr.to_string(), reason: "stream closed".into() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(CallError::Lost { addr: addr.to_string() }),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                Err(CallError::Timeout { addr: addr.to_string(), timeout })
            }
        }
    }
}
