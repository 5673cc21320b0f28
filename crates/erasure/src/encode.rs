//! The sans-IO write core: a stripe encoder you push bundle bytes into and that hands back the
//! framed bytes (cell data with CRC32Cs inserted at chunk boundaries) to append to each shard, plus
//! the header, description and footer bytes. It does no I/O, so the file writer here and the node's gRPC
//! upload path drive the same code. Memory: one stripe of k cells plus m parity blocks of 64 KiB.

use sha2::{Digest, Sha256};

use crate::code::{BundleId, Code};
use crate::description::BundleDescription;
use crate::error::{ErasureError, Result};
use crate::format::{
    BundleInfo, IndexLocation, ShardFooter, ShardHeader, CHUNK_CRC_BYTES, HEADER_BYTES,
};
use crate::layout::BundleLayout;

/// Framed bytes of one stripe: `shards[i]` is appended to shard `i`'s file after what came before.
#[derive(Debug, Default)]
pub struct EncodedStripe {
    /// Stripe number.
    pub stripe: u64,
    /// Framed bytes per shard, k data shards then m parity shards.
    pub shards: Vec<Vec<u8>>,
}

/// The end of every shard: the last stripe (if partial), the last chunk's CRC, the footer.
#[derive(Debug)]
pub struct FinishedBundle {
    /// Bytes to append to each shard to complete it.
    pub tails: Vec<Vec<u8>>,
    /// What the footers say about the bundle.
    pub info: BundleInfo,
}

/// Streams a bundle into k+m framed shard streams, stripe by stripe.
pub struct StripeEncoder {
    code: Code,
    bundle_id: BundleId,
    codec: reed_solomon_erasure::galois_8::ReedSolomon,
    /// Bundle bytes of the current stripe (cell j = bytes j·cell … (j+1)·cell).
    stripe: Vec<u8>,
    parity: Vec<Vec<u8>>,
    /// Running CRC32C of the open chunk, per shard.
    chunk_crcs: Vec<u32>,
    /// Data bytes already in the open chunk (the same for every shard).
    chunk_fill_bytes: u64,
    sha256: Sha256,
    /// False when the caller hashes the bundle itself (see [`StripeEncoder::set_hash_bundle`]).
    hash_bundle: bool,
    bundle_len: u64,
    next_stripe: u64,
    spare_buffers: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StripeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeEncoder")
            .field("code", &self.code)
            .field("bundle_id", &self.bundle_id)
            .field("bundle_len", &self.bundle_len)
            .field("next_stripe", &self.next_stripe)
            .finish_non_exhaustive()
    }
}

impl StripeEncoder {
    /// A new encoder for bundle `bundle_id` under `code`.
    pub fn new(code: Code, bundle_id: BundleId) -> Result<Self> {
        Ok(Self {
            code,
            bundle_id,
            codec: code.codec()?,
            stripe: Vec::new(),
            parity: vec![Vec::new(); code.parity_shards()],
            chunk_crcs: vec![0; code.total_shards()],
            chunk_fill_bytes: 0,
            sha256: Sha256::new(),
            hash_bundle: true,
            bundle_len: 0,
            next_stripe: 0,
            spare_buffers: Vec::new(),
        })
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The bundle id.
    pub fn bundle_id(&self) -> BundleId {
        self.bundle_id
    }

    /// Bundle bytes accepted so far.
    pub fn bundle_len(&self) -> u64 {
        self.bundle_len
    }

    /// Turns the bundle SHA-256 off, for a caller that already hashes the bundle bytes as it
    /// produces them (the SHA-256 costs about as much as the Reed-Solomon encode). Such a caller
    /// must end with [`StripeEncoder::finish_with_sha256`]. Call before the first byte.
    pub fn set_hash_bundle(&mut self, hash_bundle: bool) {
        assert_eq!(
            self.bundle_len, 0,
            "set_hash_bundle after bytes were pushed"
        );
        self.hash_bundle = hash_bundle;
    }

    /// The header bytes that open shard `shard_index`'s file.
    pub fn header(&self, shard_index: usize) -> [u8; HEADER_BYTES] {
        assert!(
            shard_index < self.code.total_shards(),
            "shard index {shard_index} out of range"
        );
        ShardHeader {
            bundle_id: self.bundle_id,
            shard_index: shard_index as u16,
            code: self.code,
        }
        .encode()
    }

    fn stripe_capacity(&self) -> usize {
        self.code.stripe_data_bytes() as usize
    }

    /// Takes bundle bytes up to the end of the current stripe; returns how many were taken. When
    /// it returns less than `data.len()`, call [`Self::take_stripe`] before pushing more.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let room = self.stripe_capacity() - self.stripe.len();
        let take = room.min(data.len());
        if self.stripe.capacity() < self.stripe_capacity()
            && self.stripe.len() + take > self.stripe.capacity()
        {
            // Grow once to a whole stripe rather than doubling repeatedly; small bundles that
            // never fill a stripe keep a small buffer.
            self.stripe
                .reserve_exact(self.stripe_capacity() - self.stripe.len());
        }
        self.stripe.extend_from_slice(&data[..take]);
        if self.hash_bundle {
            self.sha256.update(&data[..take]);
        }
        self.bundle_len += take as u64;
        take
    }

