//! Typed errors. Every variant carries the ids and values involved, so a message read in a log
//! (or by an operator during disaster recovery) names the bundle, the shard and the number.

use crate::code::BundleId;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("invalid code RS({data_shards},{parity_shards}): {reason}")]
    InvalidCode {
        data_shards: usize,
        parity_shards: usize,
        reason: &'static str,
    },
    #[error("invalid cell size {cell_bytes} bytes: must be a multiple of {align_bytes} in {min_bytes}..={max_bytes}")]
    InvalidCellBytes {
        cell_bytes: u64,
        align_bytes: u64,
        min_bytes: u64,
        max_bytes: u64,
    },
    #[error("invalid chunk size {chunk_bytes} bytes: must be in {min_bytes}..={max_bytes}")]
    InvalidChunkBytes {
        chunk_bytes: u64,
        min_bytes: u64,
        max_bytes: u64,
    },
    #[error("bundle length {bundle_len} bytes is over the limit of {max_bytes} bytes")]
    BundleTooLong { bundle_len: u64, max_bytes: u64 },
    #[error("range {offset}+{len} is outside bundle {bundle_id} of {bundle_len} bytes")]
    RangeOutOfBounds {
        bundle_id: BundleId,
        offset: u64,
        len: u64,
        bundle_len: u64,
    },
    #[error("index location {offset}+{len} is outside the bundle of {bundle_len} bytes")]
    InvalidIndexLocation {
        offset: u64,
        len: u64,
        bundle_len: u64,
    },
    #[error("shard {shard_index:?}: bad header: {reason}")]
    BadHeader {
        shard_index: Option<u16>,
        reason: String,
    },
    #[error("shard {shard_index}: bad footer: {reason}")]
    BadFooter { shard_index: u16, reason: String },
    #[error("bad bundle description: {reason}")]
    BadDescription { reason: String },
    #[error("shard index {shard_index} out of range for RS({data_shards},{parity_shards})")]
    ShardIndexOutOfRange {
        shard_index: usize,
        data_shards: usize,
        parity_shards: usize,
    },
    #[error(
        "bundle {bundle_id} cannot be recovered: chunk {chunk} has {healthy} healthy shards of the \
         {needed} needed; missing or corrupt shards: {lost_shards:?}"
    )]
    Unrecoverable {
        bundle_id: BundleId,
        chunk: u64,
        healthy: usize,
        needed: usize,
        lost_shards: Vec<u16>,
    },
    #[error("bundle {bundle_id}: no shard with a readable header and footer, cannot tell the bundle length")]
    NoBundleInfo { bundle_id: BundleId },
    #[error("no readable shard header among {candidates} candidate shard files")]
    NoShards { candidates: usize },
    #[error("bundle {bundle_id}: SHA-256 mismatch: footer says {expected}, decoded bytes hash to {actual}")]
    Sha256Mismatch {
        bundle_id: BundleId,
        expected: String,
        actual: String,
    },
    #[error("bundle {bundle_id}: {what}")]
    Misuse { bundle_id: BundleId, what: String },
    #[error("shard {shard_index:?}: {context}: {source}")]
    Io {
        shard_index: Option<u16>,
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reed-solomon: {0:?}")]
    ReedSolomon(reed_solomon_erasure::Error),
}

impl ErasureError {
    pub(crate) fn io(
        shard_index: Option<u16>,
        context: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            shard_index,
            context: context.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ErasureError> = std::result::Result<T, E>;
