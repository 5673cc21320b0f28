//! Reading bundles back: [`RangeRead`] is the sans-IO planner/decoder for one bundle byte range
//! (async callers drive it), [`BundleReader`] the sync convenience over [`ShardSource`]s, which
//! also decodes whole bundles (checking the SHA-256) and rebuilds lost shards.

use std::collections::BTreeMap;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::code::BundleId;
use crate::description::BundleDescription;
use crate::error::{ErasureError, Result};
use crate::format::{BundleInfo, ShardHeader};
use crate::gather::{combine, ChunkGather, Codec, Fetch, LostChunk};
use crate::layout::{BundleLayout, Piece};
use crate::rebuild::ShardRebuild;
use crate::source::{read_shard_meta, ShardSource};
use crate::write::ShardSink;

/// Reads bundle bytes `[offset, offset + len)`: `plan` → fetch → `supply`, until `plan` returns
/// nothing, then `finish`. Healthy shards cost one fetch per touched data shard, and only the
/// chunks holding the range; a lost chunk adds the same chunk of other shards.
#[derive(Debug)]
pub struct RangeRead {
    gather: ChunkGather,
    pieces: Vec<Piece>,
    offset: u64,
    len: u64,
    chunk_bytes: u64,
    /// Chunk columns this read covers (all of them unless a caller windows the range).
    window: std::ops::Range<u64>,
}

impl RangeRead {
    /// Plans a read of `len` bytes at `offset`. `unavailable` shards are never fetched.
    pub fn new(
        info: &BundleInfo,
        offset: u64,
        len: u64,
        unavailable: &[u16],
        codec: Option<Codec>,
    ) -> Result<Self> {
        let layout = info.layout()?;
        let pieces = layout.pieces(info.bundle_id, offset, len)?;
        Ok(Self::windowed(
            info,
            layout,
            pieces,
            offset,
            len,
            unavailable,
            codec,
            0..u64::MAX,
        ))
    }

    /// The part of the read `pieces` (of the range `offset`, `len`) that lies in chunk columns
    /// `window`: wants, fetches and writes only those.
    #[allow(clippy::too_many_arguments)]
    fn windowed(
        info: &BundleInfo,
        layout: BundleLayout,
        pieces: Vec<Piece>,
        offset: u64,
        len: u64,
        unavailable: &[u16],
        codec: Option<Codec>,
        window: std::ops::Range<u64>,
    ) -> Self {
        let mut gather = ChunkGather::new(info.bundle_id, layout, codec);
        for &shard in unavailable {
            gather.mark_unavailable(shard);
        }
        for piece in &pieces {
            let chunks = layout.chunks_for_shard_range(piece.shard_offset, piece.len);
            for chunk in chunks.start.max(window.start)..chunks.end.min(window.end) {
                gather.want(piece.shard, chunk);
            }
        }
        Self {
            gather,
            pieces,
            offset,
            len,
            chunk_bytes: info.code.chunk_bytes().into(),
            window,
        }
    }

    /// The next round of fetches; empty when done.
    pub fn plan(&mut self) -> Result<Vec<Fetch>> {
        self.gather.plan()
    }

    /// The bytes read for `fetch` (`None` if the read failed).
    pub fn supply(&mut self, fetch: &Fetch, bytes: Option<Vec<u8>>) {
        self.gather.supply(fetch, bytes)
    }

    /// Chunks that were found missing or corrupt (candidates for repair).
    pub fn lost_chunks(&self) -> &[LostChunk] {
        self.gather.lost_chunks()
    }

