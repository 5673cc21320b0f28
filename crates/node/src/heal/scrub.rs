//! The scrubber: reads every shard file on every disk of the node, parity included, at a
//! bounded rate, and checks its header, footer and every chunk's CRC32C. It also asks the
//! metadata group which shards the placement puts on each disk and looks for their files, so a
//! deleted file is found as surely as a flipped byte. A damaged shard that the committed
//! placement names on this disk is reported, which queues its repair; anything else is a stale
//! copy, left to garbage collection.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_disk::DiskStore;
use bitmountain_erasure::{read_shard_meta, scan_shard, BundleLayout};
use bitmountain_meta_client::{BundleId, BundleState};
use bitmountain_worker::{Next, StepError, Worker};

use super::{Healer, ScrubRecord};
use crate::error::{NodeError, Result};
use crate::limits::SCRUB_META_PAGE;
use crate::shard_service::blocking;

/// The scrubber as a background worker: a pass every scrub interval, or at once when an
/// operator asks (`bitmountain scrub`).
#[derive(Debug)]
pub struct Scrubber {
    healer: Arc<Healer>,
    last_damaged: Option<u64>,
}

impl Scrubber {
    /// The scrubber of the node's healer.
    pub fn new(healer: Arc<Healer>) -> Self {
        Self {
            healer,
            last_damaged: None,
        }
    }
}

impl Worker for Scrubber {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn first_pause(&self) -> Duration {
        self.healer.config.scrub_interval
    }

    async fn wait(&mut self, pause: Duration) {
        let control = Arc::clone(&self.healer.scrub_control);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = control.trigger.notified() => {}
        }
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let control = &self.healer.scrub_control;
        control.running.store(true, Ordering::Relaxed);
        self.last_damaged = Some(scrub_pass(&self.healer).await);
        control.running.store(false, Ordering::Relaxed);
        Ok(Next::After(self.healer.config.scrub_interval))
    }

    fn note(&self) -> String {
        match self.last_damaged {
            Some(n) => format!("last pass found {n} damaged shards"),
            None => "no pass since the node started".into(),
        }
    }
}

/// One pass over every disk; returns the damaged shards found.
pub async fn scrub_pass(healer: &Healer) -> u64 {
    let mut total = 0;
    let disks: Vec<Arc<DiskStore>> = healer.coordinator.io.disks().iter().cloned().collect();
    for disk in disks {
        let disk_id = disk.disk_id();
        match scrub_disk(healer, disk).await {
            Ok(damaged) => {
                total += damaged;
                healer.record_scrub(
                    disk_id,
                    ScrubRecord {
                        finished_unix_ms: bitmountain_meta_client::types::now_unix_ms(),
                        damaged_shards: damaged,
                    },
                );
                tracing::info!(disk = disk_id, damaged, "scrub pass over the disk finished");
            }
            Err(e) => {
                tracing::warn!(disk = disk_id, error = %e, "scrub pass over the disk stopped")
            }
        }
    }
    total
}

/// What is wrong with one shard file, if anything.
fn check_shard(
    disk: &DiskStore,
    bundle: bitmountain_erasure::BundleId,
    shard: u16,
) -> Option<String> {
    let src = match disk.open_shard(bundle, shard) {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot open: {e}")),
    };
    let meta = match read_shard_meta(&src) {
        Ok(m) => m,
        Err(e) => return Some(format!("header: {e}")),
    };
    if meta.header.bundle_id != bundle || meta.header.shard_index != shard {
        return Some(format!(
            "the header names bundle {} shard {}",
            meta.header.bundle_id, meta.header.shard_index
        ));
    }
    let footer = match meta.footer {
        Ok(f) => f,
        Err(e) => return Some(format!("footer: {e}")),
    };
    if let Some(Err(e)) = &meta.description {
        return Some(format!("description: {e}"));
    }
    let layout = match BundleLayout::new(meta.header.code, footer.bundle_len) {
        Ok(l) => l,
        Err(e) => return Some(format!("layout: {e}")),
    };
    match scan_shard(&src, &layout, shard) {
        Ok(bad) if bad.is_empty() => None,
        Ok(bad) => Some(format!(
            "{} chunks fail their CRC32C (first: chunk {})",
            bad.len(),
            bad[0]
        )),
        Err(e) => Some(format!("reading chunks: {e}")),
    }
}

