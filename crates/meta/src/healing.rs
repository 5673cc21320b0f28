//! Self-healing on the leader: the failure detector, repair leases, repair status and
//! rebalance planning.
//!
//! Decisions (a node is down or back, a disk failed, moves to queue, throttles) go through Raft;
//! who works on which repair is leader soft state. A repair worker on a storage node claims work
//! ([`MetaServer::claim`]): the leader picks the most endangered queued bundles, chooses for
//! each shard to fix a target disk *on the claiming node* that keeps every shard of the bundle
//! in its own failure domain, and leases (bundle, shard) to that node. The worker's placement
//! change is a compare-and-set on the generation, so a lease lost in a leader change or a worker
//! that dies costs only duplicated work, never a repair applied twice: the loser's shard file is
//! a stale copy that garbage collection deletes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitmountain_proto::v1 as pb;

use crate::error::{MetaError, Result};
use crate::service::MetaServer;
use crate::state::{shard_health, Applied, ClusterMap, Command, KeyReader};
use crate::types::{now_unix_ms, BundleId, BundleRecord, BundleState, DiskState, NodeState};

/// Default: a node silent this long is declared down.
pub const DEFAULT_NODE_DOWN_GRACE_MS: u64 = 30_000;
/// Default: an assignment not renewed for this long is offered to another worker.
pub const DEFAULT_REPAIR_LEASE_MS: u64 = 60_000;
/// How often the leader's failure detector looks at the heartbeats.
pub const DETECTOR_INTERVAL_MS: u64 = 250;
/// Queue entries one claim looks at, from the most endangered.
pub const CLAIM_SCAN_TASKS: usize = 2_000;
/// Most assignments one claim returns.
pub const MAX_CLAIM: usize = 64;
/// Queue entries `repair status` counts (beyond this the figures are lower bounds).
pub const STATUS_SCAN_TASKS: usize = 1_000_000;
/// Finished repairs remembered for the repair rate.
pub const RATE_WINDOW_MS: u64 = 60_000;
/// Most finished repairs remembered for the rate.
pub const RATE_SAMPLES: usize = 100_000;
/// Most moves one rebalance plans.
pub const MAX_REBALANCE_MOVES: usize = 100_000;
/// Most moves in one Raft command.
pub const MOVES_PER_COMMAND: usize = 1_000;

/// A (bundle, shard) leased to a worker.
#[derive(Debug, Clone)]
struct Lease {
    node_id: u64,
    /// Failure domain of the target disk (no other shard of the bundle may go there).
    domain: String,
    since: Instant,
    until: Instant,
}

