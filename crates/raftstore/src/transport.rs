//! Raft messages between members over tonic gRPC.
//!
//! Outbound: the driver packs each Ready's messages for a peer into one `RaftEnvelope` (order
//! preserved) and puts it straight on one long-lived client stream to that peer (an HTTP/2
//! stream, not a request per batch, and no wait for an answer per batch). No task sits between
//! the driver and the stream: every hand-off between threads costs a wake-up, and on a small
//! machine those wake-ups were a large part of what a log entry costs. A stream that ends or
//! fills up is dropped with what it carried (Raft retransmits) and the peer is reported
//! unreachable so its progress goes back to probing; the next Ready opens a new one, but not
//! within [`SEND_RETRY_BACKOFF`] of the last failure.
//! Snapshot messages go on their own streaming RPC: the file the message describes is read and
//! sent in [`SNAPSHOT_CHUNK_BYTES`] pieces, at most [`SNAPSHOT_CHUNKS_IN_FLIGHT`] of them queued;
//! the outcome is reported back to Raft as finished or failed.
//! Inbound: the `RaftTransport` service reads each envelope off the stream and hands all its
//! messages to the driver's queue as one item, without blocking (a full queue drops the
//! envelope; Raft retransmits). A snapshot stream is written to a file, synced, checked against
//! its descriptor and only then handed to the driver; one stream is received at a time.
//!
//! Test-only fault injection: a member started with fault injection enabled can be told to drop
//! all Raft traffic to and from chosen peers, which cuts it off as a real partition would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bitmountain_proto::v1::raft_transport_client::RaftTransportClient;
use bitmountain_proto::v1::raft_transport_server::RaftTransport;
use bitmountain_proto::v1::{RaftAck, RaftEnvelope, SnapshotChunk};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::engine::Members;
use crate::error::RaftStoreError;
use crate::snapshot::{self, Descriptor, Side};

/// Most messages packed in one envelope.
pub const MAX_MESSAGES_PER_ENVELOPE: usize = 1024;
/// An envelope stops growing once its messages reach this size.
pub const MAX_ENVELOPE_BYTES: usize = 16 << 20;
/// Deadline of one whole snapshot stream (1 TiB at 1.7 GiB/s; a slower link needs a longer one).
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of snapshot file per streamed piece.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Pieces read ahead of the network on the sending side.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;
/// Largest gRPC message members accept from each other: a full envelope plus one oversized
/// entry (raft-rs sends at least one entry per append, whatever its size).
pub const MAX_RAFT_RPC_BYTES: usize = 256 << 20;
/// Pause after a stream to a peer ended before the next one is opened; messages for the peer
/// meanwhile are dropped (Raft retransmits), so a peer that refuses is not redialled in a spin.
pub const SEND_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Envelopes queued on a peer's stream before it counts as stuck (the bound of what the
/// transport holds for one peer).
pub const STREAM_ENVELOPES_IN_FLIGHT: usize = 256;
/// HTTP/2 flow-control window per stream between members (the default 64 KiB would stall a
/// stream of appends on window updates).
pub const H2_STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 flow-control window per connection between members.
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Interval of HTTP/2 keep-alive pings on member links. The envelope stream lives as long as
/// the link, so it has no deadline of its own: an unanswered ping is what ends a dead one.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A link whose ping is not answered within this is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Delivers an envelope's messages as one item (one wake-up of the driver); false if they
    /// were dropped.
    fn deliver_all(&self, ms: Vec<Message>) -> bool {
        ms.into_iter().all(|m| self.deliver(m))
    }
    fn report(&self, r: Report);
}

/// The envelope stream to one peer.
struct Link {
    addr: String,
    tx: mpsc::Sender<RaftEnvelope>,
}

/// What the transport keeps per peer: its stream, if one is open, and when the last one ended.
#[derive(Default)]
struct PeerLink {
    link: Option<Link>,
    failed_at: Option<Instant>,
}

