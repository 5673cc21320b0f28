//! The leader's side of a disaster recovery (`bitmountain meta recover`):
//!
//! 1. `meta recover` leaves a request in the data directory ([`RecoveryRequest`]); once this
//!    member leads, [`RecoveryDriver`] proposes `EnterRecovery` and removes it.
//! 2. Nodes register (the group takes their ids and their cluster id), scan their disks and
//!    report (`ReportScan` → `RecordScan`, kept under `keys::FOUND_SHARD`).
//! 3. When every registered disk has reported (or on `meta recover finish`), the leader plans
//!    the records (`crate::recovery::plan`), chooses disks for missing shards, merges with the
//!    backup's records if the group started from one, and proposes them in batches
//!    (`RecoverBundles`, deletes for tombstoned backup records), then `FinishRecovery` with the
//!    report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitmountain_proto::v1 as pb;
use bitmountain_worker::{Next, StepError, Worker};
use serde::{Deserialize, Serialize};

use super::MetaServer;
use crate::codec;
use crate::command::{Command, RecordScan, RecoverBundles, RecoveredRecord};
use crate::error::{Field, MetaError, Result};
use crate::keys;
use crate::recovery::{plan, LostBundle, PlanParams, RecoveryReport, MAX_REPORT_LIST};
use crate::rules;
use crate::state::KeyReader;
use crate::types::{now_unix_ms, BundleId, BundleRecord, BundleState, FoundShard, FoundTombstone};

/// Default of `MetaConfig::recovery_settle_ms`.
pub const DEFAULT_RECOVERY_SETTLE_MS: u64 = 30_000;
/// How often the driver looks at the recovery.
pub const RECOVERY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Records per `RecoverBundles` command.
pub const RECOVER_BATCH_BUNDLES: usize = 256;
/// Settled bundle ids per `RecoverBundles` command.
pub const RECOVER_BATCH_SETTLED: usize = 2048;
/// Most shards and tombstones in one `ReportScan`.
pub const MAX_REPORTED_SHARDS: usize = 2048;
pub const MAX_REPORTED_TOMBSTONES: usize = 16384;
/// Shards of bundles younger than this with too few shards are uploads that never committed
/// (the nodes' default orphan grace, `bitmountain_node::limits::ORPHAN_GRACE_MS`).
pub const RECOVERY_ORPHAN_GRACE_MS: u64 = 2 * 3_600_000;
/// After a recovery, nodes keep shards of bundles the group does not know this long (a disk
/// that was away may complete a bundle found lost; run a new recovery with it).
pub const ORPHAN_HOLD_AFTER_RECOVERY_MS: u64 = 7 * 24 * 3_600_000;
/// The CRC chunk size every record implies (the nodes write `DEFAULT_CHUNK_BYTES`).
pub const RECORDED_CHUNK_BYTES: u32 = 64 << 10;
/// The request `meta recover` leaves in the data directory.
pub const RECOVERY_REQUEST_FILE: &str = "recover.request.json";

/// What `meta recover` asks of the member it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRequest {
    /// Unique per `meta recover`: a request already carried out is not carried out again.
    pub id: String,
    /// When the backup the group was restored from was taken (0: none).
    pub backup_unix_ms: u64,
}

impl RecoveryRequest {
    /// Writes the request into a member's data directory (synced).
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let path = data_dir.join(RECOVERY_REQUEST_FILE);
        let tmp = data_dir.join(format!("{RECOVERY_REQUEST_FILE}.tmp"));
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    }

    /// The request `meta recover` left in `data_dir`, if any.
    pub fn read(data_dir: &Path) -> Option<Result<Self>> {
        let path = data_dir.join(RECOVERY_REQUEST_FILE);
        let bytes = std::fs::read(&path).ok()?;
        Some(
            serde_json::from_slice(&bytes).map_err(|e| MetaError::Corrupt {
                what: format!("{}: {e}", path.display()),
            }),
        )
    }
}

