//! NodeService: the shard files of this node's disks, over gRPC.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_disk::{DiskError, DiskStore, PendingShard, MAX_READ_BYTES};
use bitmountain_erasure::BundleId;
use bitmountain_proto::v1::node_service_server::NodeService;
use bitmountain_proto::v1::{
    write_shard_request, DeleteShardRequest, DeleteShardResponse, ListShardsRequest,
    ListShardsResponse, ReadShardRequest, ReadShardResponse, ShardRef, StoredShardInfo,
    WriteShardRequest, WriteShardResponse,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{NodeError, Result};
use crate::limits::{
    INLINE_READ_MAX_BYTES, MAX_CONCURRENT_SHARD_WRITES, MAX_SHARD_BYTES, SHARD_PIECE_BYTES,
    UPLOAD_IDLE_TIMEOUT_MS,
};
use crate::shard_io::{delete_local, DeleteWhy};

/// Read pieces buffered ahead of a slow reader.
const READ_PIECES_IN_FLIGHT: usize = 4;

/// The disks a node serves, by disk id.
#[derive(Debug, Clone, Default)]
pub struct DiskSet {
    disks: Arc<HashMap<u64, Arc<DiskStore>>>,
}

impl DiskSet {
    pub fn new(disks: Vec<DiskStore>) -> Self {
        let disks = disks
            .into_iter()
            .map(|d| (d.disk_id(), Arc::new(d)))
            .collect();
        DiskSet {
            disks: Arc::new(disks),
        }
    }

    pub fn get(&self, disk_id: u64) -> Result<Arc<DiskStore>> {
        self.disks
            .get(&disk_id)
            .cloned()
            .ok_or(NodeError::UnknownDisk { disk_id })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<DiskStore>> {
        self.disks.values()
    }
}

/// A validated [`ShardRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardAddress {
    pub bundle: BundleId,
    pub shard: u16,
    pub disk_id: u64,
}

impl ShardAddress {
    pub fn from_proto(r: Option<&ShardRef>) -> Result<Self> {
        let r = r.ok_or_else(|| NodeError::BadRequest {
            reason: "missing shard reference".into(),
        })?;
        let bundle: [u8; 16] =
            r.bundle_id
                .as_slice()
                .try_into()
                .map_err(|_| NodeError::BadRequest {
                    reason: format!("bundle id must be 16 bytes, got {}", r.bundle_id.len()),
                })?;
        let shard = u16::try_from(r.shard_index)
            .ok()
            .filter(|&s| s < 256)
            .ok_or_else(|| NodeError::BadRequest {
                reason: format!("shard index {} is out of range (0..256)", r.shard_index),
            })?;
        Ok(ShardAddress {
            bundle: BundleId(bundle),
            shard,
            disk_id: r.disk_id,
        })
    }

    pub fn to_proto(self) -> ShardRef {
        ShardRef {
            bundle_id: self.bundle.0.to_vec(),
            shard_index: u32::from(self.shard),
            disk_id: self.disk_id,
        }
    }
}

/// The NodeService implementation.
#[derive(Debug, Clone)]
pub struct NodeShardService {
    disks: DiskSet,
    write_slots: Arc<Semaphore>,
    idle_timeout: Duration,
    scrub: Option<Arc<crate::heal::ScrubControl>>,
}

impl NodeShardService {
    pub fn new(disks: DiskSet) -> Self {
        Self::with_idle_timeout(disks, Duration::from_millis(UPLOAD_IDLE_TIMEOUT_MS))
    }

    pub fn with_idle_timeout(disks: DiskSet, idle_timeout: Duration) -> Self {
        NodeShardService {
            disks,
            write_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_SHARD_WRITES)),
            idle_timeout,
            scrub: None,
        }
    }

    /// Lets `StartScrub` start the node's scrubber.
    pub fn with_scrub(mut self, scrub: Arc<crate::heal::ScrubControl>) -> Self {
        self.scrub = Some(scrub);
        self
    }

    async fn next_message(
        &self,
        stream: &mut Streaming<WriteShardRequest>,
        address: Option<ShardAddress>,
        received_bytes: u64,
    ) -> Result<Option<write_shard_request::Item>> {
        let describe = |a: Option<ShardAddress>| {
            a.map(|a| (a.bundle.to_string(), u32::from(a.shard)))
                .unwrap_or_else(|| ("?".into(), 0))
        };
        match tokio::time::timeout(self.idle_timeout, stream.message()).await {
            Err(_) => {
                let (bundle, shard) = describe(address);
                Err(NodeError::IdleTimeout {
                    bundle,
                    shard,
                    idle_ms: self.idle_timeout.as_millis() as u64,
                })
            }
            Ok(Err(status)) => {
                let (bundle, shard) = describe(address);
                tracing::debug!(%status, "shard stream broke");
                Err(NodeError::StreamCut {
                    bundle,
                    shard,
                    received_bytes,
                })
            }
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(msg))) => match msg.item {
                Some(item) => Ok(Some(item)),
                None => Err(NodeError::BadRequest {
                    reason: "empty shard stream message".into(),
                }),
            },
        }
    }

    async fn receive_shard(&self, mut stream: Streaming<WriteShardRequest>) -> Result<u64> {
        let _slot = self
            .write_slots
            .acquire()
            .await
            .map_err(|_| NodeError::Internal("write slots closed".into()))?;
        let address = match self.next_message(&mut stream, None, 0).await? {
            Some(write_shard_request::Item::Start(r)) => ShardAddress::from_proto(Some(&r))?,
            _ => {
                return Err(NodeError::BadRequest {
                    reason: "a shard stream must begin with a start message".into(),
                })
            }
        };
        let disk = self.disks.get(address.disk_id)?;
        let mut pending = blocking(move || {
            disk.create_shard(address.bundle, address.shard)
                .map_err(NodeError::from)
        })
        .await?;
        let mut crc = 0u32;
        let mut total_bytes = 0u64;
        let mismatch = |reason: String| NodeError::StreamMismatch {
            bundle: address.bundle.to_string(),
            shard: u32::from(address.shard),
            reason,
        };
        loop {
            match self
                .next_message(&mut stream, Some(address), total_bytes)
                .await?
            {
                Some(write_shard_request::Item::Data(bytes)) => {
                    total_bytes += bytes.len() as u64;
                    if total_bytes > MAX_SHARD_BYTES {
                        return Err(NodeError::BadRequest {
                            reason: format!("shard exceeds the limit of {MAX_SHARD_BYTES} bytes"),
                        });
                    }
                    crc = crc32c::crc32c_append(crc, &bytes);
                    pending = write_blocking(pending, bytes).await?;
                }
                Some(write_shard_request::Item::Finish(finish)) => {
                    if finish.total_bytes != total_bytes {
                        return Err(mismatch(format!(
                            "sender sent {} bytes, {total_bytes} arrived",
                            finish.total_bytes
                        )));
                    }
                    if finish.crc32c != crc {
                        return Err(mismatch(format!(
                            "CRC32C {:08x} sent, {crc:08x} received",
                            finish.crc32c
                        )));
                    }
                    blocking(move || pending.commit().map_err(NodeError::from)).await?;
                    return Ok(total_bytes);
                }
                Some(write_shard_request::Item::Start(_)) => {
                    return Err(NodeError::BadRequest {
                        reason: "a second start message in one shard stream".into(),
                    })
                }
                None => {
                    return Err(NodeError::StreamCut {
                        bundle: address.bundle.to_string(),
                        shard: u32::from(address.shard),
                        received_bytes: total_bytes,
                    })
                }
            }
        }
        // `pending` is dropped on every error path above: its temporary file is removed.
    }
}

