//! The bundle index: the last MIME part of a bundle, listing every file's path, content type,
//! the offset and length of its content inside the bundle, and its SHA-256.
//!
//! Binary, little-endian, versioned and covered by a CRC32C (layout in `docs/formats.md`):
//!
//! ```text
//! magic "BMINDEX\0" | version u16 | reserved u16 | file_count u32
//! file_count × ( path_len u16 | path | type_len u16 | content_type | offset u64 | length u64 | sha256 [32] )
//! crc32c u32 (of everything before it)
//! ```

use std::collections::HashMap;

use crate::error::{BundleError, Result};
use crate::limits::{
    MAX_CONTENT_TYPE_BYTES, MAX_FILES_PER_BUNDLE, MAX_INDEX_BYTES, MAX_PATH_BYTES,
};
use crate::path::PathSet;

pub const INDEX_MAGIC: &[u8; 8] = b"BMINDEX\0";
pub const INDEX_VERSION: u16 = 1;
const INDEX_HEADER_BYTES: usize = 8 + 2 + 2 + 4;
const INDEX_CRC_BYTES: usize = 4;
/// Fixed bytes of one entry besides its path and content type.
const ENTRY_FIXED_BYTES: usize = 2 + 2 + 8 + 8 + 32;

/// One file of a bundle, as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub path: String,
    pub content_type: String,
    /// Offset of the file's first content byte inside the bundle.
    pub offset: u64,
    /// Length of the content, in bytes.
    pub length: u64,
    pub sha256: [u8; 32],
}

impl IndexEntry {
    /// Offset one past the file's last content byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// A parsed index, with lookup by path.
#[derive(Debug, Clone, Default)]
pub struct Index {
    entries: Vec<IndexEntry>,
    by_path: HashMap<String, usize>,
}

impl Index {
    /// Builds an index from entries already in bundle order.
    pub fn from_entries(entries: Vec<IndexEntry>) -> Self {
        let by_path = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        Index { entries, by_path }
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&IndexEntry> {
        self.by_path.get(path).map(|&i| &self.entries[i])
    }

    /// Looks a path up, with an error naming it when absent.
    pub fn find(&self, path: &str) -> Result<&IndexEntry> {
        self.get(path).ok_or_else(|| BundleError::FileNotFound {
            path: path.to_owned(),
        })
    }

    /// Total content bytes of all files.
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.length).sum()
    }

