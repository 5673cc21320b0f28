//! Garbage collection on a node, in passes:
//!
//! 1. bundles left in state deleting (a shard's node was down when they were deleted) get their
//!    shards deleted and their records purged;
//! 2. this node's shard files are checked against the metadata group: a shard of a bundle that
//!    is being deleted goes; a shard of a bundle the group does not know goes once the bundle's
//!    id (which carries its allocation time) is older than the orphan grace, longer than any
//!    allocation lives: a failed or abandoned upload; a shard of a sealed bundle whose committed
//!    placement does not name it on this disk (a stale copy left by a repair or a move that lost
//!    its race, or a rebuilt shard's old copy on a disk that came back) goes once the file is
//!    older than the stale-copy grace, so a repair about to commit is never disturbed.
//!
//! Never deleted: a shard the committed placement names, a shard of a pending bundle, and
//! anything while the metadata group is unreachable or belongs to another cluster (an answer
//! "unknown bundle" from the wrong group must not empty the disks); shards of unknown bundles
//! are also kept while the group recovers and for the hold after it (a later recovery may
//! need them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitmountain_meta_client::{BundleId, BundleRecord, BundleState, MetaError, ShardLocation};
use bitmountain_worker::{Next, StepError, Worker};

use crate::coordinator::Coordinator;
use crate::heal::Healer;
use crate::limits::GC_PURGES_PER_PASS;
use crate::recovery::RecoveryControl;
use crate::shard_io::DeleteWhy;
use crate::shard_service::blocking;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub purged_bundles: usize,
    pub deleted_orphans: usize,
    pub deleted_of_deleting: usize,
    pub deleted_stale_copies: usize,
}

/// How long shards the metadata group does not name are kept.
#[derive(Debug, Clone, Copy)]
pub struct GcGrace {
    /// Shards of bundles the group does not know, from the bundle's allocation time.
    pub orphan: Duration,
    /// Shards of sealed bundles the placement does not name here, from the file's last write.
    pub stale_copy: Duration,
}

/// Garbage collection as a background worker: a pass every `interval`, the first one
/// interval after start (the node settles first), none while the metadata group belongs to
/// another cluster.
#[derive(Debug)]
pub struct GcWorker {
    coordinator: Arc<Coordinator>,
    healer: Arc<Healer>,
    interval: Duration,
    grace: GcGrace,
    cluster_ok: Arc<AtomicBool>,
    recovery: Arc<RecoveryControl>,
    note: String,
}

impl GcWorker {
    /// A worker over the node's coordinator and healer.
    pub fn new(
        coordinator: Arc<Coordinator>,
        healer: Arc<Healer>,
        interval: Duration,
        grace: GcGrace,
        cluster_ok: Arc<AtomicBool>,
        recovery: Arc<RecoveryControl>,
    ) -> Self {
        Self {
            coordinator,
            healer,
            interval,
            grace,
            cluster_ok,
            recovery,
            note: String::new(),
        }
    }
}

impl Worker for GcWorker {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn first_pause(&self) -> Duration {
        self.interval
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        if !self.cluster_ok.load(Ordering::Relaxed) {
            self.note = "paused: the metadata group belongs to another cluster".into();
            return Ok(Next::Every(self.interval));
        }
        let report = gc_pass(&self.coordinator, &self.healer, self.grace, &self.recovery).await;
        if report != GcReport::default() {
            tracing::info!(?report, "garbage collection pass");
        }
        self.note = format!(
            "last pass: {} bundles purged, {} orphans, {} shards of deleted bundles, {} stale \
             copies deleted",
            report.purged_bundles,
            report.deleted_orphans,
            report.deleted_of_deleting,
            report.deleted_stale_copies
        );
        Ok(Next::Every(self.interval))
    }

    fn note(&self) -> String {
        self.note.clone()
    }
}

/// One pass; errors are logged and leave things for the next pass.
pub async fn gc_pass(
    coordinator: &Coordinator,
    healer: &Healer,
    grace: GcGrace,
    recovery: &RecoveryControl,
) -> GcReport {
    let mut report = GcReport::default();
    match coordinator
        .meta
        .list_bundles(
            None,
            Some(BundleState::Deleting),
            &[],
            GC_PURGES_PER_PASS as u32,
        )
        .await
    {
        Ok((deleting, _)) => {
            for bundle in deleting {
                if coordinator.finish_delete(&bundle).await {
                    report.purged_bundles += 1;
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "garbage collection: metadata group unavailable");
            return report;
        }
    }
    let now_ms = bitmountain_meta_client::types::now_unix_ms();
    let grace_ms = grace.orphan.as_millis() as u64;
    let stale_ms = grace.stale_copy.as_millis() as u64;
    for disk in coordinator.io.disks().iter().cloned().collect::<Vec<_>>() {
        let listed = {
            let disk = Arc::clone(&disk);
            blocking(move || Ok(disk.list_shards()?)).await
        };
        let shards = match listed {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(disk = disk.disk_id(), error = %e, "garbage collection: cannot list shards");
                continue;
            }
        };
        let mut last: Option<(BundleId, Option<BundleRecord>)> = None;
        for shard in shards {
            let id = BundleId(u128::from_be_bytes(shard.bundle.0));
            let record = match &last {
                Some((b, record)) if *b == id => record.clone(),
                _ => {
                    // A linearizable read: a stale answer could miss the commit that named a
                    // fresh repair's shard.
                    let record = match coordinator.meta.get_bundle(id, false).await {
                        Ok(b) => Some(b.record),
                        Err(MetaError::UnknownBundle { .. }) => None,
                        Err(e) => {
                            tracing::debug!(error = %e, "garbage collection: metadata group unavailable");
                            return report;
                        }
                    };
                    last = Some((id, record.clone()));
                    record
                }
            };
            let state = record.as_ref().map(|r| r.state);
            // A shard this node's repair worker is writing is not named until its commit.
            let stale_copy = record.as_ref().is_some_and(|r| {
                r.state == BundleState::Sealed
                    && !healer.is_repairing(id)
                    && r.placement.get(usize::from(shard.shard)) != Some(&disk.disk_id())
                    && shard.modified_unix_ms.saturating_add(stale_ms) < now_ms
            });
            let delete = match state {
                Some(BundleState::Deleting) => true,
                // Not while a recovery may still need them (it rebuilds records from shards).
                None => {
                    id.unix_ms().saturating_add(grace_ms) < now_ms
                        && recovery.may_delete_orphans(now_ms)
                }
                Some(BundleState::Sealed) => stale_copy,
                Some(BundleState::Pending) => false,
            };
            if !delete {
                continue;
            }
            let loc = ShardLocation {
                shard_index: u32::from(shard.shard),
                disk_id: disk.disk_id(),
                node_id: coordinator.node_id,
                node_address: coordinator.address.clone(),
            };
            let why = if state == Some(BundleState::Deleting) {
                DeleteWhy::BundleDeleted
            } else {
                DeleteWhy::NotPlacedHere
            };
            match coordinator.io.delete(&loc, shard.bundle, why).await {
                Ok(true) => {
                    tracing::info!(bundle = %id, shard = shard.shard, disk = disk.disk_id(), state = ?state, "garbage collection deleted a shard");
                    if stale_copy {
                        report.deleted_stale_copies += 1;
                    } else if state.is_some() {
                        report.deleted_of_deleting += 1;
                    } else {
                        report.deleted_orphans += 1;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(bundle = %id, error = %e, "garbage collection: delete failed")
                }
            }
        }
    }
    report
}