/// Leader soft state of self-healing.
#[derive(Debug, Default)]
pub struct Healing {
    leases: Mutex<HashMap<(BundleId, u32), Lease>>,
    /// (when, bytes) of repairs finished, for the rate.
    finished: Mutex<VecDeque<(Instant, u64)>>,
    /// Since when this member has been leader (the detector's view).
    leader_since: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the failure detector for as long as the member runs (acting only while leader).
pub async fn failure_detector(server: MetaServer) {
    let mut tick = tokio::time::interval(Duration::from_millis(DETECTOR_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = server.detect_once().await {
            tracing::debug!(error = %e, "failure detector");
        }
    }
}

impl MetaServer {
    fn domain_of_disk(&self, map: &ClusterMap, disk: u64) -> Option<String> {
        let level = self.inner.cfg.domain_level;
        let d = map.disks.get(&disk)?;
        map.nodes.get(&d.node_id).map(|n| n.domain(level))
    }

    /// One look at the heartbeats: nodes silent past their grace go down, nodes heard again
    /// come back, disks their node reports failed are failed. Each decision is a Raft command.
    async fn detect_once(&self) -> Result<()> {
        let healing = &self.inner.healing;
        if !self.inner.raft.is_leader() {
            *lock(&healing.leader_since) = None;
            lock(&healing.leases).clear();
            return Ok(());
        }
        let since = *lock(&healing.leader_since).get_or_insert_with(Instant::now);
        let grace = Duration::from_millis(self.inner.cfg.node_down_grace_ms);
        let mut node_decisions = Vec::new();
        let mut disk_decisions = Vec::new();
        {
            let map = self.inner.store.map();
            let hb = self.heartbeats();
            for n in map.nodes.values() {
                let heard = hb.get(&n.id).and_then(|h| h.at);
                // A new leader has heard nobody yet: silence counts from its election.
                let silent_for = heard.unwrap_or(since).max(since).elapsed();
                match n.state {
                    // A draining node that dies is down too: its shards cannot be copied any
                    // more and are rebuilt instead (the drain is restarted by the operator
                    // once it is back).
                    NodeState::Up | NodeState::Draining if silent_for > grace => {
                        node_decisions.push((n.id, NodeState::Down, silent_for))
                    }
                    NodeState::Down if heard.is_some_and(|at| at.elapsed() < grace) => {
                        node_decisions.push((n.id, NodeState::Up, silent_for))
                    }
                    _ => {}
                }
                if let Some(h) = hb.get(&n.id) {
                    for disk in &h.failed {
                        let state = map.disks.get(disk).map(|d| d.state);
                        if matches!(state, Some(DiskState::Ok | DiskState::Draining)) {
                            disk_decisions.push(*disk);
                        }
                    }
                }
            }
        }
        for (node_id, state, silent_for) in node_decisions {
            tracing::warn!(
                node = node_id,
                ?state,
                silent_ms = silent_for.as_millis() as u64,
                "failure detector: node state changes"
            );
            self.propose(Command::SetNodeState {
                node_id,
                state,
                now_ms: now_unix_ms(),
            })
            .await?;
        }
        for disk_id in disk_decisions {
            tracing::warn!(
                disk = disk_id,
                "failure detector: its node reports the disk failed"
            );
            self.propose(Command::SetDiskState {
                disk_id,
                state: DiskState::Failed,
                now_ms: now_unix_ms(),
            })
            .await?;
        }
        Ok(())
    }

    /// Hands repairs to the worker of `req.node_id`: most endangered first, each shard to a
    /// disk of that node that the placement rules allow.
    pub(crate) fn claim(&self, req: pb::ClaimRepairsRequest) -> Result<pb::ClaimRepairsResponse> {
        self.require_leader()?;
        let now = Instant::now();
        let lease_for = Duration::from_millis(self.inner.cfg.repair_lease_ms);
        let settings = self.inner.store.map().cluster.repair_settings;
        let reply = |repairs| pb::ClaimRepairsResponse {
            repairs,
            settings: Some(settings.to_proto()),
            lease_ms: self.inner.cfg.repair_lease_ms,
        };
        let running: BTreeSet<BundleId> = req
            .running
            .iter()
            .filter_map(|id| BundleId::from_proto(Some(id)).ok())
            .collect();
        let held = {
            let mut leases = lock(&self.inner.healing.leases);
            leases.retain(|_, l| l.until > now);
            for ((bundle, _), lease) in leases.iter_mut() {
                if lease.node_id == req.node_id && running.contains(bundle) {
                    lease.until = now + lease_for;
                }
            }
            leases.values().filter(|l| l.node_id == req.node_id).count()
        };
        let mut room = (settings.max_repairs_per_node as usize)
            .saturating_sub(held)
            .min(req.max as usize)
            .min(MAX_CLAIM);
        let map = self.inner.store.map().clone();
        let Some(claimer) = map.nodes.get(&req.node_id) else {
            return Err(MetaError::UnknownNode { id: req.node_id });
        };
        if room == 0 || settings.paused || claimer.state != NodeState::Up {
            return Ok(reply(Vec::new()));
        }
        let level = self.inner.cfg.domain_level;
        let claimer_domain = claimer.domain(level);
        let claimer_disks: Vec<_> = map
            .disks
            .values()
            .filter(|d| d.node_id == req.node_id && d.state == DiskState::Ok)
            .cloned()
            .collect();
        let mut out = Vec::new();
        let mut token = Vec::new();
        let mut scanned = 0;
        while room > 0 && scanned < CLAIM_SCAN_TASKS {
            let (tasks, next) = self.inner.store.list_repairs(&token, 256)?;
            scanned += tasks.len();
            for task in tasks {
                if room == 0 {
                    break;
                }
                let Some(b) = self.inner.store.bundle(task.bundle_id)? else {
                    continue;
                };
                if b.state != BundleState::Sealed {
                    continue;
                }
                let health = shard_health(&map, &b, Some(&task));
                let mut leases = lock(&self.inner.healing.leases);
                let leased: BTreeMap<u32, String> = leases
                    .iter()
                    .filter(|((id, _), l)| *id == b.id && l.until > now)
                    .map(|((_, s), l)| (*s, l.domain.clone()))
                    .collect();
                let mut targets = Vec::new();
                let mut taken_domains: Vec<String> = leased.values().cloned().collect();
                for &s in health.lost.iter().chain(&health.moving) {
                    if leased.contains_key(&s) {
                        continue;
                    }
                    let lost = health.lost.contains(&s);
                    let current = b.placement[s as usize];
                    let current_disk = map.disks.get(&current);
                    let current_healthy = current_disk.is_some_and(|d| {
                        d.state == DiskState::Ok
                            && map
                                .nodes
                                .get(&d.node_id)
                                .is_some_and(|n| n.state == NodeState::Up)
                    });
                    let target = if lost && current_healthy {
                        // Damaged on a healthy disk: rewritten in place by the node holding it.
                        current_disk
                            .filter(|d| d.node_id == req.node_id)
                            .map(|d| (d.id, false))
                    } else if let Some(&to) = task.moves.get(&s) {
                        claimer_disks
                            .iter()
                            .find(|d| d.id == to && !b.placement.contains(&to))
                            .map(|d| (d.id, !lost))
                    } else {
                        let used: Vec<String> = b
                            .placement
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j as u32 != s && !health.lost.contains(&(*j as u32)))
                            .filter_map(|(_, d)| self.domain_of_disk(&map, *d))
                            .chain(taken_domains.iter().cloned())
                            .collect();
                        if used.contains(&claimer_domain) {
                            None
                        } else {
                            claimer_disks
                                .iter()
                                .filter(|d| !b.placement.contains(&d.id))
                                .max_by_key(|d| d.capacity_bytes.saturating_sub(d.accounted_bytes))
                                .map(|d| (d.id, !lost))
                        }
                    };
                    let Some((disk_id, copy)) = target else {
                        continue;
                    };
                    taken_domains.push(claimer_domain.clone());
                    leases.insert(
                        (b.id, s),
                        Lease {
                            node_id: req.node_id,
                            domain: claimer_domain.clone(),
                            since: now,
                            until: now + lease_for,
                        },
                    );
                    targets.push(pb::RepairTarget {
                        shard_index: s,
                        disk_id,
                        from_disk_id: current,
                        copy,
                    });
                }
                if !targets.is_empty() {
                    out.push(pb::RepairAssignment {
                        bundle_id: Some(b.id.to_proto()),
                        placement_generation: b.placement_generation,
                        targets,
                    });
                    room -= 1;
                }
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        Ok(reply(out))
    }

    /// A worker is done with (bundle, shards): the leases go; a success counts for the rate.
    pub(crate) fn finish(&self, req: pb::FinishRepairRequest) -> Result<()> {
        let id = BundleId::from_proto(req.bundle_id.as_ref())?;
        {
            let mut leases = lock(&self.inner.healing.leases);
            for s in &req.shard_indexes {
                if leases
                    .get(&(id, *s))
                    .is_some_and(|l| l.node_id == req.node_id)
                {
                    leases.remove(&(id, *s));
                }
            }
        }
        if req.ok {
            let mut finished = lock(&self.inner.healing.finished);
            finished.push_back((Instant::now(), req.bytes_written));
            while finished.len() > RATE_SAMPLES {
                finished.pop_front();
            }
        } else {
            tracing::warn!(bundle = %id, node = req.node_id, shards = ?req.shard_indexes, error = %req.error, "repair failed; it will be offered again");
        }
        Ok(())
    }

    /// Bytes per second of repairs finished over the last window.
    fn repair_rate(&self) -> f64 {
        let mut finished = lock(&self.inner.healing.finished);
        let window = Duration::from_millis(RATE_WINDOW_MS);
        while finished
            .front()
            .is_some_and(|(at, _)| at.elapsed() > window)
        {
            finished.pop_front();
        }
        let Some((first, _)) = finished.front() else {
            return 0.0;
        };
        let bytes: u64 = finished.iter().map(|(_, b)| *b).sum();
        let span = first.elapsed().as_secs_f64().max(1.0);
        bytes as f64 / span
    }

    /// What `bitmountain repair status` shows.
    pub(crate) fn repair_status_now(&self) -> Result<pb::RepairStatusResponse> {
        let cluster = self.inner.store.map().cluster.clone();
        let mut levels: BTreeMap<u32, u64> = BTreeMap::new();
        let mut queued_bytes = 0u64;
        let mut token = Vec::new();
        let mut scanned = 0;
        let truncated = loop {
            let (tasks, next) = self.inner.store.list_repairs(&token, 1000)?;
            scanned += tasks.len();
            for t in &tasks {
                *levels.entry(t.healthy_shards).or_default() += 1;
                queued_bytes = queued_bytes
                    .saturating_add(t.shard_bytes.saturating_mul(t.missing_shards.len() as u64));
            }
            if next.is_empty() {
                break false;
            }
            if scanned >= STATUS_SCAN_TASKS {
                break true;
            }
            token = next;
        };
        let now = Instant::now();
        let running_repairs: Vec<pb::RunningRepair> = lock(&self.inner.healing.leases)
            .iter()
            .filter(|(_, l)| l.until > now)
            .map(|((id, s), l)| pb::RunningRepair {
                bundle_id: Some(id.to_proto()),
                shard_index: *s,
                node_id: l.node_id,
                running_ms: l.since.elapsed().as_millis() as u64,
            })
            .collect();
        let rate = self.repair_rate();
        let eta_ms = if queued_bytes > 0 && rate > 0.0 {
            (queued_bytes as f64 / rate * 1000.0) as u64
        } else {
            0
        };
        Ok(pb::RepairStatusResponse {
            queued: cluster.repairs,
            running: running_repairs.len() as u64,
            shards_repaired: cluster.shards_repaired,
            bytes_repaired: cluster.bytes_repaired,
            bytes_per_sec: rate,
            queued_bytes,
            eta_ms,
            levels: levels
                .into_iter()
                .map(|(healthy_shards, bundles)| pb::RedundancyLevel {
                    healthy_shards,
                    bundles,
                })
                .collect(),
            settings: Some(cluster.repair_settings.to_proto()),
            running_repairs,
            sealed_bundles: cluster.sealed,
            truncated,
        })
    }

    /// Plans moves from disks fuller than the cluster's mean to emptier ones, within a byte
    /// budget, each keeping every shard of its bundle in its own failure domain; queues them
    /// unless `dry_run`.
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
        let usable = |d: &crate::types::DiskRecord| {
            d.state == DiskState::Ok
                && d.capacity_bytes > 0
                && map
                    .nodes
                    .get(&d.node_id)
                    .is_some_and(|n| n.state == NodeState::Up)
        };
        let mut fill: BTreeMap<u64, (u64, u64)> = map
            .disks
            .values()
            .filter(|d| usable(d))
            .map(|d| (d.id, (d.accounted_bytes, d.capacity_bytes)))
            .collect();
        let total_used: u64 = fill.values().map(|(u, _)| *u).sum();
        let total_cap: u64 = fill.values().map(|(_, c)| *c).sum();
        if total_cap == 0 {
            return Ok(pb::RebalanceResponse::default());
        }
        let mean = total_used as f64 / total_cap as f64;
        let ratio = |(u, c): (u64, u64)| u as f64 / c as f64;
        let mut sources: Vec<u64> = fill
            .iter()
            .filter(|(_, f)| ratio(**f) > mean)
            .map(|(id, _)| *id)
            .collect();
        sources.sort_by(|a, b| ratio(fill[b]).total_cmp(&ratio(fill[a])));
        let mut planned: Vec<(BundleRecord, u32, u64, u64)> = Vec::new();
        let mut moved_bytes = 0u64;
        let mut planned_bundles = BTreeSet::new();
        'sources: for src in sources {
            let mut token = Vec::new();
            loop {
                let (shards, next) = self.inner.store.list_disk_bundles(src, &token, 512)?;
                for (id, s) in shards {
                    if planned.len() >= MAX_REBALANCE_MOVES {
                        break 'sources;
                    }
                    let Some(b) = self.inner.store.bundle(id)? else {
                        continue;
                    };
                    let bytes = b.accounted_shard_bytes;
                    if b.state != BundleState::Sealed
                        || planned_bundles.contains(&id)
                        || self.inner.store.repair_task(id)?.is_some()
                        || bytes == 0
                    {
                        continue;
                    }
                    if moved_bytes.saturating_add(bytes) > budget {
                        break 'sources;
                    }
                    let (su, sc) = fill[&src];
                    // Stop taking from this disk once it would fall below the mean.
                    if ratio((su.saturating_sub(bytes), sc)) < mean {
                        break;
                    }
                    let used: Vec<String> = b
                        .placement
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j as u32 != s)
                        .filter_map(|(_, d)| self.domain_of_disk(&map, *d))
                        .collect();
                    let target = fill
                        .iter()
                        .filter(|(d, f)| {
                            !b.placement.contains(*d)
                                && ratio((f.0 + bytes, f.1)) <= mean.max(ratio(**f))
                                && ratio((f.0 + bytes, f.1)) < ratio((su.saturating_sub(bytes), sc))
                                && self
                                    .domain_of_disk(&map, **d)
                                    .is_some_and(|dom| !used.contains(&dom))
                        })
                        .min_by(|a, b| ratio(*a.1).total_cmp(&ratio(*b.1)))
                        .map(|(d, _)| *d);
                    let Some(to) = target else {
                        continue;
                    };
                    if let Some(f) = fill.get_mut(&src) {
                        f.0 = f.0.saturating_sub(bytes);
                    }
                    if let Some(f) = fill.get_mut(&to) {
                        f.0 += bytes;
                    }
                    moved_bytes += bytes;
                    planned_bundles.insert(id);
                    planned.push((b, s, src, to));
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        let moves: Vec<pb::PlannedMove> = planned
            .iter()
            .map(|(b, s, from, to)| pb::PlannedMove {
                bundle_id: Some(b.id.to_proto()),
                shard_index: *s,
                from_disk_id: *from,
                to_disk_id: *to,
                bytes: b.accounted_shard_bytes,
            })
            .collect();
        if !req.dry_run {
            for chunk in planned.chunks(MOVES_PER_COMMAND) {
                let cmd = Command::QueueMoves {
                    moves: chunk
                        .iter()
                        .map(|(b, s, _, to)| (b.id, *s, *to, b.placement_generation))
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
            moves,
            bytes: moved_bytes,
            queued: !req.dry_run,
        })
    }
}