    /// Encodes the current stripe if it is full.
    pub fn take_stripe(&mut self) -> Option<EncodedStripe> {
        if self.stripe.len() < self.stripe_capacity() {
            return None;
        }
        let cell_bytes = self.code.cell_bytes() as usize;
        Some(self.encode_stripe(cell_bytes))
    }

    /// Convenience over [`Self::fill`] and [`Self::take_stripe`]: pushes all of `data` and
    /// returns every stripe it completed.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<EncodedStripe> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let taken = self.fill(data);
            data = &data[taken..];
            if let Some(stripe) = self.take_stripe() {
                out.push(stripe);
            }
        }
        out
    }

    /// Gives a stripe's buffers back for reuse (saves page faults on fresh allocations).
    pub fn recycle(&mut self, stripe: EncodedStripe) {
        if self.spare_buffers.len() < self.code.total_shards() {
            self.spare_buffers.extend(stripe.shards);
        }
    }

    /// Ends the bundle: encodes the partial last stripe, closes the last chunk and appends the
    /// description and footer. `index` is where the bundle's index lives inside the bundle.
    pub fn finish(
        self,
        index: IndexLocation,
        description: &BundleDescription,
    ) -> Result<FinishedBundle> {
        if !self.hash_bundle {
            return Err(ErasureError::Misuse {
                bundle_id: self.bundle_id,
                what: "bundle hashing is off: finish with finish_with_sha256".into(),
            });
        }
        let sha256: [u8; 32] = self.sha256.clone().finalize().into();
        self.finish_inner(index, sha256, description)
    }

    /// Like [`Self::finish`], with the bundle's SHA-256 computed by the caller.
    pub fn finish_with_sha256(
        self,
        index: IndexLocation,
        sha256: [u8; 32],
        description: &BundleDescription,
    ) -> Result<FinishedBundle> {
        if self.hash_bundle {
            let own: [u8; 32] = self.sha256.clone().finalize().into();
            if own != sha256 {
                return Err(ErasureError::Sha256Mismatch {
                    bundle_id: self.bundle_id,
                    expected: hex::encode(sha256),
                    actual: hex::encode(own),
                });
            }
        }
        self.finish_inner(index, sha256, description)
    }

    fn finish_inner(
        mut self,
        index: IndexLocation,
        sha256: [u8; 32],
        description: &BundleDescription,
    ) -> Result<FinishedBundle> {
        let layout = BundleLayout::new(self.code, self.bundle_len)?;
        let description = description.encode()?;
        let index_end = index.offset.checked_add(index.len);
        if index_end.is_none_or(|end| end > self.bundle_len) {
            return Err(ErasureError::InvalidIndexLocation {
                offset: index.offset,
                len: index.len,
                bundle_len: self.bundle_len,
            });
        }
        let mut tails = if self.stripe.is_empty() {
            vec![Vec::new(); self.code.total_shards()]
        } else if self.stripe.len() == self.stripe_capacity() {
            let cell_bytes = self.code.cell_bytes() as usize;
            self.encode_stripe(cell_bytes).shards
        } else {
            let cell_bytes = layout.tail_cell_bytes() as usize;
            self.stripe.resize(cell_bytes * self.code.data_shards(), 0);
            self.encode_stripe(cell_bytes).shards
        };
        for (shard_index, tail) in tails.iter_mut().enumerate() {
            if self.chunk_fill_bytes > 0 {
                tail.extend_from_slice(&self.chunk_crcs[shard_index].to_le_bytes());
            }
            let footer = ShardFooter {
                bundle_id: self.bundle_id,
                shard_index: shard_index as u16,
                bundle_len: self.bundle_len,
                shard_data_bytes: layout.shard_data_bytes(),
                index,
                sha256,
                description: None,
            };
            tail.extend_from_slice(&footer.encode_with_description(&description));
        }
        Ok(FinishedBundle {
            tails,
            info: BundleInfo {
                bundle_id: self.bundle_id,
                code: self.code,
                bundle_len: self.bundle_len,
                index,
                sha256,
            },
        })
    }

    /// Computes parity over the k cells of `cell_bytes` in `self.stripe` and frames all k+m.
    fn encode_stripe(&mut self, cell_bytes: usize) -> EncodedStripe {
        assert_eq!(
            self.stripe.len(),
            cell_bytes * self.code.data_shards(),
            "stripe buffer holds k cells"
        );
        let mut shards = self.output_buffers(cell_bytes);
        self.chunk_fill_bytes = encode_cells(
            &self.codec,
            &self.stripe,
            cell_bytes,
            &mut self.parity,
            &mut self.chunk_crcs,
            self.chunk_fill_bytes,
            self.code.chunk_bytes().into(),
            &mut |shard, piece| shards[shard].extend_from_slice(piece),
        );
        self.stripe.clear();
        let stripe = self.next_stripe;
        self.next_stripe += 1;
        EncodedStripe { stripe, shards }
    }

    /// Whether no bytes of the current stripe are buffered (then [`Self::push_stripe`] may be
    /// used).
    pub fn at_stripe_boundary(&self) -> bool {
        self.stripe.is_empty()
    }

    /// Encodes one whole stripe (k full cells) straight from the caller's buffer, without
    /// copying it in. Only at a stripe boundary.
    pub fn push_stripe(&mut self, stripe: &[u8]) -> EncodedStripe {
        let mut shards = self.output_buffers(self.code.cell_bytes() as usize);
        let number = self.push_stripe_with(stripe, |shard, piece| {
            shards[shard].extend_from_slice(piece)
        });
        EncodedStripe {
            stripe: number,
            shards,
        }
    }

    /// Like [`Self::push_stripe`], without output buffers: hands the framed bytes to
    /// `emit(shard_index, bytes)` straight from the caller's stripe, the parity cells and the
    /// CRCs, in order per shard (pieces of at most a chunk, and 4-byte CRCs). Saves a copy for
    /// sinks that copy anyway (a socket, a buffered file).
    pub fn push_stripe_with(&mut self, stripe: &[u8], mut emit: impl FnMut(usize, &[u8])) -> u64 {
        assert!(
            self.stripe.is_empty(),
            "push_stripe with a partly filled stripe"
        );
        assert_eq!(
            stripe.len(),
            self.stripe_capacity(),
            "push_stripe takes exactly one stripe"
        );
        if self.hash_bundle {
            self.sha256.update(stripe);
        }
        self.bundle_len += stripe.len() as u64;
        self.chunk_fill_bytes = encode_cells(
            &self.codec,
            stripe,
            self.code.cell_bytes() as usize,
            &mut self.parity,
            &mut self.chunk_crcs,
            self.chunk_fill_bytes,
            self.code.chunk_bytes().into(),
            &mut emit,
        );
        let number = self.next_stripe;
        self.next_stripe += 1;
        number
    }

    /// k+m empty output buffers with room for a framed cell, reusing recycled ones.
    fn output_buffers(&mut self, cell_bytes: usize) -> Vec<Vec<u8>> {
        let chunk_bytes = self.code.chunk_bytes() as usize;
        let framed_len = cell_bytes
            + (self.chunk_fill_bytes as usize + cell_bytes) / chunk_bytes * CHUNK_CRC_BYTES;
        (0..self.code.total_shards())
            .map(|_| {
                let mut out = self.spare_buffers.pop().unwrap_or_default();
                out.clear();
                out.reserve(framed_len);
                out
            })
            .collect()
    }
}

