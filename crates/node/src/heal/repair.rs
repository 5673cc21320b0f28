//! The repair worker: claims repairs from the metadata leader and carries them out.
//!
//! One repair writes one or more shards of one bundle onto this node's disks:
//!
//! 1. a shard whose current copy is healthy (drain, rebalance) is copied byte for byte; any
//!    other is rebuilt window by window from k healthy shards ([`ShardRebuild`]), wherever they
//!    are;
//! 2. the new file is written under a temporary name, fsynced and renamed (a damaged shard
//!    rewritten in place replaces the old file atomically), then read back and verified: header,
//!    footer, every chunk's CRC32C;
//! 3. the placement change commits as a compare-and-set on the generation the repair was
//!    claimed against. If another change won, the repair re-reads the record and commits again
//!    only for the shards still on the disk it replaced; a shard someone else already fixed is
//!    left as a stale copy for garbage collection;
//! 4. a moved shard's old copy is deleted only after the commit.
//!
//! Nothing here lowers redundancy: the old copy stays named until the new one is verified and
//! committed.

use std::sync::Arc;

use bitmountain_erasure::{read_shard_meta, scan_shard, shard_tail, ShardRebuild};
use bitmountain_meta_client::types::{FinishedRepair, RepairAssignment};
use bitmountain_meta_client::{BundleId, MetaError};
use bitmountain_worker::{Next, StepError, Worker};

use super::Healer;
use crate::coordinator::upload::erasure_id;
use crate::coordinator::CachedBundle;
use crate::error::{NodeError, Result};
use crate::limits::{MOVE_PIECE_BYTES, REPAIR_BUSY_POLL, REPAIR_COMMIT_ATTEMPTS};
use crate::shard_io::DeleteWhy;
use crate::shard_service::blocking;

/// The repair worker as a background worker: claims repairs from the leader and starts each
/// as a task of its own; back soon while there is work, after the poll interval when idle.
#[derive(Debug)]
pub struct RepairWorker {
    healer: Arc<Healer>,
}

impl RepairWorker {
    /// The repair worker of the node's healer.
    pub fn new(healer: Arc<Healer>) -> Self {
        Self { healer }
    }
}

impl Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let healer = &self.healer;
        let idle = Next::After(healer.config.repair_poll_interval);
        let running: Vec<BundleId> = healer.running().iter().copied().collect();
        let settings = healer.settings();
        let room = (settings.max_repairs_per_node as usize).saturating_sub(running.len());
        let claim = healer
            .coordinator
            .meta
            .claim_repairs(healer.coordinator.node_id, room as u32, &running)
            .await
            .map_err(|e| StepError::new(format!("claiming repairs: {e}"), idle))?;
        healer.apply_settings(claim.settings);
        let mut started = 0;
        for assignment in claim.assignments {
            let id = assignment.bundle_id;
            if !healer.running().insert(id) {
                continue;
            }
            started += 1;
            let healer = Arc::clone(healer);
            tokio::spawn(async move {
                run_repair(&healer, id, assignment).await;
                healer.running().remove(&id);
            });
        }
        // Busy: come back soon for more; idle: wait the poll interval.
        Ok(if started > 0 {
            Next::After(REPAIR_BUSY_POLL)
        } else {
            idle
        })
    }

    fn note(&self) -> String {
        format!("{} repairs running", self.healer.running().len())
    }
}

async fn run_repair(healer: &Healer, id: BundleId, assignment: RepairAssignment) {
    let shards: Vec<u32> = assignment.targets.iter().map(|t| t.shard_index).collect();
    let started = std::time::Instant::now();
    let result = repair_bundle(healer, id, &assignment).await;
    let (ok, bytes, error) = match &result {
        Ok(bytes) => {
            tracing::info!(bundle = %id, ?shards, bytes, ms = started.elapsed().as_millis() as u64, "repair done");
            (true, *bytes, String::new())
        }
        Err(e) => {
            tracing::warn!(bundle = %id, ?shards, error = %e, "repair failed");
            (false, 0, e.to_string())
        }
    };
    let finish = FinishedRepair {
        node_id: healer.coordinator.node_id,
        bundle_id: id,
        shard_indexes: shards,
        ok,
        bytes_written: bytes,
        error,
    };
    if let Err(e) = healer.coordinator.meta.finish_repair(&finish).await {
        tracing::debug!(bundle = %id, error = %e, "reporting a finished repair");
    }
}

/// One shard to produce here.
#[derive(Debug, Clone, Copy)]
struct Target {
    shard: u16,
    disk_id: u64,
    from_disk_id: u64,
    copy: bool,
}

impl Target {
    fn in_place(&self) -> bool {
        self.disk_id == self.from_disk_id
    }
}

