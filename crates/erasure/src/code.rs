//! The erasure code of one bundle: k data shards, m parity shards, the cell size of the stripe
//! layout and the chunk size of the CRC framing. All four are recorded in every shard header, so
//! different bundles may use different codes.

use std::fmt;

use crate::error::{ErasureError, Result};

/// Most shards a code may have: GF(2^8) Reed-Solomon has at most 256 distinct rows.
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Default cell size: a small file usually sits inside one cell, so a healthy read touches one node.
pub const DEFAULT_CELL_BYTES: u32 = 1 << 20;
/// Cells (and the shrunken cells of a bundle's last stripe) are multiples of this.
pub const CELL_ALIGN_BYTES: u32 = 64;
/// Smallest cell size accepted.
pub const MIN_CELL_BYTES: u32 = CELL_ALIGN_BYTES;
/// Largest cell size accepted: the writer buffers a stripe of (k+m) cells in memory.
pub const MAX_CELL_BYTES: u32 = 64 << 20;
/// Largest stripe, parity included ((k+m) · cell): the writer and the whole-bundle reader hold
/// one stripe in memory, so this bounds their memory whatever a (possibly damaged) header says.
pub const MAX_STRIPE_BYTES: u64 = 1 << 30;
/// Default CRC32C chunk size: a range read verifies whole chunks, so this is the read granularity.
pub const DEFAULT_CHUNK_BYTES: u32 = 64 << 10;
/// Smallest chunk size accepted (the 4-byte CRC per chunk must stay small against the chunk).
pub const MIN_CHUNK_BYTES: u32 = 64;
/// Largest chunk size accepted.
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// Largest bundle accepted (1 PiB); keeps every offset computation far from u64 overflow.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 50;

/// Opaque 128-bit bundle id, printed as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BundleId(pub [u8; 16]);

impl BundleId {
    /// Parses 32 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleId({})", self.to_hex())
    }
}

/// A validated code: RS(k, m) with a cell and a chunk size. Fields are private so that every
/// `Code` in the program has passed [`Code::new`]'s checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code {
    data_shards: u16,
    parity_shards: u16,
    cell_bytes: u32,
    chunk_bytes: u32,
}

impl Code {
    /// RS(k, m) with the default cell (1 MiB) and chunk (64 KiB) sizes.
    pub fn new(data_shards: usize, parity_shards: usize) -> Result<Self> {
        Self::with_sizes(
            data_shards,
            parity_shards,
            DEFAULT_CELL_BYTES,
            DEFAULT_CHUNK_BYTES,
        )
    }

    /// RS(k, m) with explicit cell and chunk sizes.
    pub fn with_sizes(
        data_shards: usize,
        parity_shards: usize,
        cell_bytes: u32,
        chunk_bytes: u32,
    ) -> Result<Self> {
        let invalid = |reason| ErasureError::InvalidCode {
            data_shards,
            parity_shards,
            reason,
        };
        if data_shards < 1 {
            return Err(invalid("needs at least one data shard"));
        }
        if parity_shards < 1 {
            return Err(invalid("needs at least one parity shard"));
        }
        if data_shards + parity_shards > MAX_TOTAL_SHARDS {
            return Err(invalid("k + m must be at most 256"));
        }
        if !(MIN_CELL_BYTES..=MAX_CELL_BYTES).contains(&cell_bytes)
            || !cell_bytes.is_multiple_of(CELL_ALIGN_BYTES)
        {
            return Err(ErasureError::InvalidCellBytes {
                cell_bytes: cell_bytes.into(),
                align_bytes: CELL_ALIGN_BYTES.into(),
                min_bytes: MIN_CELL_BYTES.into(),
                max_bytes: MAX_CELL_BYTES.into(),
            });
        }
        if u64::from(cell_bytes) * (data_shards + parity_shards) as u64 > MAX_STRIPE_BYTES {
            return Err(invalid(
                "(k + m) × cell size is over the 1 GiB stripe limit",
            ));
        }
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk_bytes) {
            return Err(ErasureError::InvalidChunkBytes {
                chunk_bytes: chunk_bytes.into(),
                min_bytes: MIN_CHUNK_BYTES.into(),
                max_bytes: MAX_CHUNK_BYTES.into(),
            });
        }
        // Both counts are ≤ 256 here, so they fit in u16.
        Ok(Self {
            data_shards: data_shards as u16,
            parity_shards: parity_shards as u16,
            cell_bytes,
            chunk_bytes,
        })
    }

    /// k.
    pub fn data_shards(&self) -> usize {
        self.data_shards.into()
    }

    /// m.
    pub fn parity_shards(&self) -> usize {
        self.parity_shards.into()
    }

    /// k + m.
    pub fn total_shards(&self) -> usize {
        self.data_shards() + self.parity_shards()
    }

    /// Size of a full cell.
    pub fn cell_bytes(&self) -> u32 {
        self.cell_bytes
    }

    /// Size of a CRC32C chunk of shard data.
    pub fn chunk_bytes(&self) -> u32 {
        self.chunk_bytes
    }

    /// Bundle bytes held by one full stripe (k cells).
    pub fn stripe_data_bytes(&self) -> u64 {
        u64::from(self.cell_bytes) * self.data_shards as u64
    }

    /// The Reed-Solomon codec for this code.
    pub(crate) fn codec(&self) -> Result<reed_solomon_erasure::galois_8::ReedSolomon> {
        reed_solomon_erasure::galois_8::ReedSolomon::new(self.data_shards(), self.parity_shards())
            .map_err(ErasureError::ReedSolomon)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RS({},{}) cell {} B chunk {} B",
            self.data_shards, self.parity_shards, self.cell_bytes, self.chunk_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn validates_counts_and_sizes() {
        assert!(Code::new(10, 4).is_ok());
        assert!(Code::new(1, 1).is_ok());
        assert!(Code::new(255, 1).is_ok());
        assert!(Code::new(0, 4).is_err());
        assert!(Code::new(4, 0).is_err());
        assert!(Code::new(200, 57).is_err());
        assert!(Code::with_sizes(4, 2, 100, 4096).is_err());
        assert!(Code::with_sizes(4, 2, 0, 4096).is_err());
        assert!(Code::with_sizes(4, 2, MAX_CELL_BYTES + 64, 4096).is_err());
        assert!(Code::with_sizes(4, 2, 4096, 8).is_err());
        assert!(Code::with_sizes(200, 56, MAX_CELL_BYTES, 4096).is_err());
        assert!(Code::with_sizes(12, 4, MAX_CELL_BYTES, 4096).is_ok());
        let err = Code::new(0, 4).unwrap_err().to_string();
        assert!(err.contains("RS(0,4)"), "{err}");
    }

    #[test]
    fn bundle_id_hex_round_trip() {
        let id = BundleId([0xab; 16]);
        assert_eq!(BundleId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BundleId::from_hex("zz"), None);
    }
}
