//! Domain types of the metadata group: what the state machine stores and what [`MetaClient`]
//! takes and returns. Plain data; their wire conversions are in [`crate::wire`].
//!
//! [`MetaClient`]: crate::MetaClient

pub mod audit;
mod bundle;
mod cluster;
mod recovery;
mod repair;
mod status;

pub use audit::{
    Agent, AgentKind, AuditAction, AuditEvent, AuditHead, ChainReport, ChainVerifier, NewEvent,
    Outcome,
};
pub use bundle::{
    reason_is_acceptable, AllocateRequest, Bundle, BundleId, BundleRecord, BundleState, Code,
    CommitRequest, LegalHold, Preservation, ShardLocation, MAX_CELL_BYTES, MAX_REASON_BYTES,
    MAX_SHARDS,
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

/// A Unix time in milliseconds as RFC 3339 (UTC), `none` for 0: for messages and audit details.
pub fn unix_ms_text(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "none".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}
