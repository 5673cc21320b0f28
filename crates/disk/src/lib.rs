//! A storage node's disks. Each disk is a directory carrying an identity file (cluster id, disk
//! id) written once, when the disk is first added to the cluster. A directory without it, or
//! with another cluster's, is refused: an unmounted disk must never turn into writes on the root
//! filesystem.
//!
//! [`DiskStore`] keeps shard files under the disk: written to a temporary name, fsynced, renamed
//! into place and the directory fsynced ([`PendingShard`]), so a crash never leaves a
//! complete-looking partial shard. Sync I/O only; the node calls it from blocking tasks, but
//! for [`DiskStore::read_shard_range_now`], which serves a read from an open file and the page
//! cache or not at all (`open_files.rs`), so warm reads skip the hand-off to a blocking thread.
//! Before a deleted bundle's shard goes, the disk records a tombstone ([`Tombstone`]); a scan
//! ([`DiskStore::scan`]) reads back what the disk holds, from the files alone, for disaster
//! recovery.
//!
//! On-disk layout (see `docs/formats.md`):
//!
//! ```text
//! <disk>/bitmountain-disk.id            identity (versioned text, CRC32C)
//! <disk>/shards/<2 hex>/<bundle>.<i>.shard  shard files, fanned out by the bundle id's first byte
//! <disk>/tmp/                           shard files being written
//! <disk>/tombstones.log                 bundles deleted, one record each (append-only)
//! ```

mod error;
mod identity;
mod open_files;
mod scan;
mod store;
mod tombstone;

pub use error::{DiskError, Result};
pub use identity::{ClusterId, DiskIdentity, IDENTITY_FILE, IDENTITY_VERSION};
pub use open_files::{kept_files_per_disk, open_file_soft_limit, MAX_OPEN_SHARD_FILES_PER_DISK};
pub use scan::{DiskScan, ScannedShard, ShardFound};
pub use store::{DiskSpace, DiskStore, PendingShard, StoredShard, MAX_READ_BYTES};
pub use tombstone::{Tombstone, TombstoneLog, TOMBSTONE_FILE, TOMBSTONE_RECORD_BYTES};

/// A disk's id in the cluster map.
pub type DiskId = u64;
