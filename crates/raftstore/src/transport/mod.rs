//! Raft messages between members over tonic gRPC.
//!
//! Outbound (`outbound`): the driver packs each Ready's messages for a peer into one
//! `RaftEnvelope` (order preserved) and puts it straight on one long-lived client stream to that
//! peer (an HTTP/2 stream, not a request per batch, and no wait for an answer per batch). No task
//! sits between the driver and the stream: every hand-off between threads costs a wake-up, and
//! on a small machine those wake-ups were a large part of what a log entry costs. A stream that
//! ends or fills up is dropped with what it carried (Raft retransmits) and the peer is reported
//! unreachable so its progress goes back to probing; the next Ready opens a new one, but not
//! within [`SEND_RETRY_BACKOFF`] of the last failure.
//! Snapshots (`snapshot_stream`): snapshot messages go on their own streaming RPC: the file the
//! message describes is read and sent in [`SNAPSHOT_CHUNK_BYTES`] pieces, at most
//! [`SNAPSHOT_CHUNKS_IN_FLIGHT`] of them queued; the outcome is reported back to Raft as finished
//! or failed. A received snapshot stream is written to a file, synced, checked against its
//! descriptor and only then handed to the driver; one stream is received at a time.
//! Inbound (`inbound`): the `RaftTransport` service reads each envelope off the stream and hands
//! all its messages to the driver's queue as one item, without blocking (a full queue drops the
//! envelope; Raft retransmits).
//! This file: the member's [`Transport`] (peer addresses, what reaches the driver) and the link
//! settings both directions share.
//!
//! Test-only fault injection: a member started with fault injection enabled can be told to drop
//! all Raft traffic to and from chosen peers, which cuts it off as a real partition would.

mod inbound;
mod outbound;
mod snapshot_stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bitmountain_proto::v1::raft_transport_client::RaftTransportClient;
use bitmountain_proto::{AuthChannel, Credentials};
use raft::prelude::Message;

use crate::engine::Members;
use crate::error::RaftStoreError;

pub use inbound::RaftService;
use outbound::PeerLink;
pub use outbound::{
    MAX_ENVELOPE_BYTES, MAX_MESSAGES_PER_ENVELOPE, SEND_RETRY_BACKOFF, STREAM_ENVELOPES_IN_FLIGHT,
};
pub use snapshot_stream::{SNAPSHOT_CHUNKS_IN_FLIGHT, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_RPC_TIMEOUT};

/// Largest gRPC message members accept from each other: a full envelope plus one oversized
/// entry (raft-rs sends at least one entry per append, whatever its size).
pub const MAX_RAFT_RPC_BYTES: usize = 256 << 20;
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
    credentials: Credentials,
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
        credentials: Credentials,
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
            credentials,
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

    /// A client of the member at `addr` with the link settings above; it connects on first use.
    fn client(&self, addr: &str) -> Option<RaftTransportClient<AuthChannel>> {
        let endpoint = match self.credentials.endpoint(addr) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot reach a member at this address");
                return None;
            }
        };
        let channel = self.credentials.connect_lazy(
            endpoint
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
                // A peer that vanished without closing its socket (host down, network cut) is
                // noticed by keep-alive pings, which ends the stream so the link is rebuilt.
                .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true),
        );
        Some(
            RaftTransportClient::new(self.credentials.wrap(channel))
                .max_decoding_message_size(MAX_RAFT_RPC_BYTES)
                .max_encoding_message_size(MAX_RAFT_RPC_BYTES),
        )
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
