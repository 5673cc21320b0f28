//! Rebuilding lost shards, sans-IO: [`ShardRebuild`] walks the shard data in windows of chunk
//! columns, hands out a [`ChunkGather`] per window (which fetches the same columns of k healthy
//! shards and decodes the targets), and frames the rebuilt chunks into complete shard files:
//! header, CRC-framed data, description, footer, byte-identical to what the writer produced. The repair path
//! drives it over the network; [`crate::BundleReader::rebuild_shards`] drives it over local
//! sources.

use crate::code::BundleId;
use crate::description::BundleDescription;
use crate::error::{ErasureError, Result};
use crate::format::{BundleInfo, ShardFooter, ShardHeader, CHUNK_CRC_BYTES, HEADER_BYTES};
use crate::gather::{ChunkGather, Codec};
use crate::layout::BundleLayout;

/// Rebuild of one or more shards of one bundle.
#[derive(Debug)]
pub struct ShardRebuild {
    info: BundleInfo,
    layout: BundleLayout,
    targets: Vec<u16>,
    codec: Codec,
    window_chunks: u64,
    next_chunk: u64,
}

impl ShardRebuild {
    /// Plans the rebuild of shards `targets` (data or parity, distinct).
    pub fn new(info: BundleInfo, targets: &[u16]) -> Result<Self> {
        let layout = info.layout()?;
        let total = info.code.total_shards();
        let mut sorted = targets.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if targets.is_empty()
            || sorted.len() != targets.len()
            || sorted.iter().any(|&t| usize::from(t) >= total)
        {
            return Err(ErasureError::Misuse {
                bundle_id: info.bundle_id,
                what: format!("rebuild targets {targets:?} for {total} shards"),
            });
        }
        // A window of about one cell per shard: memory O((k+m)·cell) like the writer.
        let window_chunks = u64::from(info.code.cell_bytes())
            .div_ceil(info.code.chunk_bytes().into())
            .max(1);
        Ok(Self {
            codec: Codec::new(&info.code)?,
            info,
            layout,
            targets: targets.to_vec(),
            window_chunks,
            next_chunk: 0,
        })
    }

    /// The shards being rebuilt, in the order of every per-target output.
    pub fn targets(&self) -> &[u16] {
        &self.targets
    }

    /// The bundle id.
    pub fn bundle_id(&self) -> BundleId {
        self.info.bundle_id
    }

    /// Header bytes of each rebuilt shard, by target.
    pub fn headers(&self) -> Vec<[u8; HEADER_BYTES]> {
        self.targets
            .iter()
            .map(|&shard_index| {
                ShardHeader {
                    bundle_id: self.info.bundle_id,
                    shard_index,
                    code: self.info.code,
                }
                .encode()
            })
            .collect()
    }

    /// The gather for the next window of chunks (targets wanted and never read; `unavailable`
    /// shards never read either), or `None` when every chunk has been rebuilt. Drive it with
    /// `plan`/`supply`/`decode`, then pass it to [`Self::frame_window`].
    pub fn next_window(&mut self, unavailable: &[u16]) -> Option<ChunkGather> {
        if self.next_chunk >= self.layout.chunk_count() {
            return None;
        }
        let end = (self.next_chunk + self.window_chunks).min(self.layout.chunk_count());
        let mut gather =
            ChunkGather::new(self.info.bundle_id, self.layout, Some(self.codec.clone()));
        for &s in unavailable {
            gather.mark_unavailable(s);
        }
        for &t in &self.targets {
            gather.mark_unavailable(t);
            for chunk in self.next_chunk..end {
                gather.want(t, chunk);
            }
        }
        gather.set_window(self.next_chunk..end);
        self.next_chunk = end;
        Some(gather)
    }

    /// Framed bytes (chunk data then its CRC32C, chunk after chunk) of each target for a window
    /// whose gather has decoded.
    pub fn frame_window(&self, gather: &ChunkGather) -> Result<Vec<Vec<u8>>> {
        let window = gather.window();
        let mut out = Vec::with_capacity(self.targets.len());
        for &t in &self.targets {
            let mut framed = Vec::new();
            for chunk in window.clone() {
                let Some(data) = gather.chunk(t, chunk) else {
                    return Err(ErasureError::Misuse {
                        bundle_id: self.info.bundle_id,
                        what: format!(
                            "chunk {chunk} of shard {t} not rebuilt: decode the window first"
                        ),
                    });
                };
                framed.reserve(data.len() + CHUNK_CRC_BYTES);
                framed.extend_from_slice(data);
                framed.extend_from_slice(&crate::crc::crc32c(data).to_le_bytes());
            }
            out.push(framed);
        }
        Ok(out)
    }

    /// The end of each rebuilt shard, by target: see [`shard_tail`].
    pub fn tails(&self, description: Option<&BundleDescription>) -> Result<Vec<Vec<u8>>> {
        self.targets
            .iter()
            .map(|&shard_index| shard_tail(&self.info, shard_index, description))
            .collect()
    }
}

/// The end of shard `shard_index` of a bundle: the description and a version-2 footer, or with
/// no description (a version-1 bundle rebuilt from version-1 shards alone) a version-1 footer.
pub fn shard_tail(
    info: &BundleInfo,
    shard_index: u16,
    description: Option<&BundleDescription>,
) -> Result<Vec<u8>> {
    let footer = ShardFooter {
        bundle_id: info.bundle_id,
        shard_index,
        bundle_len: info.bundle_len,
        shard_data_bytes: info.layout()?.shard_data_bytes(),
        index: info.index,
        sha256: info.sha256,
        description: None,
    };
    Ok(match description {
        Some(d) => footer.encode_with_description(&d.encode()?),
        None => footer.encode().to_vec(),
    })
}
