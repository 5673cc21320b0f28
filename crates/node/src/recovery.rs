//! Disaster recovery on a node: what its disks hold, in the terms the metadata group rebuilds
//! records from ([`FoundShard`], [`FoundTombstone`]; `bitmountain recover scan` uses the same
//! conversion offline); the worker that reports the scan while the group recovers
//! ([`ScanReporter`]); and what garbage collection must respect meanwhile ([`RecoveryControl`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitmountain_disk::{DiskScan, ShardFound};
use bitmountain_erasure::ShardHeader;
use bitmountain_meta_client::types::{FoundDescription, FoundFooter, FoundShard, FoundTombstone};
use bitmountain_meta_client::{BundleId, Code, MetaClient};
use bitmountain_worker::{Next, StepError, Worker};

use crate::shard_service::DiskSet;

/// The shards and tombstones of one disk's scan.
pub fn found(scan: &DiskScan) -> (Vec<FoundShard>, Vec<FoundTombstone>) {
    let disk_id = scan.identity.disk_id;
    let shards = scan
        .shards
        .iter()
        .map(|s| {
            let mut f = FoundShard {
                bundle: BundleId(u128::from_be_bytes(s.bundle.0)),
                shard_index: u32::from(s.shard),
                disk_id,
                code: None,
                chunk_bytes: 0,
                footer: None,
                description: None,
                problem: None,
            };
            match &s.found {
                ShardFound::Described {
                    header,
                    footer,
                    description,
                    description_problem,
                } => {
                    set_header(&mut f, header);
                    f.footer = Some(FoundFooter {
                        length: footer.bundle_len,
                        index_offset: footer.index.offset,
                        index_length: footer.index.len,
                        sha256: footer.sha256,
                    });
                    f.description = description.as_ref().map(|d| FoundDescription {
                        created_unix_ms: d.created_unix_ms,
                        file_count: d.file_count,
                        labels: d.labels.clone(),
                    });
                    f.problem = description_problem
                        .as_ref()
                        .map(|p| format!("description: {p}"));
                }
                ShardFound::HeaderOnly { header, problem } => {
                    set_header(&mut f, header);
                    f.problem = Some(problem.clone());
                }
                ShardFound::Unusable { problem } => f.problem = Some(problem.clone()),
            }
            f
        })
        .collect();
    let tombstones = scan
        .tombstones
        .tombstones
        .iter()
        .map(|t| FoundTombstone {
            bundle: BundleId(u128::from_be_bytes(t.bundle.0)),
            disk_id,
            deleted_unix_ms: t.deleted_unix_ms,
        })
        .collect();
    (shards, tombstones)
}

fn set_header(f: &mut FoundShard, header: &ShardHeader) {
    f.code = Some(Code {
        data_shards: header.code.data_shards() as u32,
        parity_shards: header.code.parity_shards() as u32,
        cell_bytes: u64::from(header.code.cell_bytes()),
    });
    f.chunk_bytes = header.code.chunk_bytes();
}

/// What the node knows of the group's recovery: whether it is recovering, until when shards of
/// bundles it does not know are kept, and whether this process has reported its disks.
#[derive(Debug, Default)]
pub struct RecoveryControl {
    /// A heartbeat (or the registration) has told us.
    known: AtomicBool,
    recovering: AtomicBool,
    orphan_hold_until_unix_ms: AtomicU64,
    reported: AtomicBool,
}

impl RecoveryControl {
    /// What the group said (registration answer or heartbeat).
    pub fn observe(&self, recovering: bool, orphan_hold_until_unix_ms: u64) {
        let was = self.recovering.swap(recovering, Ordering::SeqCst);
        if recovering && !was {
            // A new recovery wants every disk again.
            self.reported.store(false, Ordering::SeqCst);
        }
        self.orphan_hold_until_unix_ms
            .store(orphan_hold_until_unix_ms, Ordering::SeqCst);
        self.known.store(true, Ordering::SeqCst);
    }

    /// Whether garbage collection may delete shards of bundles the group does not know.
    pub fn may_delete_orphans(&self, now_unix_ms: u64) -> bool {
        self.known.load(Ordering::SeqCst)
            && !self.recovering.load(Ordering::SeqCst)
            && now_unix_ms >= self.orphan_hold_until_unix_ms.load(Ordering::SeqCst)
    }

    fn scan_due(&self) -> bool {
        self.recovering.load(Ordering::SeqCst) && !self.reported.load(Ordering::SeqCst)
    }
}

/// Shards per `ReportScan` (the group takes at most `MAX_REPORTED_SHARDS`, 2048).
pub const SCAN_REPORT_SHARDS: usize = 1024;
/// Tombstones per `ReportScan`.
pub const SCAN_REPORT_TOMBSTONES: usize = 8192;
/// How often the reporter looks whether a recovery wants its scan.
pub const SCAN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Scans this node's disks and reports them while the group recovers (once per recovery and
/// process; a node restarted mid-recovery reports again, which changes nothing twice).
#[derive(Debug)]
pub struct ScanReporter {
    pub meta: Arc<MetaClient>,
    pub node_id: u64,
    pub disks: DiskSet,
    pub control: Arc<RecoveryControl>,
    pub note: String,
}

impl ScanReporter {
    async fn report_all(&mut self) -> Result<u64, String> {
        let mut total = 0u64;
        for disk in self.disks.iter().cloned().collect::<Vec<_>>() {
            let disk_id = disk.disk_id();
            let scanned = tokio::task::spawn_blocking(move || disk.scan())
                .await
                .map_err(|e| format!("scanning disk {disk_id}: {e}"))?
                .map_err(|e| format!("scanning disk {disk_id}: {e}"))?;
            let (shards, tombstones) = found(&scanned);
            total += shards.len() as u64;
            let shard_batches = shards.chunks(SCAN_REPORT_SHARDS).count();
            let tomb_batches = tombstones.chunks(SCAN_REPORT_TOMBSTONES).count();
            let batches = shard_batches.max(tomb_batches).max(1);
            for i in 0..batches {
                let s = shards.chunks(SCAN_REPORT_SHARDS).nth(i).unwrap_or_default();
                let t = tombstones
                    .chunks(SCAN_REPORT_TOMBSTONES)
                    .nth(i)
                    .unwrap_or_default();
                self.meta
                    .report_scan(self.node_id, disk_id, s, t, i + 1 == batches)
                    .await
                    .map_err(|e| format!("reporting disk {disk_id}: {e}"))?;
            }
            tracing::info!(
                disk = disk_id,
                shards = shards.len(),
                tombstones = tombstones.len(),
                "disk scan reported to the recovering metadata group"
            );
        }
        Ok(total)
    }
}

impl Worker for ScanReporter {
    fn name(&self) -> &'static str {
        "recovery-scan"
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let every = Next::Every(SCAN_CHECK_INTERVAL);
        if !self.control.scan_due() {
            return Ok(every);
        }
        let started = std::time::Instant::now();
        let shards = self
            .report_all()
            .await
            .map_err(|e| StepError::new(e, every))?;
        self.control.reported.store(true, Ordering::SeqCst);
        self.note = format!(
            "reported {shards} shards of {} disks in {} ms",
            self.disks.iter().count(),
            started.elapsed().as_millis()
        );
        Ok(every)
    }

    fn note(&self) -> String {
        self.note.clone()
    }
}
