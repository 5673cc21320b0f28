//! The read path: a bundle byte range from its shards, wherever they are.
//!
//! A read plans which chunks of which shards hold the range ([`RangeRead`]), fetches them in
//! parallel (this node's disks directly, other nodes over NodeService), verifies every chunk's
//! CRC32C and, where a chunk is missing or corrupt, fetches the same chunk column from other
//! shards and decodes. Nodes that just failed are skipped for a while, so a dead node costs one
//! timeout, not one per read. Damage found on the way (a missing shard file, a chunk failing its
//! CRC) is reported to the metadata group, which queues a repair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bitmountain_bundle::{Index, IndexEntry};
use bitmountain_erasure::{
    BundleDescription, BundleInfo, Codec, Fetch, IndexLocation, LossKind, RangeRead,
};
use bitmountain_meta_client::{Bundle, BundleId, MetaClient};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::upload::erasure_id;
use super::{erasure_code, Coordinator};
use crate::error::{NodeError, Result};
use crate::limits::{
    DAMAGE_REPORTS_REMEMBERED, DAMAGE_REPORT_INTERVAL_MS, READ_WINDOWS_AHEAD, READ_WINDOW_BYTES,
};

/// A sealed bundle as readers need it: its record, what the shard footers would say, a codec,
/// and (once read) its index.
#[derive(Debug)]
pub struct CachedBundle {
    pub bundle: Bundle,
    pub info: BundleInfo,
    codec: Codec,
    index: OnceLock<Arc<Index>>,
    /// Shards found returning wrong bytes with valid CRCs (`verify.rs`): left out of reads of
    /// this placement (a new record, after the repair, starts without them).
    bad_shards: Mutex<Vec<u16>>,
}

impl CachedBundle {
    pub fn new(bundle: Bundle) -> Result<Self> {
        let rec = &bundle.record;
        let code = erasure_code(&rec.code)?;
        let sha256: [u8; 32] =
            rec.sha256
                .as_slice()
                .try_into()
                .map_err(|_| NodeError::Damaged {
                    bundle: rec.id.to_string(),
                    reason: format!(
                        "its record holds a {}-byte SHA-256 (the metadata record is damaged)",
                        rec.sha256.len()
                    ),
                })?;
        let info = BundleInfo {
            bundle_id: erasure_id(rec.id),
            code,
            bundle_len: rec.length,
            index: IndexLocation {
                offset: rec.index_offset,
                len: rec.index_length,
            },
            sha256,
        };
        // Checks the record describes a layout the reader can follow.
        info.layout()?;
        if rec.index_offset.saturating_add(rec.index_length) > rec.length {
            return Err(NodeError::Damaged {
                bundle: rec.id.to_string(),
                reason: "its record places the index beyond the bundle's end".into(),
            });
        }
        Ok(CachedBundle {
            codec: Codec::new(&code)?,
            bundle,
            info,
            index: OnceLock::new(),
            bad_shards: Mutex::default(),
        })
    }

    pub fn id(&self) -> BundleId {
        self.bundle.record.id
    }

    /// Shards known to return wrong bytes with valid CRCs.
    pub fn bad_shards(&self) -> Vec<u16> {
        self.bad_shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn mark_bad(&self, shard: u16) {
        let mut bad = self.bad_shards.lock().unwrap_or_else(|p| p.into_inner());
        if !bad.contains(&shard) {
            bad.push(shard);
        }
    }

    /// What every shard of the bundle says of it beyond its bytes, from the record.
    pub fn description(&self) -> BundleDescription {
        let rec = &self.bundle.record;
        BundleDescription {
            created_unix_ms: rec.created_unix_ms,
            file_count: rec.file_count,
            labels: rec.labels.clone(),
        }
    }
}

/// Reports damaged shards to the metadata group, at most once per shard per interval.
#[derive(Debug)]
pub struct DamageReporter {
    meta: Arc<MetaClient>,
    recent: Mutex<HashMap<(BundleId, u32), Instant>>,
}

impl DamageReporter {
    pub fn new(meta: Arc<MetaClient>) -> Self {
        DamageReporter {
            meta,
            recent: Mutex::default(),
        }
    }

    /// Queues a report in the background (readers never wait on it).
    pub fn report(&self, id: BundleId, shards: Vec<u32>, reason: String) {
        let fresh: Vec<u32> = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let interval = Duration::from_millis(DAMAGE_REPORT_INTERVAL_MS);
            if recent.len() > DAMAGE_REPORTS_REMEMBERED {
                recent.retain(|_, at| now.duration_since(*at) < interval);
            }
            shards
                .into_iter()
                .filter(|s| {
                    let seen = recent
                        .get(&(id, *s))
                        .is_some_and(|at| now.duration_since(*at) < interval);
                    if !seen {
                        recent.insert((id, *s), now);
                    }
                    !seen
                })
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        tracing::warn!(bundle = %id, shards = ?fresh, %reason, "damaged shards found; reporting for repair");
        let meta = Arc::clone(&self.meta);
        tokio::spawn(async move {
            if let Err(e) = meta.report_damage(id, &fresh, &reason).await {
                tracing::warn!(bundle = %id, error = %e, "could not report damaged shards");
            }
        });
    }
}

/// What one fetch found wrong, for damage reports.
struct FetchFailure {
    shard: u16,
    damage: bool,
    reason: String,
}

impl Coordinator {
    /// Reads bundle bytes `[offset, offset + len)`, verified, decoding around lost chunks.
    /// `len` is at most a read window or two; callers split longer ranges.
    pub async fn read_range(&self, b: &CachedBundle, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_range_excluding(b, offset, len, &[]).await
    }

