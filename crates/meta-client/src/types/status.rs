//! The cluster status as one member sees it: the group (members, leader, log), the cluster map
//! with the leader's latest heartbeat figures, and bundle counts.

use super::{DiskState, NodeState};

/// What one member answers about the group and the cluster (`bitmountain status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    /// Empty until the first node registers.
    pub cluster_id: String,
    /// The member that answered.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader_id: u64,
    /// The leader's address (empty: none known).
    pub leader_address: String,
    /// Raft term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// First index in the member's log.
    pub first_log_index: u64,
    /// Last index in the member's log.
    pub last_log_index: u64,
    /// The group's members.
    pub members: Vec<MemberInfo>,
    /// The storage nodes with their disks.
    pub nodes: Vec<NodeInfo>,
    /// Bundles by state.
    pub bundles: BundleCounts,
    /// Bundles in the repair queue.
    pub repairs_queued: u64,
    /// The answering member's role: "leader", "follower", "candidate", "pre-candidate".
    pub role: String,
    /// The value format the group writes (0 from members that predate value formats).
    pub value_format: u32,
    /// The newest value format the answering member's binary reads (0 from binaries that
    /// predate value formats: they read only 1).
    pub newest_value_format: u32,
    /// The answering member's own background workers.
    pub workers: Vec<WorkerReport>,
    /// Modelled probability of losing any bundle within a year (the answering member's view).
    pub durability_loss_probability_per_year: f64,
    /// The code allocations get when they name none (`None` from older members).
    pub default_code: Option<crate::types::Code>,
    /// Bytes of sealed bundles by code (since the group began counting them).
    pub sealed_bytes_by_code: Vec<(crate::types::Code, u64)>,
    /// Disk failures seen, and the disk-years of service they were seen over (0: unknown).
    pub disk_failures_seen: u64,
    pub disk_years_observed: f64,
}

/// A background worker of a member or node, as reported (`bitmountain_worker::WorkerStatus`
/// on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Its name (`heartbeat`, `gc`, `repair`, `scrub`, `failure-detector`, `expiry`).
    pub name: String,
    /// "idle", "running" or "stopped".
    pub state: String,
    /// Steps finished.
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// When the last step ended (0: none yet).
    pub last_run_unix_ms: u64,
    /// How long it took.
    pub last_duration_ms: u64,
    /// The last error (empty: none).
    pub last_error: String,
    /// When it happened (0: never).
    pub last_error_unix_ms: u64,
    /// What the worker says it is doing.
    pub note: String,
}

impl From<&bitmountain_worker::WorkerStatus> for WorkerReport {
    fn from(s: &bitmountain_worker::WorkerStatus) -> Self {
        WorkerReport {
            name: s.name.to_string(),
            state: s.state.as_str().to_string(),
            steps: s.steps,
            errors: s.errors,
            last_run_unix_ms: s.last_run_unix_ms,
            last_duration_ms: s.last_duration_ms,
            last_error: s.last_error.clone(),
            last_error_unix_ms: s.last_error_unix_ms,
            note: s.note.clone(),
        }
    }
}

/// A member of the metadata group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub id: u64,
    /// Its address.
    pub address: String,
    /// "voter" or "learner".
    pub role: String,
    /// The leader's view of the member's log (0 when unknown or not the leader).
    pub matched_index: u64,
}

/// A storage node in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: u64,
    /// Its address.
    pub address: String,
    /// Zone label.
    pub zone: String,
    /// Rack label.
    pub rack: String,
    /// Host label.
    pub host: String,
    /// State (`None`: the member sent none this binary knows).
    pub state: Option<NodeState>,
    /// Its disks.
    pub disks: Vec<DiskInfo>,
    /// Milliseconds since the leader last heard the node; `None` if this leader has not.
    pub last_heartbeat_age_ms: Option<u64>,
    /// The node's background workers as of its last heartbeat.
    pub workers: Vec<WorkerReport>,
}

/// A disk in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Disk id.
    pub disk_id: u64,
    /// The node serving it.
    pub node_id: u64,
    /// Directory on the node.
    pub path: String,
    /// Capacity.
    pub capacity_bytes: u64,
    /// Bytes used as the node last reported them.
    pub used_bytes: u64,
    /// Bytes of shards the group has placed here (pending estimates and sealed lengths).
    pub accounted_bytes: u64,
    /// State (`None`: the member sent none this binary knows).
    pub state: Option<DiskState>,
    /// When the node last finished verifying every shard on the disk (0: not since it
    /// started).
    pub last_scrub_unix_ms: u64,
    /// Damaged shards that scrub pass found.
    pub last_scrub_damaged_shards: u64,
}

impl DiskInfo {
    /// The bytes the disk holds as far as anyone knows: the larger of what its node reported
    /// and what the group placed on it (a fresh node reports before it has counted).
    pub fn stored_bytes(&self) -> u64 {
        self.used_bytes.max(self.accounted_bytes)
    }
}

/// Bundles by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BundleCounts {
    /// Allocated, not yet committed.
    pub pending: u64,
    /// Committed.
    pub sealed: u64,
    /// Being deleted.
    pub deleting: u64,
}
