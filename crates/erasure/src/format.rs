//! The shard file format, byte for byte (see `docs/formats.md, "Shard file"`):
//!
//! ```text
//! header (64 B) | chunk 0 data, CRC32C | … | description (version 2) | footer (96 B)
//! ```
//!
//! All integers little-endian. The header is written first and never rewritten; the footer holds
//! what is known only when the stream ends (bundle length, index location, SHA-256) and, from
//! footer version 2 on, the length and CRC32C of the bundle description before it
//! ([`crate::description`]). Each part has its own CRC32C so a torn or garbled end of file is
//! told apart from a good one. Version-1 shards (no description) stay readable.

use crate::code::{BundleId, Code};
use crate::error::{ErasureError, Result};
use crate::layout::BundleLayout;

/// First 8 bytes of every shard file.
pub const HEADER_MAGIC: [u8; 8] = *b"BMSHARD\0";
/// Last 8 bytes of every complete shard file.
pub const FOOTER_MAGIC: [u8; 8] = *b"BMSHEND\0";
/// Header version written by this code (the header's layout has not changed since 1).
pub const HEADER_VERSION: u16 = 1;
/// Footer version 1: no description; bytes 8..16 hold the shard's data length.
pub const FOOTER_VERSION_1: u16 = 1;
/// Footer version 2, written by this code: bytes 8..16 hold the description's length and CRC32C.
pub const FOOTER_VERSION: u16 = 2;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 64;
/// Footer size in bytes.
pub const FOOTER_BYTES: usize = 96;
/// Size of the CRC32C that follows each chunk's data.
pub const CHUNK_CRC_BYTES: usize = 4;

/// Where the bundle's index lives inside the bundle (supplied by the bundle writer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IndexLocation {
    /// Offset of the index in the bundle.
    pub offset: u64,
    /// Length of the index in bytes.
    pub len: u64,
}

/// What a shard's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub bundle_id: BundleId,
    pub shard_index: u16,
    pub code: Code,
}

/// What a shard's footer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardFooter {
    pub bundle_id: BundleId,
    pub shard_index: u16,
    pub bundle_len: u64,
    pub shard_data_bytes: u64,
    pub index: IndexLocation,
    pub sha256: [u8; 32],
    /// The description before the footer (footer version 2); `None` in a version-1 shard.
    pub description: Option<DescriptionRef>,
}

/// Where a version-2 footer says the bundle description is: the `bytes` before the footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptionRef {
    pub bytes: u32,
    pub crc32c: u32,
}

/// Everything a reader needs to know about a bundle: from a shard header and footer, or from the
/// metadata group's bundle record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BundleInfo {
    pub bundle_id: BundleId,
    pub code: Code,
    pub bundle_len: u64,
    pub index: IndexLocation,
    pub sha256: [u8; 32],
}

impl BundleInfo {
    /// Combines a shard's header and footer (which must already agree, as decoding checks).
    pub fn from_parts(header: &ShardHeader, footer: &ShardFooter) -> Self {
        Self {
            bundle_id: header.bundle_id,
            code: header.code,
            bundle_len: footer.bundle_len,
            index: footer.index,
            sha256: footer.sha256,
        }
    }