impl MetaServer {
    /// Enters the recovery `meta recover` asked for, if it has not been entered yet: the
    /// driver does it once this member leads, and a registration or scan report that comes
    /// first does it before it is handled (a node must not register with a group that is not
    /// recovering yet). Returns whether a request was pending.
    pub(crate) async fn enter_pending_recovery(&self) -> Result<bool> {
        let pending = match self.inner.pending_recovery.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let Some(request) = pending else {
            return Ok(false);
        };
        self.require_leader()?;
        let done = self.inner.store.map().cluster.last_recovery_request == request.id;
        if !done {
            self.propose(Command::EnterRecovery {
                now_ms: now_unix_ms(),
                backup_unix_ms: request.backup_unix_ms,
                request_id: request.id.clone(),
            })
            .await?;
            tracing::warn!("recovery started: waiting for every node to report its disks");
        }
        match self.inner.pending_recovery.lock() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
        Ok(true)
    }

    /// A node's scan of one disk, in part.
    pub(crate) async fn report_scan(
        &self,
        r: pb::ReportScanRequest,
    ) -> Result<pb::ReportScanResponse> {
        if r.shards.len() > MAX_REPORTED_SHARDS || r.tombstones.len() > MAX_REPORTED_TOMBSTONES {
            return Err(MetaError::InvalidArgument {
                field: Field::Items,
                reason: format!(
                    "at most {MAX_REPORTED_SHARDS} shards and {MAX_REPORTED_TOMBSTONES} \
                     tombstones per report"
                ),
            });
        }
        self.require_leader()?;
        self.enter_pending_recovery().await?;
        let shards = r
            .shards
            .iter()
            .map(|s| crate::wire::found_shard_from_proto(s, r.disk_id))
            .collect::<Result<Vec<_>>>()?;
        let tombstones = r
            .tombstones
            .iter()
            .map(|t| crate::wire::found_tombstone_from_proto(t, r.disk_id))
            .collect::<Result<Vec<_>>>()?;
        self.propose(Command::RecordScan(RecordScan {
            node_id: r.node_id,
            disk_id: r.disk_id,
            shards,
            tombstones,
            last: r.last,
        }))
        .await?;
        Ok(pb::ReportScanResponse {})
    }

    /// Where the recovery stands; `finish` ends it first.
    pub(crate) async fn recovery(&self, finish: bool) -> Result<pb::RecoveryResponse> {
        self.require_leader()?;
        if finish {
            self.finish_recovery(true).await?;
        } else {
            self.read_barrier(false).await?;
        }
        let store = &self.inner.store;
        let report_json = match store.get_raw(keys::RECOVERY_REPORT)? {
            Some(v) => {
                let report: RecoveryReport = codec::decode_value(&v, "recovery report")?;
                serde_json::to_string(&report).map_err(|e| MetaError::Corrupt {
                    what: format!("recovery report: {e}"),
                })?
            }
            None => String::new(),
        };
        let map = store.map();
        let state = map.cluster.recovery.clone().unwrap_or_default();
        Ok(pb::RecoveryResponse {
            active: map.cluster.recovery.is_some(),
            started_unix_ms: state.started_unix_ms,
            disks_reported: state.disks_reported.into_iter().collect(),
            disks_registered: registered_disks(&map),
            shards_found: state.shards_found,
            tombstones_found: state.tombstones_found,
            report_json,
        })
    }

    /// Disks registered and disks reported, while recovering.
    fn scan_progress(&self) -> Option<(usize, usize, bool)> {
        let map = self.inner.store.map();
        let state = map.cluster.recovery.as_ref()?;
        let registered = registered_disks(&map);
        let complete =
            !registered.is_empty() && registered.iter().all(|d| state.disks_reported.contains(d));
        Some((registered.len(), state.disks_reported.len(), complete))
    }

