//! The replicated state machine and its reads.
//!
//! Bundle records and their indexes live only in RocksDB (column family `sm`, layout in
//! [`crate::keys`]); the cluster map (nodes, disks, counters) is small and also cached in
//! memory, updated by the apply path in the same step that writes it.
//!
//! - [`cluster`]: the cluster record and map, the value-format rule.
//! - [`store`]: [`MetaStore`] (reads: the DB plus the map) and [`KeyReader`].
//! - [`machine`]: [`MetaStateMachine`], what the Raft driver applies entries to (decode,
//!   dispatch, the round's write buffer, stopping on what cannot be applied).
//! - `apply/`: the commands' application, one file per family.
//! - [`check`]: the invariant checker (`bitmountain meta check`).
//! - [`audit_reads`]: pages of the audit trail and the chain's check.

pub(crate) mod apply;
pub mod audit_reads;
pub mod check;
pub mod cluster;
pub mod machine;
pub mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_audit;

pub use audit_reads::{AuditQuery, MAX_AUDIT_SCAN_PER_PAGE};
pub use check::{check, CheckReport};
pub(crate) use cluster::first_value_format;
pub use cluster::value_format_switch;
pub use cluster::{ClusterMap, ClusterRecord};
pub use machine::MetaStateMachine;
pub use store::{DiskShard, KeyReader, ListFilter, MetaStore};
