//! The rules of placement and health, decided here and nowhere else: what a shard needs
//! (lost, moving), whether a copy is gone, whether a disk may take new shards, and whether a
//! placement keeps failure domains distinct.
//!
//! Apply (every member), the leader's services (allocation, placement changes), the
//! placement map and healing (claims, rebalance) all call these functions, so they cannot
//! disagree. All are pure functions of the cluster map.
//!
//! The failure-domain level is each member's configuration (`--failure-domain`), not
//! replicated state, so only the leader's decisions check domains; apply checks only what is
//! replicated (disk and node states, the shape of a placement).

use std::collections::{BTreeMap, BTreeSet};

use crate::state::ClusterMap;
use crate::types::{BundleRecord, DiskRecord, DiskState, DomainLevel, NodeState, RepairTask};

/// What a bundle's shards need, judged from the cluster map and its repair entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardHealth {
    /// Shards without a healthy copy: on a failed or removed disk, on a node down or removed,
    /// or found damaged. They are rebuilt from k others.
    pub lost: Vec<u32>,
    /// Shards whose copy is healthy but must move (draining disk or node, rebalance).
    pub moving: Vec<u32>,
}

impl ShardHealth {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.moving.is_empty()
    }

    /// Whether shard `i` has no healthy copy.
    pub fn is_lost(&self, i: u32) -> bool {
        self.lost.contains(&i)
    }
}

/// Whether a copy on this disk is gone: the disk is unknown, failed or removed, or its node
/// is unknown, down or removed.
pub fn copy_is_gone(map: &ClusterMap, disk_id: u64) -> bool {
    let disk = map.disks.get(&disk_id);
    let node = disk.and_then(|x| map.nodes.get(&x.node_id));
    disk.is_none_or(|x| matches!(x.state, DiskState::Failed | DiskState::Removed))
        || node.is_none_or(|n| matches!(n.state, NodeState::Down | NodeState::Removed))
}

/// Whether the disk's own state lets it take new shards. Apply checks this (a disk changed
/// state between the leader's choice and the entry); the leader's choices also need the node
/// up ([`usable_disk`]).
pub fn disk_takes_shards(disk: &DiskRecord) -> bool {
    disk.state == DiskState::Ok
}

/// The disk, if the leader may put new shards on it: the disk takes shards and its node is up.
pub fn usable_disk(map: &ClusterMap, disk_id: u64) -> Option<&DiskRecord> {
    let disk = map.disks.get(&disk_id)?;
    let node = map.nodes.get(&disk.node_id)?;
    (disk_takes_shards(disk) && node.state == NodeState::Up).then_some(disk)
}

/// Most automatic returns of one disk within [`DISK_RETURN_WINDOW_MS`]. A disk that fails its
/// node's health check and comes back more often than this flaps (a loose cable, a dying
/// controller): its next failure stands until an operator looks (`bitmountain disk ok`). Ceph
/// keeps an OSD down after 5 markdowns in 10 minutes (`osd_max_markdown_count`) for the same
/// reason.
pub const MAX_DISK_RETURNS: u32 = 5;
/// The window [`MAX_DISK_RETURNS`] counts in.
pub const DISK_RETURN_WINDOW_MS: u64 = 10 * 60 * 1000;

/// The state a failed disk goes back to once its node reports it healthy again (which the node
/// does only after checking that the files the placement puts there are present), or `None`
/// when it stays failed: only a disk its node's report failed returns, not one an operator
/// failed (`disk fail` stands) or one that flaps.
pub fn disk_return(disk: &DiskRecord) -> Option<DiskState> {
    if disk.state == DiskState::Failed {
        disk.reported_failed_from
    } else {
        None
    }
}

/// Whether the disk has used up its automatic returns: a failure now stands.
pub fn disk_flaps(disk: &DiskRecord, now_ms: u64) -> bool {
    in_return_window(disk, now_ms) && disk.returns_in_window >= MAX_DISK_RETURNS
}