    /// Rebuilds the records from the scans and ends the recovery. Only one runs at a time.
    pub(crate) async fn finish_recovery(&self, forced: bool) -> Result<()> {
        let _one = self.inner.recovery_lock.lock().await;
        self.require_leader()?;
        self.read_barrier(false).await?;
        let (state, registered) = {
            let map = self.inner.store.map();
            match &map.cluster.recovery {
                Some(s) => (s.clone(), registered_disks(&map)),
                None => {
                    return Err(MetaError::InvalidArgument {
                        field: Field::State,
                        reason: "the group is not recovering".into(),
                    })
                }
            }
        };
        let now = now_unix_ms();
        let (shards, tombstones) = self.found()?;
        let planned = plan(
            &shards,
            &tombstones,
            PlanParams {
                now_unix_ms: now,
                orphan_grace_ms: RECOVERY_ORPHAN_GRACE_MS,
                chunk_bytes: RECORDED_CHUNK_BYTES,
            },
        );
        let mut report = RecoveryReport {
            format: 1,
            started_unix_ms: state.started_unix_ms,
            backup_unix_ms: state.backup_unix_ms,
            forced,
            disks_registered: registered,
            disks_reported: state.disks_reported.iter().copied().collect(),
            shards_found: shards.len() as u64,
            tombstones_found: tombstones.len() as u64,
            unreadable_shards: planned.unreadable_shards.len() as u64,
            incomplete_uploads: planned.incomplete.len() as u64,
            ..RecoveryReport::default()
        };
        let mut settled: Vec<BundleId> = Vec::new();
        let mut records = Vec::new();
        let mut chooser = DiskChooser::new(&self.inner.store.map());
        for b in planned.recovered {
            let old = self.inner.store.bundle(b.record.id)?;
            match old.as_ref().map(|o| o.state) {
                Some(BundleState::Deleting) => {
                    settled.push(b.record.id);
                    continue;
                }
                Some(BundleState::Sealed) => {}
                _ => report.added += 1,
            }
            let id = b.record.id;
            let code = b.record.code;
            let labels = b.record.labels.clone();
            match merge(b, old.as_ref(), &mut chooser) {
                Some(r) => {
                    if !r.damaged.is_empty() {
                        report.queued_for_repair += 1;
                    }
                    report.recovered += 1;
                    records.push(r);
                }
                None => {
                    report.lost_count += 1;
                    settled.push(id);
                    if report.lost.len() < MAX_REPORT_LIST {
                        report.lost.push(LostBundle {
                            id: id.to_string(),
                            code: Some(code.to_string()),
                            shards_found: Vec::new(),
                            labels,
                            why: "readable, but the cluster has too few disks to place its \
                                  missing shards; add disks and recover again"
                                .into(),
                        });
                    }
                }
            }
        }
        for l in planned.lost.into_iter() {
            report.lost_count += 1;
            settled.push(l.id);
            if report.lost.len() < MAX_REPORT_LIST {
                report.lost.push(LostBundle {
                    id: l.id.to_string(),
                    code: l.code.map(|c| c.to_string()),
                    shards_found: l.found,
                    labels: l.labels,
                    why: l.why,
                });
            }
        }
        settled.extend(planned.incomplete.iter().map(|b| b.id));
        let mut deletes = Vec::new();
        for d in &planned.deleted {
            report.deleted += 1;
            settled.push(d.id);
            if self.inner.store.bundle(d.id)?.map(|b| b.state) == Some(BundleState::Sealed) {
                deletes.push(d.id);
            }
        }
        if state.backup_unix_ms > 0 {
            self.without_shards(&shards, &mut report)?;
        }
        for chunk in records.chunks(RECOVER_BATCH_BUNDLES) {
            self.propose(Command::RecoverBundles(RecoverBundles {
                bundles: chunk.to_vec(),
                settled: Vec::new(),
                now_ms: now,
            }))
            .await?;
        }
        for chunk in settled.chunks(RECOVER_BATCH_SETTLED) {
            self.propose(Command::RecoverBundles(RecoverBundles {
                bundles: Vec::new(),
                settled: chunk.to_vec(),
                now_ms: now,
            }))
            .await?;
        }
        for id in deletes {
            // Deleted before the disaster: past whatever retention or hold the backup shows.
            self.propose(Command::Delete {
                id,
                now_ms: now,
                reason: "a tombstone on the disks says it was deleted before the metadata was lost"
                    .into(),
                agent: crate::types::Agent::system("recovery"),
            })
            .await?;
        }
        report.finished_unix_ms = now_unix_ms();
        tracing::info!(
            recovered = report.recovered,
            lost = report.lost_count,
            deleted = report.deleted,
            forced,
            "recovery finished"
        );
        self.propose(Command::FinishRecovery {
            report,
            orphan_hold_until_unix_ms: now.saturating_add(ORPHAN_HOLD_AFTER_RECOVERY_MS),
        })
        .await?;
        Ok(())
    }