    /// The layout of this bundle.
    pub fn layout(&self) -> Result<BundleLayout> {
        BundleLayout::new(self.code, self.bundle_len)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl ShardHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        b[8..10].copy_from_slice(&HEADER_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
        b[12..14].copy_from_slice(&self.shard_index.to_le_bytes());
        b[14..16].copy_from_slice(&(self.code.data_shards() as u16).to_le_bytes());
        b[16..18].copy_from_slice(&(self.code.parity_shards() as u16).to_le_bytes());
        // 18..20 flags, 0 in version 1.
        b[20..24].copy_from_slice(&self.code.cell_bytes().to_le_bytes());
        b[24..28].copy_from_slice(&self.code.chunk_bytes().to_le_bytes());
        // 28..32 reserved.
        b[32..48].copy_from_slice(&self.bundle_id.0);
        // 48..60 reserved.
        let crc = crate::crc::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks header bytes (at least [`HEADER_BYTES`] of them).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = |shard_index, reason: String| ErasureError::BadHeader {
            shard_index,
            reason,
        };
        if b.len() < HEADER_BYTES {
            return Err(bad(
                None,
                format!("{} bytes, header is {HEADER_BYTES}", b.len()),
            ));
        }
        let b = &b[..HEADER_BYTES];
        if b[0..8] != HEADER_MAGIC {
            return Err(bad(None, "not a shard file (magic)".into()));
        }
        let stored_crc = u32_at(b, 60);
        let crc = crate::crc::crc32c(&b[..60]);
        if stored_crc != crc {
            return Err(bad(
                None,
                format!("checksum {stored_crc:08x}, computed {crc:08x}"),
            ));
        }
        let version = u16_at(b, 8);
        if version != HEADER_VERSION {
            return Err(bad(
                None,
                format!(
                    "header version {version}, this build reads {HEADER_VERSION}; upgrade \
                     bitmountain"
                ),
            ));
        }
        let header_bytes = u16_at(b, 10);
        if usize::from(header_bytes) != HEADER_BYTES {
            return Err(bad(None, format!("header length {header_bytes}")));
        }
        let shard_index = u16_at(b, 12);
        let code = Code::with_sizes(
            u16_at(b, 14).into(),
            u16_at(b, 16).into(),
            u32_at(b, 20),
            u32_at(b, 24),
        )
        .map_err(|e| bad(Some(shard_index), e.to_string()))?;
        if usize::from(shard_index) >= code.total_shards() {
            return Err(bad(
                Some(shard_index),
                format!("shard index {shard_index} out of range for {code}"),
            ));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[32..48]);
        Ok(Self {
            bundle_id: BundleId(id),
            shard_index,
            code,
        })
    }
}

impl ShardFooter {
    /// The description's bytes followed by a version-2 footer naming them: the end of a shard.
    pub fn encode_with_description(mut self, description: &[u8]) -> Vec<u8> {
        assert!(description.len() <= crate::description::MAX_DESCRIPTION_BYTES);
        self.description = Some(DescriptionRef {
            bytes: description.len() as u32,
            crc32c: crate::crc::crc32c(description),
        });
        let mut out = Vec::with_capacity(description.len() + FOOTER_BYTES);
        out.extend_from_slice(description);
        out.extend_from_slice(&self.encode());
        out
    }

    /// The 96 footer bytes: version 2 when the footer names a description, else version 1.
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut b = [0u8; FOOTER_BYTES];
        b[0..8].copy_from_slice(&self.bundle_len.to_le_bytes());
        let version = match self.description {
            Some(d) => {
                b[8..12].copy_from_slice(&d.bytes.to_le_bytes());
                b[12..16].copy_from_slice(&d.crc32c.to_le_bytes());
                FOOTER_VERSION
            }
            None => {
                b[8..16].copy_from_slice(&self.shard_data_bytes.to_le_bytes());
                FOOTER_VERSION_1
            }
        };
        b[16..24].copy_from_slice(&self.index.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.index.len.to_le_bytes());
        b[32..64].copy_from_slice(&self.sha256);
        b[64..80].copy_from_slice(&self.bundle_id.0);
        b[80..82].copy_from_slice(&self.shard_index.to_le_bytes());
        b[82..84].copy_from_slice(&version.to_le_bytes());
        let crc = crate::crc::crc32c(&b[..84]);
        b[84..88].copy_from_slice(&crc.to_le_bytes());
        b[88..96].copy_from_slice(&FOOTER_MAGIC);
        b
    }

