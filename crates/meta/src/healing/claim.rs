//! Repair claims: a node's repair worker asks for work and the leader hands it repairs, most
//! endangered first, each shard to a disk *of that node* that keeps every shard of the bundle
//! in its own failure domain, and leases (bundle, shard) to it.
//!
//! [`ClaimPlanner`] decides (pure: the cluster map, the queue in its order, the leases, a
//! clock reading); [`MetaServer::claim`] pages through the queue and answers.
//!
//! For each shard a bundle needs (`rules::shard_health`), in order:
//! - not leased to a worker already (a leased shard's target domain counts as taken);
//! - lost but on a disk that is usable (found damaged by a reader or the scrubber): rewritten
//!   in place, only by the node that holds it;
//! - a planned move (rebalance): to its planned disk, only by the node that owns that disk;
//! - otherwise: onto the claimer's emptiest usable disk not in the placement, unless the
//!   claimer's domain already holds a live shard of the bundle (or a leased target).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bitmountain_proto::v1 as pb;

use super::{lock, Lease, Leases, CLAIM_SCAN_TASKS, MAX_CLAIM, RATE_SAMPLES};
use crate::error::{MetaError, Result};
use crate::rules;
use crate::server::MetaServer;
use crate::state::{ClusterMap, KeyReader};
use crate::types::{
    BundleId, BundleRecord, BundleState, DiskRecord, DomainLevel, NodeState, RepairSettings,
    RepairTask,
};

/// One shard a worker is to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Shard index.
    pub shard: u32,
    /// Disk to write it to (on the claiming node).
    pub disk_id: u64,
    /// Disk the placement names for it now.
    pub from_disk_id: u64,
    /// Whether the shard is copied from its healthy copy (a move) rather than rebuilt.
    pub copy: bool,
}

/// The shards of one bundle handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Bundle.
    pub bundle_id: BundleId,
    /// The placement generation the worker's compare-and-set expects.
    pub placement_generation: u64,
    /// Its shards.
    pub targets: Vec<Target>,
    /// The bundle's shards without a healthy copy (never read as sources).
    pub lost_shards: Vec<u32>,
}

/// Renews the leases of `node_id` on bundles its worker still runs, drops expired leases, and
/// returns how many leases the node holds.
pub fn renew_leases(
    leases: &mut Leases,
    node_id: u64,
    running: &BTreeSet<BundleId>,
    now: Instant,
    lease_for: Duration,
) -> usize {
    leases.retain(|_, l| l.until > now);
    for ((bundle, _), lease) in leases.iter_mut() {
        if lease.node_id == node_id && running.contains(bundle) {
            lease.until = now + lease_for;
        }
    }
    leases.values().filter(|l| l.node_id == node_id).count()
}

/// How many more bundles a node may take: its throttle less what it holds, at most what it
/// asked for and [`MAX_CLAIM`].
pub fn room(settings: &RepairSettings, held: usize, asked: u32) -> usize {
    (settings.max_repairs_per_node as usize)
        .saturating_sub(held)
        .min(asked as usize)
        .min(MAX_CLAIM)
}

/// Decides one claim of one node, entry by entry in queue order.
#[derive(Debug)]
pub struct ClaimPlanner<'a> {
    map: &'a ClusterMap,
    level: DomainLevel,
    node_id: u64,
    domain: String,
    /// The claimer's disks that take shards.
    disks: Vec<&'a DiskRecord>,
    room: usize,
    now: Instant,
    lease_for: Duration,
}

impl<'a> ClaimPlanner<'a> {
    /// A planner for `node_id`, or `None` if it may take nothing now (no room, repairs
    /// paused, the node not up). An unknown node is an error.
    pub fn new(
        map: &'a ClusterMap,
        level: DomainLevel,
        node_id: u64,
        room: usize,
        paused: bool,
        now: Instant,
        lease_for: Duration,
    ) -> Result<Option<Self>> {
        let claimer = map
            .nodes
            .get(&node_id)
            .ok_or(MetaError::UnknownNode { id: node_id })?;
        if room == 0 || paused || claimer.state != NodeState::Up {
            return Ok(None);
        }
        let disks = map
            .disks
            .values()
            .filter(|d| d.node_id == node_id && rules::disk_takes_shards(d))
            .collect();
        Ok(Some(Self {
            map,
            level,
            node_id,
            domain: claimer.domain(level),
            disks,
            room,
            now,
            lease_for,
        }))
    }

    /// Whether the node's room is used up.
    pub fn is_full(&self) -> bool {
        self.room == 0
    }

