//! Inbound Raft traffic: the gRPC `RaftTransport` service. Each envelope's addressing is
//! checked (and the sender's address learned), and its messages reach the driver's queue as one
//! item, or are dropped together when it is full.

use std::sync::Arc;

use bitmountain_proto::v1::raft_transport_server::RaftTransport;
use bitmountain_proto::v1::{RaftAck, RaftEnvelope, SnapshotChunk};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use super::{Inbox, Transport, MAX_RAFT_RPC_BYTES};

impl Transport {
    /// Checks an envelope's addressing and learns the sender's address.
    pub(super) fn accept_envelope(
        &self,
        env: &RaftEnvelope,
    ) -> Result<Arc<dyn Inbox>, tonic::Status> {
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
