//! The storage node. Today: [`shard_service::NodeShardService`], the internal gRPC service other
//! nodes use to write, read, delete and list the shard files on this node's disks, and
//! [`shard_client::ShardClient`], its typed client with deadlines. The public archive API, the
//! upload coordinator and registration with the metadata group build on these (storage-node
//! issue).
//!
//! Every request has a named limit (`limits`), every RPC a deadline, and every error becomes a
//! `tonic::Status` in one place (`error.rs`).

pub mod error;
pub mod limits;
pub mod shard_client;
pub mod shard_service;

pub use error::{NodeError, Result};
pub use shard_client::ShardClient;
pub use shard_service::{DiskSet, NodeShardService};