    /// Offers the queue entry `task` of bundle `b`: the shards the claimer may write, leased
    /// to it in `leases`, or `None`.
    pub fn offer(
        &mut self,
        task: &RepairTask,
        b: &BundleRecord,
        leases: &mut Leases,
    ) -> Option<Assignment> {
        if self.is_full() || b.state != BundleState::Sealed {
            return None;
        }
        let health = rules::shard_health(self.map, b, Some(task));
        let leased: BTreeMap<u32, String> = leases
            .iter()
            .filter(|((id, _), l)| *id == b.id && l.until > self.now)
            .map(|((_, s), l)| (*s, l.domain.clone()))
            .collect();
        let mut taken: BTreeSet<String> = leased.values().cloned().collect();
        let mut targets = Vec::new();
        for &s in health.lost.iter().chain(&health.moving) {
            if leased.contains_key(&s) {
                continue;
            }
            let Some((disk_id, copy)) = self.target(task, b, s, &health, &taken) else {
                continue;
            };
            taken.insert(self.domain.clone());
            leases.insert(
                (b.id, s),
                Lease {
                    node_id: self.node_id,
                    domain: self.domain.clone(),
                    since: self.now,
                    until: self.now + self.lease_for,
                },
            );
            targets.push(Target {
                shard: s,
                disk_id,
                from_disk_id: b.placement[s as usize],
                copy,
            });
        }
        if targets.is_empty() {
            return None;
        }
        self.room -= 1;
        Some(Assignment {
            bundle_id: b.id,
            placement_generation: b.placement_generation,
            targets,
            lost_shards: health.lost,
        })
    }

    /// Where the claimer would write shard `s`, and whether as a copy.
    fn target(
        &self,
        task: &RepairTask,
        b: &BundleRecord,
        s: u32,
        health: &rules::ShardHealth,
        taken: &BTreeSet<String>,
    ) -> Option<(u64, bool)> {
        let lost = health.is_lost(s);
        let current = b.placement[s as usize];
        if lost {
            if let Some(disk) = rules::usable_disk(self.map, current) {
                // Damaged on a healthy disk: rewritten in place by the node holding it.
                return (disk.node_id == self.node_id).then_some((disk.id, false));
            }
        }
        if let Some(&to) = task.moves.get(&s) {
            return self
                .disks
                .iter()
                .find(|d| d.id == to && !b.placement.contains(&to))
                .map(|d| (d.id, !lost));
        }
        let used = rules::domains_in_use(self.map, &b.placement, self.level, |j| {
            j == s || health.is_lost(j)
        });
        if used.contains(&self.domain) || taken.contains(&self.domain) {
            return None;
        }
        self.disks
            .iter()
            .filter(|d| !b.placement.contains(&d.id))
            .max_by_key(|d| d.capacity_bytes.saturating_sub(d.accounted_bytes))
            .map(|d| (d.id, !lost))
    }
}