    /// Every found shard and tombstone the scans recorded.
    fn found(&self) -> Result<(Vec<FoundShard>, Vec<FoundTombstone>)> {
        let store = &self.inner.store;
        let mut shards = Vec::new();
        store.scan(&[keys::FOUND_SHARD], &[], usize::MAX, |_, v| {
            shards.push(codec::decode_value(v, "found shard")?);
            Ok(())
        })?;
        let mut tombstones = Vec::new();
        store.scan(&[keys::FOUND_TOMBSTONE], &[], usize::MAX, |k, v| {
            let (Some(bundle), Some(disk)) = (keys::leading_bundle_id(k), trailing_u64(k)) else {
                return Err(MetaError::Corrupt {
                    what: "a found-tombstone key is malformed".into(),
                });
            };
            tombstones.push(FoundTombstone {
                bundle,
                disk_id: disk,
                deleted_unix_ms: codec::decode_value(v, "found tombstone")?,
            });
            Ok(())
        })?;
        Ok((shards, tombstones))
    }

    /// Sealed records of the backup with no shard on any disk.
    fn without_shards(&self, shards: &[FoundShard], report: &mut RecoveryReport) -> Result<()> {
        let found: BTreeSet<BundleId> = shards.iter().map(|s| s.bundle).collect();
        self.inner
            .store
            .scan(&[keys::BUNDLE], &[], usize::MAX, |_, v| {
                let b = codec::decode_bundle(v)?;
                if b.state == BundleState::Sealed && !found.contains(&b.id) {
                    report.without_shards_count += 1;
                    if report.without_shards.len() < MAX_REPORT_LIST {
                        report.without_shards.push(b.id.to_string());
                    }
                }
                Ok(())
            })?;
        Ok(())
    }
}