/// Bytes encoded and framed at a time: parity, CRC and copy of one block run while the block
/// is in cache, instead of three passes over whole cells.
const ENCODE_BLOCK_BYTES: usize = 64 << 10;

/// Computes parity for the k cells of `stripe` and hands all k+m framed cells, piece by piece
/// and in order per shard, to `emit(shard, bytes)`.
/// Returns the new fill of the open chunk.
#[allow(clippy::too_many_arguments)]
fn encode_cells(
    codec: &reed_solomon_erasure::galois_8::ReedSolomon,
    stripe: &[u8],
    cell_bytes: usize,
    parity: &mut [Vec<u8>],
    crcs: &mut [u32],
    mut fill_bytes: u64,
    chunk_bytes: u64,
    emit: &mut impl FnMut(usize, &[u8]),
) -> u64 {
    let k = stripe.len() / cell_bytes;
    // Parity is framed block by block as it is computed, so one block of scratch per parity
    // shard is enough: 4 × 64 KiB stay in L2, where whole parity cells (4 MiB at RS(10,4) with
    // 1 MiB cells) would not, and a new encoder does not fault in megabytes of fresh pages.
    for p in parity.iter_mut() {
        p.resize(ENCODE_BLOCK_BYTES.min(cell_bytes), 0);
    }
    let mut start = 0;
    while start < cell_bytes {
        let end = (start + ENCODE_BLOCK_BYTES).min(cell_bytes);
        let data: Vec<&[u8]> = (0..k)
            .map(|j| &stripe[j * cell_bytes + start..j * cell_bytes + end])
            .collect();
        let mut parity_blocks: Vec<&mut [u8]> =
            parity.iter_mut().map(|p| &mut p[..end - start]).collect();
        // Lengths match by construction, the only thing encode_sep checks.
        let encoded = codec.encode_sep(&data, &mut parity_blocks);
        assert!(
            encoded.is_ok(),
            "encode_sep on equal-length blocks: {encoded:?}"
        );
        let blocks = data
            .iter()
            .copied()
            .chain(parity_blocks.iter().map(|p| &**p));
        for (shard, (block, crc)) in blocks.zip(crcs.iter_mut()).enumerate() {
            *crc = frame_cell(
                &mut |piece| emit(shard, piece),
                block,
                *crc,
                fill_bytes,
                chunk_bytes,
            );
        }
        fill_bytes = (fill_bytes + (end - start) as u64) % chunk_bytes;
        start = end;
    }
    fill_bytes
}

/// Appends `cell` to `out`, inserting the CRC32C of each chunk as it completes. `fill_bytes` is
/// how much of the open chunk came before; returns the open chunk's running CRC.
fn frame_cell(
    out: &mut impl FnMut(&[u8]),
    cell: &[u8],
    mut crc: u32,
    mut fill_bytes: u64,
    chunk_bytes: u64,
) -> u32 {
    let mut rest = cell;
    while !rest.is_empty() {
        let take = ((chunk_bytes - fill_bytes) as usize).min(rest.len());
        let (segment, after) = rest.split_at(take);
        crc = if fill_bytes == 0 {
            crate::crc::crc32c(segment)
        } else {
            crate::crc::crc32c_append(crc, segment)
        };
        out(segment);
        fill_bytes += take as u64;
        rest = after;
        if fill_bytes == chunk_bytes {
            out(&crc.to_le_bytes());
            crc = 0;
            fill_bytes = 0;
        }
    }
    crc
}
