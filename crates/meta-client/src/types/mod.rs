//! Domain types of the metadata group: what the state machine stores and what [`MetaClient`]
//! takes and returns. Plain data; their wire conversions are in [`crate::wire`].
//!
//! [`MetaClient`]: crate::MetaClient

mod bundle;
mod cluster;
mod recovery;
mod repair;
mod status;

pub use bundle::{
    AllocateRequest, Bundle, BundleId, BundleRecord, BundleState, Code, CommitRequest, LegalHold,
    Preservation, ShardLocation, MAX_CELL_BYTES, MAX_REASON_BYTES, MAX_SHARDS,
};
pub use cluster::{
    DiskRecord, DiskReport, DiskState, DomainLevel, Heartbeat, HeartbeatReply, NodeRecord,
    NodeState, RegisteredNode, Registration, TokenTable,
};
pub use recovery::{FoundDescription, FoundFooter, FoundShard, FoundTombstone};
pub use repair::{
    FinishedRepair, PlannedMove, RebalancePlan, RedundancyLevel, RepairAssignment, RepairClaim,
    RepairPage, RepairSettings, RepairStatus, RepairTarget, RepairTask, RunningRepair,
};
pub use status::{BundleCounts, ClusterStatus, DiskInfo, MemberInfo, NodeInfo, WorkerReport};

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