/// The count of automatic returns and the start of their window after one more at `now_ms`.
pub fn count_return(disk: &DiskRecord, now_ms: u64) -> (u32, u64) {
    if in_return_window(disk, now_ms) {
        (
            disk.returns_in_window.saturating_add(1),
            disk.return_window_unix_ms,
        )
    } else {
        (1, now_ms)
    }
}

/// A disk record after a state change `by_system` (the failure detector) or by an operator:
/// the new state and the bookkeeping of automatic returns. A failure the detector makes on its
/// node's report may be undone automatically (unless the disk flaps); an operator's may not.
/// An automatic return the rules do not allow is refused with the reason.
pub fn disk_state_change(
    disk: &DiskRecord,
    state: DiskState,
    by_system: bool,
    now_ms: u64,
) -> Result<DiskRecord, String> {
    let was = disk.state;
    let mut next = disk.clone();
    next.state = state;
    match (was == DiskState::Failed, state == DiskState::Failed) {
        (false, true) => {
            let returns = by_system && !disk_flaps(disk, now_ms);
            next.reported_failed_from = returns.then_some(was);
        }
        // An operator's `disk fail` of a failed disk keeps it failed for good.
        (true, true) if !by_system => next.reported_failed_from = None,
        (true, false) if by_system => {
            if disk_return(disk) != Some(state) {
                return Err(format!(
                    "disk {} may not return to {state:?} on its own (it returns to {:?}); \
                     an operator decides (`bitmountain disk ok {}`)",
                    disk.id,
                    disk_return(disk),
                    disk.id
                ));
            }
            next.reported_failed_from = None;
            (next.returns_in_window, next.return_window_unix_ms) = count_return(disk, now_ms);
        }
        (true, false) => {
            // An operator took the disk back: its returns count from nothing again.
            next.reported_failed_from = None;
            next.returns_in_window = 0;
        }
        (true, true) | (false, false) => {}
    }
    Ok(next)
}

fn in_return_window(disk: &DiskRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(disk.return_window_unix_ms) < DISK_RETURN_WINDOW_MS
}

/// The failure domain at `level` of the node that serves a disk.
pub fn domain_of_disk(map: &ClusterMap, disk_id: u64, level: DomainLevel) -> Option<String> {
    let disk = map.disks.get(&disk_id)?;
    map.nodes.get(&disk.node_id).map(|n| n.domain(level))
}

/// Judges every shard of `b` against the map (and the damage and moves its repair entry holds).
pub fn shard_health(map: &ClusterMap, b: &BundleRecord, task: Option<&RepairTask>) -> ShardHealth {
    let mut health = ShardHealth::default();
    for (i, d) in b.placement.iter().enumerate() {
        let i = i as u32;
        let disk = map.disks.get(d);
        let node = disk.and_then(|x| map.nodes.get(&x.node_id));
        let damaged = task.is_some_and(|t| t.damaged_shards.contains(&i));
        if copy_is_gone(map, *d) || damaged {
            health.lost.push(i);
            continue;
        }
        let draining = disk.is_some_and(|x| x.state == DiskState::Draining)
            || node.is_some_and(|n| n.state == NodeState::Draining);
        if draining || task.is_some_and(|t| t.moves.contains_key(&i)) {
            health.moving.push(i);
        }
    }
    health
}

/// The failure domains the shards of `placement` occupy, leaving out the shards `skip` names
/// (the shard about to move, shards without a copy).
pub fn domains_in_use(
    map: &ClusterMap,
    placement: &[u64],
    level: DomainLevel,
    skip: impl Fn(u32) -> bool,
) -> BTreeSet<String> {
    placement
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip(*i as u32))
        .filter_map(|(_, d)| domain_of_disk(map, *d, level))
        .collect()
}

/// Two shards of one placement in one failure domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDomain {
    /// The first shard in the domain.
    pub first: usize,
    /// The second.
    pub second: usize,
    /// The domain.
    pub domain: String,
}

