//! Lazily connected gRPC channels to the other masters, one per address, with the
//! cluster id attached to every call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Result, StoreError};
use crate::pb::peer::peer_client::PeerClient;

pub(crate) const CLUSTER_HEADER: &str = "keelson-cluster-id";
const MAX_MESSAGE: usize = 256 << 20;

/// Adds `keelson-cluster-id` to every outgoing call.
#[derive(Clone)]
pub(crate) struct ClusterHeader(MetadataValue<Ascii>);

impl tonic::service::Interceptor for ClusterHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(CLUSTER_HEADER, self.0.clone());
        Ok(req)
    }
}

pub(crate) type Client = PeerClient<InterceptedService<Channel, ClusterHeader>>;

/// Channels to peers. Raft traffic and forwarded client traffic use separate pools so
/// that a burst of client writes never queues behind (or in front of) heartbeats.
pub(crate) struct PeerPool {
    header: ClusterHeader,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerPool {
    pub fn new(cluster_id: u64) -> Self {
        let value =
            MetadataValue::try_from(format!("{cluster_id:016x}")).unwrap_or_else(|_| MetadataValue::from_static("0"));
        PeerPool { header: ClusterHeader(value), channels: Mutex::new(HashMap::new()) }
    }

    pub fn client(&self, addr: &str) -> Result<Client> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let ch = match map.get(addr) {
            Some(ch) => ch.clone(),
            None => {
                let ch = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| StoreError::Peer(format!("bad peer address {addr}: {e}")))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .keep_alive_while_idle(true)
                    .initial_stream_window_size(Some(4 << 20))
                    .initial_connection_window_size(Some(16 << 20))
                    .connect_lazy();
                map.insert(addr.to_string(), ch.clone());
                ch
            }
        };
        Ok(PeerClient::with_interceptor(ch, self.header.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}
