//! The sans-IO read core: gathers verified chunks of some shards, fetching and reconstructing
//! as needed. Callers (a range read, a shard rebuild) say which (shard, chunk) they *want*; the
//! gather says which (shard, physical byte range) to fetch, takes the fetched bytes, checks every
//! chunk's CRC32C, and when a wanted chunk is missing or corrupt asks for the same chunk column
//! of other shards until it holds k healthy chunks of that column, then decodes. Because every
//! shard's data is codeword-aligned (see [`crate::layout`]), repair works chunk by chunk: a lost
//! 64 KiB chunk costs k chunk reads, not k cells.
//!
//! A chunk that fails its check is never handed out: it is recorded in [`ChunkGather::lost_chunks`]
//! and treated as an erasure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use reed_solomon_erasure::galois_8::{self, ReedSolomon};

use crate::code::{BundleId, Code};
use crate::error::{ErasureError, Result};
use crate::format::CHUNK_CRC_BYTES;
use crate::layout::{BundleLayout, PhysicalRange};

/// A shareable Reed-Solomon codec (it caches decode coefficients, so keep one per bundle
/// reader).
#[derive(Clone)]
pub struct Codec {
    rs: Arc<ReedSolomon>,
    /// (shards used, target shard) → the k coefficients that rebuild the target from them.
    coefficients: Arc<Mutex<Vec<CoefficientRow>>>,
}

type CoefficientRow = (Vec<u16>, u16, Arc<[u8]>);

/// Coefficient rows kept per codec (one per distinct loss pattern and target).
const MAX_COEFFICIENT_ROWS: usize = 64;

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Codec(RS({},{}))",
            self.rs.data_shard_count(),
            self.rs.parity_shard_count()
        )
    }
}

impl Codec {
    /// The codec for `code`.
    pub fn new(code: &Code) -> Result<Self> {
        Ok(Self {
            rs: Arc::new(code.codec()?),
            coefficients: Arc::default(),
        })
    }

    /// The k coefficients `c` such that shard `target` = Σ `c[i]`·shard `present[i]` over
    /// GF(2⁸), byte by byte (`present`: k distinct shards in increasing order). Derived from
    /// `reed-solomon-erasure` itself: reconstructing k-byte shards where `present[i]` holds the
    /// unit vector eᵢ yields the coefficients as the target's bytes (decoding is linear and
    /// works byte-wise), so the result is exactly the library's decode, applied to any byte
    /// range without its per-call shard checks and copies.
    pub(crate) fn coefficients(&self, present: &[u16], target: u16) -> Result<Arc<[u8]>> {
        let mut cache = self
            .coefficients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pos) = cache
            .iter()
            .position(|(p, t, _)| *t == target && p.as_slice() == present)
        {
            let row = cache[pos].2.clone();
            if pos > 0 {
                let entry = cache.remove(pos);
                cache.insert(0, entry);
            }
            return Ok(row);
        }
        let k = self.rs.data_shard_count();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; self.rs.total_shard_count()];
        for (i, &p) in present.iter().enumerate() {
            let mut unit = vec![0u8; k];
            unit[i] = 1;
            shards[usize::from(p)] = Some(unit);
        }
        if usize::from(target) < k {
            self.rs.reconstruct_data(&mut shards)
        } else {
            self.rs.reconstruct(&mut shards)
        }
        .map_err(ErasureError::ReedSolomon)?;
        let row: Arc<[u8]> = shards[usize::from(target)]
            .take()
            .unwrap_or_default()
            .into();
        cache.insert(0, (present.to_vec(), target, row.clone()));
        cache.truncate(MAX_COEFFICIENT_ROWS);
        Ok(row)
    }
}

/// `out = Σ coefficients[i] · inputs[i]` over GF(2⁸), with `reed-solomon-erasure`'s SIMD
/// kernels (the same ones its own encode and reconstruct run). All slices have `out`'s length.
pub(crate) fn combine(coefficients: &[u8], inputs: &[&[u8]], out: &mut [u8]) {
    if out.is_empty() {
        return;
    }
    galois_8::mul_slice(coefficients[0], inputs[0], out);
    for (&c, input) in coefficients.iter().zip(inputs).skip(1) {
        if c != 0 {
            galois_8::mul_slice_xor(c, input, out);
        }
    }
}

/// One read to issue: chunks `chunks` of shard `shard`, found at `range` of the shard file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub shard: u16,
    pub chunks: std::ops::Range<u64>,
    pub range: PhysicalRange,
}

/// Why a chunk was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// The chunk's bytes did not match its CRC32C.
    Corrupt,
    /// The fetch failed or returned too few bytes (missing or truncated shard).
    Unreadable,
}

