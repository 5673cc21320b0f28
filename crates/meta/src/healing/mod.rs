//! Self-healing on the leader: the failure detector ([`detector`]), repair claims and leases
//! ([`claim`]), repair status ([`status`]) and rebalance planning ([`rebalance`]).
//!
//! Decisions (a node is down or back, a disk failed, moves to queue, throttles) go through Raft;
//! who works on which repair is leader soft state. A repair worker on a storage node claims work
//! ([`MetaServer::claim`]): the leader picks the most endangered queued bundles, chooses for
//! each shard to fix a target disk *on the claiming node* that keeps every shard of the bundle
//! in its own failure domain, and leases (bundle, shard) to that node. The worker's placement
//! change is a compare-and-set on the generation, so a lease lost in a leader change or a worker
//! that dies costs only duplicated work, never a repair applied twice: the loser's shard file is
//! a stale copy that garbage collection deletes.

//!
//! Deciding apart from doing: [`claim::ClaimPlanner`] and [`rebalance::RebalancePlanner`] are
//! pure functions of the cluster map, the queue and the leases, unit-tested without a
//! process; the `MetaServer` methods beside them page through the store and answer RPCs.

pub mod claim;
pub mod detector;
pub mod rebalance;
pub mod status;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use crate::types::BundleId;

/// Default: a node silent this long is declared down.
pub const DEFAULT_NODE_DOWN_GRACE_MS: u64 = 30_000;
/// Default: an assignment not renewed for this long is offered to another worker.
pub const DEFAULT_REPAIR_LEASE_MS: u64 = 60_000;
/// How often the leader's failure detector looks at the heartbeats.
pub const DETECTOR_INTERVAL_MS: u64 = 250;
/// Queue entries one claim looks at, from the most endangered.
pub const CLAIM_SCAN_TASKS: usize = 2_000;
/// Most assignments one claim returns.
pub const MAX_CLAIM: usize = 64;
/// Queue entries `repair status` counts (beyond this the figures are lower bounds).
pub const STATUS_SCAN_TASKS: usize = 1_000_000;
/// Finished repairs remembered for the repair rate.
pub const RATE_WINDOW_MS: u64 = 60_000;
/// Most finished repairs remembered for the rate.
pub const RATE_SAMPLES: usize = 100_000;
/// Most moves one rebalance plans.
pub const MAX_REBALANCE_MOVES: usize = 100_000;
/// Most moves in one Raft command.
pub const MOVES_PER_COMMAND: usize = 1_000;

/// A (bundle, shard) leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker's node.
    pub node_id: u64,
    /// Failure domain of the target disk (no other shard of the bundle may go there).
    pub domain: String,
    /// Since when.
    pub since: Instant,
    /// Until when, unless renewed.
    pub until: Instant,
}

/// A repair that finished: when its lease began and ended, and the bytes it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub started: Instant,
    pub ended: Instant,
    pub bytes: u64,
}

/// The leases in force, by (bundle, shard).
pub type Leases = HashMap<(BundleId, u32), Lease>;

/// Leader soft state of self-healing.
#[derive(Debug, Default)]
pub struct Healing {
    leases: Mutex<Leases>,
    /// Repairs finished, for the rate.
    finished: Mutex<VecDeque<Finished>>,
    /// Since when this member has been leader (the detector's view).
    leader_since: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