    /// Serialises the index in format version 1.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self
            .entries
            .iter()
            .map(|e| ENTRY_FIXED_BYTES + e.path.len() + e.content_type.len())
            .sum();
        let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + body + INDEX_CRC_BYTES);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let count = u32::try_from(self.entries.len());
        assert!(count.is_ok(), "index entry count exceeds u32");
        out.extend_from_slice(&count.unwrap_or(u32::MAX).to_le_bytes());
        for e in &self.entries {
            // The writer validated both lengths against limits far below u16::MAX.
            assert!(
                e.path.len() <= MAX_PATH_BYTES && e.content_type.len() <= MAX_CONTENT_TYPE_BYTES
            );
            out.extend_from_slice(&(e.path.len() as u16).to_le_bytes());
            out.extend_from_slice(e.path.as_bytes());
            out.extend_from_slice(&(e.content_type.len() as u16).to_le_bytes());
            out.extend_from_slice(e.content_type.as_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.sha256);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and validates an index read from untrusted storage. `index_offset` is where the
    /// index itself starts inside the bundle: every file must end before it.
    pub fn decode(bytes: &[u8], index_offset: u64) -> Result<Index> {
        let bad = |reason: String| BundleError::BadIndex { reason };
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(bad(format!(
                "index is {} bytes; the limit is {MAX_INDEX_BYTES}",
                bytes.len()
            )));
        }
        if bytes.len() < INDEX_HEADER_BYTES + INDEX_CRC_BYTES {
            return Err(bad(format!(
                "index is only {} bytes: truncated",
                bytes.len()
            )));
        }
        if &bytes[..8] != INDEX_MAGIC {
            return Err(bad("wrong magic: this is not a Bit Mountain index".into()));
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - INDEX_CRC_BYTES);
        let stored_crc =
            u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let actual_crc = crc32c::crc32c(body);
        if stored_crc != actual_crc {
            return Err(bad(format!(
                "checksum mismatch (stored {stored_crc:08x}, computed {actual_crc:08x}): the index is corrupt"
            )));
        }
        let mut cur = Cursor {
            bytes: body,
            pos: 8,
        };
        let version = cur.u16()?;
        if version != INDEX_VERSION {
            return Err(bad(format!(
                "index format version {version} is not supported (this build reads version {INDEX_VERSION}); upgrade bitmountain"
            )));
        }
        let _reserved = cur.u16()?;
        let count = u64::from(cur.u32()?);
        if count > MAX_FILES_PER_BUNDLE {
            return Err(BundleError::TooManyFiles {
                limit: MAX_FILES_PER_BUNDLE,
            });
        }
        let min_bytes = count.saturating_mul(ENTRY_FIXED_BYTES as u64);
        if min_bytes > body.len() as u64 {
            return Err(bad(format!(
                "index claims {count} files but is only {} bytes",
                body.len()
            )));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut paths = PathSet::new();
        let mut previous_end = 0u64;
        for number in 0..count {
            let path_len = usize::from(cur.u16()?);
            let path = cur.str(path_len, "path")?;
            paths.insert(&path)?;
            let type_len = usize::from(cur.u16()?);
            if type_len > MAX_CONTENT_TYPE_BYTES {
                return Err(bad(format!(
                    "entry {number} ({path:?}): content type of {type_len} bytes"
                )));
            }
            let content_type = cur.str(type_len, "content type")?;
            let offset = cur.u64()?;
            let length = cur.u64()?;
            let sha256 = cur.array32()?;
            let end = offset
                .checked_add(length)
                .filter(|&end| end <= index_offset);
            let Some(end) = end else {
                return Err(bad(format!(
                    "entry {number} ({path:?}): content {offset}+{length} does not end before the index at {index_offset}"
                )));
            };
            if offset < previous_end {
                return Err(bad(format!(
                    "entry {number} ({path:?}): content at {offset} overlaps the previous file ending at {previous_end}"
                )));
            }
            previous_end = end;
            entries.push(IndexEntry {
                path,
                content_type,
                offset,
                length,
                sha256,
            });
        }
        if cur.pos != body.len() {
            return Err(bad(format!(
                "{} unexpected bytes after the last entry",
                body.len() - cur.pos
            )));
        }
        Ok(Index::from_entries(entries))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(BundleError::BadIndex {
                reason: format!("truncated at byte {} (needed {n} more)", self.pos),
            });
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn array32(&mut self) -> Result<[u8; 32]> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }

    fn str(&mut self, n: usize, what: &str) -> Result<String> {
        let at = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| BundleError::BadIndex {
            reason: format!("{what} at byte {at} is not UTF-8"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Index {
        Index::from_entries(vec![
            IndexEntry {
                path: "a/1.tif".into(),
                content_type: "image/tiff".into(),
                offset: 100,
                length: 5,
                sha256: [7; 32],
            },
            IndexEntry {
                path: "b.txt".into(),
                content_type: "text/plain".into(),
                offset: 300,
                length: 0,
                sha256: [9; 32],
            },
        ])
    }

    #[test]
    fn round_trips() {
        let index = sample();
        let decoded = Index::decode(&index.encode(), 1000).unwrap();
        assert_eq!(decoded.entries(), index.entries());
        assert_eq!(decoded.find("b.txt").unwrap().offset, 300);
        assert!(matches!(
            decoded.find("nope"),
            Err(BundleError::FileNotFound { .. })
        ));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_rejected() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                Index::decode(&bytes[..len], 1000).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Index::decode(&b, 1000).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn rejects_files_overlapping_or_past_the_index() {
        let bytes = sample().encode();
        assert!(matches!(
            Index::decode(&bytes, 200),
            Err(BundleError::BadIndex { .. })
        ));
        let mut overlapping = sample().entries().to_vec();
        overlapping[1].offset = 102;
        let bytes = Index::from_entries(overlapping).encode();
        assert!(matches!(
            Index::decode(&bytes, 1000),
            Err(BundleError::BadIndex { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_paths_even_with_a_valid_checksum() {
        let mut dup = sample().entries().to_vec();
        dup[1].path = "a/1.tif".into();
        let bytes = Index::from_entries(dup).encode();
        assert!(matches!(
            Index::decode(&bytes, 1000),
            Err(BundleError::DuplicatePath { .. })
        ));
    }
}
