//! Rebalance: moves from disks fuller than the cluster's mean to emptier ones, within a byte
//! budget, each target in a failure domain no other shard of the bundle uses. The moves are
//! queued through Raft (`Command::QueueMoves`, applied only if the placement generation is
//! unchanged) and carried out by the repair workers as copies.
//!
//! [`RebalancePlanner`] decides (pure: the cluster map and the shards offered to it);
//! [`MetaServer::rebalance_now`] pages through each source disk's shards and proposes.

use std::collections::{BTreeMap, BTreeSet};

use bitmountain_proto::v1 as pb;

use super::{MAX_REBALANCE_MOVES, MOVES_PER_COMMAND};
use crate::command::{Applied, Command};
use crate::error::{MetaError, Result};
use crate::rules;
use crate::server::MetaServer;
use crate::state::{ClusterMap, KeyReader};
use crate::types::{now_unix_ms, BundleId, BundleRecord, BundleState, DomainLevel};

/// A move the planner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// Bundle.
    pub bundle_id: BundleId,
    /// Shard index.
    pub shard: u32,
    /// From.
    pub from_disk: u64,
    /// To.
    pub to_disk: u64,
    /// Shard bytes moved.
    pub bytes: u64,
    /// The placement generation it was planned against.
    pub generation: u64,
}

/// What the planner makes of one offered shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Planned.
    Planned,
    /// Not moved (not sealed, already moving, queued for repair, no target).
    Skipped,
    /// The source would fall below the mean: go on with the next source.
    SourceDone,
    /// The budget or the move limit is reached: stop.
    Stop,
}

/// Plans one rebalance.
#[derive(Debug)]
pub struct RebalancePlanner<'a> {
    map: &'a ClusterMap,
    level: DomainLevel,
    budget_bytes: u64,
    /// (placed bytes, capacity) of each usable disk, as the planned moves leave it.
    fill: BTreeMap<u64, (u64, u64)>,
    mean: f64,
    moved_bytes: u64,
    planned_bundles: BTreeSet<BundleId>,
    planned: Vec<PlannedMove>,
}

fn ratio((used, capacity): (u64, u64)) -> f64 {
    used as f64 / capacity as f64
}

impl<'a> RebalancePlanner<'a> {
    /// A planner over the usable disks with capacity (none: nothing to balance).
    pub fn new(map: &'a ClusterMap, level: DomainLevel, budget_bytes: u64) -> Option<Self> {
        let fill: BTreeMap<u64, (u64, u64)> = map
            .disks
            .keys()
            .filter_map(|id| rules::usable_disk(map, *id))
            .filter(|d| d.capacity_bytes > 0)
            .map(|d| (d.id, (d.accounted_bytes, d.capacity_bytes)))
            .collect();
        let total_used: u64 = fill.values().map(|(u, _)| *u).sum();
        let total_cap: u64 = fill.values().map(|(_, c)| *c).sum();
        if total_cap == 0 {
            return None;
        }
        Some(Self {
            map,
            level,
            budget_bytes,
            fill,
            mean: total_used as f64 / total_cap as f64,
            moved_bytes: 0,
            planned_bundles: BTreeSet::new(),
            planned: Vec::new(),
        })
    }

    /// Disks fuller than the mean, fullest first.
    pub fn sources(&self) -> Vec<u64> {
        let mut sources: Vec<u64> = self
            .fill
            .iter()
            .filter(|(_, f)| ratio(**f) > self.mean)
            .map(|(id, _)| *id)
            .collect();
        sources.sort_by(|a, b| ratio(self.fill[b]).total_cmp(&ratio(self.fill[a])));
        sources
    }

