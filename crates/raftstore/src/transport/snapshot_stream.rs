//! Snapshots between members, on their own client-streaming `StreamSnapshot` RPC so they never
//! hold up heartbeats. Sending: the file the message describes is read in pieces by a blocking
//! task, a few ahead of the network, and the outcome is reported to Raft. Receiving: the pieces
//! go to a temporary file, which is synced, checked against the descriptor and renamed before
//! the message reaches the driver; one stream is received at a time.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_proto::v1::SnapshotChunk;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use super::{Report, Transport};
use crate::snapshot::{self, Descriptor, Side};

/// Deadline of one whole snapshot stream (1 TiB at 1.7 GiB/s; a slower link needs a longer one).
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of snapshot file per streamed piece.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Pieces read ahead of the network on the sending side.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

impl Transport {
    pub(super) fn send_snapshot(self: &Arc<Self>, m: Message) {
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
        let Some(mut c) = self.addr_of(to).and_then(|a| self.client(&a)) else {
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

    /// Receives a snapshot stream into a file, checks it and hands its message to the driver.
    pub(super) async fn receive_snapshot(
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
}
