//! Disaster recovery of the metadata group: rebuilding bundle records from what the disks hold
//! (shard headers, footers and descriptions, tombstones).
//!
//! - [`plan`]: pure: scans in, records and reports out (recovered, lost, incomplete uploads,
//!   deleted), shared by `bitmountain recover scan` (offline) and the recovering member.
//! - [`report`]: what a finished recovery reports.
//! - the leader's side (when to finish, choosing disks for missing shards, proposing the
//!   records) is `crate::server::recovery`; applying it, `crate::state::apply::recovery`.

pub mod plan;
pub mod report;

pub use plan::{plan, DeletedBundle, PlanParams, RecoveredBundle, RecoveryPlan, UnreadableBundle};
pub use report::{LostBundle, RecoveryReport, MAX_REPORT_LIST};