    /// Offers shard `shard` of `b` on the source disk `src`; `queued_for_repair` says whether
    /// the bundle has a repair entry (asked only when it matters).
    pub fn offer(
        &mut self,
        src: u64,
        b: &BundleRecord,
        shard: u32,
        queued_for_repair: impl FnOnce() -> Result<bool>,
    ) -> Result<Offer> {
        if self.planned.len() >= MAX_REBALANCE_MOVES {
            return Ok(Offer::Stop);
        }
        let bytes = b.accounted_shard_bytes;
        if b.state != BundleState::Sealed
            || self.planned_bundles.contains(&b.id)
            || queued_for_repair()?
            || bytes == 0
        {
            return Ok(Offer::Skipped);
        }
        if self.moved_bytes.saturating_add(bytes) > self.budget_bytes {
            return Ok(Offer::Stop);
        }
        let Some(&(su, sc)) = self.fill.get(&src) else {
            return Ok(Offer::SourceDone);
        };
        let src_after = ratio((su.saturating_sub(bytes), sc));
        // Stop taking from this disk once it would fall below the mean.
        if src_after < self.mean {
            return Ok(Offer::SourceDone);
        }
        let used = rules::domains_in_use(self.map, &b.placement, self.level, |j| j == shard);
        let mean = self.mean;
        let target = self
            .fill
            .iter()
            .filter(|(d, f)| {
                let after = ratio((f.0 + bytes, f.1));
                !b.placement.contains(*d)
                    && after <= mean.max(ratio(**f))
                    && after < src_after
                    && rules::domain_of_disk(self.map, **d, self.level)
                        .is_some_and(|dom| !used.contains(&dom))
            })
            .min_by(|a, b| ratio(*a.1).total_cmp(&ratio(*b.1)))
            .map(|(d, _)| *d);
        let Some(to) = target else {
            return Ok(Offer::Skipped);
        };
        if let Some(f) = self.fill.get_mut(&src) {
            f.0 = f.0.saturating_sub(bytes);
        }
        if let Some(f) = self.fill.get_mut(&to) {
            f.0 += bytes;
        }
        self.moved_bytes += bytes;
        self.planned_bundles.insert(b.id);
        self.planned.push(PlannedMove {
            bundle_id: b.id,
            shard,
            from_disk: src,
            to_disk: to,
            bytes,
            generation: b.placement_generation,
        });
        Ok(Offer::Planned)
    }

    /// The moves planned and their bytes.
    pub fn finish(self) -> (Vec<PlannedMove>, u64) {
        (self.planned, self.moved_bytes)
    }
}

