//! Named limits of the storage node. Every queue, buffer and request has one here.

// ---- Internal NodeService ----

/// Largest gRPC message a node accepts or sends (a 4 MiB data piece plus framing).
pub const MAX_MESSAGE_BYTES: usize = 5 << 20;
/// Largest data piece in one shard read message.
pub const SHARD_PIECE_BYTES: usize = 1 << 20;
/// Largest shard range read on an async thread when its bytes are in the page cache (copying
/// more would hold the thread longer than handing the read to a blocking thread costs).
pub const INLINE_READ_MAX_BYTES: u64 = 1 << 20;
/// Largest data piece in one shard write message (the proto allows 4 MiB).
pub const SHARD_WRITE_PIECE_BYTES: usize = 4 << 20;
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
/// HTTP/2 flow-control window per stream. The protocol default (64 KiB) is smaller than one
/// cell: every megabyte sent would wait for about sixteen window updates.
pub const H2_STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// HTTP/2 flow-control window per connection (all streams together).
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

// ---- Public ArchiveService: uploads ----

/// Largest data piece a client may send in one PutBundle message.
pub const MAX_UPLOAD_PIECE_BYTES: usize = 4 << 20;
/// Most files in one uploaded bundle.
pub const MAX_FILES_PER_UPLOAD: u64 = 100_000;
/// Most labels on one bundle, and the longest key or value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_BYTES: usize = 256;
/// Default: an upload whose client sends nothing for this long is abandoned.
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Uploads one node coordinates at once; more are refused with `overloaded`.
pub const MAX_CONCURRENT_UPLOADS: usize = 16;
/// Client messages queued towards the encoder of one upload (each at most
/// [`MAX_UPLOAD_PIECE_BYTES`]).
pub const UPLOAD_INPUT_QUEUE_MESSAGES: usize = 4;
/// Encoded stripes queued between the encoder and the distributor of one upload.
pub const UPLOAD_STRIPE_QUEUE: usize = 2;
/// Bytes of encoded cells queued towards one target shard of one upload; the queue holds at
/// least two cells whatever the cell size.
pub const TARGET_QUEUE_BYTES: usize = 4 << 20;
/// A target that accepts no bytes for this long is given up (its shard becomes missing).
pub const TARGET_STALL_TIMEOUT_MS: u64 = 15_000;
/// Deadline for a target to fsync and commit its shard once the stream ends.
pub const TARGET_FINISH_TIMEOUT_MS: u64 = 60_000;
/// Deadline of one shard upload stream as a whole (uploads are long; stalls are caught by
/// [`TARGET_STALL_TIMEOUT_MS`]).
pub const SHARD_UPLOAD_TIMEOUT_MS: u64 = 24 * 3_600_000;
/// Per-file digests returned by PutBundle are left out above this many encoded bytes (read them
/// with GetIndex instead).
pub const MAX_RESPONSE_DIGEST_BYTES: usize = 8 << 20;

// ---- Public ArchiveService: reads ----

/// Largest data piece in one GetFile or ExportBundle message.
pub const READ_PIECE_BYTES: usize = 1 << 20;
/// Bundle bytes one read step gathers from the shards (decoded and verified as a unit).
pub const READ_WINDOW_BYTES: u64 = 4 << 20;
/// Read windows a streaming read prepares ahead of a slow client.
pub const READ_WINDOWS_AHEAD: usize = 2;
/// Index entries in one GetIndex message.
pub const INDEX_PAGE_ENTRIES: usize = 10_000;
/// Memory a node spends on cached bundle records and their decoded indexes.
pub const BUNDLE_CACHE_BYTES: usize = 256 << 20;
/// What one cached bundle record counts for, before its index.
pub const RECORD_CACHE_WEIGHT_BYTES: usize = 2 << 10;
/// A decoded index takes about this many times its encoded size in memory.
pub const INDEX_MEMORY_FACTOR: usize = 3;
/// A node that failed to answer is skipped by reads for this long (its shards are decoded from
/// the others instead of waiting on it again).
pub const SUSPECT_NODE_MS: u64 = 5_000;
/// The same damage (bundle, shard) is reported to the metadata group at most this often.
pub const DAMAGE_REPORT_INTERVAL_MS: u64 = 60_000;
/// Damage reports remembered for deduplication.
pub const DAMAGE_REPORTS_REMEMBERED: usize = 10_000;

// ---- Background work ----

/// Default interval between heartbeats to the metadata group.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// Default interval between garbage-collection passes over this node's disks.
pub const GC_INTERVAL_MS: u64 = 300_000;
/// A shard of a bundle the metadata group does not know is deleted only when the bundle's id
/// (which carries its allocation time) is older than this: longer than any allocation lives.
pub const ORPHAN_GRACE_MS: u64 = 2 * 3_600_000;
/// Deleted bundles one garbage-collection pass finishes (shards deleted, record purged).
pub const GC_PURGES_PER_PASS: usize = 1_000;

// ---- Self-healing ----

/// Pause between repair claims when the last one found nothing to do.
pub const REPAIR_POLL_INTERVAL_MS: u64 = 1_000;
/// How soon a repair worker that just started repairs claims again (there may be more).
pub const REPAIR_BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// Attempts to commit a repair's placement change when other changes keep winning.
pub const REPAIR_COMMIT_ATTEMPTS: usize = 5;
/// Bytes of a shard file one copy step reads (moves).
pub const MOVE_PIECE_BYTES: u64 = 4 << 20;
/// Default time between the starts of two scrub passes over a node's disks.
pub const SCRUB_INTERVAL_MS: u64 = 7 * 24 * 3_600_000;
/// Default shard bytes per second a scrub pass reads (per node).
pub const SCRUB_BYTES_PER_SEC: u64 = 64 << 20;
/// Default time within which the background fixity pass checks every bundle it owns (90 days).
pub const FIXITY_INTERVAL_MS: u64 = 90 * 24 * 3_600_000;
/// Default bundle bytes per second the background fixity pass reads (per node).
pub const FIXITY_BYTES_PER_SEC: u64 = 32 << 20;
/// Most sets of shards (each shard, then pairs) decoded around to find which returned wrong
/// bytes with valid CRCs; each costs a read of the range (damage path only). Covers every pair
/// of codes up to 10 shards.
pub const MAX_BAD_SHARD_SETS: usize = 64;
/// How often the node looks for disks that are healthy again after failing (and checks them
/// before the group takes them back).
pub const DISK_RETURN_CHECK_INTERVAL_MS: u64 = 2_000;
/// Disk → shards entries one scrub request to the metadata group asks for.
pub const SCRUB_META_PAGE: u32 = 1_000;
/// A shard file the committed placement does not name (left by a repair or a move that lost
/// its race, or by a rebuild onto a disk that came back) is deleted once it is this old, so a
/// repair that is writing and about to commit is never disturbed.
pub const STALE_COPY_GRACE_MS: u64 = 600_000;
/// How long a shutting-down node lets a background step under way finish.
pub const WORKER_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
