//! The striped layout: which bytes of a bundle live where in which shard.
//!
//! Stripe `s` holds bundle cells `s·k … s·k+k−1` on data shards `0…k−1` (cell `j` of a stripe is
//! the stripe's bytes `j·cell … (j+1)·cell`) and m parity cells. The last, partial stripe is cut
//! into k smaller equal cells (remainder / k rounded up to [`CELL_ALIGN_BYTES`], zero padded), so
//! small bundles cost about (k+m)/k of their length, not (k+m) full cells.
//!
//! Every shard, parity included, has the same data length, and byte `y` of every shard's data
//! belongs to one Reed-Solomon codeword: stripe cells start at the same shard offset on every
//! shard. A lost byte range of one shard is therefore rebuilt from the *same* range of k others,
//! which is what lets the reader reconstruct chunk by chunk instead of cell by cell.
//!
//! Shard data is framed in CRC32C chunks of `chunk_bytes` (the last one shorter); chunk `i` of
//! every shard covers the same data range, and its physical place in the file is pure arithmetic.

use crate::code::{BundleId, Code, CELL_ALIGN_BYTES, MAX_BUNDLE_BYTES};
use crate::error::{ErasureError, Result};
use crate::format::{CHUNK_CRC_BYTES, FOOTER_BYTES, HEADER_BYTES};

/// A code applied to a bundle of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleLayout {
    code: Code,
    bundle_len: u64,
}

/// One contiguous piece of a bundle byte range, held by one data shard within one stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Where the piece starts in the bundle.
    pub bundle_offset: u64,
    /// Piece length in bytes (never 0, never more than a cell).
    pub len: u64,
    /// Stripe number.
    pub stripe: u64,
    /// Data shard holding the piece (`< k`).
    pub shard: u16,
    /// Where the piece starts in that shard's data (not counting header and CRCs).
    pub shard_offset: u64,
}

/// Physical byte range of a run of chunks in a shard file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysicalRange {
    /// Offset in the shard file.
    pub offset: u64,
    /// Length in bytes (chunk data plus one CRC per chunk).
    pub len: u64,
}