    /// A recycled buffer of `len` bytes to read a fetch into (saves page faults).
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.gather.buffer(len)
    }

    /// Decodes what is needed and returns the range's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len as usize];
        self.finish_into(&mut out)?;
        Ok(out)
    }

    /// Decodes what is needed and writes the range's bytes into `out` (exactly the range's
    /// length).
    pub fn finish_into(&mut self, out: &mut [u8]) -> Result<()> {
        self.assemble(&[], out)
    }

    /// Writes the range's bytes (of this read's window) into `out`: verified chunks are copied
    /// once, straight from where they were read or lent; lost ones are decoded straight into
    /// `out`, only the bytes the range needs (every shard is codeword-aligned, so bytes
    /// `[a, b)` of a chunk are rebuilt from bytes `[a, b)` of k verified chunks of its column).
    fn assemble(&mut self, lent: &[&[u8]], out: &mut [u8]) -> Result<()> {
        assert_eq!(
            out.len() as u64,
            self.len,
            "output buffer must match the range"
        );
        let window_start = self.window.start.saturating_mul(self.chunk_bytes);
        let window_end = self.window.end.saturating_mul(self.chunk_bytes);
        for piece in &self.pieces {
            let mut pos = piece.shard_offset.max(window_start);
            let end = (piece.shard_offset + piece.len).min(window_end);
            while pos < end {
                let chunk = pos / self.chunk_bytes;
                let in_chunk = (pos % self.chunk_bytes) as usize;
                let take = (end - pos).min(self.chunk_bytes - in_chunk as u64) as usize;
                let out_at =
                    (piece.bundle_offset + (pos - piece.shard_offset) - self.offset) as usize;
                let dst = &mut out[out_at..out_at + take];
                if let Some(data) = self.gather.held(lent, piece.shard, chunk) {
                    dst.copy_from_slice(&data[in_chunk..in_chunk + take]);
                } else {
                    let codec = self.gather.codec()?;
                    let (present, inputs) = self.gather.column_inputs(lent, chunk)?;
                    let coefficients = codec.coefficients(&present, piece.shard)?;
                    let parts: Vec<&[u8]> = inputs
                        .iter()
                        .map(|input| &input[in_chunk..in_chunk + take])
                        .collect();
                    combine(&coefficients, &parts, dst);
                }
                pos += take as u64;
            }
        }
        Ok(())
    }

    /// The buffers this read holds, for reuse by the next one.
    pub fn into_buffers(self) -> Vec<Vec<u8>> {
        self.gather.into_buffers()
    }
}

/// What became of one candidate shard given to [`BundleReader::open`].
#[derive(Debug)]
pub enum Candidate {
    /// Used as shard `shard_index`; `footer_error` says why its footer was not usable, if so
    /// (its chunks are still read, each verified by its CRC).
    Placed {
        shard_index: u16,
        footer_error: Option<String>,
    },
    /// Not used.
    Rejected {
        shard_index: Option<u16>,
        reason: String,
    },
}

/// Drives a [`ChunkGather`] over sync sources until it can decode, and decodes.
fn run_gather<S: ShardSource>(
    gather: &mut ChunkGather,
    sources: &[Option<S>],
    dead: &mut [bool],
) -> Result<()> {
    fetch_all(gather, sources, dead, None)?;
    gather.decode()
}

/// Drives a [`ChunkGather`] over sync sources until every wanted chunk is held or can be
/// decoded. With `lent`, sources that can lend their bytes are not copied from: their slices
/// go to `lent` (the table [`ChunkGather::supply_lent`] refers to).
fn fetch_all<'s, S: ShardSource>(
    gather: &mut ChunkGather,
    sources: &'s [Option<S>],
    dead: &mut [bool],
    mut lent: Option<&mut Vec<&'s [u8]>>,
) -> Result<()> {
    loop {
        let fetches = gather.plan()?;
        if fetches.is_empty() {
            return Ok(());
        }
        for fetch in fetches {
            let s = usize::from(fetch.shard);
            if let (Some(src), Some(lent)) = (&sources[s], lent.as_deref_mut()) {
                if let Some(bytes) = src.lend(fetch.range.offset, fetch.range.len) {
                    gather.supply_lent(&fetch, bytes, lent.len());
                    lent.push(bytes);
                    continue;
                }
            }
            let bytes = match &sources[s] {
                None => None,
                Some(src) => match read_pooled(gather, src, &fetch) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        if e.kind() == io::ErrorKind::NotFound {
                            dead[s] = true;
                            gather.mark_unavailable(fetch.shard);
                        }
                        None
                    }
                },
            };
            gather.supply(&fetch, bytes);
        }
    }
}

