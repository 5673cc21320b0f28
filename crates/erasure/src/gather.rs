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
use std::sync::Arc;

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::code::{BundleId, Code};
use crate::error::{ErasureError, Result};
use crate::format::CHUNK_CRC_BYTES;
use crate::layout::{BundleLayout, PhysicalRange};

/// A shareable Reed-Solomon codec (it caches decode matrices, so keep one per bundle reader).
#[derive(Clone)]
pub struct Codec(Arc<ReedSolomon>);

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Codec(RS({},{}))",
            self.0.data_shard_count(),
            self.0.parity_shard_count()
        )
    }
}

impl Codec {
    /// The codec for `code`.
    pub fn new(code: &Code) -> Result<Self> {
        Ok(Self(Arc::new(code.codec()?)))
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

#[derive(Clone, Copy, Debug)]
struct Stored {
    buffer: usize,
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
        let s = usize::from(fetch.shard);
        let buffer = self.buffers.len();
        let bytes = bytes.unwrap_or_default();
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
                        column.have[s] = Some(Stored { buffer, offset });
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
        if any_stored {
            self.buffers.push(bytes);
        } else {
            self.buffers.push(Vec::new());
            self.spare.push(bytes);
        }
    }

    /// Reconstructs every wanted chunk not held. Call once `plan` returns no fetches.
    pub fn decode(&mut self) -> Result<()> {
        let k = self.layout.code().data_shards();
        let n = self.layout.code().total_shards();
        let chunks: Vec<u64> = self
            .columns
            .iter()
            .filter(|(_, c)| c.wanted.iter().any(|&s| c.have[usize::from(s)].is_none()))
            .map(|(&chunk, _)| chunk)
            .collect();
        for chunk in chunks {
            let len = self.layout.chunk_data_bytes(chunk) as usize;
            let Some(column) = self.columns.get_mut(&chunk) else {
                continue;
            };
            let present: Vec<(usize, Stored)> = (0..n)
                .filter_map(|s| column.have[s].map(|h| (s, h)))
                .take(k)
                .collect();
            if present.len() < k {
                let lost_shards = (0..n)
                    .filter(|&s| column.have[s].is_none())
                    .map(|s| s as u16)
                    .collect();
                return Err(ErasureError::Unrecoverable {
                    bundle_id: self.bundle_id,
                    chunk,
                    healthy: present.len(),
                    needed: k,
                    lost_shards,
                });
            }
            let data_only = column.wanted.iter().all(|&s| usize::from(s) < k);
            let is_present = |s: usize| present.iter().any(|(p, _)| *p == s);
            let rebuilt_shards: Vec<usize> = (0..n)
                .filter(|&s| !is_present(s) && (s < k || !data_only))
                .collect();
            let mut scratch = self.spare.pop().unwrap_or_default();
            scratch.resize(len * rebuilt_shards.len(), 0);
            // Borrow the held chunks in place (no copy): take their buffers out for the call.
            let mut taken: Vec<(usize, Vec<u8>, usize)> = present
                .iter()
                .map(|&(s, h)| (s, std::mem::take(&mut self.buffers[h.buffer]), h.offset))
                .collect();
            let codec = match &self.codec {
                Some(codec) => codec.clone(),
                None => {
                    let codec = Codec::new(&self.layout.code())?;
                    self.codec = Some(codec.clone());
                    codec
                }
            };
            let result = {
                let mut slots: Vec<(&mut [u8], bool)> =
                    (0..n).map(|_| (&mut [][..], false)).collect();
                for (s, buf, offset) in &mut taken {
                    slots[*s] = (&mut buf[*offset..*offset + len], true);
                }
                for (s, out) in rebuilt_shards.iter().zip(scratch.chunks_exact_mut(len)) {
                    slots[*s] = (out, false);
                }
                if data_only {
                    codec.0.reconstruct_data(&mut slots)
                } else {
                    codec.0.reconstruct(&mut slots)
                }
            };
            // Put the borrowed buffers back before looking at the result.
            for (&(_, h), (_, buf, _)) in present.iter().zip(taken) {
                self.buffers[h.buffer] = buf;
            }
            result.map_err(ErasureError::ReedSolomon)?;
            let buffer = self.buffers.len();
            self.buffers.push(scratch);
            for (i, &s) in rebuilt_shards.iter().enumerate() {
                column.have[s] = Some(Stored {
                    buffer,
                    offset: i * len,
                });
            }
        }
        Ok(())
    }

    /// Verified (or reconstructed) data of chunk `chunk` of shard `shard`, if held.
    pub fn chunk(&self, shard: u16, chunk: u64) -> Option<&[u8]> {
        let column = self.columns.get(&chunk)?;
        let stored = column.have.get(usize::from(shard)).copied().flatten()?;
        let len = self.layout.chunk_data_bytes(chunk) as usize;
        self.buffers[stored.buffer].get(stored.offset..stored.offset + len)
    }
}
