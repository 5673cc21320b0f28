//! The bundle lifecycle: allocate (pending), commit (sealed), abort and expire (gone), delete
//! (deleting, invisible to readers), purge (gone once its shards are).

use std::collections::BTreeMap;

use super::{no_such_shard, Applier};
use crate::codec;
use crate::command::{Allocate, Applied, ApplyResult, Commit};
use crate::error::Field;
use crate::error::{MetaError, Result};
use crate::keys;
use crate::rules;
use crate::state::KeyReader;
use crate::types::{Agent, AuditAction, BundleId, BundleRecord, BundleState, NewEvent, Outcome};

impl Applier<'_> {
    pub(crate) fn allocate(&mut self, c: Allocate) -> ApplyResult {
        if let Some(existing) = self.request_bundle(&c.request_id)? {
            if let Some(b) = self.bundle(existing)? {
                return Ok(Applied::Bundle(b));
            }
        }
        let id = c.id;
        if c.placement.len() != c.code.total() {
            return Err(MetaError::MalformedPlacement {
                id,
                reason: format!("{} disks for {} shards", c.placement.len(), c.code.total()),
            });
        }
        for d in &c.placement {
            let disk = self
                .map
                .disks
                .get(d)
                .ok_or(MetaError::UnknownDisk { id: *d })?;
            if !rules::disk_takes_shards(disk) {
                return Err(MetaError::PlacementStale {
                    id,
                    disk_id: *d,
                    state: disk.state,
                });
            }
        }
        let shard_bytes = c.code.shard_bytes(c.expected_length);
        let rec = BundleRecord {
            id,
            state: BundleState::Pending,
            code: c.code,
            length: 0,
            index_offset: 0,
            index_length: 0,
            sha256: Vec::new(),
            file_count: 0,
            labels: c.labels,
            created_unix_ms: c.now_ms,
            expires_unix_ms: c.expires_ms,
            placement: c.placement,
            placement_generation: 1,
            request_id: c.request_id,
            accounted_shard_bytes: shard_bytes,
            preservation: crate::types::Preservation {
                retain_until_unix_ms: c.retain_until_unix_ms,
                legal_hold: None,
            },
        };
        for (i, d) in rec.placement.iter().enumerate() {
            self.put_raw(
                &keys::disk_bundle(*d, id),
                &codec::binary::encode_u32(i as u32),
            );
            self.charge(*d, shard_bytes, true);
        }
        for (k, v) in &rec.labels {
            self.put_raw(&keys::label(k, v, id), &[]);
        }
        self.put_raw(&keys::state(BundleState::Pending.tag(), id), &[]);
        self.put_raw(&keys::expiry(rec.expires_unix_ms, id), &[]);
        let request_value = codec::encode_request_bundle(id, self.map.cluster.value_format());
        self.put_raw(&keys::request(&rec.request_id), &request_value);
        self.put_bundle(&rec);
        self.count(BundleState::Pending, true);
        Ok(Applied::Bundle(rec))
    }

    pub(crate) fn commit(&mut self, c: Commit) -> ApplyResult {
        let id = c.id;
        let mut b = self.known_bundle(id)?;
        match b.state {
            BundleState::Sealed => {
                if b.length == c.length && b.sha256 == c.sha256 {
                    return Ok(Applied::Bundle(b));
                }
                return Err(MetaError::WrongState {
                    id,
                    state: b.state,
                    hint: "already committed with a different length or checksum".into(),
                });
            }
            BundleState::Deleting => {
                return Err(MetaError::WrongState {
                    id,
                    state: b.state,
                    hint: "the bundle was deleted".into(),
                })
            }
            BundleState::Pending => {}
        }
        if c.now_ms > b.expires_unix_ms {
            return Err(MetaError::AllocationExpired {
                id,
                expires_unix_ms: b.expires_unix_ms,
            });
        }
        let agent = c.agent;
        let mut missing: Vec<u32> = c.missing_shards;
        missing.sort_unstable();
        missing.dedup();
        if let Some(bad) = missing.iter().find(|s| **s as usize >= b.code.total()) {
            return Err(no_such_shard(Field::MissingShards, *bad, &b));
        }
        let tolerated = b.code.parity_shards.saturating_sub(1) as usize;
        if missing.len() > tolerated {
            return Err(MetaError::TooManyMissingShards {
                id,
                missing: missing.len(),
                tolerated,
            });
        }
        let new_shard = b.code.shard_bytes(c.length);
        for d in b.placement.clone() {
            self.charge(d, b.accounted_shard_bytes, false);
            self.charge(d, new_shard, true);
        }
        self.del(&keys::state(BundleState::Pending.tag(), id));
        self.del(&keys::expiry(b.expires_unix_ms, id));
        self.put_raw(&keys::state(BundleState::Sealed.tag(), id), &[]);
        self.count(BundleState::Pending, false);
        self.count(BundleState::Sealed, true);
        self.map.cluster.count_sealed_bytes(
            b.code.data_shards,
            b.code.parity_shards,
            c.length,
            true,
        );
        b.state = BundleState::Sealed;
        b.length = c.length;
        b.index_offset = c.index_offset;
        b.index_length = c.index_length;
        b.sha256 = c.sha256;
        b.file_count = c.file_count;
        b.accounted_shard_bytes = new_shard;
        b.expires_unix_ms = 0;
        self.put_bundle(&b);
        // Shards the upload could not write, and shards whose disk failed or whose node went
        // down while the bundle was pending (the requeue of that change skipped the pending
        // bundle), are queued now.
        let mut detail = format!(
            "{} bytes in {} files, sha256 {}, code {}+{}",
            b.length,
            b.file_count,
            hex::encode(&b.sha256),
            b.code.data_shards,
            b.code.parity_shards
        );
        if !missing.is_empty() {
            detail.push_str(&format!(
                ", shards {missing:?} not written (queued for repair)"
            ));
        }
        if !missing.is_empty() || !rules::shard_health(&self.map, &b, None).is_empty() {
            self.set_repair(&b, missing, BTreeMap::new(), c.now_ms)?;
        }
        self.audit_bundle(c.now_ms, agent, AuditAction::Ingestion, id, detail);
        Ok(Applied::Bundle(b))
    }

    /// A successful action on bundle `id`, in the trail.
    fn audit_bundle(
        &mut self,
        now_ms: u64,
        agent: Agent,
        action: AuditAction,
        id: BundleId,
        detail: String,
    ) {
        let event = NewEvent::bundle(now_ms, agent, action, id, Outcome::Success, detail);
        self.audit(event, "");
    }

    pub(crate) fn abort(&mut self, id: BundleId) -> ApplyResult {
        match self.bundle(id)? {
            None => Ok(Applied::Done),
            Some(b) if b.state == BundleState::Pending => {
                self.remove_record(&b)?;
                Ok(Applied::Done)
            }
            Some(b) => Err(MetaError::WrongState {
                id,
                state: b.state,
                hint: "only a pending bundle can be aborted; delete it instead".into(),
            }),
        }
    }

    pub(crate) fn expire(&mut self, ids: Vec<BundleId>, now_ms: u64) -> ApplyResult {
        for id in ids {
            if let Some(b) = self.bundle(id)? {
                if b.state == BundleState::Pending && b.expires_unix_ms <= now_ms {
                    self.remove_record(&b)?;
                }
            }
        }
        Ok(Applied::Done)
    }

    pub(crate) fn delete(
        &mut self,
        id: BundleId,
        now_ms: u64,
        reason: &str,
        agent: Agent,
    ) -> ApplyResult {
        let mut b = self.known_bundle(id)?;
        // A recovery deletes again what a tombstone says was deleted before the disaster,
        // past whatever retention or hold the backup shows.
        let checked = now_ms > 0 && agent != Agent::system("recovery");
        if checked && b.state == BundleState::Sealed {
            if let Some(hold) = &b.preservation.legal_hold {
                return Err(MetaError::LegalHold {
                    id,
                    reason: hold.reason.clone(),
                    since_unix_ms: hold.since_unix_ms,
                });
            }
            if now_ms < b.preservation.retain_until_unix_ms {
                return Err(MetaError::Retained {
                    id,
                    until_unix_ms: b.preservation.retain_until_unix_ms,
                });
            }
        }
        match b.state {
            BundleState::Deleting => return Ok(Applied::Bundle(b)),
            BundleState::Pending => {
                return Err(MetaError::WrongState {
                    id,
                    state: b.state,
                    hint: "a pending bundle is aborted, not deleted".into(),
                })
            }
            BundleState::Sealed => {}
        }
        self.del(&keys::state(BundleState::Sealed.tag(), id));
        self.put_raw(&keys::state(BundleState::Deleting.tag(), id), &[]);
        for (k, v) in b.labels.clone() {
            self.del(&keys::label(&k, &v, id));
        }
        self.count(BundleState::Sealed, false);
        self.count(BundleState::Deleting, true);
        self.map.cluster.count_sealed_bytes(
            b.code.data_shards,
            b.code.parity_shards,
            b.length,
            false,
        );
        self.unqueue_repair(id)?;
        b.state = BundleState::Deleting;
        self.put_bundle(&b);
        let detail = format!("reason: {reason}");
        self.audit_bundle(now_ms, agent, AuditAction::Deletion, id, detail);
        Ok(Applied::Bundle(b))
    }

    pub(crate) fn purge(&mut self, id: BundleId) -> ApplyResult {
        match self.bundle(id)? {
            // Already purged: a retried purge is a success.
            None => Ok(Applied::Done),
            Some(b) if b.state == BundleState::Deleting => {
                self.remove_record(&b)?;
                Ok(Applied::Done)
            }
            Some(b) => Err(MetaError::WrongState {
                id,
                state: b.state,
                hint: "only a deleted bundle is purged; delete it first".into(),
            }),
        }
    }

    /// Removes every key of a pending (aborted, expired) or deleted (purged) bundle and gives
    /// its disks their placed bytes back.
    fn remove_record(&mut self, b: &BundleRecord) -> Result<()> {
        assert!(
            b.state != BundleState::Sealed,
            "a sealed bundle is deleted before its record is removed"
        );
        for d in &b.placement {
            self.del(&keys::disk_bundle(*d, b.id));
            self.charge(*d, b.accounted_shard_bytes, false);
        }
        for (k, v) in &b.labels {
            self.del(&keys::label(k, v, b.id));
        }
        self.del(&keys::state(b.state.tag(), b.id));
        self.del(&keys::expiry(b.expires_unix_ms, b.id));
        self.del(&keys::request(&b.request_id));
        self.del(&keys::bundle(b.id));
        self.count(b.state, false);
        Ok(())
    }
}

