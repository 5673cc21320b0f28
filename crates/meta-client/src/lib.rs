//! The client side of Bit Mountain's metadata group: [`MetaClient`] (leader redirect, member
//! rotation, retries with backoff until a deadline, batched allocations and commits), the
//! domain types it speaks and [`MetaError`], the typed errors the group answers with.
//!
//! This crate does not link RocksDB or raft-rs: storage nodes and tools depend on it alone.
//! The server (`bitmountain-meta`) re-exports it and converts to and from the wire with the
//! same functions.
//!
//! Where code goes:
//! - [`client`]: the [`MetaClient`] API, one thin method per RPC (build the request, call,
//!   convert the answer), and the free functions that ask one member (`member_status`,
//!   `set_partition`).
//! - `transport`: connections, member rotation, leader redirects, retries and backoff to the
//!   call's deadline: the one place calls are made.
//! - [`backup`]: `MetaClient::backup`, the one streaming call (the state for a backup);
//!   [`recovery`]: a node's scan reports and the recovery's state (disaster recovery).
//! - [`audit`]: pages of the audit trail, events members and nodes report, and the worker
//!   that reports a server's refused requests.
//! - `batch`: the batch sender that lets concurrent allocations and commits share `Batch`
//!   calls.
//! - [`wire`]: every conversion between the domain types and the generated
//!   `bitmountain_proto::v1` types, both directions. No generated type appears in
//!   [`MetaClient`]'s signatures: a new RPC gets domain types in [`types`] and its conversions
//!   here.
//! - [`types`]: the domain types, plain data (bundles, the cluster map, registration and
//!   heartbeats, repairs, the cluster status).
//! - [`error`]: [`MetaError`], its one conversion to a gRPC status and back.

pub mod audit;
pub mod backup;
mod batch;
pub mod client;
pub mod error;
pub mod recovery;
mod transport;
pub mod types;
pub mod wire;

pub use batch::BatchStats;
pub use client::MetaClient;
pub use error::{MetaError, Result};
pub use types::{
    AllocateRequest, Bundle, BundleId, BundleRecord, BundleState, Code, CommitRequest, DiskState,
    DomainLevel, NodeState, ShardLocation,
};