/// Runs blocking disk I/O off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("disk task failed: {e}")))?
}

/// Reads a range of a shard on one of this node's disks: on this thread when its bytes are at
/// hand (the file open, the bytes in the page cache), else on a blocking thread.
pub(crate) async fn read_local(
    disk: Arc<DiskStore>,
    address: ShardAddress,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    if len <= INLINE_READ_MAX_BYTES {
        if let Some(read) = disk.read_shard_range_now(address.bundle, address.shard, offset, len) {
            return Ok(read?);
        }
    }
    blocking(move || Ok(disk.read_shard_range(address.bundle, address.shard, offset, len)?)).await
}

async fn write_blocking(mut pending: PendingShard, bytes: bytes::Bytes) -> Result<PendingShard> {
    blocking(move || {
        pending.write(&bytes)?;
        Ok(pending)
    })
    .await
}

type ReadStream = Pin<
    Box<dyn tokio_stream::Stream<Item = std::result::Result<ReadShardResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl NodeService for NodeShardService {
    async fn write_shard(
        &self,
        request: Request<Streaming<WriteShardRequest>>,
    ) -> std::result::Result<Response<WriteShardResponse>, Status> {
        let written_bytes = self.receive_shard(request.into_inner()).await?;
        Ok(Response::new(WriteShardResponse { written_bytes }))
    }

    type ReadShardStream = ReadStream;

    async fn read_shard(
        &self,
        request: Request<ReadShardRequest>,
    ) -> std::result::Result<Response<Self::ReadShardStream>, Status> {
        let req = request.into_inner();
        let address = ShardAddress::from_proto(req.shard.as_ref())?;
        if req.length > MAX_READ_BYTES {
            return Err(NodeError::Disk(DiskError::ReadTooLarge {
                len_bytes: req.length,
                limit_bytes: MAX_READ_BYTES,
            })
            .into());
        }
        let disk = self.disks.get(address.disk_id)?;
        // A range of one piece (the common case: a few chunks for a file read) is read and
        // answered in one step: every task hop costs a wake-up on the read's critical path.
        if req.length <= SHARD_PIECE_BYTES as u64 {
            let (offset, length) = (req.offset, req.length);
            let data = read_local(disk, address, offset, length).await?;
            let piece = ReadShardResponse { data: data.into() };
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(piece)))));
        }
        // Check the whole range before streaming anything, so a bad range is the call's status.
        let shard_bytes = {
            let disk = disk.clone();
            blocking(move || Ok(disk.shard_len(address.bundle, address.shard)?)).await?
        };
        let end = req
            .offset
            .checked_add(req.length)
            .filter(|&end| end <= shard_bytes);
        let Some(end) = end else {
            return Err(NodeError::Disk(DiskError::RangeOutOfBounds {
                disk_id: address.disk_id,
                bundle: address.bundle,
                shard: address.shard,
                offset: req.offset,
                len_bytes: req.length,
                shard_bytes,
            })
            .into());
        };
        let (tx, rx) = mpsc::channel(READ_PIECES_IN_FLIGHT);
        tokio::spawn(async move {
            let mut offset = req.offset;
            while offset < end {
                let len = (end - offset).min(SHARD_PIECE_BYTES as u64);
                let disk = disk.clone();
                let piece = read_local(disk, address, offset, len).await;
                let failed = piece.is_err();
                let message = piece
                    .map(|data| ReadShardResponse { data: data.into() })
                    .map_err(Status::from);
                // A closed channel means the reader went away: stop reading.
                if tx.send(message).await.is_err() || failed {
                    return;
                }
                offset += len;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delete_shard(
        &self,
        request: Request<DeleteShardRequest>,
    ) -> std::result::Result<Response<DeleteShardResponse>, Status> {
        let address = ShardAddress::from_proto(request.get_ref().shard.as_ref())?;
        let why = if request.get_ref().bundle_deleted {
            DeleteWhy::BundleDeleted
        } else {
            DeleteWhy::NotPlacedHere
        };
        let disk = self.disks.get(address.disk_id)?;
        let existed = blocking(move || delete_local(&disk, address, why)).await?;
        Ok(Response::new(DeleteShardResponse { existed }))
    }

    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> std::result::Result<Response<ListShardsResponse>, Status> {
        let disk = self.disks.get(request.get_ref().disk_id)?;
        let shards = blocking(move || Ok(disk.list_shards()?)).await?;
        Ok(Response::new(ListShardsResponse {
            shards: shards
                .into_iter()
                .map(|s| StoredShardInfo {
                    bundle_id: s.bundle.0.to_vec(),
                    shard_index: u32::from(s.shard),
                    len_bytes: s.len_bytes,
                })
                .collect(),
        }))
    }

    async fn start_scrub(
        &self,
        _request: Request<bitmountain_proto::v1::StartScrubRequest>,
    ) -> std::result::Result<Response<bitmountain_proto::v1::StartScrubResponse>, Status> {
        let Some(scrub) = &self.scrub else {
            return Err(Status::unimplemented(
                "this node runs no scrubber (it serves shards only)",
            ));
        };
        Ok(Response::new(bitmountain_proto::v1::StartScrubResponse {
            started: scrub.start(),
        }))
    }
}
