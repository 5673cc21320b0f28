//! Placement changes: a repair's or a move's compare-and-set of a bundle's placement, and the
//! moves a rebalance plans.

use super::{no_such_shard, Applier};
use crate::codec;
use crate::command::{Applied, ApplyResult};
use crate::error::Field;
use crate::error::MetaError;
use crate::keys;
use crate::rules;
use crate::state::KeyReader;
use crate::types::{Agent, AuditAction, BundleId, BundleState, NewEvent, Outcome};

impl Applier<'_> {
    /// Compare-and-set of a bundle's placement on its generation; the shards it changes or
    /// rewrites leave the repair entry.
    pub(crate) fn update_placement(
        &mut self,
        id: BundleId,
        expected_generation: u64,
        placement: Vec<u64>,
        now_ms: u64,
        rewritten_shards: Vec<u32>,
        agent: Agent,
    ) -> ApplyResult {
        let mut b = self.known_bundle(id)?;
        if b.placement_generation != expected_generation {
            if b.placement_generation == expected_generation + 1 && b.placement == placement {
                return Ok(Applied::Bundle(b)); // a retry of the change that won
            }
            return Err(MetaError::WrongGeneration {
                id,
                expected: expected_generation,
                actual: b.placement_generation,
            });
        }
        if b.state == BundleState::Deleting {
            return Err(MetaError::WrongState {
                id,
                state: b.state,
                hint: "the bundle was deleted".into(),
            });
        }
        if let Some(reason) = rules::placement_shape_error(&self.map, &b, &placement) {
            return Err(MetaError::MalformedPlacement { id, reason });
        }
        if let Some(bad) = rewritten_shards
            .iter()
            .find(|s| **s as usize >= b.code.total())
        {
            return Err(no_such_shard(Field::RewrittenShards, *bad, &b));
        }
        let mut done: Vec<u32> = rewritten_shards;
        let mut changes = Vec::new();
        for (i, (old, new)) in b.placement.clone().iter().zip(&placement).enumerate() {
            if old != new {
                done.push(i as u32);
                changes.push(format!("shard {i}: disk {old} → {new}"));
                self.del(&keys::disk_bundle(*old, id));
                self.put_raw(
                    &keys::disk_bundle(*new, id),
                    &codec::binary::encode_u32(i as u32),
                );
                self.charge(*old, b.accounted_shard_bytes, false);
                self.charge(*new, b.accounted_shard_bytes, true);
            }
        }
        b.placement = placement;
        b.placement_generation += 1;
        self.put_bundle(&b);
        done.sort_unstable();
        done.dedup();
        let cluster = &mut self.map.cluster;
        cluster.shards_repaired += done.len() as u64;
        cluster.bytes_repaired = cluster
            .bytes_repaired
            .checked_add(done.len() as u64 * b.accounted_shard_bytes)
            .unwrap_or_else(|| panic!("bytes repaired overflow a u64"));
        let task = self.repair_task(id)?;
        let (mut damaged, mut moves, since) = Self::task_parts(task.as_ref(), now_ms);
        // Rebuilt shards were damaged or lost (PREMIS replication); the rest were moved.
        let rebuilt: Vec<u32> = done
            .iter()
            .copied()
            .filter(|s| !moves.contains_key(s))
            .collect();
        let action = if rebuilt.is_empty() {
            AuditAction::Transfer
        } else {
            AuditAction::Replication
        };
        let detail = format!(
            "shards {done:?} written ({} rebuilt); {}",
            rebuilt.len(),
            if changes.is_empty() {
                "rewritten in place".to_owned()
            } else {
                changes.join(", ")
            }
        );
        damaged.retain(|s| !done.contains(s));
        moves.retain(|s, _| !done.contains(s));
        self.set_repair(&b, damaged, moves, since)?;
        let event = NewEvent::bundle(now_ms, agent, action, id, Outcome::Success, detail);
        self.audit(event, "");
        Ok(Applied::Bundle(b))
    }

    /// Queues the moves a rebalance planned; each applies only if its bundle's placement
    /// generation is still the one it was planned against and its target still takes shards.
    pub(crate) fn queue_moves(
        &mut self,
        moves: Vec<(BundleId, u32, u64, u64)>,
        now_ms: u64,
    ) -> ApplyResult {
        let mut queued = 0;
        for (id, shard, to_disk, generation) in moves {
            let Some(b) = self.bundle(id)? else {
                continue;
            };
            let target_ok = self
                .map
                .disks
                .get(&to_disk)
                .is_some_and(rules::disk_takes_shards);
            if b.state != BundleState::Sealed
                || b.placement_generation != generation
                || shard as usize >= b.placement.len()
                || b.placement.contains(&to_disk)
                || !target_ok
            {
                continue;
            }
            let task = self.repair_task(id)?;
            let (damaged, mut moved, since) = Self::task_parts(task.as_ref(), now_ms);
            moved.insert(shard, to_disk);
            self.set_repair(&b, damaged, moved, since)?;
            queued += 1;
        }
        Ok(Applied::MovesQueued(queued))
    }
}