impl MetaServer {
    /// Plans a rebalance ([`RebalancePlanner`]) and queues its moves unless `dry_run`.
    pub(crate) async fn rebalance_now(
        &self,
        req: pb::RebalanceRequest,
    ) -> Result<pb::RebalanceResponse> {
        self.require_leader()?;
        let map = self.inner.store.map().clone();
        let budget = if req.max_bytes == 0 {
            u64::MAX
        } else {
            req.max_bytes
        };
        let Some(mut planner) = RebalancePlanner::new(&map, self.inner.cfg.domain_level, budget)
        else {
            return Ok(pb::RebalanceResponse::default());
        };
        let store = &self.inner.store;
        'sources: for src in planner.sources() {
            let mut token = Vec::new();
            loop {
                let (shards, next) = store.list_disk_bundles(src, &token, 512)?;
                for (id, s) in shards {
                    let Some(b) = store.bundle(id)? else {
                        continue;
                    };
                    let queued = || Ok(store.repair_task(id)?.is_some());
                    match planner.offer(src, &b, s, queued)? {
                        Offer::Planned | Offer::Skipped => {}
                        Offer::SourceDone => continue 'sources,
                        Offer::Stop => break 'sources,
                    }
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        let (planned, moved_bytes) = planner.finish();
        if !req.dry_run {
            for chunk in planned.chunks(MOVES_PER_COMMAND) {
                let cmd = Command::QueueMoves {
                    moves: chunk
                        .iter()
                        .map(|m| (m.bundle_id, m.shard, m.to_disk, m.generation))
                        .collect(),
                    now_ms: now_unix_ms(),
                };
                match self.propose(cmd).await? {
                    Applied::MovesQueued(_) => {}
                    other => {
                        return Err(MetaError::Corrupt {
                            what: format!("unexpected apply result {other:?}"),
                        })
                    }
                }
            }
        }
        Ok(pb::RebalanceResponse {
            moves: planned
                .iter()
                .map(|m| pb::PlannedMove {
                    bundle_id: Some(m.bundle_id.to_proto()),
                    shard_index: m.shard,
                    from_disk_id: m.from_disk,
                    to_disk_id: m.to_disk,
                    bytes: m.bytes,
                })
                .collect(),
            bytes: moved_bytes,
            queued: !req.dry_run,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rules::tests::{bundle, map};
    use crate::types::{DiskState, NodeState};

    /// Disk 10 holds 600 of its 1,000 bytes, 20 to 40 hold 200 (mean 0.24); a fifth node (disk
    /// 50, host node-5) is empty.
    fn unbalanced() -> ClusterMap {
        let mut m = map();
        for d in m.disks.values_mut() {
            d.capacity_bytes = 1_000;
            d.accounted_bytes = 200;
        }
        m.disks.get_mut(&10).unwrap().accounted_bytes = 600;
        let mut node = m.nodes[&1].clone();
        node.id = 5;
        node.host = "node-5".into();
        m.nodes.insert(5, node);
        let mut disk = m.disks[&20].clone();
        disk.id = 50;
        disk.node_id = 5;
        disk.accounted_bytes = 0;
        m.disks.insert(50, disk);
        m
    }

    fn sealed(id: u128, bytes: u64) -> BundleRecord {
        BundleRecord {
            id: BundleId(id),
            accounted_shard_bytes: bytes,
            ..bundle()
        }
    }

    fn no() -> Result<bool> {
        Ok(false)
    }

    #[test]
    fn moves_go_from_the_fullest_disk_to_the_emptiest_free_domain() {
        let m = unbalanced();
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).unwrap();
        assert_eq!(p.sources(), vec![10]);
        assert_eq!(p.offer(10, &sealed(1, 100), 0, no).unwrap(), Offer::Planned);
        // The same bundle is not moved twice in one plan.
        assert_eq!(p.offer(10, &sealed(1, 100), 0, no).unwrap(), Offer::Skipped);
        assert_eq!(p.offer(10, &sealed(2, 100), 0, no).unwrap(), Offer::Planned);
        let (moves, bytes) = p.finish();
        assert_eq!(bytes, 200);
        // Disk 50 is the only disk in a domain the bundle does not use.
        assert!(moves.iter().all(|m| m.to_disk == 50 && m.from_disk == 10));
    }

    #[test]
    fn a_source_stops_at_the_mean_and_the_budget_stops_the_plan() {
        let m = unbalanced();
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).unwrap();
        // Taking 400 bytes would leave disk 10 at 0.2, below the mean of 0.24.
        assert_eq!(
            p.offer(10, &sealed(1, 400), 0, no).unwrap(),
            Offer::SourceDone
        );
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, 150).unwrap();
        assert_eq!(p.offer(10, &sealed(1, 100), 0, no).unwrap(), Offer::Planned);
        assert_eq!(p.offer(10, &sealed(2, 100), 0, no).unwrap(), Offer::Stop);
    }

    #[test]
    fn bundles_that_are_not_sealed_or_are_queued_for_repair_stay() {
        let m = unbalanced();
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).unwrap();
        let mut pending = sealed(1, 100);
        pending.state = BundleState::Pending;
        assert_eq!(p.offer(10, &pending, 0, no).unwrap(), Offer::Skipped);
        assert_eq!(
            p.offer(10, &sealed(2, 100), 0, || Ok(true)).unwrap(),
            Offer::Skipped
        );
        assert!(p.finish().0.is_empty());
    }

    #[test]
    fn no_target_in_a_used_domain_or_on_an_unusable_disk() {
        let mut m = unbalanced();
        // Node 5 down: no disk left in a free domain.
        m.nodes.get_mut(&5).unwrap().state = NodeState::Down;
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).unwrap();
        assert_eq!(p.offer(10, &sealed(1, 100), 0, no).unwrap(), Offer::Skipped);
        // A draining disk is no target either.
        let mut m = unbalanced();
        m.disks.get_mut(&50).unwrap().state = DiskState::Draining;
        let mut p = RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).unwrap();
        assert_eq!(p.offer(10, &sealed(1, 100), 0, no).unwrap(), Offer::Skipped);
        // Nothing usable at all: nothing to plan.
        let mut m = unbalanced();
        m.disks.values_mut().for_each(|d| d.capacity_bytes = 0);
        assert!(RebalancePlanner::new(&m, DomainLevel::Host, u64::MAX).is_none());
    }
}