impl BundleLayout {
    /// The layout of a bundle of `bundle_len` bytes under `code`.
    pub fn new(code: Code, bundle_len: u64) -> Result<Self> {
        if bundle_len > MAX_BUNDLE_BYTES {
            return Err(ErasureError::BundleTooLong {
                bundle_len,
                max_bytes: MAX_BUNDLE_BYTES,
            });
        }
        Ok(Self { code, bundle_len })
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// Bundle length in bytes.
    pub fn bundle_len(&self) -> u64 {
        self.bundle_len
    }

    fn k(&self) -> u64 {
        self.code.data_shards() as u64
    }

    fn cell(&self) -> u64 {
        self.code.cell_bytes().into()
    }

    /// Number of full stripes (k full cells each).
    pub fn full_stripes(&self) -> u64 {
        self.bundle_len / self.code.stripe_data_bytes()
    }

    /// Bundle bytes in the last, partial stripe (0 when the length is a multiple of a stripe).
    pub fn tail_bytes(&self) -> u64 {
        self.bundle_len % self.code.stripe_data_bytes()
    }

    /// Cell size of the partial stripe: the remainder split evenly over k cells, aligned.
    pub fn tail_cell_bytes(&self) -> u64 {
        tail_cell_bytes(self.tail_bytes(), self.k())
    }

    /// Number of stripes, the partial one included.
    pub fn stripe_count(&self) -> u64 {
        self.full_stripes() + u64::from(self.tail_bytes() > 0)
    }

    /// Cell size of stripe `stripe`.
    pub fn stripe_cell_bytes(&self, stripe: u64) -> u64 {
        assert!(stripe < self.stripe_count(), "stripe {stripe} out of range");
        if stripe < self.full_stripes() {
            self.cell()
        } else {
            self.tail_cell_bytes()
        }
    }

    /// Bundle bytes held by stripe `stripe`.
    pub fn stripe_data_len(&self, stripe: u64) -> u64 {
        if stripe < self.full_stripes() {
            self.code.stripe_data_bytes()
        } else {
            self.tail_bytes()
        }
    }

    /// Data length of every shard (all shards, parity included, have the same).
    pub fn shard_data_bytes(&self) -> u64 {
        self.full_stripes() * self.cell() + self.tail_cell_bytes()
    }

    /// Number of CRC chunks per shard.
    pub fn chunk_count(&self) -> u64 {
        self.shard_data_bytes()
            .div_ceil(self.code.chunk_bytes().into())
    }

    /// Data bytes in chunk `chunk` (the last chunk may be short).
    pub fn chunk_data_bytes(&self, chunk: u64) -> u64 {
        let chunk_bytes = u64::from(self.code.chunk_bytes());
        let start = chunk * chunk_bytes;
        assert!(
            start < self.shard_data_bytes(),
            "chunk {chunk} out of range"
        );
        (self.shard_data_bytes() - start).min(chunk_bytes)
    }

    /// Chunk numbers covering shard data range `[offset, offset + len)`.
    pub fn chunks_for_shard_range(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        if len == 0 {
            return 0..0;
        }
        let chunk_bytes = u64::from(self.code.chunk_bytes());
        offset / chunk_bytes..(offset + len).div_ceil(chunk_bytes)
    }

    /// Where chunks `chunks` sit in a shard file (one contiguous read).
    pub fn chunk_physical_range(&self, chunks: std::ops::Range<u64>) -> PhysicalRange {
        assert!(chunks.start < chunks.end && chunks.end <= self.chunk_count());
        let chunk_bytes = u64::from(self.code.chunk_bytes());
        let stride = chunk_bytes + CHUNK_CRC_BYTES as u64;
        let offset = HEADER_BYTES as u64 + chunks.start * stride;
        let data_end = (chunks.end * chunk_bytes).min(self.shard_data_bytes());
        let len = data_end - chunks.start * chunk_bytes
            + (chunks.end - chunks.start) * CHUNK_CRC_BYTES as u64;
        PhysicalRange { offset, len }
    }

    /// Size of one shard file without a description (version 1): header, data with its CRCs,
    /// footer. A version-2 shard adds its description's length.
    pub fn shard_file_bytes(&self) -> u64 {
        self.tail_offset() + FOOTER_BYTES as u64
    }

    /// Where the shard's tail (description, then footer) begins: the end of the framed data.
    pub fn tail_offset(&self) -> u64 {
        HEADER_BYTES as u64 + self.shard_data_bytes() + self.chunk_count() * CHUNK_CRC_BYTES as u64
    }

    /// The pieces (stripe, data shard, shard offset, length) holding bundle bytes
    /// `[offset, offset + len)`, in bundle order.
    pub fn pieces(&self, bundle_id: BundleId, offset: u64, len: u64) -> Result<Vec<Piece>> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.bundle_len);
        let Some(end) = end else {
            return Err(ErasureError::RangeOutOfBounds {
                bundle_id,
                offset,
                len,
                bundle_len: self.bundle_len,
            });
        };
        let stripe_bytes = self.code.stripe_data_bytes();
        let mut pieces = Vec::new();
        let mut pos = offset;
        while pos < end {
            let stripe = pos / stripe_bytes;
            let stripe_start = stripe * stripe_bytes;
            let cell_bytes = self.stripe_cell_bytes(stripe);
            let in_stripe = pos - stripe_start;
            let cell = in_stripe / cell_bytes;
            let in_cell = in_stripe % cell_bytes;
            let cell_end = stripe_start + (cell + 1) * cell_bytes;
            let piece_end = end.min(cell_end);
            assert!(cell < self.k(), "cell {cell} of stripe {stripe} beyond k");
            pieces.push(Piece {
                bundle_offset: pos,
                len: piece_end - pos,
                stripe,
                shard: cell as u16,
                shard_offset: stripe * self.cell() + in_cell,
            });
            pos = piece_end;
        }
        Ok(pieces)
    }
}

