//! The bundle trailer: a fixed-size ASCII line in the MIME epilogue (after the closing boundary,
//! where MIME parsers ignore it) that locates the index, so a standalone bundle file is
//! self-sufficient: read the last [`TRAILER_BYTES`] bytes, then the index, then any file.
//!
//! ```text
//! BMTRAILER/1 index-offset=<16 hex> index-length=<16 hex> files=<8 hex> crc32c=<8 hex>\r\n
//! ```
//!
//! The CRC32C covers every byte before ` crc32c=`.

use crate::error::{BundleError, Result};

pub const TRAILER_MAGIC: &str = "BMTRAILER/";
pub const TRAILER_VERSION: u32 = 1;
/// Exact length of a version-1 trailer line, CRLF included.
pub const TRAILER_BYTES: usize = 104;

/// Where the index lives inside a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub index_offset: u64,
    pub index_length: u64,
    pub file_count: u32,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        let head = format!(
            "{TRAILER_MAGIC}{TRAILER_VERSION} index-offset={:016x} index-length={:016x} files={:08x}",
            self.index_offset, self.index_length, self.file_count
        );
        let line = format!("{head} crc32c={:08x}\r\n", crc32c::crc32c(head.as_bytes()));
        let mut out = [0u8; TRAILER_BYTES];
        assert_eq!(
            line.len(),
            TRAILER_BYTES,
            "trailer layout changed without changing TRAILER_BYTES"
        );
        out.copy_from_slice(line.as_bytes());
        out
    }

    /// Parses the last [`TRAILER_BYTES`] bytes of a bundle.
    pub fn decode(bytes: &[u8]) -> Result<Trailer> {
        let bad = |reason: &str| BundleError::BadTrailer {
            reason: reason.to_owned(),
        };
        if bytes.len() != TRAILER_BYTES {
            return Err(bad("the file is shorter than a trailer"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("the last line is not ASCII"))?;
        let line = text
            .strip_suffix("\r\n")
            .ok_or_else(|| bad("the trailer does not end in CRLF"))?;
        let rest = line
            .strip_prefix(TRAILER_MAGIC)
            .ok_or_else(|| bad("no BMTRAILER line at the end of the file"))?;
        let (version, rest) = rest.split_once(' ').ok_or_else(|| bad("no version"))?;
        if version != TRAILER_VERSION.to_string() {
            return Err(BundleError::BadTrailer {
                reason: format!(
                    "trailer version {version:?} is not supported (this build reads version {TRAILER_VERSION}); upgrade bitmountain"
                ),
            });
        }
        let (head, crc_text) = line
            .rsplit_once(" crc32c=")
            .ok_or_else(|| bad("no checksum field"))?;
        let stored_crc =
            parse_hex(crc_text, 8).ok_or_else(|| bad("checksum field is not 8 hex digits"))?;
        if stored_crc != u64::from(crc32c::crc32c(head.as_bytes())) {
            return Err(bad("checksum mismatch: the trailer is corrupt"));
        }
        let mut fields = rest
            .strip_suffix(&format!(" crc32c={crc_text}"))
            .unwrap_or(rest)
            .split(' ');
        let mut field = |name: &str, digits: usize| -> Result<u64> {
            fields
                .next()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|v| v.strip_prefix('='))
                .and_then(|v| parse_hex(v, digits))
                .ok_or_else(|| BundleError::BadTrailer {
                    reason: format!("field {name} is missing or malformed"),
                })
        };
        let index_offset = field("index-offset", 16)?;
        let index_length = field("index-length", 16)?;
        let file_count = field("files", 8)?;
        Ok(Trailer {
            index_offset,
            index_length,
            file_count: u32::try_from(file_count).map_err(|_| bad("file count out of range"))?,
        })
    }
}

fn parse_hex(text: &str, digits: usize) -> Option<u64> {
    // Lowercase only: one spelling per value, so a flipped case bit is caught as corruption.
    if text.len() != digits || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_has_fixed_size() {
        let t = Trailer {
            index_offset: 0x1234_5678_9abc,
            index_length: 77,
            file_count: 10_000,
        };
        let bytes = t.encode();
        assert_eq!(bytes.len(), TRAILER_BYTES);
        assert_eq!(Trailer::decode(&bytes).unwrap(), t);
    }

    #[test]
    fn any_corruption_is_rejected() {
        let bytes = Trailer {
            index_offset: 5,
            index_length: 6,
            file_count: 7,
        }
        .encode();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut b = bytes;
                b[i] ^= flip;
                assert!(
                    Trailer::decode(&b).is_err(),
                    "flip {flip:#x} at {i} accepted"
                );
            }
        }
        assert!(Trailer::decode(&bytes[1..]).is_err());
    }
}
