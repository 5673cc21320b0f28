//! The metadata group of Bit Mountain: the replicated state machine (cluster map, bundle
//! records, disk → bundles reverse map, label and state indexes, repair queue), placement,
//! the `MetaService`/`MetaAdmin` gRPC server, and [`MetaClient`] with leader redirect and retry.
//!
//! Replication is `bitmountain-raftstore` (raft-rs on RocksDB). Every command carries what its
//! application needs (ids, time, placement), decided by the leader before proposing, so every
//! member applies it to the same state. Heartbeats are leader soft state; only decisions go
//! through Raft.
//!
//! - [`types`], [`client`], [`error`]: re-exported from `bitmountain-meta-client` (no RocksDB),
//!   which storage nodes use on their own.
//! - [`keys`]: every key prefix of the state machine, in one place.
//! - [`state`]: commands, apply, reads; `codec`: the protobuf value format (version 2).
//! - [`placement`]: k+m disks on distinct failure domains, weighted by free space.
//! - [`service`]: the gRPC services and the member process ([`service::serve`]).
//! - [`healing`]: the leader's failure detector, repair leases, repair status, rebalance.

mod codec;
pub mod healing;
pub mod keys;
pub mod placement;
pub mod service;
pub mod state;

pub use bitmountain_meta_client::{client, error, types};

/// The one conversion of replica errors into [`MetaError`] (kind and leader hint preserved).
pub fn raft_error(e: bitmountain_raftstore::RaftStoreError) -> MetaError {
    MetaError::Raft {
        kind: e.kind(),
        leader: e.leader_address().map(str::to_string),
        message: e.to_string(),
    }
}

pub use client::{AllocateRequest, Bundle, CommitRequest, MetaClient, ShardLocation};
pub use error::{MetaError, Result};
pub use service::{serve, MemberOptions, MetaConfig};
pub use types::{BundleId, BundleRecord, BundleState, Code, DiskState, DomainLevel, NodeState};