async fn scrub_disk(healer: &Healer, disk: Arc<DiskStore>) -> Result<u64> {
    let disk_id = disk.disk_id();
    let listed = {
        let disk = Arc::clone(&disk);
        blocking(move || Ok(disk.list_shards()?)).await?
    };
    let mut present: HashSet<(bitmountain_erasure::BundleId, u16)> = HashSet::new();
    let mut damaged = 0;
    for stored in listed {
        present.insert((stored.bundle, stored.shard));
        healer.scrub_throttle.take(stored.len_bytes).await;
        let problem = {
            let disk = Arc::clone(&disk);
            blocking(move || Ok(check_shard(&disk, stored.bundle, stored.shard))).await?
        };
        let Some(reason) = problem else { continue };
        let id = BundleId(u128::from_be_bytes(stored.bundle.0));
        if report_if_placed(healer, id, stored.shard, disk_id, &reason).await? {
            damaged += 1;
            bitmountain_metrics::global().scrub_errors.inc();
        }
    }
    let missing = "the shard file is missing";
    damaged += report_missing_placed(healer, &disk, &present, missing).await?;
    Ok(damaged)
}

/// Looks for the file of every shard the placement puts on `disk` that is not in `present`
/// (the files listed before) and reports those missing, saying `reason`; returns how many it
/// reported.
pub(super) async fn report_missing_placed(
    healer: &Healer,
    disk: &Arc<DiskStore>,
    present: &HashSet<(bitmountain_erasure::BundleId, u16)>,
    reason: &str,
) -> Result<u64> {
    let co = &healer.coordinator;
    let disk_id = disk.disk_id();
    let mut damaged = 0;
    let mut token = Vec::new();
    loop {
        let (shards, next) = co
            .meta
            .list_disk_bundles(disk_id, &token, SCRUB_META_PAGE)
            .await?;
        for (id, shard) in shards {
            let Ok(shard) = u16::try_from(shard) else {
                continue;
            };
            let eid = crate::coordinator::upload::erasure_id(id);
            if present.contains(&(eid, shard)) {
                continue;
            }
            // Written after the listing (a repair or an upload)? Look again before reporting.
            let exists = {
                let disk = Arc::clone(disk);
                blocking(move || Ok(disk.shard_len(eid, shard).is_ok())).await?
            };
            if !exists && report_if_placed(healer, id, shard, disk_id, reason).await? {
                damaged += 1;
                bitmountain_metrics::global().scrub_errors.inc();
            }
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    Ok(damaged)
}

/// Reports a damaged shard when the committed placement of a sealed bundle names it on this
/// disk; returns whether it did.
async fn report_if_placed(
    healer: &Healer,
    id: BundleId,
    shard: u16,
    disk_id: u64,
    reason: &str,
) -> Result<bool> {
    let co = &healer.coordinator;
    let bundle = match co.meta.get_bundle(id, false).await {
        Ok(b) => b,
        Err(bitmountain_meta_client::MetaError::UnknownBundle { .. }) => return Ok(false),
        Err(e) => return Err(NodeError::from(e)),
    };
    let named = bundle.record.placement.get(usize::from(shard)) == Some(&disk_id);
    if bundle.record.state != BundleState::Sealed || !named {
        return Ok(false);
    }
    let reason = format!(
        "scrub on node {} disk {disk_id}: shard {shard}: {reason}",
        co.node_id
    );
    tracing::warn!(bundle = %id, shard, disk = disk_id, %reason, "scrub found a damaged shard");
    co.meta
        .report_damage(id, &[u32::from(shard)], &reason)
        .await?;
    co.forget_bundle(id);
    Ok(true)
}