/// Reads a fetch into a recycled buffer; short only at end of file.
fn read_pooled<S: ShardSource>(
    gather: &mut ChunkGather,
    src: &S,
    fetch: &Fetch,
) -> io::Result<Vec<u8>> {
    let len = usize::try_from(fetch.range.len).map_err(io::Error::other)?;
    let mut buf = gather.buffer(len);
    let n = src.read_at(fetch.range.offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Most recycled buffers a reader keeps between reads.
const MAX_SPARE_BUFFERS: usize = 64;

/// Shard bytes per shard a range read gathers at a time when its sources lend their bytes
/// (shards in memory): the CRC check, the decode and the copy of a 64 KiB chunk column then run
/// while the column (k × 64 KiB) is in L2, instead of checking the whole range first and coming
/// back to it from DRAM. Sources that copy are read in one request per shard per range.
const LENT_WINDOW_BYTES: u64 = 64 << 10;

/// Sync reader over k+m shard sources (some may be absent).
#[derive(Debug)]
pub struct BundleReader<S> {
    info: BundleInfo,
    /// What most of the placed shards' descriptions say (`None`: version-1 shards only).
    description: Option<BundleDescription>,
    layout: BundleLayout,
    sources: Vec<Option<S>>,
    dead: Vec<bool>,
    codec: Codec,
    lost: Vec<LostChunk>,
    spare: Vec<Vec<u8>>,
}

impl<S: ShardSource> BundleReader<S> {
    /// A reader for a bundle whose info is known (e.g. from the metadata group): no header or
    /// footer reads. `sources[i]` is shard `i`, `None` if unavailable.
    pub fn new(info: BundleInfo, sources: Vec<Option<S>>) -> Result<Self> {
        let layout = info.layout()?;
        if sources.len() != info.code.total_shards() {
            return Err(ErasureError::Misuse {
                bundle_id: info.bundle_id,
                what: format!(
                    "{} sources for {} shards",
                    sources.len(),
                    info.code.total_shards()
                ),
            });
        }
        let dead = sources.iter().map(Option::is_none).collect();
        Ok(Self {
            codec: Codec::new(&info.code)?,
            info,
            description: None,
            layout,
            sources,
            dead,
            lost: Vec::new(),
            spare: Vec::new(),
        })
    }

    /// Opens a bundle from candidate shard sources in any order (e.g. every shard file in a
    /// directory): reads each header and footer, keeps the bundle most candidates belong to,
    /// places each by its shard index. Returns what became of each candidate, in input order.
    pub fn open(candidates: Vec<S>) -> Result<(Self, Vec<Candidate>)> {
        let count = candidates.len();
        let mut metas = Vec::with_capacity(count);
        let mut outcome: Vec<Option<Candidate>> = Vec::with_capacity(count);
        for src in &candidates {
            match read_shard_meta(src) {
                Ok(meta) => {
                    metas.push(Some(meta));
                    outcome.push(None);
                }
                Err(e) => {
                    metas.push(None);
                    outcome.push(Some(Candidate::Rejected {
                        shard_index: None,
                        reason: e.to_string(),
                    }));
                }
            }
        }
        // The bundle and code most headers agree on.
        let mut votes: BTreeMap<(BundleId, [u32; 4]), usize> = BTreeMap::new();
        let key = |h: &ShardHeader| {
            let c = h.code;
            (
                h.bundle_id,
                [
                    c.data_shards() as u32,
                    c.parity_shards() as u32,
                    c.cell_bytes(),
                    c.chunk_bytes(),
                ],
            )
        };
        for meta in metas.iter().flatten() {
            *votes.entry(key(&meta.header)).or_default() += 1;
        }
        let Some((&chosen, _)) = votes.iter().max_by_key(|(_, &n)| n) else {
            return Err(ErasureError::NoShards { candidates: count });
        };
        let Some(code) = metas
            .iter()
            .flatten()
            .find(|m| key(&m.header) == chosen)
            .map(|m| m.header.code)
        else {
            return Err(ErasureError::NoShards { candidates: count });
        };
        let bundle_id = chosen.0;
        // The bundle info most valid footers agree on.
        let mut info_votes: Vec<(BundleInfo, usize)> = Vec::new();
        for meta in metas.iter().flatten().filter(|m| key(&m.header) == chosen) {
            if let Ok(footer) = &meta.footer {
                let info = BundleInfo::from_parts(&meta.header, footer);
                match info_votes.iter_mut().find(|(i, _)| *i == info) {
                    Some((_, n)) => *n += 1,
                    None => info_votes.push((info, 1)),
                }
            }
        }
        let Some(info) = info_votes.iter().max_by_key(|(_, n)| *n).map(|(i, _)| *i) else {
            return Err(ErasureError::NoBundleInfo { bundle_id });
        };
        let mut slots: Vec<Option<S>> = (0..code.total_shards()).map(|_| None).collect();
        let mut description_votes: Vec<(BundleDescription, usize)> = Vec::new();
        for (i, src) in candidates.into_iter().enumerate() {
            let Some(meta) = &metas[i] else { continue };
            let shard_index = meta.header.shard_index;
            let reject = |reason: String| {
                Some(Candidate::Rejected {
                    shard_index: Some(shard_index),
                    reason,
                })
            };
            if key(&meta.header) != chosen {
                outcome[i] = reject(format!(
                    "belongs to bundle {} / {}",
                    meta.header.bundle_id, meta.header.code
                ));
                continue;
            }
            let footer_error = match &meta.footer {
                Ok(footer) if BundleInfo::from_parts(&meta.header, footer) != info => {
                    outcome[i] = reject("footer disagrees with the other shards".into());
                    continue;
                }
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            let slot = &mut slots[usize::from(shard_index)];
            if slot.is_some() {
                outcome[i] = reject(format!("duplicate of shard {shard_index}"));
                continue;
            }
            *slot = Some(src);
            if let Some(Ok(d)) = &meta.description {
                match description_votes.iter_mut().find(|(v, _)| v == d) {
                    Some((_, n)) => *n += 1,
                    None => description_votes.push((d.clone(), 1)),
                }
            }
            outcome[i] = Some(Candidate::Placed {
                shard_index,
                footer_error,
            });
        }
        let outcome = outcome
            .into_iter()
            .map(|o| {
                o.unwrap_or(Candidate::Rejected {
                    shard_index: None,
                    reason: "not examined".into(),
                })
            })
            .collect();
        let mut reader = Self::new(info, slots)?;
        reader.description = description_votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d);
        Ok((reader, outcome))
    }

    /// What the shards say about the bundle.
    pub fn info(&self) -> &BundleInfo {
        &self.info
    }

    /// What most shards' descriptions say (`None` when every shard is of version 1).
    pub fn description(&self) -> Option<&BundleDescription> {
        self.description.as_ref()
    }

    /// The description rebuilt shards carry, when the reader was made from a known bundle
    /// ([`Self::new`]) rather than from its shards ([`Self::open`], which reads it).
    pub fn with_description(mut self, description: Option<BundleDescription>) -> Self {
        self.description = description;
        self
    }

    /// The bundle's layout.
    pub fn layout(&self) -> &BundleLayout {
        &self.layout
    }

    /// Shards that were unavailable or turned out missing.
    pub fn unavailable_shards(&self) -> Vec<u16> {
        (0..self.dead.len())
            .filter(|&s| self.dead[s])
            .map(|s| s as u16)
            .collect()
    }

    /// Every chunk found lost so far (for repair reports).
    pub fn lost_chunks(&self) -> &[LostChunk] {
        &self.lost
    }

    /// Reads bundle bytes `[offset, offset + len)`, verified, reconstructing what is lost.
    pub fn read_range(&mut self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.read_range_into(offset, &mut out)?;
        Ok(out)
    }

    /// Reads bundle bytes `[offset, offset + out.len())` into `out`.
    pub fn read_range_into(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        let len = out.len() as u64;
        let pieces = self.layout.pieces(self.info.bundle_id, offset, len)?;
        let chunk_bytes = u64::from(self.info.code.chunk_bytes());
        let Some(first) = pieces.iter().map(|p| p.shard_offset / chunk_bytes).min() else {
            return Ok(());
        };
        let end = pieces
            .iter()
            .map(|p| (p.shard_offset + p.len).div_ceil(chunk_bytes))
            .max()
            .unwrap_or(first);
        let lending = self
            .sources
            .iter()
            .flatten()
            .all(|src| src.lend(0, 0).is_some());
        let step = if lending {
            (LENT_WINDOW_BYTES / chunk_bytes).max(1)
        } else {
            u64::MAX
        };
        let mut start = first;
        while start < end {
            let window = start..end.min(start.saturating_add(step));
            start = window.end;
            let mut read = RangeRead::windowed(
                &self.info,
                self.layout,
                pieces.clone(),
                offset,
                len,
                &self.unavailable_shards(),
                Some(self.codec.clone()),
                window,
            );
            read.gather = read
                .gather
                .with_spare_buffers(std::mem::take(&mut self.spare));
            let mut lent = Vec::new();
            let gathered = fetch_all(
                &mut read.gather,
                &self.sources,
                &mut self.dead,
                Some(&mut lent),
            );
            // Record what was lost even when the read fails: error reports name it.
            self.lost.extend_from_slice(read.lost_chunks());
            let result = gathered.and_then(|()| read.assemble(&lent, out));
            self.spare = read.into_buffers();
            self.spare.truncate(MAX_SPARE_BUFFERS);
            result?;
        }
        Ok(())
    }

    /// Decodes the whole bundle into `out`, one stripe at a time, and checks its SHA-256
    /// against the footer. On error, `out` holds a prefix: write to a temporary file.
    pub fn read_bundle(&mut self, out: &mut impl Write) -> Result<()> {
        let mut sha = Sha256::new();
        let window = self.info.code.stripe_data_bytes();
        let mut offset = 0;
        let mut bytes = Vec::new();
        while offset < self.info.bundle_len {
            let len = window.min(self.info.bundle_len - offset);
            bytes.resize(len as usize, 0);
            self.read_range_into(offset, &mut bytes)?;
            sha.update(&bytes);
            out.write_all(&bytes)
                .map_err(|e| ErasureError::io(None, "writing decoded bundle", e))?;
            offset += len;
        }
        let actual: [u8; 32] = sha.finalize().into();
        if actual != self.info.sha256 {
            return Err(ErasureError::Sha256Mismatch {
                bundle_id: self.info.bundle_id,
                expected: hex::encode(self.info.sha256),
                actual: hex::encode(actual),
            });
        }
        Ok(())
    }

    /// Rebuilds shards `targets` (data or parity) from the others, chunk window by chunk window,
    /// writing complete shard files (header, CRC-framed data, the description the other shards
    /// carry if any, footer) into `sinks` (one per target, same order) and committing them. Targets are never read. Returns the sinks.
    pub fn rebuild_shards<W: ShardSink>(
        &mut self,
        targets: &[u16],
        mut sinks: Vec<W>,
    ) -> Result<Vec<W>> {
        let mut rebuild = ShardRebuild::new(self.info, targets)?;
        if sinks.len() != targets.len() {
            return Err(ErasureError::Misuse {
                bundle_id: self.info.bundle_id,
                what: format!("rebuild targets {targets:?} with {} sinks", sinks.len()),
            });
        }
        let sink_err = |t: u16, e| ErasureError::io(Some(t), "writing rebuilt shard", e);
        for ((&t, sink), header) in targets.iter().zip(&mut sinks).zip(rebuild.headers()) {
            sink.append(&header).map_err(|e| sink_err(t, e))?;
        }
        while let Some(mut gather) = rebuild.next_window(&self.unavailable_shards()) {
            let gathered = run_gather(&mut gather, &self.sources, &mut self.dead);
            self.lost.extend_from_slice(gather.lost_chunks());
            gathered?;
            for ((&t, sink), framed) in targets
                .iter()
                .zip(&mut sinks)
                .zip(rebuild.frame_window(&gather)?)
            {
                sink.append(&framed).map_err(|e| sink_err(t, e))?;
            }
        }
        let tails = rebuild.tails(self.description.as_ref())?;
        for ((&t, sink), tail) in targets.iter().zip(&mut sinks).zip(tails) {
            sink.append(&tail).map_err(|e| sink_err(t, e))?;
            sink.commit().map_err(|e| sink_err(t, e))?;
        }
        Ok(sinks)
    }
}