impl Applier<'_> {
    /// Extends a sealed bundle's retention; an earlier date than the current one is refused.
    pub(crate) fn set_retention(
        &mut self,
        id: BundleId,
        until_unix_ms: u64,
        governance_reason: &str,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let mut b = self.sealed_bundle(id)?;
        let current = b.preservation.retain_until_unix_ms;
        if until_unix_ms < current && governance_reason.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: Field::Retention,
                reason: format!(
                    "bundle {id} is retained until {current} (Unix ms); retention is extended, \
                     never shortened"
                ),
            });
        }
        if until_unix_ms == current {
            return Ok(Applied::Bundle(b));
        }
        b.preservation.retain_until_unix_ms = until_unix_ms;
        self.put_bundle(&b);
        let mut detail = format!(
            "retention until {} (was {})",
            crate::types::unix_ms_text(until_unix_ms),
            crate::types::unix_ms_text(current)
        );
        if until_unix_ms < current {
            detail.push_str(&format!(
                "; shortened in governance mode: {governance_reason}"
            ));
        }
        self.audit_bundle(now_ms, agent, AuditAction::PolicyAssignment, id, detail);
        Ok(Applied::Bundle(b))
    }

    /// Sets or clears a sealed bundle's legal hold (setting it again keeps its first time).
    pub(crate) fn set_legal_hold(
        &mut self,
        id: BundleId,
        hold: Option<crate::types::LegalHold>,
        reason: &str,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let mut b = self.sealed_bundle(id)?;
        let detail = match (&b.preservation.legal_hold, &hold) {
            (None, None) => None,
            (_, Some(_)) => Some(format!("legal hold set: {reason}")),
            (Some(_), None) => Some(format!("legal hold cleared: {reason}")),
        };
        b.preservation.legal_hold = match (b.preservation.legal_hold.take(), hold) {
            (Some(old), Some(new)) => Some(crate::types::LegalHold {
                since_unix_ms: old.since_unix_ms,
                ..new
            }),
            (_, hold) => hold,
        };
        self.put_bundle(&b);
        if let Some(detail) = detail {
            self.audit_bundle(now_ms, agent, AuditAction::PolicyAssignment, id, detail);
        }
        Ok(Applied::Bundle(b))
    }

    fn sealed_bundle(&self, id: BundleId) -> Result<BundleRecord> {
        let b = self.known_bundle(id)?;
        if b.state != BundleState::Sealed {
            return Err(MetaError::WrongState {
                id,
                state: b.state,
                hint: "retention and legal holds apply to sealed bundles".into(),
            });
        }
        Ok(b)
    }
}
