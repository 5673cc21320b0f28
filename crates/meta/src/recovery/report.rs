//! What a finished recovery reports (`bitmountain meta recover status`, `docs/formats.md`,
//! "Recovery"). Lists are capped at [`MAX_REPORT_LIST`]; the counts are whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most entries each list of a report keeps.
pub const MAX_REPORT_LIST: usize = 1000;

/// The outcome of a recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    pub format: u32,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// When the backup the group started from was taken (0: none).
    pub backup_unix_ms: u64,
    /// Ended by `meta recover finish` before every registered disk had reported.
    pub forced: bool,
    pub disks_registered: Vec<u64>,
    pub disks_reported: Vec<u64>,
    pub shards_found: u64,
    pub tombstones_found: u64,
    /// Bundles readable from the shards found (with k or more), recorded sealed.
    pub recovered: u64,
    /// Of those, bundles the backup did not hold.
    pub added: u64,
    /// Of those, bundles short of k+m shards, queued for repair.
    pub queued_for_repair: u64,
    /// Bundles with fewer than k usable shards, older than the orphan grace.
    pub lost_count: u64,
    pub lost: Vec<LostBundle>,
    /// Shard sets of uploads that never committed (fewer than k shards, young).
    pub incomplete_uploads: u64,
    /// Bundles with a tombstone: deleted before the disaster, kept deleted.
    pub deleted: u64,
    /// Bundles the backup held that no disk has a shard of.
    pub without_shards_count: u64,
    pub without_shards: Vec<String>,
    /// Shard files with no readable header.
    pub unreadable_shards: u64,
}

/// A bundle the shards found cannot make readable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostBundle {
    pub id: String,
    pub code: Option<String>,
    /// (shard index, disk id) of every usable shard found.
    pub shards_found: Vec<(u32, u64)>,
    pub labels: BTreeMap<String, String>,
    pub why: String,
}