/// The first pair of live copies of `placement` that share a failure domain. A shard whose
/// copy is gone (failed disk, down node) is being rebuilt, so its domain may already hold the
/// rebuilt copy of another shard.
pub fn shared_domain(
    map: &ClusterMap,
    placement: &[u64],
    level: DomainLevel,
) -> Option<SharedDomain> {
    let mut seen = BTreeMap::new();
    for (i, d) in placement.iter().enumerate() {
        if copy_is_gone(map, *d) {
            continue;
        }
        let Some(domain) = domain_of_disk(map, *d, level) else {
            continue;
        };
        if let Some(first) = seen.insert(domain.clone(), i) {
            return Some(SharedDomain {
                first,
                second: i,
                domain,
            });
        }
    }
    None
}

/// Why a new placement for `b` does not fit the bundle or the map, if it does not: one disk
/// per shard, each known, not removed, none twice. Apply checks this (replicated state only).
pub fn placement_shape_error(
    map: &ClusterMap,
    b: &BundleRecord,
    placement: &[u64],
) -> Option<String> {
    if placement.len() != b.code.total() {
        return Some(format!(
            "{} disks given for {} shards (k+m)",
            placement.len(),
            b.code.total()
        ));
    }
    let mut seen = BTreeSet::new();
    for d in placement {
        if !seen.insert(*d) {
            return Some(format!("disk {d} appears twice"));
        }
        match map.disks.get(d) {
            None => return Some(format!("disk {d} is not in the cluster map")),
            Some(disk) if disk.state == DiskState::Removed => {
                return Some(format!("disk {d} is removed"))
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::types::{BundleId, BundleState, Code, NodeRecord};

    /// Four nodes `1..=4` with one disk each (`10`, `20`, `30`, `40`), all up and ok, hosts
    /// `node-N` in zone `zN/2` (two per zone).
    pub(crate) fn map() -> ClusterMap {
        let mut m = ClusterMap::default();
        for n in 1..=4u64 {
            m.nodes.insert(
                n,
                NodeRecord {
                    id: n,
                    address: format!("127.0.0.1:{n}"),
                    zone: format!("z{}", n.div_ceil(2)),
                    rack: String::new(),
                    host: format!("node-{n}"),
                    state: NodeState::Up,
                },
            );
            m.disks.insert(
                n * 10,
                DiskRecord {
                    id: n * 10,
                    node_id: n,
                    path: format!("/d{n}"),
                    capacity_bytes: 1 << 30,
                    accounted_bytes: 0,
                    state: DiskState::Ok,
                    added_unix_ms: 0,
                    reported_failed_from: None,
                    returns_in_window: 0,
                    return_window_unix_ms: 0,
                },
            );
        }
        m
    }

    /// A sealed RS(2,2) bundle on disks 10, 20, 30, 40.
    pub(crate) fn bundle() -> BundleRecord {
        BundleRecord {
            id: BundleId(7),
            state: BundleState::Sealed,
            code: Code {
                data_shards: 2,
                parity_shards: 2,
                ..Code::DEFAULT
            },
            length: 100,
            index_offset: 0,
            index_length: 10,
            sha256: vec![0; 32],
            file_count: 1,
            labels: BTreeMap::new(),
            created_unix_ms: 0,
            expires_unix_ms: 0,
            placement: vec![10, 20, 30, 40],
            placement_generation: 1,
            request_id: String::new(),
            accounted_shard_bytes: 50,
            preservation: Default::default(),
        }
    }

    #[test]
    fn shard_health_follows_disks_nodes_damage_and_moves() {
        let mut m = map();
        let b = bundle();
        assert!(shard_health(&m, &b, None).is_empty());
        m.disks.get_mut(&20).unwrap().state = DiskState::Failed;
        m.nodes.get_mut(&3).unwrap().state = NodeState::Down;
        m.disks.get_mut(&40).unwrap().state = DiskState::Draining;
        let h = shard_health(&m, &b, None);
        assert_eq!(h.lost, vec![1, 2]);
        assert_eq!(h.moving, vec![3]);
        let task = RepairTask {
            bundle_id: b.id,
            healthy_shards: 2,
            missing_shards: vec![],
            queued_unix_ms: 0,
            damaged_shards: vec![0],
            moves: BTreeMap::from([(3, 99)]),
            moving_shards: vec![],
            shard_bytes: 50,
        };
        let h = shard_health(&m, &b, Some(&task));
        assert_eq!(h.lost, vec![0, 1, 2]);
        assert_eq!(h.moving, vec![3]);
        // A disk missing from the map counts as lost, never as healthy.
        m.disks.remove(&10);
        assert!(shard_health(&m, &b, None).lost.contains(&0));
    }

    #[test]
    fn a_disk_is_usable_only_if_it_and_its_node_are_healthy() {
        let mut m = map();
        assert!(usable_disk(&m, 10).is_some());
        assert!(usable_disk(&m, 99).is_none());
        m.disks.get_mut(&10).unwrap().state = DiskState::Draining;
        assert!(usable_disk(&m, 10).is_none());
        m.nodes.get_mut(&2).unwrap().state = NodeState::Down;
        assert!(usable_disk(&m, 20).is_none());
        // The disk's own state is still ok: apply would accept it, the leader does not pick it.
        assert!(disk_takes_shards(&m.disks[&20]));
        m.nodes.remove(&3);
        assert!(usable_disk(&m, 30).is_none());
    }

    #[test]
    fn shared_domains_are_found_among_live_copies_only() {
        let mut m = map();
        assert_eq!(
            shared_domain(&m, &[10, 20, 30, 40], DomainLevel::Host),
            None
        );
        let clash = shared_domain(&m, &[10, 20, 30, 40], DomainLevel::Zone).unwrap();
        assert_eq!(
            (clash.first, clash.second, clash.domain.as_str()),
            (0, 1, "z1")
        );
        // Shard 0's copy is gone: its zone may hold shard 1.
        m.disks.get_mut(&10).unwrap().state = DiskState::Failed;
        let clash = shared_domain(&m, &[10, 20, 30, 40], DomainLevel::Zone).unwrap();
        assert_eq!((clash.first, clash.second), (2, 3));
        let used = domains_in_use(&m, &[10, 20, 30, 40], DomainLevel::Zone, |i| i >= 2);
        assert_eq!(used, BTreeSet::from(["z1".to_string()]));
    }

    #[test]
    fn placement_shapes_are_checked() {
        let mut m = map();
        let b = bundle();
        assert_eq!(placement_shape_error(&m, &b, &[10, 20, 30, 40]), None);
        let short = placement_shape_error(&m, &b, &[10, 20, 30]).unwrap();
        assert!(short.contains("3 disks given for 4 shards"), "{short}");
        let twice = placement_shape_error(&m, &b, &[10, 20, 30, 30]).unwrap();
        assert!(twice.contains("appears twice"), "{twice}");
        let unknown = placement_shape_error(&m, &b, &[10, 20, 30, 50]).unwrap();
        assert!(unknown.contains("not in the cluster map"), "{unknown}");
        m.disks.get_mut(&40).unwrap().state = DiskState::Removed;
        let removed = placement_shape_error(&m, &b, &[10, 20, 30, 40]).unwrap();
        assert!(removed.contains("removed"), "{removed}");
    }

    #[test]
    fn only_a_disk_its_node_failed_returns_and_to_the_state_it_had() {
        let mut m = map();
        let d = m.disks.get_mut(&20).unwrap();
        assert_eq!(
            disk_return(d),
            None,
            "an ok disk has nothing to return from"
        );
        d.state = DiskState::Failed;
        assert_eq!(disk_return(d), None, "an operator's failure stands");
        d.reported_failed_from = Some(DiskState::Draining);
        assert_eq!(disk_return(d), Some(DiskState::Draining));
    }

    #[test]
    fn returns_are_counted_in_a_window_and_a_flapping_disk_is_held() {
        let mut d = map().disks[&10].clone();
        let t0 = 1_000_000_000;
        assert_eq!(
            count_return(&d, t0),
            (1, t0),
            "the first return opens a window"
        );
        for i in 1..=MAX_DISK_RETURNS {
            assert!(!disk_flaps(&d, t0 + u64::from(i)), "return {i} is allowed");
            (d.returns_in_window, d.return_window_unix_ms) = count_return(&d, t0 + u64::from(i));
        }
        assert_eq!(d.returns_in_window, MAX_DISK_RETURNS);
        assert_eq!(d.return_window_unix_ms, t0 + 1);
        assert!(
            disk_flaps(&d, t0 + 100),
            "one more return in the window is too many"
        );
        let later = t0 + 1 + DISK_RETURN_WINDOW_MS;
        assert!(!disk_flaps(&d, later), "the window has passed");
        assert_eq!(count_return(&d, later), (1, later));
    }

    #[test]
    fn a_reported_failure_returns_once_and_an_operators_stands() {
        let ok = map().disks[&10].clone();
        let t = 5_000_000;
        let failed = disk_state_change(&ok, DiskState::Failed, true, t).unwrap();
        assert_eq!(failed.reported_failed_from, Some(DiskState::Ok));
        let back = disk_state_change(&failed, DiskState::Ok, true, t + 1).unwrap();
        assert_eq!(
            (back.state, back.reported_failed_from),
            (DiskState::Ok, None)
        );
        assert_eq!(
            (back.returns_in_window, back.return_window_unix_ms),
            (1, t + 1)
        );
        assert!(
            disk_state_change(&back, DiskState::Ok, true, t + 2).is_ok(),
            "no change, nothing refused"
        );
        let held = disk_state_change(&failed, DiskState::Failed, false, t + 1).unwrap();
        assert_eq!(
            held.reported_failed_from, None,
            "`disk fail` makes it stand"
        );
        let err = disk_state_change(&held, DiskState::Ok, true, t + 2).unwrap_err();
        assert!(err.contains("bitmountain disk ok 10"), "{err}");
        let by_operator = disk_state_change(&ok, DiskState::Failed, false, t).unwrap();
        assert!(disk_state_change(&by_operator, DiskState::Ok, true, t).is_err());
        let mut counted = back.clone();
        counted.returns_in_window = 3;
        let taken = disk_state_change(&counted, DiskState::Failed, false, t).unwrap();
        let taken = disk_state_change(&taken, DiskState::Ok, false, t).unwrap();
        assert_eq!(
            taken.returns_in_window, 0,
            "an operator's `disk ok` resets the count"
        );
    }

    #[test]
    fn a_flapping_disks_next_failure_stands() {
        let mut d = map().disks[&10].clone();
        let t = 9_000_000;
        for i in 0..MAX_DISK_RETURNS {
            d = disk_state_change(&d, DiskState::Failed, true, t + u64::from(i)).unwrap();
            assert_eq!(
                disk_return(&d),
                Some(DiskState::Ok),
                "failure {i} may return"
            );
            d = disk_state_change(&d, DiskState::Ok, true, t + u64::from(i)).unwrap();
        }
        d = disk_state_change(&d, DiskState::Failed, true, t + 10).unwrap();
        assert_eq!(
            disk_return(&d),
            None,
            "the sixth failure in the window stands"
        );
        let drained = DiskRecord {
            state: DiskState::Draining,
            ..map().disks[&20].clone()
        };
        let f = disk_state_change(&drained, DiskState::Failed, true, t).unwrap();
        assert_eq!(
            disk_return(&f),
            Some(DiskState::Draining),
            "a drain resumes"
        );
    }
}
