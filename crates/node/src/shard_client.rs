//! A typed client for another node's NodeService, with deadlines on every call.

use std::time::Duration;

use bitmountain_proto::v1::node_service_client::NodeServiceClient;
use bitmountain_proto::v1::{
    write_shard_request, DeleteShardRequest, ListShardsRequest, ReadShardRequest, WriteShardFinish,
    WriteShardRequest,
};
use bitmountain_proto::{AuthChannel, Credentials};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{NodeError, Result};
use crate::limits::{
    CONNECT_TIMEOUT_MS, H2_CONNECTION_WINDOW_BYTES, H2_STREAM_WINDOW_BYTES, MAX_MESSAGE_BYTES,
    SHARD_PIECE_BYTES, SHARD_RPC_TIMEOUT_MS, SHARD_WRITE_PIECE_BYTES,
};
use crate::shard_io::DeleteWhy;
use crate::shard_service::ShardAddress;

/// Messages buffered towards one target before the sender waits: the back-pressure that keeps a
/// coordinator's memory bounded when one target is slower than the others.
const UPLOAD_MESSAGES_IN_FLIGHT: usize = 4;

/// A connection to one node's NodeService.
#[derive(Debug, Clone)]
pub struct ShardClient {
    address: String,
    inner: NodeServiceClient<AuthChannel>,
}

impl ShardClient {
    /// Connects lazily: the first call dials, within [`CONNECT_TIMEOUT_MS`].
    pub fn new(address: &str, credentials: &Credentials) -> Result<Self> {
        let endpoint = credentials
            .endpoint(address)
            .map_err(|e| NodeError::BadRequest {
                reason: format!("bad node address {address:?}: {e}"),
            })?;
        let channel = credentials.connect_lazy(
            endpoint
                .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(H2_STREAM_WINDOW_BYTES))
                .initial_connection_window_size(Some(H2_CONNECTION_WINDOW_BYTES)),
        );
        let inner = NodeServiceClient::new(credentials.wrap(channel))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(ShardClient {
            address: address.to_owned(),
            inner,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn remote(&self, status: tonic::Status) -> NodeError {
        // Statuses our nodes send carry an error-kind header; one without it came from the
        // transport (refused connection, reset), so the node is unreachable.
        let from_node = bitmountain_proto::error_kind::kind_header(&status).is_some();
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                if !from_node =>
            {
                NodeError::Unreachable {
                    address: self.address.clone(),
                    reason: status.message().to_owned(),
                }
            }
            code => NodeError::Remote {
                address: self.address.clone(),
                code,
                message: status.message().to_owned(),
            },
        }
    }

    fn request<T>(message: T, timeout_ms: u64) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_millis(timeout_ms));
        request
    }

    /// Starts streaming a shard file to `target`. Feed it with [`ShardUpload::send`], then
    /// [`ShardUpload::finish`]; `timeout_ms` bounds the whole upload.
    pub fn upload(&self, target: ShardAddress, timeout_ms: u64) -> ShardUpload {
        let (tx, rx) = mpsc::channel(UPLOAD_MESSAGES_IN_FLIGHT);
        let mut client = self.clone();
        let task = tokio::spawn(async move {
            let request = Self::request(ReceiverStream::new(rx), timeout_ms);
            match client.inner.write_shard(request).await {
                Ok(response) => Ok(response.into_inner().written_bytes),
                Err(status) => Err(client.remote(status)),
            }
        });
        ShardUpload {
            target,
            tx: Some(tx),
            task,
            crc: 0,
            total_bytes: 0,
            started: false,
        }
    }

    /// Reads `length` bytes at `offset` of a shard file.
    pub async fn read_range(
        &self,
        shard: ShardAddress,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let request = Self::request(
            ReadShardRequest {
                shard: Some(shard.to_proto()),
                offset,
                length,
            },
            SHARD_RPC_TIMEOUT_MS,
        );
        let mut stream = self
            .inner
            .clone()
            .read_shard(request)
            .await
            .map_err(|s| self.remote(s))?
            .into_inner();
        let mut out = Vec::with_capacity(length.min(SHARD_PIECE_BYTES as u64 * 16) as usize);
        while let Some(piece) = stream.message().await.map_err(|s| self.remote(s))? {
            out.extend_from_slice(&piece.data);
            if out.len() as u64 > length {
                return Err(NodeError::Remote {
                    address: self.address.clone(),
                    code: tonic::Code::Internal,
                    message: format!("sent more than the {length} bytes asked for"),
                });
            }
        }
        if out.len() as u64 != length {
            return Err(NodeError::Remote {
                address: self.address.clone(),
                code: tonic::Code::DataLoss,
                message: format!("sent {} of {length} bytes", out.len()),
            });
        }
        Ok(out)
    }

    /// Deletes a shard; `false` when it was not there.
    pub async fn delete(&self, shard: ShardAddress, why: DeleteWhy) -> Result<bool> {
        let request = Self::request(
            DeleteShardRequest {
                shard: Some(shard.to_proto()),
                bundle_deleted: why == DeleteWhy::BundleDeleted,
            },
            SHARD_RPC_TIMEOUT_MS,
        );
        let response = self
            .inner
            .clone()
            .delete_shard(request)
            .await
            .map_err(|s| self.remote(s))?;
        Ok(response.into_inner().existed)
    }

    /// Lists the shards on one disk of the node.
    pub async fn list(
        &self,
        disk_id: u64,
    ) -> Result<Vec<(bitmountain_erasure::BundleId, u16, u64)>> {
        let request = Self::request(ListShardsRequest { disk_id }, SHARD_RPC_TIMEOUT_MS);
        let response = self
            .inner
            .clone()
            .list_shards(request)
            .await
            .map_err(|s| self.remote(s))?;
        response
            .into_inner()
            .shards
            .into_iter()
            .map(|s| {
                let address = ShardAddress::from_proto(Some(&bitmountain_proto::v1::ShardRef {
                    bundle_id: s.bundle_id,
                    shard_index: s.shard_index,
                    disk_id,
                }))?;
                Ok((address.bundle, address.shard, s.len_bytes))
            })
            .collect()
    }
}

