//! Disaster recovery: entering it, recording what the disks' scans found, the bundle records
//! the leader rebuilt from them (`crate::recovery::plan`), and its end.

use super::Applier;
use crate::codec::binary;
use crate::command::{Applied, ApplyResult, RecordScan, RecoverBundles, RecoveryReport};
use crate::error::{Field, MetaError, Result};
use crate::keys;
use crate::rules;
use crate::state::cluster::RecoveryState;
use crate::state::KeyReader;
use crate::types::{Agent, AuditAction, BundleId, BundleRecord, BundleState};

fn not_recovering(what: &str) -> MetaError {
    MetaError::InvalidArgument {
        field: Field::State,
        reason: format!("{what}: the group is not recovering"),
    }
}

impl Applier<'_> {
    pub(crate) fn enter_recovery(
        &mut self,
        now_ms: u64,
        backup_unix_ms: u64,
        request_id: String,
    ) -> ApplyResult {
        if self.map.cluster.last_recovery_request == request_id {
            return Ok(Applied::Done);
        }
        self.map.cluster.last_recovery_request = request_id;
        if self.map.cluster.recovery.is_none() {
            self.map.cluster.recovery = Some(RecoveryState {
                started_unix_ms: now_ms,
                backup_unix_ms,
                ..RecoveryState::default()
            });
        }
        // Until the recovery ends, no node deletes a shard the group does not know yet.
        self.map.cluster.orphan_hold_until_unix_ms = u64::MAX;
        let detail = format!(
            "started: rebuilding bundle records from the disks{}",
            if backup_unix_ms == 0 {
                String::new()
            } else {
                format!(
                    " and a backup taken {}",
                    crate::types::unix_ms_text(backup_unix_ms)
                )
            }
        );
        self.audit_recovery(now_ms, detail);
        Ok(Applied::Done)
    }

    pub(crate) fn record_scan(&mut self, r: RecordScan) -> ApplyResult {
        if self.map.cluster.recovery.is_none() {
            return Err(not_recovering("a disk scan"));
        }
        match self.map.disks.get(&r.disk_id) {
            Some(d) if d.node_id == r.node_id => {}
            Some(d) => {
                return Err(MetaError::DiskOwnedByOtherNode {
                    disk_id: r.disk_id,
                    owner: d.node_id,
                    node_id: r.node_id,
                })
            }
            None => return Err(MetaError::UnknownDisk { id: r.disk_id }),
        }
        for s in &r.shards {
            let key = keys::found_shard(s.bundle, s.shard_index, r.disk_id);
            let mut s = s.clone();
            s.disk_id = r.disk_id;
            self.put(&key, &s);
        }
        for t in &r.tombstones {
            self.put(
                &keys::found_tombstone(t.bundle, r.disk_id),
                &t.deleted_unix_ms,
            );
        }
        let Some(state) = self.map.cluster.recovery.as_mut() else {
            return Err(not_recovering("a disk scan"));
        };
        state.shards_found += r.shards.len() as u64;
        state.tombstones_found += r.tombstones.len() as u64;
        if r.last {
            state.disks_reported.insert(r.disk_id);
        }
        Ok(Applied::Done)
    }

    /// Writes the rebuilt records and drops the found keys of every bundle the batch settles.
    pub(crate) fn recover_bundles(&mut self, r: RecoverBundles) -> ApplyResult {
        if self.map.cluster.recovery.is_none() {
            return Err(not_recovering("recovered bundles"));
        }
        // Checked before anything is written, so a refusal changes nothing.
        for b in &r.bundles {
            let rec = &b.record;
            if rec.placement.len() != rec.code.total() {
                return Err(MetaError::MalformedPlacement {
                    id: rec.id,
                    reason: format!(
                        "{} disks for {} shards",
                        rec.placement.len(),
                        rec.code.total()
                    ),
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for d in &rec.placement {
                if !self.map.disks.contains_key(d) || !seen.insert(*d) {
                    return Err(MetaError::MalformedPlacement {
                        id: rec.id,
                        reason: format!("disk {d} is unknown or named twice"),
                    });
                }
            }
        }
        let settled = r.bundles.iter().map(|b| b.record.id).chain(r.settled);
        for id in settled.collect::<Vec<_>>() {
            self.drop_found(id)?;
        }
        for b in r.bundles {
            let rec = b.record;
            match self.bundle(rec.id)? {
                None => {}
                // A backup's record: replaced by what the disks say now.
                Some(old) if old.state == BundleState::Sealed => self.unindex_sealed(&old)?,
                Some(old) if old.state == BundleState::Pending => self.unindex_pending(&old),
                // Deleted before: garbage collection finishes it.
                Some(_) => continue,
            }
            assert_eq!(
                rec.state,
                BundleState::Sealed,
                "recovered records are sealed"
            );
            self.index_sealed(&rec);
            if !b.damaged.is_empty() || !rules::shard_health(&self.map, &rec, None).is_empty() {
                self.set_repair(&rec, b.damaged, Default::default(), r.now_ms)?;
            }
        }
        Ok(Applied::Done)
    }

    pub(crate) fn finish_recovery(
        &mut self,
        report: RecoveryReport,
        orphan_hold_until_unix_ms: u64,
    ) -> ApplyResult {
        if self.map.cluster.recovery.take().is_none() {
            return Err(not_recovering("the end of a recovery"));
        }
        self.map.cluster.orphan_hold_until_unix_ms = orphan_hold_until_unix_ms;
        self.put(keys::RECOVERY_REPORT, &report);
        let r = &report;
        let detail = format!(
            "finished{}: {} disks reported, {} bundles recovered, {} added, {} lost, {} deleted              by tombstones, {} queued for repair",
            if r.forced { " (forced)" } else { "" },
            r.disks_reported.len(),
            r.recovered,
            r.added,
            r.lost_count,
            r.deleted,
            r.queued_for_repair
        );
        self.audit_recovery(r.finished_unix_ms, detail);
        Ok(Applied::Done)
    }

    fn audit_recovery(&mut self, now_ms: u64, detail: String) {
        let event = super::topology::topology_event(
            now_ms,
            Agent::system("recovery"),
            AuditAction::Recovery,
            "cluster".into(),
            detail,
        );
        self.audit(event, "");
    }

    fn drop_found(&mut self, id: BundleId) -> Result<()> {
        let mut doomed = Vec::new();
        for prefix in [
            keys::found_shard_prefix(id),
            keys::found_tombstone_prefix(id),
        ] {
            self.store.scan(&prefix, &[], usize::MAX, |k, _| {
                doomed.push(k.to_vec());
                Ok(())
            })?;
        }
        for k in doomed {
            self.del(&k);
        }
        Ok(())
    }

    /// Every key a sealed record implies, and its counts and placed bytes.
    fn index_sealed(&mut self, rec: &BundleRecord) {
        for (i, d) in rec.placement.iter().enumerate() {
            self.put_raw(
                &keys::disk_bundle(*d, rec.id),
                &binary::encode_u32(i as u32),
            );
            self.charge(*d, rec.accounted_shard_bytes, true);
        }
        for (k, v) in &rec.labels {
            self.put_raw(&keys::label(k, v, rec.id), &[]);
        }
        self.put_raw(&keys::state(BundleState::Sealed.tag(), rec.id), &[]);
        self.put_bundle(rec);
        self.count(BundleState::Sealed, true);
        self.map.cluster.count_sealed_bytes(
            rec.code.data_shards,
            rec.code.parity_shards,
            rec.length,
            true,
        );
    }

    fn unindex_sealed(&mut self, old: &BundleRecord) -> Result<()> {
        self.unqueue_repair(old.id)?;
        for d in &old.placement {
            self.del(&keys::disk_bundle(*d, old.id));
            self.charge(*d, old.accounted_shard_bytes, false);
        }
        for (k, v) in &old.labels {
            self.del(&keys::label(k, v, old.id));
        }
        self.del(&keys::state(BundleState::Sealed.tag(), old.id));
        self.count(BundleState::Sealed, false);
        self.map.cluster.count_sealed_bytes(
            old.code.data_shards,
            old.code.parity_shards,
            old.length,
            false,
        );
        Ok(())
    }

    fn unindex_pending(&mut self, old: &BundleRecord) {
        for d in &old.placement {
            self.del(&keys::disk_bundle(*d, old.id));
            self.charge(*d, old.accounted_shard_bytes, false);
        }
        for (k, v) in &old.labels {
            self.del(&keys::label(k, v, old.id));
        }
        self.del(&keys::state(BundleState::Pending.tag(), old.id));
        self.del(&keys::expiry(old.expires_unix_ms, old.id));
        self.del(&keys::request(&old.request_id));
        self.count(BundleState::Pending, false);
    }
}