/// A chunk that could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostChunk {
    pub shard: u16,
    pub chunk: u64,
    pub kind: LossKind,
}

/// Where a verified chunk's bytes are.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// In `ChunkGather::buffers[i]`.
    Owned(usize),
    /// In the caller's lent slice `i` (see [`ChunkGather::supply_lent`]).
    Lent(usize),
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    place: Place,
    offset: usize,
}

#[derive(Debug)]
struct Column {
    wanted: Vec<u16>,
    have: Vec<Option<Stored>>,
    tried: Vec<bool>,
}

/// Gathers verified chunks; see the module docs for the protocol:
/// `loop { let f = g.plan()?; if f.is_empty() { break } for each f: g.supply(&f, bytes) }`,
/// then [`ChunkGather::decode`] and [`ChunkGather::chunk`]. Supply every fetch of a round
/// before planning the next: a planned fetch never supplied counts as lost.
#[derive(Debug)]
pub struct ChunkGather {
    bundle_id: BundleId,
    layout: BundleLayout,
    codec: Option<Codec>,
    columns: BTreeMap<u64, Column>,
    buffers: Vec<Vec<u8>>,
    /// Recycled buffers: reusing them avoids fresh zeroed pages (page faults cost more than
    /// the CRC check of the bytes).
    spare: Vec<Vec<u8>>,
    unavailable: Vec<bool>,
    lost: Vec<LostChunk>,
    /// Chunk range this gather covers, when a caller set one (rebuild windows).
    window: std::ops::Range<u64>,
}

impl ChunkGather {
    /// An empty gather for a bundle laid out as `layout`.
    pub fn new(bundle_id: BundleId, layout: BundleLayout, codec: Option<Codec>) -> Self {
        Self {
            bundle_id,
            layout,
            codec,
            columns: BTreeMap::new(),
            buffers: Vec::new(),
            spare: Vec::new(),
            unavailable: vec![false; layout.code().total_shards()],
            lost: Vec::new(),
            window: 0..0,
        }
    }

    /// Records the chunk range this gather covers (for callers that frame a window).
    pub fn set_window(&mut self, window: std::ops::Range<u64>) {
        self.window = window;
    }

    /// The chunk range set by [`Self::set_window`].
    pub fn window(&self) -> std::ops::Range<u64> {
        self.window.clone()
    }

    /// Hands in buffers to reuse (e.g. from a previous gather's [`Self::into_buffers`]).
    pub fn with_spare_buffers(mut self, spare: Vec<Vec<u8>>) -> Self {
        self.spare = spare;
        self
    }

