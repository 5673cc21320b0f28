//! The bundle format: many related files (a book's pages, a film roll's frames) in one valid MIME
//! `multipart/mixed` message, with an index as its last part and a fixed-size trailer in the
//! epilogue that locates the index.
//!
//! - [`BundleWriter`] streams files into a bundle, computing each file's SHA-256 on the way and
//!   refusing bad paths, duplicates, wrong lengths and too many files.
//! - [`BundleReader`] opens a bundle by its index (through the trailer, or at a location the
//!   metadata record gives), reads a file by path or byte range, iterates and verifies.
//! - [`Index`] and [`Trailer`] are the two binary structures; `docs/formats.md` describes every
//!   byte. Any MIME parser can read a bundle's parts; only ours needs the index.
//!
//! No networking and no async here: the node and the offline tools build on this crate.

mod error;
mod index;
pub mod limits;
pub mod mime;
mod path;
mod reader;
mod trailer;
mod writer;

pub use error::{BundleError, PathProblem, Result};
pub use index::{Index, IndexEntry, INDEX_MAGIC, INDEX_VERSION};
pub use path::{validate_path, PathSet};
pub use reader::{read_trailer, BundleReader, FileReader, ReadAt, VerifyReport};
pub use trailer::{Trailer, TRAILER_BYTES, TRAILER_MAGIC, TRAILER_VERSION};
pub use writer::{BundleSummary, BundleWriter, FileWriter, WriterOptions};

/// A guess of a file's content type from its extension, for `bundle pack` and `put`.
pub fn content_type_for_path(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("tif" | "tiff") => "image/tiff",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("jp2") => "image/jp2",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("xml" | "alto" | "mets") => "application/xml",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        _ => mime::DEFAULT_CONTENT_TYPE,
    }
}
