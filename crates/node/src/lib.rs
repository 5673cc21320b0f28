//! The storage node: serves its disks' shards to other nodes ([`NodeShardService`], gRPC
//! `NodeService`), serves the public archive API to clients (`archive_service`), and coordinates
//! the uploads and reads it receives (`coordinator`): an upload becomes a MIME bundle, encoded
//! stripe by stripe into k+m shards streamed to their target disks; a read becomes range reads
//! of the shards that hold the bytes, decoded around whatever is missing or corrupt.
//!
//! [`daemon::run`] is `bitmountain node`: disks (identity files), registration with the
//! metadata group, one gRPC port for everything, and the background workers
//! (`bitmountain_worker`): [`heartbeat`], garbage collection ([`gc`]), self-healing ([`heal`]:
//! the repair worker and the scrubber).
//!
//! With `--tls-dir`, every request passes the access-control layer (`bitmountain_auth`) first:
//! node certificates for NodeService, tokens checked against the node's copy of the token
//! table ([`tokens`]) for the archive API.
//!
//! Its metrics listener (`--metrics-listen`) also serves the read-only web console
//! ([`console`]).
//!
//! What the audit trail needs from a node ([`audit`]): refusals its handlers decide, and the
//! local read access log.
//!
//! Every request has a named limit ([`limits`]), every RPC a deadline, and every error becomes a
//! `tonic::Status` in one place ([`error`]).

pub mod access;
pub mod archive_service;
pub mod audit;
pub mod console;
pub mod coordinator;
pub mod daemon;
pub mod error;
pub mod fixity;
pub mod gc;
pub mod heal;
pub mod heartbeat;
pub mod limits;
pub mod node_state;
pub mod recovery;
pub mod shard_client;
pub mod shard_io;
pub mod shard_service;
pub mod throttle;
pub mod tokens;

pub use daemon::{run, NodeConfig};
pub use error::{NodeError, Result};
pub use shard_client::ShardClient;
pub use shard_service::{DiskSet, NodeShardService};
