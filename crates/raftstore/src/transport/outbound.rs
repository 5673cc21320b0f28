//! Outbound Raft traffic: a Ready's messages packed into envelopes per peer and put, from the
//! driver thread and without blocking, on one long-lived stream per peer; a stream that fails
//! or backs up is dropped and the peer reported unreachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_proto::v1::RaftEnvelope;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;

use super::{Report, Transport};

/// Most messages packed in one envelope.
pub const MAX_MESSAGES_PER_ENVELOPE: usize = 1024;
/// An envelope stops growing once its messages reach this size.
pub const MAX_ENVELOPE_BYTES: usize = 16 << 20;
/// Pause after a stream to a peer ended before the next one is opened; messages for the peer
/// meanwhile are dropped (Raft retransmits), so a peer that refuses is not redialled in a spin.
pub const SEND_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Envelopes queued on a peer's stream before it counts as stuck (the bound of what the
/// transport holds for one peer).
pub const STREAM_ENVELOPES_IN_FLIGHT: usize = 256;

/// The envelope stream to one peer.
struct Link {
    addr: String,
    tx: mpsc::Sender<RaftEnvelope>,
}

/// What the transport keeps per peer: its stream, if one is open, and when the last one ended.
#[derive(Default)]
pub(super) struct PeerLink {
    link: Option<Link>,
    failed_at: Option<Instant>,
}

impl Transport {
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
    pub(super) fn envelopes(&self, to: u64, msgs: &[Message]) -> Vec<RaftEnvelope> {
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

    pub(super) fn envelope(&self, to: u64, msgs: &[Message]) -> RaftEnvelope {
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

    /// Opens a long-lived envelope stream to `addr`. When the stream ends or fails, the task
    /// reports the peer unreachable and the returned sender closes, so the next Ready opens a
    /// new one.
    fn open_link(self: &Arc<Self>, to: u64, addr: &str) -> Option<mpsc::Sender<RaftEnvelope>> {
        // The driver thread is not a runtime thread; the lazy channel spawns its worker on ours.
        let _runtime = self.rt.enter();
        let mut client = self.client(addr)?;
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
}
