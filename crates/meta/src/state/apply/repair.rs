//! The repair queue: each bundle's entry recomputed from the map (through
//! `rules::shard_health`) whenever something it depends on changes; damage reports; throttles.

use std::collections::{BTreeMap, BTreeSet};

use super::{counted, no_such_shard, Applier};
use crate::codec::binary;
use crate::command::{Applied, ApplyResult};
use crate::error::Field;
use crate::error::Result;
use crate::keys;
use crate::rules;
use crate::state::KeyReader;
use crate::types::{Agent, BundleId, BundleRecord, BundleState, RepairSettings, RepairTask};

impl Applier<'_> {
    /// Shards of a sealed bundle found missing or corrupt by a reader or scrubber: queue (or
    /// widen) its repair.
    pub(crate) fn report_damage(
        &mut self,
        id: BundleId,
        shards: Vec<u32>,
        now_ms: u64,
    ) -> ApplyResult {
        let b = self.known_bundle(id)?;
        if b.state != BundleState::Sealed {
            return Ok(Applied::Damage { queued: false });
        }
        if let Some(bad) = shards.iter().find(|s| **s as usize >= b.code.total()) {
            return Err(no_such_shard(Field::ShardIndexes, *bad, &b));
        }
        let task = self.repair_task(id)?;
        let (mut damaged, moves, since) = Self::task_parts(task.as_ref(), now_ms);
        let before = damaged.len();
        damaged.extend(shards);
        damaged.sort_unstable();
        damaged.dedup();
        if damaged.len() == before && task.is_some() {
            return Ok(Applied::Damage { queued: false });
        }
        self.set_repair(&b, damaged, moves, since)?;
        Ok(Applied::Damage { queued: true })
    }

    /// New repair throttles (a zero `max_repairs_per_node` keeps the current value).
    pub(crate) fn set_repair_settings(
        &mut self,
        settings: RepairSettings,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let current = &mut self.map.cluster.repair_settings;
        if settings.max_repairs_per_node != 0 {
            current.max_repairs_per_node = settings.max_repairs_per_node;
        }
        current.bytes_per_sec = settings.bytes_per_sec;
        current.paused = settings.paused;
        let detail = format!(
            "repairs: at most {} per node, {} bytes/s (0: unlimited), paused {}",
            current.max_repairs_per_node, current.bytes_per_sec, current.paused
        );
        let event = super::topology::topology_event(
            now_ms,
            agent,
            crate::types::AuditAction::SettingsChange,
            "cluster".into(),
            detail,
        );
        self.audit(event, "");
        Ok(Applied::Done)
    }

    /// The damaged shards, moves and queue time of a repair entry (empty for none).
    pub(super) fn task_parts(
        task: Option<&RepairTask>,
        now_ms: u64,
    ) -> (Vec<u32>, BTreeMap<u32, u64>, u64) {
        match task {
            Some(t) => (t.damaged_shards.clone(), t.moves.clone(), t.queued_unix_ms),
            None => (Vec::new(), BTreeMap::new(), now_ms),
        }
    }

    /// Recomputes a bundle's repair entry from the map plus the damaged shards and moves given,
    /// and queues, re-keys or removes it. Returns whether an entry remains.
    pub(super) fn set_repair(
        &mut self,
        b: &BundleRecord,
        mut damaged: Vec<u32>,
        moves: BTreeMap<u32, u64>,
        queued_unix_ms: u64,
    ) -> Result<bool> {
        self.unqueue_repair(b.id)?;
        if b.state != BundleState::Sealed {
            return Ok(false);
        }
        damaged.retain(|s| (*s as usize) < b.placement.len());
        damaged.sort_unstable();
        damaged.dedup();
        let mut task = RepairTask {
            bundle_id: b.id,
            healthy_shards: 0,
            missing_shards: Vec::new(),
            queued_unix_ms,
            damaged_shards: damaged,
            moves,
            moving_shards: Vec::new(),
            shard_bytes: b.accounted_shard_bytes,
        };
        let health = rules::shard_health(&self.map, b, Some(&task));
        if health.is_empty() {
            return Ok(false);
        }
        task.healthy_shards = (b.placement.len() - health.lost.len()) as u32;
        task.missing_shards = health.lost.iter().chain(&health.moving).copied().collect();
        task.missing_shards.sort_unstable();
        task.moving_shards = health.moving;
        self.put(&keys::repair(task.healthy_shards, b.id), &task);
        self.put_raw(
            &keys::repair_by_bundle(b.id),
            &binary::encode_u32(task.healthy_shards),
        );
        self.map.cluster.repairs = counted(self.map.cluster.repairs, true, "repair entries");
        Ok(true)
    }

    /// Recomputes the repair entries of every bundle with a shard on these disks (after a disk
    /// or node changed state).
    pub(super) fn requeue_disks(&mut self, disks: &[u64], now_ms: u64) -> Result<u64> {
        // Each bundle once: reads see the store, not this batch, so a second recomputation of
        // the same bundle would unqueue its old entry (and count it) twice.
        let mut bundles = BTreeSet::new();
        for disk in disks {
            let (shards, _) = self.store.list_disk_bundles(*disk, &[], usize::MAX)?;
            bundles.extend(shards.into_iter().map(|(id, _)| id));
        }
        let mut queued = 0;
        for id in bundles {
            let Some(b) = self.bundle(id)? else {
                continue;
            };
            let task = self.repair_task(id)?;
            let (damaged, moves, since) = Self::task_parts(task.as_ref(), now_ms);
            if self.set_repair(&b, damaged, moves, since)? {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Takes a bundle's entry out of the repair queue, if it has one.
    pub(super) fn unqueue_repair(&mut self, id: BundleId) -> Result<()> {
        if let Some(v) = self.get_raw(&keys::repair_by_bundle(id))? {
            let healthy = binary::decode_u32(&v, "repair entry of a bundle")?;
            self.del(&keys::repair(healthy, id));
            self.del(&keys::repair_by_bundle(id));
            self.map.cluster.repairs = counted(self.map.cluster.repairs, false, "repair entries");
        }
        Ok(())
    }
}