fn trailing_u64(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Disks that take part: registered and not removed.
fn registered_disks(map: &crate::state::ClusterMap) -> Vec<u64> {
    map.disks
        .values()
        .filter(|d| d.state != crate::types::DiskState::Removed)
        .map(|d| d.id)
        .collect()
}

/// The record a recovered bundle gets: the plan's, or the backup's with the placement the disks
/// show; missing shards placed on disks the bundle does not use yet. `None` when no disk can
/// take a missing shard.
fn merge(
    b: crate::recovery::RecoveredBundle,
    old: Option<&BundleRecord>,
    chooser: &mut DiskChooser,
) -> Option<RecoveredRecord> {
    let mut record = match old {
        Some(o) if o.state == BundleState::Sealed => BundleRecord {
            placement: b.record.placement.clone(),
            placement_generation: o.placement_generation + 1,
            ..o.clone()
        },
        _ => b.record.clone(),
    };
    for &i in &b.missing {
        let keep = old
            .and_then(|o| o.placement.get(i as usize).copied())
            .filter(|d| chooser.usable(*d) && !record.placement.contains(d));
        let disk = match keep {
            Some(d) => d,
            None => chooser.choose(&record.placement)?,
        };
        record.placement[i as usize] = disk;
    }
    let mut damaged: Vec<u32> = b.missing.iter().chain(&b.damaged).copied().collect();
    damaged.sort_unstable();
    damaged.dedup();
    Some(RecoveredRecord { record, damaged })
}

/// Picks disks for shards that must be rebuilt: healthy disks the bundle does not use, on hosts
/// it does not use if possible, least filled first (counting what this recovery placed).
struct DiskChooser {
    /// (disk, host, placed bytes) of every disk that takes shards.
    disks: Vec<(u64, String, u64)>,
    hosts: BTreeMap<u64, String>,
}

impl DiskChooser {
    fn new(map: &crate::state::ClusterMap) -> Self {
        let host_of = |node: u64| {
            map.nodes
                .get(&node)
                .map(|n| format!("{}/{}/{}", n.zone, n.rack, n.host))
                .unwrap_or_default()
        };
        let disks: Vec<(u64, String, u64)> = map
            .disks
            .values()
            .filter(|d| rules::disk_takes_shards(d))
            .map(|d| (d.id, host_of(d.node_id), d.accounted_bytes))
            .collect();
        let hosts = map
            .disks
            .values()
            .map(|d| (d.id, host_of(d.node_id)))
            .collect();
        Self { disks, hosts }
    }

    fn usable(&self, disk: u64) -> bool {
        self.disks.iter().any(|(d, _, _)| *d == disk)
    }

    fn choose(&mut self, placement: &[u64]) -> Option<u64> {
        let used_hosts: BTreeSet<&String> =
            placement.iter().filter_map(|d| self.hosts.get(d)).collect();
        let pick = self
            .disks
            .iter()
            .enumerate()
            .filter(|(_, (d, _, _))| !placement.contains(d))
            .min_by_key(|(_, (d, host, bytes))| (used_hosts.contains(host), *bytes, *d))
            .map(|(i, _)| i)?;
        let entry = &mut self.disks[pick];
        // Spread the next choices: count a shard's worth on it (the exact size is the record's).
        entry.2 = entry.2.saturating_add(1 << 20);
        Some(entry.0)
    }
}

/// The recovery's background worker on every member (acting only on the leader): enters the
/// recovery `meta recover` asked for, and finishes it once every registered disk has reported.
#[derive(Debug)]
pub struct RecoveryDriver {
    server: MetaServer,
    data_dir: PathBuf,
    /// Disks registered and reported when last looked at, and since when unchanged.
    seen: Option<((usize, usize), std::time::Instant)>,
    note: String,
}

impl RecoveryDriver {
    pub fn new(server: MetaServer, data_dir: PathBuf) -> Self {
        Self {
            server,
            data_dir,
            seen: None,
            note: String::new(),
        }
    }

    /// Whether every registered disk has reported and nothing changed for the settle time.
    fn settled(&mut self) -> bool {
        let Some((registered, reported, complete)) = self.server.scan_progress() else {
            self.seen = None;
            return false;
        };
        let now = std::time::Instant::now();
        let since = match self.seen {
            Some((counts, since)) if counts == (registered, reported) => since,
            _ => now,
        };
        self.seen = Some(((registered, reported), since));
        let settle = Duration::from_millis(self.server.inner.cfg.recovery_settle_ms);
        complete && now.duration_since(since) >= settle
    }

    async fn step_once(&mut self) -> Result<()> {
        if !self.server.inner.raft.is_leader() {
            return Ok(());
        }
        self.server.enter_pending_recovery().await?;
        // The request file goes once the group has carried it out (a member restarted before
        // that enters it then).
        if let Some(Ok(request)) = RecoveryRequest::read(&self.data_dir) {
            if self.server.inner.store.map().cluster.last_recovery_request == request.id {
                let path = self.data_dir.join(RECOVERY_REQUEST_FILE);
                std::fs::remove_file(&path).map_err(|e| MetaError::Corrupt {
                    what: format!("removing {}: {e}", path.display()),
                })?;
            }
        }
        if self.settled() {
            self.server.finish_recovery(false).await?;
        }
        let map = self.server.inner.store.map();
        self.note = match &map.cluster.recovery {
            Some(s) => format!(
                "recovering: {} of {} disks reported, {} shards found",
                s.disks_reported.len(),
                registered_disks(&map).len(),
                s.shards_found
            ),
            None => "not recovering".into(),
        };
        Ok(())
    }
}

impl Worker for RecoveryDriver {
    fn name(&self) -> &'static str {
        "recovery"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let every = Next::Every(RECOVERY_CHECK_INTERVAL);
        self.step_once()
            .await
            .map(|()| every)
            .map_err(|e| StepError::new(e, every))
    }

    fn note(&self) -> String {
        self.note.clone()
    }
}
