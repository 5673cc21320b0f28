//! Named limits of the bundle format. Readers enforce them on untrusted input; writers refuse to
//! produce bundles that break them.

/// Longest path inside a bundle, in UTF-8 bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single path component, in bytes (Linux `NAME_MAX`).
pub const MAX_PATH_COMPONENT_BYTES: usize = 255;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Default and hard maximum number of files in one bundle. A bundle is a book or a film roll;
/// a million files is far past that and keeps an index under a few hundred MiB.
pub const MAX_FILES_PER_BUNDLE: u64 = 1_000_000;
/// Largest index a reader will load, in bytes.
pub const MAX_INDEX_BYTES: u64 = 512 * 1024 * 1024;
/// Largest MIME part header block a reader will parse, in bytes.
pub const MAX_PART_HEADER_BYTES: usize = 64 * 1024;
/// Largest bundle, in bytes (16 TiB): far above any collection, low enough that offsets never
/// overflow in arithmetic.
pub const MAX_BUNDLE_BYTES: u64 = 16 << 40;