    /// Parses footer bytes and checks them against the shard's header.
    pub fn decode(b: &[u8], header: &ShardHeader) -> Result<Self> {
        let bad = |reason: String| ErasureError::BadFooter {
            shard_index: header.shard_index,
            reason,
        };
        if b.len() != FOOTER_BYTES {
            return Err(bad(format!("{} bytes, footer is {FOOTER_BYTES}", b.len())));
        }
        if b[88..96] != FOOTER_MAGIC {
            return Err(bad("no footer magic (truncated or unfinished shard)".into()));
        }
        let stored_crc = u32_at(b, 84);
        let crc = crate::crc::crc32c(&b[..84]);
        if stored_crc != crc {
            return Err(bad(format!(
                "checksum {stored_crc:08x}, computed {crc:08x}"
            )));
        }
        let version = u16_at(b, 82);
        let layout =
            BundleLayout::new(header.code, u64_at(b, 0)).map_err(|e| bad(e.to_string()))?;
        let (shard_data_bytes, description) = match version {
            FOOTER_VERSION_1 => (u64_at(b, 8), None),
            FOOTER_VERSION => {
                let d = DescriptionRef {
                    bytes: u32_at(b, 8),
                    crc32c: u32_at(b, 12),
                };
                if d.bytes as usize > crate::description::MAX_DESCRIPTION_BYTES {
                    return Err(bad(format!("description of {} bytes", d.bytes)));
                }
                (layout.shard_data_bytes(), Some(d))
            }
            _ => {
                return Err(bad(format!(
                    "footer version {version}, this build reads {FOOTER_VERSION_1} and \
                     {FOOTER_VERSION}; upgrade bitmountain"
                )))
            }
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[64..80]);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&b[32..64]);
        let footer = Self {
            bundle_len: u64_at(b, 0),
            shard_data_bytes,
            index: IndexLocation {
                offset: u64_at(b, 16),
                len: u64_at(b, 24),
            },
            sha256,
            bundle_id: BundleId(id),
            shard_index: u16_at(b, 80),
            description,
        };
        if footer.bundle_id != header.bundle_id || footer.shard_index != header.shard_index {
            return Err(bad(format!(
                "names bundle {} shard {}, header names bundle {} shard {}",
                footer.bundle_id, footer.shard_index, header.bundle_id, header.shard_index
            )));
        }
        if layout.shard_data_bytes() != footer.shard_data_bytes {
            return Err(bad(format!(
                "data length {} does not match bundle length {} under {}",
                footer.shard_data_bytes, footer.bundle_len, header.code
            )));
        }
        let index_end = footer.index.offset.checked_add(footer.index.len);
        if index_end.is_none_or(|end| end > footer.bundle_len) {
            return Err(bad(format!(
                "index {}+{} outside bundle of {} bytes",
                footer.index.offset, footer.index.len, footer.bundle_len
            )));
        }
        Ok(footer)
    }

    /// Bytes of the description before this footer (0 in a version-1 shard).
    pub fn description_bytes(&self) -> u64 {
        self.description.map_or(0, |d| u64::from(d.bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn header() -> ShardHeader {
        ShardHeader {
            bundle_id: BundleId([7; 16]),
            shard_index: 3,
            code: Code::new(4, 2).unwrap(),
        }
    }

    #[test]
    fn header_round_trip_and_every_flipped_bit_is_caught() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(ShardHeader::decode(&bytes).unwrap(), h);
        for bit in 0..HEADER_BYTES * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(ShardHeader::decode(&b).is_err(), "bit {bit}");
        }
        assert!(ShardHeader::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn footer_round_trip_and_checks() {
        let h = header();
        let layout = BundleLayout::new(h.code, 12345).unwrap();
        let f = ShardFooter {
            bundle_id: h.bundle_id,
            shard_index: 3,
            bundle_len: 12345,
            shard_data_bytes: layout.shard_data_bytes(),
            index: IndexLocation {
                offset: 100,
                len: 45,
            },
            sha256: [9; 32],
            description: None,
        };
        let v2 = ShardFooter {
            description: Some(DescriptionRef {
                bytes: 40,
                crc32c: 0xdead_beef,
            }),
            ..f
        };
        for f in [f, v2] {
            let bytes = f.encode();
            assert_eq!(ShardFooter::decode(&bytes, &h).unwrap(), f);
            for bit in 0..FOOTER_BYTES * 8 {
                let mut b = bytes;
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(ShardFooter::decode(&b, &h).is_err(), "bit {bit}");
            }
        }
        let bytes = f.encode();
        let other = ShardHeader {
            shard_index: 2,
            ..h
        };
        assert!(ShardFooter::decode(&bytes, &other).is_err());
        let bad_index = ShardFooter {
            index: IndexLocation {
                offset: 12345,
                len: 1,
            },
            ..f
        };
        assert!(ShardFooter::decode(&bad_index.encode(), &h).is_err());
    }

    #[test]
    fn a_description_precedes_a_version_2_footer() {
        let h = header();
        let layout = BundleLayout::new(h.code, 12345).unwrap();
        let f = ShardFooter {
            bundle_id: h.bundle_id,
            shard_index: 3,
            bundle_len: 12345,
            shard_data_bytes: layout.shard_data_bytes(),
            index: IndexLocation::default(),
            sha256: [1; 32],
            description: None,
        };
        let tail = f.encode_with_description(b"described");
        assert_eq!(tail.len(), 9 + FOOTER_BYTES);
        let decoded = ShardFooter::decode(&tail[9..], &h).unwrap();
        assert_eq!(decoded.description_bytes(), 9);
        assert_eq!(
            decoded.description.unwrap().crc32c,
            crate::crc::crc32c(b"described")
        );
    }
}