/// The member's transport: outbound streams and the inbound service state.
pub struct Transport {
    id: u64,
    address: String,
    members: RwLock<Members>,
    learned: RwLock<Members>,
    /// Only the driver thread sends, so this lock is never contended.
    links: Mutex<HashMap<u64, PeerLink>>,
    blocked: RwLock<HashSet<u64>>,
    fault_injection: bool,
    inbox: OnceLock<Arc<dyn Inbox>>,
    rt: tokio::runtime::Handle,
    /// Where snapshot files are generated and received.
    snap_dir: PathBuf,
    /// Held while a snapshot stream is being received (one at a time).
    receiving_snapshot: tokio::sync::Mutex<()>,
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
        snap_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            address,
            members: RwLock::new(members),
            learned: RwLock::new(Members::new()),
            links: Mutex::new(HashMap::new()),
            blocked: RwLock::new(HashSet::new()),
            fault_injection,
            inbox: OnceLock::new(),
            rt,
            snap_dir,
            receiving_snapshot: tokio::sync::Mutex::new(()),
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

    /// Sends a Ready's messages: one envelope per peer (more if they exceed the envelope
    /// limits), put on the peer's stream without blocking. Called by the driver thread.
    pub(crate) fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        // A Ready addresses a handful of peers; keep each peer's messages in their order.
        let mut by_peer: Vec<(u64, Vec<Message>)> = Vec::new();
        for m in msgs {
            let to = m.to;
            if to == self.id || self.is_blocked(to) {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(m);
                continue;
            }
            match by_peer.iter_mut().find(|(id, _)| *id == to) {
                Some((_, queued)) => queued.push(m),
                None => by_peer.push((to, vec![m])),
            }
        }
        for (to, msgs) in by_peer {
            self.send_to(to, &msgs);
        }
    }

    fn send_to(self: &Arc<Self>, to: u64, msgs: &[Message]) {
        let Some(addr) = self.addr_of(to) else {
            tracing::debug!(to, "no address for member; dropping raft messages");
            self.report(Report::Unreachable(to));
            return;
        };
        let mut links = match self.links.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let peer = links.entry(to).or_default();
        for envelope in self.envelopes(to, msgs) {
            let Some(tx) = self.link_for(to, &addr, peer) else {
                self.report(Report::Unreachable(to));
                continue;
            };
            match tx.try_send(envelope) {
                Ok(()) => {}
                Err(e) => {
                    // Full: the peer is not reading; drop this envelope (Raft retransmits) and
                    // rebuild the stream in case the connection under it is stuck. Closed: the
                    // stream ended.
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        tracing::debug!(
                            to,
                            "raft stream full; dropping an envelope and reconnecting"
                        );
                    }
                    peer.link = None;
                    peer.failed_at = Some(Instant::now());
                    self.report(Report::Unreachable(to));
                }
            }
        }
    }

    /// The open stream to `to` at `addr`, opening one unless the last failed moments ago.
    fn link_for(
        self: &Arc<Self>,
        to: u64,
        addr: &str,
        peer: &mut PeerLink,
    ) -> Option<mpsc::Sender<RaftEnvelope>> {
        if let Some(link) = &peer.link {
            if link.addr == addr && !link.tx.is_closed() {
                return Some(link.tx.clone());
            }
            if link.addr == addr {
                // The stream ended by itself.
                peer.failed_at = Some(Instant::now());
            }
            peer.link = None;
        }
        if peer
            .failed_at
            .is_some_and(|t| t.elapsed() < SEND_RETRY_BACKOFF)
        {
            return None;
        }
        let tx = self.open_link(to, addr)?;
        peer.link = Some(Link {
            addr: addr.to_string(),
            tx: tx.clone(),
        });
        Some(tx)
    }

    /// Packs `msgs` into envelopes within [`MAX_MESSAGES_PER_ENVELOPE`] and
    /// [`MAX_ENVELOPE_BYTES`] (an envelope holds at least one message, whatever its size).
    fn envelopes(&self, to: u64, msgs: &[Message]) -> Vec<RaftEnvelope> {
        let mut out = Vec::new();
        let mut current = self.envelope(to, &[]);
        let mut bytes = 0;
        for m in msgs {
            let Ok(encoded) = m.write_to_bytes() else {
                continue;
            };
            if !current.messages.is_empty()
                && (current.messages.len() >= MAX_MESSAGES_PER_ENVELOPE
                    || bytes + encoded.len() > MAX_ENVELOPE_BYTES)
            {
                out.push(std::mem::replace(&mut current, self.envelope(to, &[])));
                bytes = 0;
            }
            bytes += encoded.len();
            current.messages.push(encoded);
        }
        if !current.messages.is_empty() {
            out.push(current);
        }
        out
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
            .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
            // A peer that vanished without closing its socket (host down, network cut) is
            // noticed by keep-alive pings, which ends the stream so the link is rebuilt.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Some(
            RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_RAFT_RPC_BYTES)
                .max_encoding_message_size(MAX_RAFT_RPC_BYTES),
        )
    }

    /// Opens a long-lived envelope stream to `addr`. When the stream ends or fails, the task
    /// reports the peer unreachable and the returned sender closes, so the next Ready opens a
    /// new one.
    fn open_link(self: &Arc<Self>, to: u64, addr: &str) -> Option<mpsc::Sender<RaftEnvelope>> {
        // The driver thread is not a runtime thread; the lazy channel spawns its worker on ours.
        let _runtime = self.rt.enter();
        let mut client = Self::client(addr)?;
        let (tx, rx) = mpsc::channel(STREAM_ENVELOPES_IN_FLIGHT);
        let me = Arc::clone(self);
        let addr = addr.to_string();
        self.rt.spawn(async move {
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            match client.stream(stream).await {
                Ok(_) => tracing::debug!(to, %addr, "raft stream closed"),
                Err(status) => {
                    tracing::debug!(to, %addr, %status, "raft stream failed");
                    me.report(Report::Unreachable(to));
                }
            }
        });
        Some(tx)
    }

    fn send_snapshot(self: &Arc<Self>, m: Message) {
        let to = m.to;
        let meta = m.get_snapshot().get_metadata();
        let path = snapshot::file_path(&self.snap_dir, Side::Generated, meta.index, meta.term);
        // Opened now: a newer snapshot may replace the file, and an open handle keeps it readable.
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(to, path = %path.display(), error = %e, "snapshot file to send is missing");
                self.report(Report::Snapshot { to, ok: false });
                return;
            }
        };
        let me = Arc::clone(self);
        self.rt.spawn(async move {
            let ok = me.stream_snapshot_to(to, m, file).await;
            me.report(Report::Snapshot { to, ok });
        });
    }

    async fn stream_snapshot_to(&self, to: u64, m: Message, file: std::fs::File) -> bool {
        let started = std::time::Instant::now();
        let Some(mut c) = self.addr_of(to).and_then(|a| Self::client(&a)) else {
            return false;
        };
        let header = self.envelope(to, std::slice::from_ref(&m));
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_IN_FLIGHT);
        // A blocking reader feeds the stream; the bounded channel is all that is in memory.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut file = file;
            let mut header = Some(header);
            let mut sent = 0u64;
            loop {
                let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                let n = (&mut file)
                    .take(SNAPSHOT_CHUNK_BYTES as u64)
                    .read_to_end(&mut buf)?;
                if n == 0 && header.is_none() {
                    return Ok(sent);
                }
                sent += n as u64;
                let chunk = SnapshotChunk {
                    header: header.take(),
                    data: buf.into(),
                };
                // A closed channel means the RPC already failed; its error is reported below.
                if tx.blocking_send(chunk).is_err() || n < SNAPSHOT_CHUNK_BYTES {
                    return Ok(sent);
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let result = tokio::time::timeout(SNAPSHOT_RPC_TIMEOUT, c.stream_snapshot(stream)).await;
        let sent = match reader.await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::warn!(to, error = %e, "reading the snapshot file to send failed");
                return false;
            }
            Err(e) => {
                tracing::warn!(to, error = %e, "snapshot reader task failed");
                return false;
            }
        };
        match result {
            Ok(Ok(_)) => {
                tracing::info!(
                    to,
                    bytes = sent,
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
                tracing::warn!(
                    to,
                    timeout_s = SNAPSHOT_RPC_TIMEOUT.as_secs(),
                    "snapshot send timed out"
                );
                false
            }
        }
    }

    /// Checks an envelope's addressing and learns the sender's address.
    fn accept_envelope(&self, env: &RaftEnvelope) -> Result<Arc<dyn Inbox>, tonic::Status> {
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
        self.inbox
            .get()
            .cloned()
            .ok_or_else(|| tonic::Status::unavailable("member is starting"))
    }

    /// Receives a snapshot stream into a file, checks it and hands its message to the driver.
    async fn receive_snapshot(
        &self,
        mut stream: tonic::Streaming<SnapshotChunk>,
    ) -> Result<(), tonic::Status> {
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::invalid_argument("empty snapshot stream"))?;
        let Some(env) = first.header else {
            return Err(tonic::Status::invalid_argument(
                "the first snapshot piece carries no header",
            ));
        };
        let inbox = self.accept_envelope(&env)?;
        let [bytes] = env.messages.as_slice() else {
            return Err(tonic::Status::invalid_argument(format!(
                "a snapshot header carries exactly one message, not {}",
                env.messages.len()
            )));
        };
        let m = Message::parse_from_bytes(bytes).map_err(|e| {
            tonic::Status::invalid_argument(format!("undecodable raft message: {e}"))
        })?;
        if m.get_msg_type() != MessageType::MsgSnapshot {
            return Err(tonic::Status::invalid_argument(
                "the snapshot stream's message is not a MsgSnapshot",
            ));
        }
        let desc = Descriptor::decode(m.get_snapshot().get_data())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let Ok(_receiving) = self.receiving_snapshot.try_lock() else {
            return Err(tonic::Status::resource_exhausted(format!(
                "member {} is already receiving a snapshot; retry when it is done",
                self.id
            )));
        };
        let meta = m.get_snapshot().get_metadata();
        let done = snapshot::file_path(&self.snap_dir, Side::Received, meta.index, meta.term);
        let tmp = snapshot::tmp_path(&done);
        let received = self
            .write_snapshot_file(&tmp, first.data, &mut stream, &desc)
            .await;
        if let Err(status) = received {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(status);
        }
        let (tmp2, done2) = (tmp.clone(), done.clone());
        let checked = tokio::task::spawn_blocking(move || {
            snapshot::verify(&tmp2, &desc)?;
            snapshot::publish(&tmp2, &done2)
        })
        .await
        .map_err(|e| tonic::Status::internal(format!("snapshot check task failed: {e}")))?;
        if let Err(e) = checked {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(tonic::Status::data_loss(format!(
                "received snapshot failed its check: {e}; the sender will retry"
            )));
        }
        tracing::info!(
            member = self.id,
            index = meta.index,
            bytes = desc.file_bytes,
            "snapshot received"
        );
        if !inbox.deliver(m) {
            return Err(tonic::Status::resource_exhausted(
                "raft driver queue is full; snapshot message dropped",
            ));
        }
        Ok(())
    }

    async fn write_snapshot_file(
        &self,
        tmp: &std::path::Path,
        first: bytes::Bytes,
        stream: &mut tonic::Streaming<SnapshotChunk>,
        desc: &Descriptor,
    ) -> Result<(), tonic::Status> {
        let io =
            |e: std::io::Error| tonic::Status::internal(format!("writing {}: {e}", tmp.display()));
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut received = 0u64;
        let mut chunk = first;
        loop {
            received += chunk.len() as u64;
            if received > desc.file_bytes {
                return Err(tonic::Status::invalid_argument(format!(
                    "snapshot stream carries more than the {} bytes its descriptor names",
                    desc.file_bytes
                )));
            }
            file.write_all(&chunk).await.map_err(io)?;
            match stream.message().await? {
                Some(c) if c.header.is_some() => {
                    return Err(tonic::Status::invalid_argument(
                        "only the first snapshot piece may carry a header",
                    ))
                }
                Some(c) => chunk = c.data,
                None => break,
            }
        }
        if received != desc.file_bytes {
            return Err(tonic::Status::invalid_argument(format!(
                "snapshot stream ended after {received} of {} bytes",
                desc.file_bytes
            )));
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }

    fn receive(&self, env: RaftEnvelope) -> Result<(), tonic::Status> {
        let inbox = self.accept_envelope(&env)?;
        let mut msgs = Vec::with_capacity(env.messages.len());
        for bytes in &env.messages {
            let m = Message::parse_from_bytes(bytes).map_err(|e| {
                tonic::Status::invalid_argument(format!("undecodable raft message: {e}"))
            })?;
            // A snapshot's file must arrive first, so its message comes only by StreamSnapshot.
            if m.get_msg_type() == MessageType::MsgSnapshot {
                return Err(tonic::Status::invalid_argument(
                    "snapshots travel on the StreamSnapshot RPC, not in an envelope",
                ));
            }
            msgs.push(m);
        }
        // A full driver queue drops the envelope but keeps the stream: Raft retransmits.
        if !msgs.is_empty() && !inbox.deliver_all(msgs) {
            tracing::debug!(
                member = self.id,
                from = env.from_id,
                "raft driver queue is full; envelope dropped"
            );
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
    /// The tonic server for this service, with the members' message size limit.
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
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<RaftEnvelope>>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        let mut envelopes = request.into_inner();
        while let Some(env) = envelopes.message().await? {
            self.transport.receive(env)?;
        }
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn stream_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        self.transport
            .receive_snapshot(request.into_inner())
            .await?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::engine::{Engine, CF_SM};

    #[derive(Default)]
    struct Collect(Mutex<Vec<Message>>);

    impl Inbox for Collect {
        fn deliver(&self, m: Message) -> bool {
            self.0.lock().unwrap().push(m);
            true
        }
        fn report(&self, _: Report) {}
    }

    /// A receiving member (id 2) on an ephemeral port; returns its address and inbox.
    async fn receiver(snap_dir: PathBuf) -> (String, Arc<Collect>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let t = Transport::new(
            2,
            addr.clone(),
            Members::new(),
            false,
            tokio::runtime::Handle::current(),
            snap_dir,
        );
        let inbox = Arc::new(Collect::default());
        t.set_inbox(inbox.clone());
        let svc = RaftService { transport: t }.into_server();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, inbox)
    }

    fn chunks(header: RaftEnvelope, file: &[u8]) -> Vec<SnapshotChunk> {
        let mut out = Vec::new();
        let mut header = Some(header);
        for piece in file.chunks(SNAPSHOT_CHUNK_BYTES / 8) {
            out.push(SnapshotChunk {
                header: header.take(),
                data: bytes::Bytes::copy_from_slice(piece),
            });
        }
        out
    }

    #[tokio::test]
    async fn envelopes_keep_order_within_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::new(
            1,
            "127.0.0.1:1".into(),
            Members::new(),
            false,
            tokio::runtime::Handle::current(),
            dir.path().to_path_buf(),
        );
        let append = |index: u64, data_bytes: usize| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgAppend);
            m.to = 2;
            m.index = index;
            let mut e = raft::prelude::Entry::default();
            e.set_data(vec![7u8; data_bytes].into());
            m.set_entries(vec![e].into());
            m
        };
        let indexes = |envs: &[RaftEnvelope]| -> Vec<Vec<u64>> {
            envs.iter()
                .map(|env| {
                    env.messages
                        .iter()
                        .map(|b| Message::parse_from_bytes(b).unwrap().index)
                        .collect()
                })
                .collect()
        };

        // By count: 2,500 small messages make envelopes of 1,024, 1,024 and 452, in order.
        let small: Vec<Message> = (0..2_500).map(|i| append(i, 10)).collect();
        let envs = t.envelopes(2, &small);
        let got = indexes(&envs);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [MAX_MESSAGES_PER_ENVELOPE, MAX_MESSAGES_PER_ENVELOPE, 452]
        );
        assert_eq!(got.concat(), (0..2_500).collect::<Vec<u64>>());
        assert!(envs.iter().all(|e| e.to_id == 2 && e.from_id == 1));

        // By size: 6 MiB messages go two to an envelope; one larger than the limit travels
        // alone rather than not at all.
        let big: Vec<Message> = vec![
            append(1, 6 << 20),
            append(2, 6 << 20),
            append(3, 6 << 20),
            append(4, MAX_ENVELOPE_BYTES + 1),
            append(5, 10),
        ];
        assert_eq!(
            indexes(&t.envelopes(2, &big)),
            [vec![1, 2], vec![3], vec![4], vec![5]]
        );
        assert!(t.envelopes(2, &[]).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_streams_are_checked_before_raft_sees_them() {
        // A snapshot of a few thousand records, as the leader (member 1) builds it.
        let src = tempfile::tempdir().unwrap();
        let engine = Engine::open(src.path()).unwrap();
        let mut members = Members::new();
        members.insert(1, "127.0.0.1:1".into());
        engine.bootstrap(&members).unwrap();
        let mut b = rocksdb::WriteBatch::default();
        for i in 0u32..5_000 {
            b.put_cf(engine.cf(CF_SM).unwrap(), i.to_be_bytes(), vec![7u8; 100]);
        }
        engine.write(b, true).unwrap();
        let snap = snapshot::generate(engine.db(), engine.snap_dir()).unwrap();
        let meta = snap.get_metadata().clone();
        let file = std::fs::read(snapshot::file_path(
            engine.snap_dir(),
            Side::Generated,
            meta.index,
            meta.term,
        ))
        .unwrap();
        assert!(
            file.len() > SNAPSHOT_CHUNK_BYTES / 8 * 3,
            "want several pieces"
        );
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 1;
        m.to = 2;
        m.set_snapshot(snap);
        let header = RaftEnvelope {
            from_id: 1,
            from_address: "127.0.0.1:1".into(),
            to_id: 2,
            messages: vec![m.write_to_bytes().unwrap()],
        };

        let dst = tempfile::tempdir().unwrap();
        let (addr, inbox) = receiver(dst.path().to_path_buf()).await;
        let mut c = RaftTransportClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let received = snapshot::file_path(dst.path(), Side::Received, meta.index, meta.term);
        let leftovers = || std::fs::read_dir(dst.path()).unwrap().count();

        // Cut short: refused, nothing kept, Raft never hears of it.
        let mut short = chunks(header.clone(), &file);
        short.pop();
        let err = c
            .stream_snapshot(tokio_stream::iter(short))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("ended after"), "{err}");
        // One flipped byte: refused as data loss.
        let mut flipped = file.clone();
        flipped[file.len() / 2] ^= 1;
        let err = c
            .stream_snapshot(tokio_stream::iter(chunks(header.clone(), &flipped)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
        // More bytes than the descriptor names.
        let mut long = file.clone();
        long.extend_from_slice(&[0; 10]);
        let err = c
            .stream_snapshot(tokio_stream::iter(chunks(header.clone(), &long)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        // A MsgSnapshot smuggled into a plain envelope stream is refused.
        let err = c
            .stream(tokio_stream::iter(vec![header.clone()]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(inbox.0.lock().unwrap().is_empty());
        assert_eq!(leftovers(), 0);

        // Whole: the file is published under its final name, then Raft gets the message.
        c.stream_snapshot(tokio_stream::iter(chunks(header, &file)))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&received).unwrap(), file);
        let got = inbox.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].get_msg_type(), MessageType::MsgSnapshot);
        assert_eq!(got[0].get_snapshot().get_metadata().index, meta.index);
    }
}
