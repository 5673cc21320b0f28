//! Named limits of the storage node.

/// Largest gRPC message a node accepts or sends (a 4 MiB data piece plus framing).
pub const MAX_MESSAGE_BYTES: usize = 5 << 20;
/// Largest data piece in one shard write or read message.
pub const SHARD_PIECE_BYTES: usize = 1 << 20;
/// A shard write whose stream is silent this long is abandoned (its temporary file removed).
pub const UPLOAD_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Shard writes in progress on one node at once; more wait (back-pressure), up to the caller's
/// deadline.
pub const MAX_CONCURRENT_SHARD_WRITES: usize = 64;
/// Largest shard the node stores (bounded by the largest bundle / k, with headroom).
pub const MAX_SHARD_BYTES: u64 = 1 << 44;
/// Deadline of a small request (read piece, delete, list) from a node to another node.
pub const SHARD_RPC_TIMEOUT_MS: u64 = 10_000;
/// Deadline to connect to another node.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
