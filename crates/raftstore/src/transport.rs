//! Raft messages between members over tonic gRPC.
//!
//! Outbound: one task per peer drains a bounded queue, packs what is queued into one
//! `RaftEnvelope` (order preserved) and sends it; a failed send drops the batch (Raft
//! retransmits) and reports the peer unreachable so its progress goes back to probing.
//! Snapshot messages go on their own RPC, reported back to Raft as finished or failed.
//! Inbound: the `RaftTransport` service decodes the envelope and hands each message to the
//! driver's queue without blocking (a full queue drops; Raft retransmits).
//!
//! Test-only fault injection: a member started with fault injection enabled can be told to drop
//! all Raft traffic to and from chosen peers, which cuts it off as a real partition would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bitmountain_proto::v1::raft_transport_client::RaftTransportClient;
use bitmountain_proto::v1::raft_transport_server::RaftTransport;
use bitmountain_proto::v1::{RaftAck, RaftEnvelope};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::engine::Members;
use crate::error::RaftStoreError;

/// Bound of each peer's outbound queue.
pub const PEER_QUEUE_LIMIT: usize = 8192;
/// Most messages packed in one envelope.
pub const MAX_MESSAGES_PER_ENVELOPE: usize = 1024;
/// Deadline of one envelope RPC.
pub const RAFT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one snapshot RPC.
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest gRPC message members accept from each other (snapshots travel whole).
pub const MAX_RAFT_RPC_BYTES: usize = 2 << 30;
/// Pause after a failed send before the next attempt to the same peer.
pub const SEND_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Feedback from the transport to Raft.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    /// A send to this member failed.
    Unreachable(u64),
    /// A snapshot send finished.
    Snapshot {
        /// The member.
        to: u64,
        /// Whether it was delivered.
        ok: bool,
    },
}

/// Where inbound messages and reports go (the driver's queue).
pub(crate) trait Inbox: Send + Sync {
    fn deliver(&self, m: Message) -> bool;
    fn report(&self, r: Report);
}

/// The member's transport: outbound queues and the inbound service state.
pub struct Transport {
    id: u64,
    address: String,
    members: RwLock<Members>,
    learned: RwLock<Members>,
    peers: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    blocked: RwLock<HashSet<u64>>,
    fault_injection: bool,
    inbox: OnceLock<Arc<dyn Inbox>>,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish()
    }
}

