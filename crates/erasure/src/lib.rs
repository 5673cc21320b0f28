//! Striped Reed-Solomon layout and the self-describing shard file format of Bit Mountain.
//!
//! A bundle is cut into cells (default 1 MiB); stripe `s` holds cells `s·k … s·k+k−1` on data
//! shards `0…k−1` plus m parity cells, and the last partial stripe uses k smaller cells so small
//! bundles cost about (k+m)/k of their size ([`layout`]). Each shard is one file: a 64-byte
//! header naming the bundle, the shard index and the code; the shard's data framed in CRC32C
//! chunks (default 64 KiB) whose place in the file is arithmetic; the bundle description (labels,
//! creation time, file count: what the metadata group knows beyond the bytes, [`description`]);
//! a 96-byte footer with what is known only at the end: bundle length, index location, SHA-256,
//! the description's length ([`mod@format`], `docs/formats.md, "Shard file"`). Any one shard thus
//! describes its bundle fully, which is what rebuilding the metadata from the disks relies on.
//!
//! Both directions have a sans-IO core, so the offline tools (sync files) and the storage node
//! (async gRPC) share them:
//!
//! - write: [`StripeEncoder`] takes bundle bytes and returns framed bytes per shard, stripe by
//!   stripe (or hands them to a callback without output buffers, `push_stripe_with`);
//!   [`StreamingWriter`] drives it into [`ShardSink`]s such as [`FileShardSink`].
//! - read: [`RangeRead`] plans which (shard, physical range) to fetch for a bundle byte range,
//!   verifies what it is given and reconstructs lost chunks; [`ChunkGather`] is the engine under
//!   it. [`BundleReader`] is the sync convenience over [`ShardSource`]s: range reads, whole
//!   bundle decode with SHA-256 check, and rebuilding lost shards ([`ShardRebuild`] is the
//!   sans-IO rebuild core the repair path drives over the network). Shards already in memory
//!   lend their bytes ([`ShardSource::lend`]): the reader checks, decodes and copies them one
//!   64 KiB chunk column at a time, decoding lost chunks straight into the caller's buffer.
//!
//! A chunk that fails its CRC is an erasure: never returned, always reconstructed or reported.
//! Disk input never panics: every header, footer and chunk is checked and turned into a typed
//! [`ErasureError`] naming the bundle, shard and values involved. Limits are named constants in
//! [`code`] (`MAX_TOTAL_SHARDS`, `MAX_CELL_BYTES`, `MAX_STRIPE_BYTES`, `MAX_CHUNK_BYTES`, …).

pub mod code;
pub mod crc;
pub mod description;
pub mod encode;
pub mod error;
pub mod format;
pub mod gather;
pub mod layout;
pub mod read;
pub mod rebuild;
pub mod source;
pub mod write;

pub use code::{BundleId, Code};
pub use description::BundleDescription;
pub use encode::{EncodedStripe, FinishedBundle, StripeEncoder};
pub use error::{ErasureError, Result};
pub use format::{BundleInfo, DescriptionRef, IndexLocation, ShardFooter, ShardHeader};
pub use gather::{ChunkGather, Codec, Fetch, LossKind, LostChunk};
pub use layout::{BundleLayout, PhysicalRange, Piece};
pub use read::{BundleReader, Candidate, RangeRead};
pub use rebuild::{shard_tail, ShardRebuild};
pub use source::{
    read_shard_header, read_shard_meta, scan_shard, FileShardSource, ShardMeta, ShardSource,
};
pub use write::{shard_file_name, write_shard_files, FileShardSink, ShardSink, StreamingWriter};
