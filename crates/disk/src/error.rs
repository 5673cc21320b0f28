//! The disk crate's errors; each names the disk directory, and the shard where there is one.

use std::io;
use std::path::PathBuf;

use bitmountain_erasure::BundleId;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "{path} has no Bit Mountain identity file: it is not a disk of this cluster, or the disk is not mounted. \
         Mount the disk, or, if it is a new empty disk, add it to the cluster so it gets an identity"
    )]
    NoIdentity { path: PathBuf },

    #[error(
        "{path} is not empty (found {entry:?}); only an empty directory can become a new disk"
    )]
    NotEmpty { path: PathBuf, entry: String },

    #[error("{path} belongs to cluster {found}, not {expected}; it was taken from another cluster: do not reuse it without wiping it")]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error("identity file of {path} is unreadable: {reason}; the disk may be damaged")]
    BadIdentity { path: PathBuf, reason: String },

    #[error("disk {path} changed identity: expected disk {expected}, found {found}; was the disk swapped or unmounted?")]
    IdentityChanged {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("shard {shard} of bundle {bundle} is not on disk {disk_id}")]
    ShardNotFound {
        disk_id: u64,
        bundle: BundleId,
        shard: u16,
    },

    #[error("read of {len_bytes} bytes at {offset} is beyond shard {shard} of bundle {bundle} ({shard_bytes} bytes) on disk {disk_id}")]
    RangeOutOfBounds {
        disk_id: u64,
        bundle: BundleId,
        shard: u16,
        offset: u64,
        len_bytes: u64,
        shard_bytes: u64,
    },

    #[error("read of {len_bytes} bytes exceeds the limit of {limit_bytes} per request")]
    ReadTooLarge { len_bytes: u64, limit_bytes: u64 },

    #[error("disk {disk_id} ({path}): {context}: {source}")]
    Io {
        disk_id: u64,
        path: PathBuf,
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = DiskError> = std::result::Result<T, E>;