impl Transport {
    pub(crate) fn new(
        id: u64,
        address: String,
        members: Members,
        fault_injection: bool,
        rt: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            address,
            members: RwLock::new(members),
            learned: RwLock::new(Members::new()),
            peers: Mutex::new(HashMap::new()),
            blocked: RwLock::new(HashSet::new()),
            fault_injection,
            inbox: OnceLock::new(),
            rt,
        })
    }

    pub(crate) fn set_inbox(&self, inbox: Arc<dyn Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    pub(crate) fn set_members(&self, members: &Members) {
        if let Ok(mut g) = self.members.write() {
            *g = members.clone();
        }
    }

    /// Drops all Raft traffic to and from `ids` (empty heals). Test-only fault injection.
    pub fn set_partition(&self, ids: &[u64]) -> Result<(), RaftStoreError> {
        if !self.fault_injection {
            return Err(RaftStoreError::FaultInjectionDisabled);
        }
        if let Ok(mut g) = self.blocked.write() {
            *g = ids.iter().copied().collect();
        }
        tracing::warn!(member = self.id, blocked = ?ids, "fault injection: partition set");
        Ok(())
    }

    fn is_blocked(&self, id: u64) -> bool {
        self.blocked
            .read()
            .map(|g| g.contains(&id))
            .unwrap_or(false)
    }

    fn addr_of(&self, id: u64) -> Option<String> {
        if let Some(a) = self.members.read().ok().and_then(|g| g.get(&id).cloned()) {
            return Some(a);
        }
        self.learned.read().ok().and_then(|g| g.get(&id).cloned())
    }

    fn report(&self, r: Report) {
        if let Some(inbox) = self.inbox.get() {
            inbox.report(r);
        }
    }

    /// Queues messages for their peers; never blocks.
    pub(crate) fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if to == self.id || self.is_blocked(to) {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(m);
                continue;
            }
            let tx = self.peer(to);
            if tx.try_send(m).is_err() {
                self.report(Report::Unreachable(to));
            }
        }
    }

    fn peer(self: &Arc<Self>, to: u64) -> mpsc::Sender<Message> {
        let mut peers = match self.peers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(tx) = peers.get(&to) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_LIMIT);
        peers.insert(to, tx.clone());
        let me = Arc::clone(self);
        self.rt.spawn(async move { me.peer_loop(to, rx).await });
        tx
    }

    fn envelope(&self, to: u64, msgs: &[Message]) -> RaftEnvelope {
        RaftEnvelope {
            from_id: self.id,
            from_address: self.address.clone(),
            to_id: to,
            messages: msgs
                .iter()
                .filter_map(|m| m.write_to_bytes().ok())
                .collect(),
        }
    }

    fn client(addr: &str) -> Option<RaftTransportClient<Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        Some(
            RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_RAFT_RPC_BYTES)
                .max_encoding_message_size(MAX_RAFT_RPC_BYTES),
        )
    }

    async fn peer_loop(self: Arc<Self>, to: u64, mut rx: mpsc::Receiver<Message>) {
        let mut client: Option<(String, RaftTransportClient<Channel>)> = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_MESSAGES_PER_ENVELOPE {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if self.is_blocked(to) {
                continue;
            }
            let Some(addr) = self.addr_of(to) else {
                tracing::debug!(to, "no address for member; dropping raft messages");
                self.report(Report::Unreachable(to));
                continue;
            };
            if client.as_ref().is_none_or(|(a, _)| *a != addr) {
                client = Self::client(&addr).map(|c| (addr.clone(), c));
            }
            let Some((_, c)) = client.as_mut() else {
                self.report(Report::Unreachable(to));
                continue;
            };
            let env = self.envelope(to, &batch);
            match tokio::time::timeout(RAFT_RPC_TIMEOUT, c.send(env)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    tracing::debug!(to, %addr, %status, "raft send failed");
                    client = None;
                    self.report(Report::Unreachable(to));
                    tokio::time::sleep(SEND_RETRY_BACKOFF).await;
                }
                Err(_) => {
                    tracing::debug!(to, %addr, "raft send timed out");
                    client = None;
                    self.report(Report::Unreachable(to));
                }
            }
        }
    }

    fn send_snapshot(self: &Arc<Self>, m: Message) {
        let to = m.to;
        let me = Arc::clone(self);
        self.rt.spawn(async move {
            let started = std::time::Instant::now();
            let ok = match me.addr_of(to).and_then(|a| Self::client(&a)) {
                None => false,
                Some(mut c) => {
                    let env = me.envelope(to, std::slice::from_ref(&m));
                    let bytes: usize = env.messages.iter().map(Vec::len).sum();
                    match tokio::time::timeout(SNAPSHOT_RPC_TIMEOUT, c.send_snapshot(env)).await {
                        Ok(Ok(_)) => {
                            tracing::info!(
                                to,
                                bytes,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "snapshot sent"
                            );
                            true
                        }
                        Ok(Err(status)) => {
                            tracing::warn!(to, %status, "snapshot send failed");
                            false
                        }
                        Err(_) => {
                            tracing::warn!(to, "snapshot send timed out");
                            false
                        }
                    }
                }
            };
            me.report(Report::Snapshot { to, ok });
        });
    }

    fn receive(&self, env: RaftEnvelope) -> Result<(), tonic::Status> {
        if env.to_id != self.id {
            return Err(tonic::Status::failed_precondition(format!(
                "raft message for member {} reached member {} at {}: a member was restarted with another --data or --listen",
                env.to_id, self.id, self.address
            )));
        }
        if self.is_blocked(env.from_id) {
            return Err(tonic::Status::unavailable(
                "partitioned from the sender (fault injection)",
            ));
        }
        if !env.from_address.is_empty() && self.addr_of(env.from_id).is_none() {
            if let Ok(mut g) = self.learned.write() {
                g.insert(env.from_id, env.from_address.clone());
            }
        }
        let Some(inbox) = self.inbox.get() else {
            return Err(tonic::Status::unavailable("member is starting"));
        };
        for bytes in &env.messages {
            let m = Message::parse_from_bytes(bytes).map_err(|e| {
                tonic::Status::invalid_argument(format!("undecodable raft message: {e}"))
            })?;
            if !inbox.deliver(m) {
                return Err(tonic::Status::resource_exhausted(
                    "raft driver queue is full; message dropped",
                ));
            }
        }
        Ok(())
    }
}

/// The gRPC `RaftTransport` service of a member.
#[derive(Debug, Clone)]
pub struct RaftService {
    pub(crate) transport: Arc<Transport>,
}

impl RaftService {
    /// The tonic server for this service, with the size limits snapshots need.
    pub fn into_server(
        self,
    ) -> bitmountain_proto::v1::raft_transport_server::RaftTransportServer<Self> {
        bitmountain_proto::v1::raft_transport_server::RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_RAFT_RPC_BYTES)
            .max_encoding_message_size(MAX_RAFT_RPC_BYTES)
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(
        &self,
        request: tonic::Request<RaftEnvelope>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        self.transport.receive(request.into_inner())?;
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn send_snapshot(
        &self,
        request: tonic::Request<RaftEnvelope>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        self.transport.receive(request.into_inner())?;
        Ok(tonic::Response::new(RaftAck {}))
    }
}

/// Addresses known to the transport, for diagnostics.
pub fn known(t: &Transport) -> BTreeMap<u64, String> {
    let mut m = t.learned.read().map(|g| g.clone()).unwrap_or_default();
    if let Ok(g) = t.members.read() {
        m.extend(g.clone());
    }
    m
}