    /// [`Coordinator::read_range`] without the shards `exclude` (nor those known bad).
    pub(crate) async fn read_range_excluding(
        &self,
        b: &CachedBundle,
        offset: u64,
        len: u64,
        exclude: &[u16],
    ) -> Result<Vec<u8>> {
        // First try without the shards of nodes that failed recently; if too few remain, try
        // them all (they may be back).
        let mut always = b.bad_shards();
        always.extend_from_slice(exclude);
        let mut suspects = self.suspect_shards(b);
        suspects.retain(|s| !always.contains(s));
        let mut first_try = always.clone();
        first_try.extend_from_slice(&suspects);
        let first = match self.read_range_once(b, offset, len, &first_try).await {
            Err(NodeError::Unrecoverable { .. }) if !suspects.is_empty() => {
                self.read_range_once(b, offset, len, &always).await
            }
            other => other,
        };
        let Err(err @ NodeError::Unrecoverable { .. }) = first else {
            return first;
        };
        // The cached record may be out of date: the bundle was deleted, or a repair moved its
        // shards. Read the record again; retry once if the placement changed.
        let fresh = self.sealed_bundle(b.id(), true).await?;
        if fresh.bundle.record.placement_generation == b.bundle.record.placement_generation {
            return Err(err);
        }
        self.read_range_once(&fresh, offset, len, exclude).await
    }

    async fn read_range_once(
        &self,
        b: &CachedBundle,
        offset: u64,
        len: u64,
        unavailable: &[u16],
    ) -> Result<Vec<u8>> {
        let mut read = RangeRead::new(&b.info, offset, len, unavailable, Some(b.codec.clone()))?;
        let mut failures: Vec<FetchFailure> = Vec::new();
        loop {
            let fetches = match read.plan() {
                Ok(f) => f,
                Err(e) => {
                    self.report_losses(b, read.lost_chunks(), &failures);
                    return Err(NodeError::Unrecoverable {
                        bundle: b.id().to_string(),
                        offset,
                        end: offset + len,
                        reason: describe_failures(&e.to_string(), &failures),
                    });
                }
            };
            if fetches.is_empty() {
                break;
            }
            let results = futures::future::join_all(fetches.iter().map(|f| self.fetch(b, f))).await;
            for (fetch, result) in fetches.iter().zip(results) {
                match result {
                    Ok(bytes) => read.supply(fetch, Some(bytes)),
                    Err(e) => {
                        failures.push(FetchFailure {
                            shard: fetch.shard,
                            damage: e.is_shard_damage(),
                            reason: e.to_string(),
                        });
                        read.supply(fetch, None);
                    }
                }
            }
        }
        self.report_losses(b, read.lost_chunks(), &failures);
        if !failures.is_empty() || !read.lost_chunks().is_empty() {
            // The placement may have moved since the record was cached.
            self.forget_bundle(b.id());
        }
        let degraded =
            !failures.is_empty() || !read.lost_chunks().is_empty() || !unavailable.is_empty();
        let bytes = read.finish();
        if degraded && bytes.is_ok() {
            bitmountain_metrics::global().degraded_reads.inc();
        }
        bytes.map_err(|e| NodeError::Unrecoverable {
            bundle: b.id().to_string(),
            offset,
            end: offset + len,
            reason: describe_failures(&e.to_string(), &failures),
        })
    }

    /// Shards of `b` on nodes that failed to answer recently.
    pub(crate) fn suspect_shards(&self, b: &CachedBundle) -> Vec<u16> {
        b.bundle
            .locations
            .iter()
            .filter(|l| self.io.peers().is_suspect(&l.node_address))
            .map(|l| l.shard_index as u16)
            .collect()
    }

    /// The bytes one planned fetch names, from wherever the shard is.
    pub(crate) async fn fetch(&self, b: &CachedBundle, fetch: &Fetch) -> Result<Vec<u8>> {
        let loc = b
            .bundle
            .locations
            .get(usize::from(fetch.shard))
            .ok_or_else(|| NodeError::Damaged {
                bundle: b.id().to_string(),
                reason: format!("its placement names no disk for shard {}", fetch.shard),
            })?;
        self.io
            .read(loc, b.info.bundle_id, fetch.range.offset, fetch.range.len)
            .await
    }