/// One shard file streaming to a node.
#[derive(Debug)]
pub struct ShardUpload {
    target: ShardAddress,
    tx: Option<mpsc::Sender<WriteShardRequest>>,
    task: JoinHandle<Result<u64>>,
    crc: u32,
    total_bytes: u64,
    started: bool,
}

impl ShardUpload {
    async fn send_message(&mut self, item: write_shard_request::Item) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(NodeError::Internal("upload already finished".into()));
        };
        if tx
            .send(WriteShardRequest { item: Some(item) })
            .await
            .is_err()
        {
            // The call ended early; its result says why.
            return Err(self.take_failure().await);
        }
        Ok(())
    }

    async fn take_failure(&mut self) -> NodeError {
        self.tx = None;
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => {
                NodeError::Internal("the node accepted a shard before it was finished".into())
            }
            Err(e) => NodeError::Internal(format!("upload task failed: {e}")),
        }
    }

    /// Sends shard bytes (copied); waits while the target is behind.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.send_bytes(Bytes::copy_from_slice(bytes)).await
    }

    /// Sends shard bytes without copying them; waits while the target is behind.
    pub async fn send_bytes(&mut self, bytes: Bytes) -> Result<()> {
        if !self.started {
            self.started = true;
            self.send_message(write_shard_request::Item::Start(self.target.to_proto()))
                .await?;
        }
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + SHARD_WRITE_PIECE_BYTES).min(bytes.len());
            let piece = bytes.slice(at..end);
            self.crc = crc32c::crc32c_append(self.crc, &piece);
            self.total_bytes += piece.len() as u64;
            self.send_message(write_shard_request::Item::Data(piece))
                .await?;
            at = end;
        }
        Ok(())
    }

    /// Test seam: keeps the stream open without sending until the node gives up, and returns
    /// the node's error.
    #[doc(hidden)]
    pub async fn finish_after_idle(mut self) -> NodeError {
        // Await the call while still holding the sender, so the stream stays open.
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => NodeError::Internal("the node accepted an unfinished shard".into()),
            Err(e) => NodeError::Internal(format!("upload task failed: {e}")),
        }
    }

    /// Ends the stream and waits until the target has fsynced the shard.
    pub async fn finish(mut self) -> Result<u64> {
        if !self.started {
            self.started = true;
            self.send_message(write_shard_request::Item::Start(self.target.to_proto()))
                .await?;
        }
        let finish = WriteShardFinish {
            total_bytes: self.total_bytes,
            crc32c: self.crc,
        };
        self.send_message(write_shard_request::Item::Finish(finish))
            .await?;
        self.tx = None;
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Internal(format!("upload task failed: {e}"))),
        }
    }
}
