//! A storage node's disks. Each disk is a directory carrying an identity file (cluster id, disk
//! id) written once, when the disk is first added to the cluster. A directory without it, or
//! with another cluster's, is refused: an unmounted disk must never turn into writes on the root
//! filesystem.
//!
//! [`DiskStore`] keeps shard files under the disk: written to a temporary name, fsynced, renamed
//! into place and the directory fsynced ([`PendingShard`]), so a crash never leaves a
//! complete-looking partial shard. Sync I/O only; the node calls it from blocking tasks.
//!
//! On-disk layout (see `docs/formats.md`):
//!
//! ```text
//! <disk>/bitmountain-disk.id            identity (versioned text, CRC32C)
//! <disk>/shards/<2 hex>/<bundle>.<i>.shard  shard files, fanned out by the bundle id's first byte
//! <disk>/tmp/                           shard files being written
//! ```

mod error;
mod identity;
mod store;

pub use error::{DiskError, Result};
pub use identity::{ClusterId, DiskIdentity, IDENTITY_FILE, IDENTITY_VERSION};
pub use store::{DiskSpace, DiskStore, PendingShard, StoredShard, MAX_READ_BYTES};

/// A disk's id in the cluster map.
pub type DiskId = u64;