    fn report_losses(
        &self,
        b: &CachedBundle,
        lost: &[bitmountain_erasure::LostChunk],
        failures: &[FetchFailure],
    ) {
        let mut shards: Vec<u32> = lost
            .iter()
            .filter(|l| l.kind == LossKind::Corrupt)
            .map(|l| u32::from(l.shard))
            .chain(
                failures
                    .iter()
                    .filter(|f| f.damage)
                    .map(|f| u32::from(f.shard)),
            )
            .collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.is_empty() {
            return;
        }
        let corrupt = lost.iter().filter(|l| l.kind == LossKind::Corrupt).count();
        let mut reason = format!("read by node {}: ", self.node_id);
        if corrupt > 0 {
            reason.push_str(&format!("{corrupt} chunks failed their CRC32C; "));
        }
        for f in failures.iter().filter(|f| f.damage) {
            reason.push_str(&format!("shard {}: {}; ", f.shard, f.reason));
        }
        self.damage.report(b.id(), shards, reason);
    }

    /// The bundle's index (cached with the record).
    pub async fn index(&self, b: &Arc<CachedBundle>) -> Result<Arc<Index>> {
        if let Some(index) = b.index.get() {
            return Ok(Arc::clone(index));
        }
        let (offset, len) = (b.info.index.offset, b.info.index.len);
        if len > bitmountain_bundle::limits::MAX_INDEX_BYTES {
            return Err(NodeError::Damaged {
                bundle: b.id().to_string(),
                reason: format!("its record names an index of {len} bytes"),
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let step = (offset + len - at).min(READ_WINDOW_BYTES);
            bytes.extend(self.read_range(b, at, step).await?);
            at += step;
        }
        let index = Index::decode(&bytes, offset).map_err(|e| NodeError::Damaged {
            bundle: b.id().to_string(),
            reason: format!("its index does not decode: {e}"),
        })?;
        let index = Arc::new(index);
        // Whoever got here first wins; both decoded the same bytes.
        let _ = b.index.set(Arc::clone(&index));
        // An index too large for the cache leaves it, record and all.
        self.weigh_bundle(b, len as usize);
        Ok(index)
    }

    /// A sealed bundle and one of its files.
    pub async fn locate_file(
        &self,
        id: BundleId,
        path: &str,
    ) -> Result<(Arc<CachedBundle>, IndexEntry)> {
        let b = self.sealed_bundle(id, false).await?;
        let index = self.index(&b).await?;
        let entry = index
            .get(path)
            .cloned()
            .ok_or_else(|| NodeError::UnknownPath {
                bundle: id.to_string(),
                path: path.to_owned(),
            })?;
        Ok((b, entry))
    }

    /// Streams bundle bytes `[offset, offset + len)` in windows, one or two windows ahead of the
    /// consumer. When `expect_sha256` is given (a whole file, or the whole bundle), the bytes are
    /// hashed on the way and a mismatch ends the stream with an error instead of its last
    /// window.
    pub fn stream_range(
        self: &Arc<Self>,
        b: Arc<CachedBundle>,
        offset: u64,
        len: u64,
        expect_sha256: Option<[u8; 32]>,
    ) -> mpsc::Receiver<Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel(READ_WINDOWS_AHEAD);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut hasher = expect_sha256.map(|_| Sha256::new());
            let mut at = offset;
            let end = offset + len;
            while at < end {
                let step = (end - at).min(READ_WINDOW_BYTES);
                let window = this.read_range(&b, at, step).await;
                let failed = window.is_err();
                let window = match (window, &mut hasher) {
                    (Ok(bytes), Some(h)) => {
                        h.update(&bytes);
                        if at + step == end {
                            let got: [u8; 32] = h.clone().finalize().into();
                            match expect_sha256 {
                                Some(want) if want != got => {
                                    // Which shard lied is found now, so a read again gets the
                                    // right bytes; the pieces already sent cannot be taken back.
                                    let bad = this.find_bad_shards(&b, offset, len, want).await;
                                    Err(NodeError::Damaged {
                                        bundle: b.id().to_string(),
                                        reason: format!(
                                            "bytes {offset}..{end} hash to {} but {} was recorded; nothing past the previous piece is returned; {}",
                                            hex::encode(got),
                                            hex::encode(want),
                                            if bad.is_empty() {
                                                "no shard or pair of shards explains it".to_owned()
                                            } else {
                                                format!("shards {bad:?} returned the wrong bytes with valid CRCs and are left out from now on (queued for rewrite): read again")
                                            }
                                        ),
                                    })
                                }
                                _ => Ok(bytes),
                            }
                        } else {
                            Ok(bytes)
                        }
                    }
                    (other, _) => other,
                };
                let stop = failed || window.is_err();
                if tx.send(window).await.is_err() || stop {
                    return;
                }
                at += step;
            }
        });
        rx
    }
}

fn describe_failures(decode_error: &str, failures: &[FetchFailure]) -> String {
    if failures.is_empty() {
        return decode_error.to_owned();
    }
    let mut s = format!("{decode_error}; failed reads: ");
    for f in failures.iter().take(8) {
        s.push_str(&format!("shard {}: {}; ", f.shard, f.reason));
    }
    s
}