/// Carries out one assignment; returns the bytes written.
async fn repair_bundle(
    healer: &Healer,
    id: BundleId,
    assignment: &RepairAssignment,
) -> Result<u64> {
    let co = &healer.coordinator;
    let bundle = co.meta.get_bundle(id, false).await?;
    if bundle.record.placement_generation != assignment.placement_generation {
        return Err(NodeError::Internal(format!(
            "bundle {id} changed placement (generation {} → {}) since the repair was claimed; it will be offered again if still needed",
            assignment.placement_generation, bundle.record.placement_generation
        )));
    }
    let cached = CachedBundle::new(bundle.clone())?;
    let mut targets = Vec::new();
    for t in &assignment.targets {
        let shard = u16::try_from(t.shard_index)
            .ok()
            .filter(|s| usize::from(*s) < bundle.record.placement.len())
            .ok_or_else(|| NodeError::BadRequest {
                reason: format!("repair of bundle {id} names shard {}", t.shard_index),
            })?;
        co.io.disks().get(t.disk_id)?;
        targets.push(Target {
            shard,
            disk_id: t.disk_id,
            from_disk_id: t.from_disk_id,
            copy: t.copy,
        });
    }
    let mut written = 0;
    let mut rebuild: Vec<Target> = Vec::new();
    for t in &targets {
        if t.copy && !t.in_place() {
            // A copy is checked like a rebuild; a source that turns out damaged is rebuilt
            // around instead.
            let copied = match copy_shard(healer, &cached, *t).await {
                Ok(n) => verify_local(healer, &cached, *t).await.map(|()| n),
                Err(e) => Err(e),
            };
            match copied {
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(bundle = %id, shard = t.shard, error = %e, "copying the shard failed; rebuilding it from the others")
                }
            }
        }
        rebuild.push(*t);
    }
    if !rebuild.is_empty() {
        let lost: Vec<u16> = assignment
            .lost_shards
            .iter()
            .filter_map(|s| u16::try_from(*s).ok())
            .collect();
        written += rebuild_shards(healer, &cached, &rebuild, &lost).await?;
        for t in &rebuild {
            verify_local(healer, &cached, *t).await?;
        }
    }
    let committed = commit(
        healer,
        id,
        &targets,
        bundle.record.placement_generation,
        bundle.record.placement.clone(),
    )
    .await?;
    // Old copies of moved shards go only now that the new ones are named.
    for t in committed.iter().filter(|t| !t.in_place()) {
        let Some(old) = bundle.locations.get(usize::from(t.shard)) else {
            continue;
        };
        if old.disk_id != t.from_disk_id {
            continue;
        }
        if let Err(e) = co
            .io
            .delete(old, erasure_id(id), DeleteWhy::NotPlacedHere)
            .await
        {
            tracing::debug!(bundle = %id, shard = t.shard, disk = old.disk_id, error = %e, "old copy not deleted (garbage collection will)");
        }
    }
    Ok(written)
}

/// Copies a healthy shard's header and framed data from where it is to `t.disk_id` on this node,
/// and ends the copy with the description and footer the record implies (so a copy of a
/// version-1 shard is of version 2; the verification after it checks the data's CRCs).
async fn copy_shard(healer: &Healer, b: &CachedBundle, t: Target) -> Result<u64> {
    let co = &healer.coordinator;
    let source = b
        .bundle
        .locations
        .get(usize::from(t.shard))
        .cloned()
        .ok_or_else(|| NodeError::Internal(format!("no location for shard {}", t.shard)))?;
    let file_bytes = b.info.layout()?.tail_offset();
    let tail = shard_tail(&b.info, t.shard, Some(&b.description()))?;
    let disk = co.io.disks().get(t.disk_id)?;
    let bundle_id = b.info.bundle_id;
    let shard = t.shard;
    let mut pending = blocking(move || Ok(disk.create_shard(bundle_id, shard)?)).await?;
    let mut at = 0;
    while at < file_bytes {
        let len = (file_bytes - at).min(MOVE_PIECE_BYTES);
        let bytes = co.io.read(&source, bundle_id, at, len).await?;
        if bytes.len() as u64 != len {
            return Err(NodeError::Damaged {
                bundle: b.id().to_string(),
                reason: format!(
                    "shard {} on disk {} is shorter than its layout ({} of {len} bytes at {at})",
                    t.shard,
                    source.disk_id,
                    bytes.len()
                ),
            });
        }
        healer.repair_throttle.take(len).await;
        pending = blocking(move || {
            pending.write(&bytes)?;
            Ok(pending)
        })
        .await?;
        at += len;
    }
    let tail_bytes = tail.len() as u64;
    blocking(move || {
        pending.write(&tail)?;
        Ok(pending.commit()?)
    })
    .await?;
    Ok(file_bytes + tail_bytes)
}