/// Cell size of a partial stripe of `tail_bytes` bundle bytes over `k` data cells.
fn tail_cell_bytes(tail_bytes: u64, k: u64) -> u64 {
    if tail_bytes == 0 {
        return 0;
    }
    tail_bytes
        .div_ceil(k)
        .next_multiple_of(CELL_ALIGN_BYTES.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn layout(k: usize, m: usize, cell: u32, chunk: u32, len: u64) -> BundleLayout {
        BundleLayout::new(Code::with_sizes(k, m, cell, chunk).unwrap(), len).unwrap()
    }

    /// Maps every bundle byte to (shard, shard offset) the slow way, following the definition.
    fn naive_location(l: &BundleLayout, pos: u64) -> (u16, u64) {
        let k = l.code().data_shards() as u64;
        let cell = u64::from(l.code().cell_bytes());
        let stripe = pos / (k * cell);
        let cs = l.stripe_cell_bytes(stripe);
        let within = pos - stripe * k * cell;
        ((within / cs) as u16, stripe * cell + within % cs)
    }

    #[test]
    fn pieces_cover_every_length_edge_case() {
        for (k, m) in [(1, 1), (2, 1), (3, 2), (10, 4), (5, 3)] {
            let cell = 128u32;
            let stripe = k as u64 * 128;
            let mut lens = vec![0u64, 1, 63, 64, 65, 127, 128, 129];
            for mult in [1u64, 2, 3] {
                for base in [stripe * mult, 128 * mult] {
                    lens.extend([base - 1, base, base + 1]);
                }
            }
            for len in lens {
                let l = layout(k, m, cell, 96, len);
                let pieces = l.pieces(BundleId::default(), 0, len).unwrap();
                let total: u64 = pieces.iter().map(|p| p.len).sum();
                assert_eq!(total, len);
                let mut pos = 0;
                for p in &pieces {
                    assert_eq!(p.bundle_offset, pos);
                    assert!(p.len > 0);
                    for i in [0, p.len - 1] {
                        assert_eq!(
                            naive_location(&l, pos + i),
                            (p.shard, p.shard_offset + i),
                            "k={k} len={len}"
                        );
                    }
                    assert!(p.shard_offset + p.len <= l.shard_data_bytes());
                    pos += p.len;
                }
                // Raw size stays near (k+m)/k of the data.
                let data = l.shard_data_bytes() * k as u64;
                assert!(
                    data >= len && data <= len + 64 * k as u64,
                    "k={k} len={len} data={data}"
                );
            }
        }
    }

    #[test]
    fn four_mib_at_rs_10_4_is_not_eight_mib() {
        let l = BundleLayout::new(Code::new(10, 4).unwrap(), 4 << 20).unwrap();
        let raw = l.shard_file_bytes() * 14;
        assert!(raw < (4u64 << 20) * 15 / 10, "raw {raw}");
    }

    #[test]
    fn chunk_ranges_are_arithmetic() {
        // 1000 = one stripe of 768 + 232 → tail cells of ceil(232/3) = 78 → 128 bytes.
        let l = layout(3, 2, 256, 100, 1000);
        assert_eq!(l.shard_data_bytes(), 256 + 128);
        let l = layout(3, 2, 256, 100, 900);
        assert_eq!(l.full_stripes(), 1);
        assert_eq!(l.tail_bytes(), 132);
        assert_eq!(l.tail_cell_bytes(), 64);
        assert_eq!(l.shard_data_bytes(), 320);
        assert_eq!(l.chunk_count(), 4);
        assert_eq!(l.chunk_data_bytes(3), 20);
        assert_eq!(l.chunks_for_shard_range(99, 2), 0..2);
        let r = l.chunk_physical_range(1..4);
        assert_eq!(r.offset, HEADER_BYTES as u64 + 104);
        assert_eq!(r.len, 220 + 12);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let l = layout(2, 1, 64, 64, 10);
        assert!(l.pieces(BundleId::default(), 5, 6).is_err());
        assert!(l.pieces(BundleId::default(), u64::MAX, 2).is_err());
        assert!(l.pieces(BundleId::default(), 10, 0).unwrap().is_empty());
    }
}
