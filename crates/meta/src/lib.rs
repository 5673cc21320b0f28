//! The metadata group of Bit Mountain: the replicated state machine (cluster map, bundle
//! records, disk → bundles reverse map, label and state indexes, repair queue), placement,
//! the `MetaService`/`MetaAdmin` gRPC server, and self-healing on the leader.
//!
//! Replication is `bitmountain-raftstore` (raft-rs on RocksDB). Every command carries what its
//! application needs (ids, time, placement), decided by the leader before proposing, so every
//! member applies it to the same state. Heartbeats and repair leases are leader soft state;
//! only decisions go through Raft.
//!
//! Where code goes (the checklists are in ARCHITECTURE.md, "Where code goes"):
//! - [`command`]: every replicated command ([`Command`]), what applying one answers
//!   ([`Applied`]), and the dispatch to the file that applies it.
//! - [`state`]: the state machine: `state/apply/` (one file per family of commands: bundles,
//!   placement, repair, topology), the store and its reads, the round's write buffer, the
//!   invariant checker.
//! - [`codec`]: the stored value formats, one file each; [`keys`]: every key prefix.
//! - [`rules`]: the only place that decides shard health, whether a copy is gone, whether a
//!   disk may take shards and whether a placement keeps failure domains distinct.
//! - [`placement`]: k+m disks on distinct failure domains, weighted by free space.
//! - [`server`]: the gRPC services (thin handlers), the leader-side validation and proposal
//!   of each command family, wire conversions, and [`serve`] (what `bitmountain meta` runs).
//! - [`durability`]: the live durability model's inputs from a cluster status (the leader's
//!   metric and `bitmountain durability --cluster` share it).
//! - [`recovery`]: rebuilding bundle records from disk scans (disaster recovery); the plan is
//!   pure and unit-tested.
//! - `audit`: what the audit trail records and where (the writes are `state/apply/audit.rs`,
//!   the reports and reads `server/audit.rs`).
//! - [`healing`]: the failure detector, repair claims and leases, repair status, rebalance;
//!   planning there is pure and unit-tested.
//! - [`types`], [`client`], [`error`], [`wire`]: re-exported from `bitmountain-meta-client`
//!   (no RocksDB), which storage nodes use on their own; the handlers convert to and from the
//!   wire with [`wire`]'s functions, as the client does.

pub(crate) mod audit;
pub(crate) mod codec;
pub mod command;
pub mod durability;
pub mod healing;
pub mod keys;
pub mod placement;
pub mod recovery;
pub mod rules;
pub mod server;
pub mod state;

/// The audit trail's client side (pages, reports, the refusal reporter).
pub use bitmountain_meta_client::audit as audit_client;
pub use bitmountain_meta_client::{client, error, types, wire};

/// The one conversion of replica errors into [`MetaError`] (kind and leader hint preserved).
pub fn raft_error(e: bitmountain_raftstore::RaftStoreError) -> MetaError {
    MetaError::Raft {
        kind: e.kind(),
        leader: e.leader_address().map(str::to_string),
        message: e.to_string(),
    }
}

pub use client::MetaClient;
pub use command::{Applied, Command};
pub use error::{MetaError, Result};
pub use server::{serve, MemberOptions, MetaConfig, MetaServer};
pub use state::{check, CheckReport, MetaStore};
pub use types::{
    AllocateRequest, Bundle, BundleId, BundleRecord, BundleState, Code, CommitRequest, DiskState,
    DomainLevel, NodeState, ShardLocation,
};