    /// A buffer of `len` bytes to read a fetch into, recycled when possible. Its contents are
    /// unspecified (the caller overwrites them).
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Every buffer this gather holds, for reuse by the next one.
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        let mut all = self.spare;
        all.extend(self.buffers.into_iter().filter(|b| b.capacity() > 0));
        all
    }

    /// Marks shards known to be unavailable (node down, file missing): never fetched.
    pub fn mark_unavailable(&mut self, shard: u16) {
        if let Some(flag) = self.unavailable.get_mut(usize::from(shard)) {
            *flag = true;
        }
    }

    /// Wants chunk `chunk` of shard `shard`.
    pub fn want(&mut self, shard: u16, chunk: u64) {
        assert!(
            usize::from(shard) < self.layout.code().total_shards()
                && chunk < self.layout.chunk_count()
        );
        let n = self.layout.code().total_shards();
        let column = self.columns.entry(chunk).or_insert_with(|| Column {
            wanted: Vec::new(),
            have: vec![None; n],
            tried: vec![false; n],
        });
        if !column.wanted.contains(&shard) {
            column.wanted.push(shard);
        }
    }

    /// Chunks found lost so far (corrupt or unreadable).
    pub fn lost_chunks(&self) -> &[LostChunk] {
        &self.lost
    }

    /// The next round of fetches; empty when every wanted chunk is held or can be decoded.
    pub fn plan(&mut self) -> Result<Vec<Fetch>> {
        let k = self.layout.code().data_shards();
        let n = self.layout.code().total_shards();
        let mut requests: Vec<(u16, u64)> = Vec::new();
        for (&chunk, column) in &mut self.columns {
            let mut lost_wanted = false;
            let mut pending = 0;
            let round_start = requests.len();
            for &shard in &column.wanted {
                let s = usize::from(shard);
                if column.have[s].is_some() {
                    continue;
                }
                if column.tried[s] || self.unavailable[s] {
                    lost_wanted = true;
                } else {
                    column.tried[s] = true;
                    requests.push((shard, chunk));
                    pending += 1;
                }
            }
            if !lost_wanted {
                continue;
            }
            let held = column.have.iter().filter(|h| h.is_some()).count();
            let need = k.saturating_sub(held + pending);
            let candidates: Vec<usize> = (0..n)
                .filter(|&s| !column.tried[s] && !self.unavailable[s])
                .take(need)
                .collect();
            if candidates.len() < need {
                let requested_now = &requests[round_start..];
                let lost_shards = (0..n)
                    .filter(|&s| {
                        let pending_now = requested_now.iter().any(|&(r, _)| usize::from(r) == s);
                        column.have[s].is_none()
                            && (self.unavailable[s] || (column.tried[s] && !pending_now))
                    })
                    .map(|s| s as u16)
                    .collect();
                return Err(ErasureError::Unrecoverable {
                    bundle_id: self.bundle_id,
                    chunk,
                    healthy: held,
                    needed: k,
                    lost_shards,
                });
            }
            for s in candidates {
                column.tried[s] = true;
                requests.push((s as u16, chunk));
            }
        }
        requests.sort_unstable();
        let mut fetches: Vec<Fetch> = Vec::new();
        for (shard, chunk) in requests {
            match fetches.last_mut() {
                Some(last) if last.shard == shard && last.chunks.end == chunk => {
                    last.chunks.end += 1
                }
                _ => fetches.push(Fetch {
                    shard,
                    chunks: chunk..chunk + 1,
                    range: PhysicalRange { offset: 0, len: 0 },
                }),
            }
        }
        for fetch in &mut fetches {
            fetch.range = self.layout.chunk_physical_range(fetch.chunks.clone());
        }
        Ok(fetches)
    }

    /// Takes the bytes read for `fetch` (`None` if the read failed; fewer bytes than asked if the
    /// shard is truncated). Every chunk is checked; bad ones are recorded as lost.
    pub fn supply(&mut self, fetch: &Fetch, bytes: Option<Vec<u8>>) {
        let buffer = self.buffers.len();
        let bytes = bytes.unwrap_or_default();
        if self.check(fetch, &bytes, Place::Owned(buffer)) {
            self.buffers.push(bytes);
        } else {
            self.buffers.push(Vec::new());
            self.spare.push(bytes);
        }
    }

    /// Like [`Self::supply`] for bytes the caller lends instead of handing over (a shard already
    /// in memory): the caller keeps `bytes` as its `lent[index]` and passes that table to the
    /// crate-internal readers ([`Self::held`], [`Self::decode_with`]). Nothing is copied.
    pub(crate) fn supply_lent(&mut self, fetch: &Fetch, bytes: &[u8], index: usize) {
        self.check(fetch, bytes, Place::Lent(index));
    }

    /// Checks each chunk of `fetch` in `bytes` against its CRC32C once; records the good ones as
    /// held at `place` and the others as lost. Returns whether any chunk was kept.
    fn check(&mut self, fetch: &Fetch, bytes: &[u8], place: Place) -> bool {
        let s = usize::from(fetch.shard);
        let chunk_bytes = u64::from(self.layout.code().chunk_bytes());
        let stride = chunk_bytes as usize + CHUNK_CRC_BYTES;
        let mut any_stored = false;
        for chunk in fetch.chunks.clone() {
            let Some(column) = self.columns.get_mut(&chunk) else {
                continue;
            };
            let offset = (chunk - fetch.chunks.start) as usize * stride;
            let len = self.layout.chunk_data_bytes(chunk) as usize;
            let kind = match bytes.get(offset..offset + len + CHUNK_CRC_BYTES) {
                None => LossKind::Unreadable,
                Some(framed) => {
                    let (data, crc) = framed.split_at(len);
                    let stored_crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
                    if crate::crc::crc32c(data) == stored_crc {
                        column.have[s] = Some(Stored { place, offset });
                        any_stored = true;
                        continue;
                    }
                    LossKind::Corrupt
                }
            };
            self.lost.push(LostChunk {
                shard: fetch.shard,
                chunk,
                kind,
            });
        }
        any_stored
    }

    fn bytes_of<'a>(&'a self, lent: &[&'a [u8]], stored: Stored, len: usize) -> Option<&'a [u8]> {
        let bytes: &'a [u8] = match stored.place {
            Place::Owned(i) => self.buffers.get(i)?,
            Place::Lent(i) => lent.get(i)?,
        };
        bytes.get(stored.offset..stored.offset + len)
    }

    /// The codec, created on first use.
    pub(crate) fn codec(&mut self) -> Result<Codec> {
        if let Some(codec) = &self.codec {
            return Ok(codec.clone());
        }
        let codec = Codec::new(&self.layout.code())?;
        self.codec = Some(codec.clone());
        Ok(codec)
    }

    /// The first k verified chunks of column `chunk` (shard numbers in increasing order, and
    /// their data): what any lost chunk of the column is rebuilt from.
    pub(crate) fn column_inputs<'a>(
        &'a self,
        lent: &[&'a [u8]],
        chunk: u64,
    ) -> Result<(Vec<u16>, Vec<&'a [u8]>)> {
        let k = self.layout.code().data_shards();
        let len = self.layout.chunk_data_bytes(chunk) as usize;
        let Some(column) = self.columns.get(&chunk) else {
            return Err(ErasureError::Misuse {
                bundle_id: self.bundle_id,
                what: format!("chunk {chunk} not gathered"),
            });
        };
        let mut shards = Vec::with_capacity(k);
        let mut inputs = Vec::with_capacity(k);
        for (s, stored) in column.have.iter().enumerate() {
            if inputs.len() == k {
                break;
            }
            if let Some(bytes) = stored.and_then(|h| self.bytes_of(lent, h, len)) {
                shards.push(s as u16);
                inputs.push(bytes);
            }
        }
        if inputs.len() < k {
            let lost_shards = (0..column.have.len())
                .filter(|&s| column.have[s].is_none())
                .map(|s| s as u16)
                .collect();
            return Err(ErasureError::Unrecoverable {
                bundle_id: self.bundle_id,
                chunk,
                healthy: inputs.len(),
                needed: k,
                lost_shards,
            });
        }
        Ok((shards, inputs))
    }

    /// Reconstructs every wanted chunk not held. Call once `plan` returns no fetches.
    pub fn decode(&mut self) -> Result<()> {
        self.decode_with(&[])
    }

    /// [`Self::decode`] for a gather some of whose chunks are lent (`lent` as given to
    /// [`Self::supply_lent`]).
    pub(crate) fn decode_with(&mut self, lent: &[&[u8]]) -> Result<()> {
        let k = self.layout.code().data_shards();
        let n = self.layout.code().total_shards();
        let chunks: Vec<u64> = self
            .columns
            .iter()
            .filter(|(_, c)| c.wanted.iter().any(|&s| c.have[usize::from(s)].is_none()))
            .map(|(&chunk, _)| chunk)
            .collect();
        if chunks.is_empty() {
            return Ok(());
        }
        let codec = self.codec()?;
        for chunk in chunks {
            let len = self.layout.chunk_data_bytes(chunk) as usize;
            let mut scratch = self.spare.pop().unwrap_or_default();
            let rebuilt_shards = {
                let (present, inputs) = self.column_inputs(lent, chunk)?;
                let Some(column) = self.columns.get(&chunk) else {
                    continue;
                };
                // Rebuild what is wanted; a parity shard wanted (shard rebuild) needs all
                // missing shards rebuilt, as before.
                let data_only = column.wanted.iter().all(|&s| usize::from(s) < k);
                let rebuilt_shards: Vec<u16> = (0..n)
                    .filter(|&s| column.have[s].is_none() && (s < k || !data_only))
                    .map(|s| s as u16)
                    .collect();
                scratch.resize(len * rebuilt_shards.len(), 0);
                for (&target, out) in rebuilt_shards.iter().zip(scratch.chunks_exact_mut(len)) {
                    combine(&codec.coefficients(&present, target)?, &inputs, out);
                }
                rebuilt_shards
            };
            let buffer = self.buffers.len();
            self.buffers.push(scratch);
            if let Some(column) = self.columns.get_mut(&chunk) {
                for (i, &s) in rebuilt_shards.iter().enumerate() {
                    column.have[usize::from(s)] = Some(Stored {
                        place: Place::Owned(buffer),
                        offset: i * len,
                    });
                }
            }
        }
        Ok(())
    }

    /// Verified (or reconstructed) data of chunk `chunk` of shard `shard`, if held.
    pub fn chunk(&self, shard: u16, chunk: u64) -> Option<&[u8]> {
        self.held(&[], shard, chunk)
    }

    /// [`Self::chunk`] for a gather some of whose chunks are lent.
    pub(crate) fn held<'a>(
        &'a self,
        lent: &[&'a [u8]],
        shard: u16,
        chunk: u64,
    ) -> Option<&'a [u8]> {
        let column = self.columns.get(&chunk)?;
        let stored = column.have.get(usize::from(shard)).copied().flatten()?;
        let len = self.layout.chunk_data_bytes(chunk) as usize;
        self.bytes_of(lent, stored, len)
    }
}
