//! The client side of Bit Mountain's metadata group: [`MetaClient`] (leader redirect, member
//! rotation, retries with backoff until a deadline), the domain types it speaks (bundle ids,
//! codes, records, states) and [`MetaError`], the typed errors the group answers with.
//!
//! This crate does not link RocksDB or raft-rs: storage nodes and tools depend on it alone.
//! The server (`bitmountain-meta`) re-exports it.

pub mod client;
pub mod error;
pub mod types;
pub mod workers;

pub use client::{AllocateRequest, BatchStats, Bundle, CommitRequest, MetaClient, ShardLocation};
pub use error::{MetaError, Result};
pub use types::{BundleId, BundleRecord, BundleState, Code, DiskState, DomainLevel, NodeState};