/// Rebuilds `targets` from k healthy shards of the bundle, window by window.
/// Rebuilds `targets` from k other shards, never reading `lost` ones (damaged shards may still
/// answer, with wrong bytes that pass their CRCs).
async fn rebuild_shards(
    healer: &Healer,
    b: &CachedBundle,
    targets: &[Target],
    lost: &[u16],
) -> Result<u64> {
    let co = &healer.coordinator;
    let shards: Vec<u16> = targets.iter().map(|t| t.shard).collect();
    let mut rebuild = ShardRebuild::new(b.info, &shards)?;
    let mut pendings = Vec::new();
    for (t, header) in targets.iter().zip(rebuild.headers()) {
        let disk = co.io.disks().get(t.disk_id)?;
        let (bundle_id, shard) = (b.info.bundle_id, t.shard);
        let pending = blocking(move || {
            let mut p = disk.create_shard(bundle_id, shard)?;
            p.write(&header)?;
            Ok(p)
        })
        .await?;
        pendings.push(pending);
    }
    // Shards on nodes that failed recently are not waited on.
    let mut unavailable = co.suspect_shards(b);
    unavailable.extend(lost);
    unavailable.sort_unstable();
    unavailable.dedup();
    let mut written = 0u64;
    while let Some(mut gather) = rebuild.next_window(&unavailable) {
        loop {
            let fetches = gather.plan()?;
            if fetches.is_empty() {
                break;
            }
            let results = futures::future::join_all(fetches.iter().map(|f| co.fetch(b, f))).await;
            for (fetch, result) in fetches.iter().zip(results) {
                gather.supply(fetch, result.ok());
            }
        }
        gather.decode()?;
        let framed = rebuild.frame_window(&gather)?;
        let bytes: u64 = framed.iter().map(|f| f.len() as u64).sum();
        healer.repair_throttle.take(bytes).await;
        let mut batch = std::mem::take(&mut pendings);
        batch = blocking(move || {
            for (p, f) in batch.iter_mut().zip(&framed) {
                p.write(f)?;
            }
            Ok(batch)
        })
        .await?;
        pendings = batch;
        written += bytes;
    }
    let tails = rebuild.tails(Some(&b.description()))?;
    blocking(move || {
        for (p, tail) in pendings.iter_mut().zip(&tails) {
            p.write(tail)?;
            p.commit()?;
        }
        Ok(())
    })
    .await?;
    Ok(written)
}

/// Reads a shard just written back from disk and checks header, footer and every chunk.
async fn verify_local(healer: &Healer, b: &CachedBundle, t: Target) -> Result<()> {
    let disk = healer.coordinator.io.disks().get(t.disk_id)?;
    let info = b.info;
    let id = b.id();
    blocking(move || {
        let src = disk.open_shard(info.bundle_id, t.shard)?;
        let meta = read_shard_meta(&src)?;
        let footer = meta.footer?;
        let layout = info.layout()?;
        let bad = scan_shard(&src, &layout, t.shard)?;
        if meta.header.bundle_id != info.bundle_id
            || meta.header.shard_index != t.shard
            || footer.sha256 != info.sha256
            || footer.bundle_len != info.bundle_len
            || !matches!(meta.description, Some(Ok(_)))
            || !bad.is_empty()
        {
            return Err(NodeError::Damaged {
                bundle: id.to_string(),
                reason: format!(
                    "shard {} written to disk {} does not verify ({} bad chunks)",
                    t.shard,
                    t.disk_id,
                    bad.len()
                ),
            });
        }
        Ok(())
    })
    .await
}

/// Commits the new placement against the record the repair read (`generation`, `placement`);
/// returns the targets that were committed.
async fn commit(
    healer: &Healer,
    id: BundleId,
    targets: &[Target],
    mut generation: u64,
    mut placement: Vec<u64>,
) -> Result<Vec<Target>> {
    let meta = &healer.coordinator.meta;
    let mut live: Vec<Target> = targets.to_vec();
    for attempt in 0..REPAIR_COMMIT_ATTEMPTS {
        // Only shards still on the disk this repair replaces are committed.
        live.retain(|t| placement.get(usize::from(t.shard)) == Some(&t.from_disk_id));
        if live.is_empty() {
            return Ok(live);
        }
        let mut next = placement.clone();
        for t in &live {
            next[usize::from(t.shard)] = t.disk_id;
        }
        let rewritten: Vec<u32> = live
            .iter()
            .filter(|t| t.in_place())
            .map(|t| u32::from(t.shard))
            .collect();
        match meta
            .update_placement_repaired(id, generation, &next, &rewritten)
            .await
        {
            Ok(_) => {
                healer.coordinator.forget_bundle(id);
                return Ok(live);
            }
            Err(MetaError::WrongGeneration { .. }) if attempt + 1 < REPAIR_COMMIT_ATTEMPTS => {
                let fresh = meta.get_bundle(id, false).await?;
                generation = fresh.record.placement_generation;
                placement = fresh.record.placement;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(NodeError::Internal(format!(
        "bundle {id}: placement kept changing; gave up after {REPAIR_COMMIT_ATTEMPTS} attempts"
    )))
}
