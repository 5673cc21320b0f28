//! The Rust client of Bit Mountain's public archive API (`proto/archive.proto`).
//!
//! [`ArchiveClient`] talks to any storage node: give it one address or several. It uploads a
//! directory tree or a list of files as one bundle ([`ArchiveClient::put_dir`],
//! [`ArchiveClient::put_files`]), reads files whole or by byte range, lists, exports and
//! deletes bundles (with a reason; `preservation.rs` also holds retention and legal holds).
//! Bundle records and indexes are cached ([`ArchiveClient::prepare`]), so after
//! the first look at a bundle every further file read costs one round trip, sent to the node that
//! holds the file's bytes (it reads them from its own disk). When a node does not answer,
//! calls move on to the next address; an upload of re-readable sources (files on disk, bytes in
//! memory) is retried on the next node from the start.
//!
//! Connections are made lazily and belong to the tokio runtime that first uses them: use one
//! client within one runtime.
//!
//! The wire types stay inside this crate: callers see [`BundleInfo`], [`FileInfo`],
//! [`ClusterStatus`] and [`ClientError`].

mod client;
mod error;
mod preservation;
mod types;
pub mod walk;

pub use client::{ArchiveClient, PutOptions, UploadFile, UploadSource};
pub use error::{ClientError, Result};
pub use preservation::{FileFixity, Fixity, FIXITY_CALL_TIMEOUT_MS};
pub use types::{
    BundleInfo, ClusterStatus, Code, DiskStatus, FileDigest, FileInfo, LegalHoldInfo, NodeStatus,
    PutResult, ShardInfo,
};
