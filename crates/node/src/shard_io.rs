//! Shard I/O wherever the shard lives: on one of this node's disks (direct file I/O on blocking
//! threads, or at once for a read whose bytes are in the page cache; no gRPC) or on another
//! node (its NodeService). The coordinator's upload and read paths, deletes and garbage
//! collection all go through here, so "local or remote" is decided in one place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitmountain_disk::{DiskStore, PendingShard};
use bitmountain_erasure::BundleId;
use bitmountain_meta_client::ShardLocation;
use bytes::Bytes;

use crate::error::{NodeError, Result};
use crate::shard_client::{ShardClient, ShardUpload};
use crate::shard_service::{blocking, read_local, DiskSet, ShardAddress};

/// Connections to other nodes, and which of them failed recently.
#[derive(Debug)]
pub struct Peers {
    clients: Mutex<HashMap<String, ShardClient>>,
    suspects: Mutex<HashMap<String, Instant>>,
    suspect_for: Duration,
    /// How this node calls the others (its certificate).
    credentials: bitmountain_proto::Credentials,
}

impl Peers {
    pub fn new(suspect_for: Duration, credentials: bitmountain_proto::Credentials) -> Self {
        Peers {
            clients: Mutex::default(),
            suspects: Mutex::default(),
            suspect_for,
            credentials,
        }
    }

    /// A client for the node at `address` (connections are shared and made lazily).
    pub fn client(&self, address: &str) -> Result<ShardClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let client = ShardClient::new(address, &self.credentials)?;
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Records that `address` did not answer: reads skip it for a while.
    pub fn mark_suspect(&self, address: &str) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.insert(address.to_owned(), Instant::now() + self.suspect_for);
    }

    /// Whether `address` failed recently.
    pub fn is_suspect(&self, address: &str) -> bool {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        match suspects.get(address) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                suspects.remove(address);
                false
            }
            None => false,
        }
    }
}

/// Reads, writes and deletes shards on this node's disks or on other nodes.
#[derive(Debug)]
pub struct ShardIo {
    disks: DiskSet,
    peers: Peers,
}

impl ShardIo {
    pub fn new(disks: DiskSet, peers: Peers) -> Self {
        ShardIo { disks, peers }
    }

    pub fn disks(&self) -> &DiskSet {
        &self.disks
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    fn is_local(&self, loc: &ShardLocation) -> bool {
        self.disks.get(loc.disk_id).is_ok()
    }

    fn address(loc: &ShardLocation, bundle: BundleId) -> Result<ShardAddress> {
        let shard = u16::try_from(loc.shard_index).map_err(|_| NodeError::BadRequest {
            reason: format!("shard index {} is out of range", loc.shard_index),
        })?;
        Ok(ShardAddress {
            bundle,
            shard,
            disk_id: loc.disk_id,
        })
    }

    /// Reads `len` bytes at `offset` of a shard file.
    pub async fn read(
        &self,
        loc: &ShardLocation,
        bundle: BundleId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let address = Self::address(loc, bundle)?;
        if self.is_local(loc) {
            let disk = self.disks.get(loc.disk_id)?;
            return read_local(disk, address, offset, len).await;
        }
        let client = self.peers.client(&loc.node_address)?;
        let result = client.read_range(address, offset, len).await;
        if let Err(NodeError::Unreachable { .. }) = &result {
            self.peers.mark_suspect(&loc.node_address);
        }
        result
    }

    /// Starts writing a shard file.
    pub async fn writer(&self, loc: &ShardLocation, bundle: BundleId) -> Result<ShardWriter> {
        let address = Self::address(loc, bundle)?;
        if self.is_local(loc) {
            let disk = self.disks.get(loc.disk_id)?;
            let pending = blocking(move || {
                disk.create_shard(address.bundle, address.shard)
                    .map_err(NodeError::from)
            })
            .await?;
            return Ok(ShardWriter::Local {
                pending: Some(pending),
                written_bytes: 0,
            });
        }
        let client = self.peers.client(&loc.node_address)?;
        Ok(ShardWriter::Remote(
            client.upload(address, crate::limits::SHARD_UPLOAD_TIMEOUT_MS),
        ))
    }

    /// Deletes a shard file; `false` when it was not there. For a deleted bundle the disk first
    /// records a tombstone.
    pub async fn delete(
        &self,
        loc: &ShardLocation,
        bundle: BundleId,
        why: DeleteWhy,
    ) -> Result<bool> {
        let address = Self::address(loc, bundle)?;
        if self.is_local(loc) {
            let disk = self.disks.get(loc.disk_id)?;
            return blocking(move || delete_local(&disk, address, why)).await;
        }
        self.peers
            .client(&loc.node_address)?
            .delete(address, why)
            .await
    }
}

/// Why a shard is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteWhy {
    /// Its bundle was deleted: a tombstone is recorded first.
    BundleDeleted,
    /// The bundle lives on, but not here: a stale copy, an orphan of a failed upload, a shard
    /// moved away.
    NotPlacedHere,
}

/// Deletes a shard on one of this node's disks (shared by local calls and `DeleteShard`). The
/// tombstone goes first, and only with a file to delete: a retried delete (garbage collection
/// retries while another node is down) finds the file gone and its tombstone already there.
pub fn delete_local(disk: &DiskStore, address: ShardAddress, why: DeleteWhy) -> Result<bool> {
    if why == DeleteWhy::BundleDeleted && disk.shard_len(address.bundle, address.shard).is_ok() {
        disk.record_tombstone(
            address.bundle,
            bitmountain_meta_client::types::now_unix_ms(),
        )?;
    }
    Ok(disk.delete_shard(address.bundle, address.shard)?)
}

/// A shard file being written, here or on another node. Dropped before [`ShardWriter::finish`],
/// nothing becomes visible.
#[derive(Debug)]
pub enum ShardWriter {
    Local {
        pending: Option<PendingShard>,
        written_bytes: u64,
    },
    Remote(ShardUpload),
}

impl ShardWriter {
    /// Appends bytes; waits while the target is behind.
    pub async fn send(&mut self, bytes: Bytes) -> Result<()> {
        match self {
            ShardWriter::Local {
                pending,
                written_bytes,
            } => {
                let mut p = pending.take().ok_or_else(|| {
                    NodeError::Internal("local shard writer already failed".into())
                })?;
                let len = bytes.len() as u64;
                let p = blocking(move || {
                    p.write(&bytes)?;
                    Ok(p)
                })
                .await?;
                *pending = Some(p);
                *written_bytes += len;
                Ok(())
            }
            ShardWriter::Remote(upload) => upload.send_bytes(bytes).await,
        }
    }

    /// Makes the shard durable (fsync, rename, directory fsync) and returns its length.
    pub async fn finish(self) -> Result<u64> {
        match self {
            ShardWriter::Local {
                pending,
                written_bytes,
            } => {
                let mut p = pending.ok_or_else(|| {
                    NodeError::Internal("local shard writer already failed".into())
                })?;
                blocking(move || Ok(p.commit()?)).await?;
                Ok(written_bytes)
            }
            ShardWriter::Remote(upload) => upload.finish().await,
        }
    }
}
