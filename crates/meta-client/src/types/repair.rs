//! Healing: the repair queue, the throttles, what a node's repair worker claims and reports,
//! repair progress, and rebalance plans.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::BundleId;

/// A queued repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTask {
    /// Bundle.
    pub bundle_id: BundleId,
    /// Shards on healthy disks when queued.
    pub healthy_shards: u32,
    /// Shard indexes to rebuild or move, when queued.
    pub missing_shards: Vec<u32>,
    /// When queued.
    pub queued_unix_ms: u64,
    /// Shards found damaged (corrupt or missing files) on disks that are otherwise fine: they
    /// are rewritten even though their disk and node are healthy.
    #[serde(default)]
    pub damaged_shards: Vec<u32>,
    /// Shards a rebalance moves, with the disk each goes to (not sent over the wire: empty in
    /// a client's listing).
    #[serde(default)]
    pub moves: BTreeMap<u32, u64>,
    /// Shards to move (drain, rebalance) rather than rebuild, when queued.
    #[serde(default)]
    pub moving_shards: Vec<u32>,
    /// Bytes of one shard of the bundle, for the repair ETA (not sent over the wire: 0 in a
    /// client's listing).
    #[serde(default)]
    pub shard_bytes: u64,
}

/// One page of the repair queue ([`crate::MetaClient::list_repairs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPage {
    /// The repairs on this page.
    pub repairs: Vec<RepairTask>,
    /// Empty when this was the last page.
    pub next_page_token: Vec<u8>,
    /// Repairs in the whole queue.
    pub total: u64,
}

/// Repair throttles, replicated so every leader enforces the same and nodes learn them from
/// heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSettings {
    /// Repairs and moves one node runs at once.
    pub max_repairs_per_node: u32,
    /// Bytes per second one node writes rebuilt or moved shards at; 0: unlimited.
    pub bytes_per_sec: u64,
    /// No new repairs are handed out; running ones finish.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            max_repairs_per_node: 4,
            bytes_per_sec: 0,
            paused: false,
        }
    }
}

/// Repair work the leader handed a node's worker ([`crate::MetaClient::claim_repairs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairClaim {
    /// New assignments (assignments whose bundle id did not decode are left out).
    pub assignments: Vec<RepairAssignment>,
    /// The throttles in force (the defaults when the leader sent none).
    pub settings: RepairSettings,
    /// How long an assignment is held for the worker without a renewal.
    pub lease_ms: u64,
}

/// One bundle to repair: shards to write on the claiming node's disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairAssignment {
    /// The bundle.
    pub bundle_id: BundleId,
    /// The generation the targets were chosen against; the worker's placement change is a
    /// compare-and-set on it.
    pub placement_generation: u64,
    /// The shards to write.
    pub targets: Vec<RepairTarget>,
    /// The bundle's shards without a healthy copy: never read as sources (a damaged one may
    /// still answer, with wrong bytes).
    pub lost_shards: Vec<u32>,
}

/// One shard of a [`RepairAssignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairTarget {
    /// Shard index.
    pub shard_index: u32,
    /// The disk (on the claiming node) the shard is written to.
    pub disk_id: u64,
    /// The disk the placement names for it now (the one being replaced).
    pub from_disk_id: u64,
    /// The current copy is healthy: copy it instead of rebuilding it from k others.
    pub copy: bool,
}

/// A worker's report that a repair is over ([`crate::MetaClient::finish_repair`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRepair {
    /// The worker's node.
    pub node_id: u64,
    /// The bundle.
    pub bundle_id: BundleId,
    /// The shards it was to write.
    pub shard_indexes: Vec<u32>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Bytes written.
    pub bytes_written: u64,
    /// Why it failed (empty on success), for the operator.
    pub error: String,
}

/// Repair progress as the leader sees it ([`crate::MetaClient::repair_status`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairStatus {
    /// Bundles in the repair queue.
    pub queued_bundles: u64,
    /// Shards being rebuilt or moved now (leases held by workers).
    pub running_shards: u64,
    /// Shards rebuilt or moved since the cluster was created.
    pub shards_repaired: u64,
    /// Their bytes.
    pub bytes_repaired: u64,
    /// Over the last minute, as the leader saw repairs finish.
    pub bytes_per_sec: f64,
    /// Bytes of shards left to write for the queued repairs (scanned up to a limit).
    pub queued_bytes: u64,
    /// `queued_bytes` at `bytes_per_sec`; 0 when nothing is queued or nothing finished lately.
    pub eta_ms: u64,
    /// Bundles in the queue by healthy shards (fewest first); every other sealed bundle has
    /// k+m.
    pub levels: Vec<RedundancyLevel>,
    /// The throttles in force (the defaults when the leader sent none).
    pub settings: RepairSettings,
    /// Shards being repaired now.
    pub running_repairs: Vec<RunningRepair>,
    /// Sealed bundles.
    pub sealed_bundles: u64,
    /// Whether the queue scan stopped at its limit (counts are then lower bounds).
    pub truncated: bool,
}

/// Queued bundles with this many healthy shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedundancyLevel {
    /// Healthy shards; redundancy left is this minus k.
    pub healthy_shards: u32,
    /// Bundles.
    pub bundles: u64,
}

/// A shard being repaired now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningRepair {
    /// The bundle.
    pub bundle_id: BundleId,
    /// The shard.
    pub shard_index: u32,
    /// The node whose worker holds it.
    pub node_id: u64,
    /// For how long.
    pub running_ms: u64,
}

/// Shard moves from fuller to emptier disks ([`crate::MetaClient::rebalance`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebalancePlan {
    /// The moves.
    pub moves: Vec<PlannedMove>,
    /// Shard bytes they move.
    pub bytes: u64,
    /// Whether they were queued (false on a dry run).
    pub queued: bool,
}

/// One shard move of a [`RebalancePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedMove {
    /// The bundle.
    pub bundle_id: BundleId,
    /// The shard.
    pub shard_index: u32,
    /// Where it is.
    pub from_disk_id: u64,
    /// Where it goes.
    pub to_disk_id: u64,
    /// Its size.
    pub bytes: u64,
}