impl MetaServer {
    /// Hands repairs to the worker of `req.node_id` ([`ClaimPlanner`] decides).
    pub(crate) fn claim(&self, req: pb::ClaimRepairsRequest) -> Result<pb::ClaimRepairsResponse> {
        self.require_leader()?;
        let now = Instant::now();
        let lease_for = Duration::from_millis(self.inner.cfg.repair_lease_ms);
        let settings = self.inner.store.map().cluster.repair_settings;
        let running: BTreeSet<BundleId> = req
            .running
            .iter()
            .filter_map(|id| BundleId::from_proto(Some(id)).ok())
            .collect();
        let held = renew_leases(
            &mut lock(&self.inner.healing.leases),
            req.node_id,
            &running,
            now,
            lease_for,
        );
        let room = room(&settings, held, req.max);
        let map = self.inner.store.map().clone();
        let level = self.inner.cfg.domain_level;
        let mut out = Vec::new();
        let planner = ClaimPlanner::new(
            &map,
            level,
            req.node_id,
            room,
            settings.paused,
            now,
            lease_for,
        )?;
        if let Some(mut planner) = planner {
            let mut token = Vec::new();
            let mut scanned = 0;
            while !planner.is_full() && scanned < CLAIM_SCAN_TASKS {
                let (tasks, next) = self.inner.store.list_repairs(&token, 256)?;
                scanned += tasks.len();
                for task in tasks {
                    let Some(b) = self.inner.store.bundle(task.bundle_id)? else {
                        continue;
                    };
                    let mut leases = lock(&self.inner.healing.leases);
                    out.extend(planner.offer(&task, &b, &mut leases));
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        Ok(pb::ClaimRepairsResponse {
            repairs: out.into_iter().map(assignment_proto).collect(),
            settings: Some(settings.to_proto()),
            lease_ms: self.inner.cfg.repair_lease_ms,
        })
    }

    /// A worker is done with (bundle, shards): the leases go; a success counts for the rate.
    pub(crate) fn finish(&self, req: pb::FinishRepairRequest) -> Result<()> {
        let id = BundleId::from_proto(req.bundle_id.as_ref())?;
        let now = Instant::now();
        let mut started = now;
        {
            let mut leases = lock(&self.inner.healing.leases);
            for s in &req.shard_indexes {
                // Only this worker's own lease goes (another may hold the shard by now).
                if let Entry::Occupied(lease) = leases.entry((id, *s)) {
                    if lease.get().node_id == req.node_id {
                        started = started.min(lease.remove().since);
                    }
                }
            }
        }
        if req.ok {
            let mut finished = lock(&self.inner.healing.finished);
            finished.push_back(super::Finished {
                started,
                ended: now,
                bytes: req.bytes_written,
            });
            while finished.len() > RATE_SAMPLES {
                finished.pop_front();
            }
        } else {
            tracing::warn!(bundle = %id, node = req.node_id, shards = ?req.shard_indexes, error = %req.error, "repair failed; it will be offered again");
        }
        Ok(())
    }
}

fn assignment_proto(a: Assignment) -> pb::RepairAssignment {
    pb::RepairAssignment {
        bundle_id: Some(a.bundle_id.to_proto()),
        placement_generation: a.placement_generation,
        targets: a
            .targets
            .into_iter()
            .map(|t| pb::RepairTarget {
                shard_index: t.shard,
                disk_id: t.disk_id,
                from_disk_id: t.from_disk_id,
                copy: t.copy,
            })
            .collect(),
        lost_shards: a.lost_shards,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::rules::tests::{bundle, map};
    use crate::types::{DiskState, NodeRecord};

    const LEASE: Duration = Duration::from_secs(60);

    /// Six nodes `1..=6`, one disk each (`10`..`60`), one host each, two per zone; the bundle
    /// sits on disks 10..40, so nodes 5 and 6 (zone z3) hold none of its shards.
    fn six() -> ClusterMap {
        let mut m = map();
        for n in 5..=6u64 {
            let mut node = m.nodes[&1].clone();
            node.id = n;
            node.host = format!("node-{n}");
            node.zone = format!("z{}", n.div_ceil(2));
            m.nodes.insert(n, node);
            let mut disk = m.disks[&10].clone();
            disk.id = n * 10;
            disk.node_id = n;
            m.disks.insert(n * 10, disk);
        }
        m
    }

    fn task(b: &BundleRecord, damaged: Vec<u32>, moves: &[(u32, u64)]) -> RepairTask {
        RepairTask {
            bundle_id: b.id,
            healthy_shards: 0,
            missing_shards: vec![],
            queued_unix_ms: 0,
            damaged_shards: damaged,
            moves: moves.iter().copied().collect(),
            moving_shards: vec![],
            shard_bytes: b.accounted_shard_bytes,
        }
    }

    fn planner(m: &ClusterMap, node: u64, room: usize, now: Instant) -> ClaimPlanner<'_> {
        ClaimPlanner::new(m, DomainLevel::Host, node, room, false, now, LEASE)
            .unwrap()
            .unwrap()
    }

    fn shards(a: &Option<Assignment>) -> Vec<(u32, u64, bool)> {
        a.iter()
            .flat_map(|a| a.targets.iter().map(|t| (t.shard, t.disk_id, t.copy)))
            .collect()
    }

    #[test]
    fn a_lost_shard_goes_to_a_claimer_in_a_free_domain_only() {
        let mut m = six();
        m.disks.get_mut(&20).unwrap().state = DiskState::Failed;
        let b = bundle();
        let t = task(&b, vec![], &[]);
        let now = Instant::now();
        let mut leases = Leases::new();
        // Node 3 holds shard 2: its host is in use.
        assert_eq!(planner(&m, 3, 4, now).offer(&t, &b, &mut leases), None);
        // Node 2 holds the lost shard itself: its disk failed, the host is free again, but
        // its only disk does not take shards.
        assert_eq!(planner(&m, 2, 4, now).offer(&t, &b, &mut leases), None);
        let a = planner(&m, 5, 4, now).offer(&t, &b, &mut leases);
        assert_eq!(shards(&a), vec![(1, 50, false)]);
        assert_eq!(a.unwrap().targets[0].from_disk_id, 20);
        assert_eq!(leases[&(b.id, 1)].node_id, 5);
        // Leased: node 6 gets nothing for it.
        assert_eq!(planner(&m, 6, 4, now).offer(&t, &b, &mut leases), None);
        // At zone level, node 5 (zone z3) shares no zone with shards 0, 2, 3 (z1, z2, z2).
        let mut leases = Leases::new();
        let mut zone = ClaimPlanner::new(&m, DomainLevel::Zone, 5, 4, false, now, LEASE)
            .unwrap()
            .unwrap();
        assert_eq!(
            shards(&zone.offer(&t, &b, &mut leases)),
            vec![(1, 50, false)]
        );
    }

    #[test]
    fn expired_leases_are_offered_again_and_running_ones_renewed() {
        let mut m = six();
        m.disks.get_mut(&20).unwrap().state = DiskState::Failed;
        let b = bundle();
        let t = task(&b, vec![], &[]);
        let now = Instant::now();
        let mut leases = Leases::new();
        assert!(planner(&m, 5, 4, now).offer(&t, &b, &mut leases).is_some());
        let later = now + LEASE + Duration::from_secs(1);
        let a = planner(&m, 6, 4, later).offer(&t, &b, &mut leases);
        assert_eq!(shards(&a), vec![(1, 60, false)]);
        // Node 6 runs it: renewed; node 5's lease is gone and it holds nothing.
        let running = BTreeSet::from([b.id]);
        assert_eq!(renew_leases(&mut leases, 6, &running, later, LEASE), 1);
        assert_eq!(renew_leases(&mut leases, 5, &running, later, LEASE), 0);
        assert_eq!(leases[&(b.id, 1)].until, later + LEASE);
    }

    /// A damaged shard on a healthy disk is rewritten in place by the node holding it; a
    /// planned move is copied to its disk by the node owning that disk. Nobody else gets them.
    #[test]
    fn in_place_rewrites_and_planned_moves_go_to_their_one_node() {
        let m = six();
        let b = bundle();
        // (damaged shards, planned moves, the node that gets it, its target).
        type Case = (Vec<u32>, &'static [(u32, u64)], u64, (u32, u64, bool));
        let cases: [Case; 2] = [
            (vec![2], &[], 3, (2, 30, false)),
            (vec![], &[(0, 60)], 6, (0, 60, true)),
        ];
        for (damaged, moves, node, target) in cases {
            let t = task(&b, damaged, moves);
            let now = Instant::now();
            let mut leases = Leases::new();
            assert_eq!(planner(&m, 5, 4, now).offer(&t, &b, &mut leases), None);
            let a = planner(&m, node, 4, now).offer(&t, &b, &mut leases);
            assert_eq!(shards(&a), vec![target]);
        }
    }

    #[test]
    fn the_most_endangered_bundle_in_queue_order_is_served_first() {
        let mut m = six();
        m.disks.get_mut(&20).unwrap().state = DiskState::Failed;
        let one_lost = bundle();
        let mut two_lost = bundle();
        two_lost.id = BundleId(8);
        two_lost.placement = vec![10, 20, 30, 40];
        m.nodes.insert(
            7,
            NodeRecord {
                id: 7,
                host: "node-7".into(),
                ..m.nodes[&1].clone()
            },
        );
        let mut disk = m.disks[&30].clone();
        disk.id = 70;
        disk.node_id = 7;
        disk.state = DiskState::Failed;
        m.disks.insert(70, disk);
        two_lost.placement[2] = 70;
        let mut queue = vec![
            (task(&one_lost, vec![], &[]), one_lost.clone()),
            (task(&two_lost, vec![], &[]), two_lost.clone()),
        ];
        for (t, b) in &mut queue {
            t.healthy_shards = 4 - rules::shard_health(&m, b, Some(t)).lost.len() as u32;
        }
        // The queue's key order: fewest healthy shards first.
        queue.sort_by_key(|(t, _)| keys::repair(t.healthy_shards, t.bundle_id));
        let now = Instant::now();
        let mut leases = Leases::new();
        let mut p = planner(&m, 5, 1, now);
        let served: Vec<_> = queue
            .iter()
            .filter_map(|(t, b)| p.offer(t, b, &mut leases))
            .collect();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].bundle_id, two_lost.id);
        assert!(p.is_full());
    }

    #[test]
    fn claims_are_refused_when_paused_throttled_or_down() {
        let mut m = six();
        fn new(
            m: &ClusterMap,
            node: u64,
            room: usize,
            paused: bool,
        ) -> Result<Option<ClaimPlanner<'_>>> {
            ClaimPlanner::new(
                m,
                DomainLevel::Host,
                node,
                room,
                paused,
                Instant::now(),
                LEASE,
            )
        }
        assert!(new(&m, 5, 0, false).unwrap().is_none());
        assert!(new(&m, 5, 1, true).unwrap().is_none());
        assert!(matches!(
            new(&m, 99, 1, false),
            Err(MetaError::UnknownNode { id: 99 })
        ));
        m.nodes.get_mut(&5).unwrap().state = NodeState::Draining;
        assert!(new(&m, 5, 1, false).unwrap().is_none());
        let settings = RepairSettings {
            max_repairs_per_node: 4,
            ..RepairSettings::default()
        };
        assert_eq!(room(&settings, 1, 10), 3);
        assert_eq!(room(&settings, 5, 10), 0);
        assert_eq!(room(&settings, 0, 2), 2);
    }
}
