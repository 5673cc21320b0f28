//! From what the disks hold to bundle records: pure, so the offline scan and the recovering
//! member decide alike, and unit-tested without a cluster.
//!
//! Per bundle id:
//! - a tombstone on any disk: the bundle was deleted and stays deleted, whatever shards remain;
//! - the facts most sound footers agree on (code, length, index, SHA-256) make the record, and
//!   the description most of those shards carry gives labels, creation time and file count (a
//!   version-1 bundle has none: no labels, the creation time its id carries, file count 0);
//!   a shard whose footer disagrees is not placed;
//! - a shard index found on several disks is placed on one (sound footer first, then the lowest
//!   disk id, never a disk already holding another shard of the bundle); the other copies are
//!   extra and garbage collection removes them later;
//! - at least k shard indexes usable (sound, or with a sound header of the same code): the
//!   bundle is recovered, with the missing indexes to be repaired;
//! - fewer: lost when its id is older than the orphan grace, else an upload that never committed
//!   (its shards are left to garbage collection), as a clean upload's are.

use std::collections::BTreeMap;

use crate::types::{
    BundleId, BundleRecord, BundleState, Code, FoundDescription, FoundShard, FoundTombstone,
};

/// What the plan needs besides the scans.
#[derive(Debug, Clone, Copy)]
pub struct PlanParams {
    /// Now, on the recovering member's clock.
    pub now_unix_ms: u64,
    /// Shards of uncommitted uploads younger than this may still exist (garbage collection's
    /// orphan grace).
    pub orphan_grace_ms: u64,
    /// The chunk size records imply; shards with another cannot be recorded.
    pub chunk_bytes: u32,
}

/// A bundle the shards describe well enough to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredBundle {
    /// State sealed; placement names the disk of every found shard and 0 for a missing one.
    pub record: BundleRecord,
    /// Shard indexes with no usable copy: to be placed and rebuilt.
    pub missing: Vec<u32>,
    /// Placed shards whose footer is damaged (their data may be fine; repair rewrites them).
    pub damaged: Vec<u32>,
    /// Copies not placed: (shard index, disk id, why).
    pub extra: Vec<(u32, u64, String)>,
    /// No shard carried a description (version-1 shards).
    pub without_description: bool,
}

/// A bundle with too few usable shards to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableBundle {
    pub id: BundleId,
    /// The code its shards name, if any header was readable.
    pub code: Option<Code>,
    /// Usable shard indexes and the disks holding them.
    pub found: Vec<(u32, u64)>,
    /// Labels from a description, if any shard carried one.
    pub labels: BTreeMap<String, String>,
    pub why: String,
}

/// A deleted bundle: its tombstone and the shards still found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedBundle {
    pub id: BundleId,
    pub deleted_unix_ms: u64,
    pub shards_found: Vec<(u32, u64)>,
}

/// The outcome of a recovery scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub recovered: Vec<RecoveredBundle>,
    /// Fewer than k usable shards and older than the orphan grace.
    pub lost: Vec<UnreadableBundle>,
    /// Fewer than k usable shards, young: uploads that never committed.
    pub incomplete: Vec<UnreadableBundle>,
    pub deleted: Vec<DeletedBundle>,
    /// Shard files with no readable header: (disk id, bundle id from the name, problem).
    pub unreadable_shards: Vec<(u64, BundleId, String)>,
}

/// Builds the plan from every shard and tombstone found.
pub fn plan(
    shards: &[FoundShard],
    tombstones: &[FoundTombstone],
    params: PlanParams,
) -> RecoveryPlan {
    let mut deleted_at: BTreeMap<BundleId, u64> = BTreeMap::new();
    for t in tombstones {
        let at = deleted_at.entry(t.bundle).or_insert(t.deleted_unix_ms);
        *at = (*at).min(t.deleted_unix_ms);
    }
    let mut by_bundle: BTreeMap<BundleId, Vec<&FoundShard>> = BTreeMap::new();
    for s in shards {
        by_bundle.entry(s.bundle).or_default().push(s);
    }
    let mut out = RecoveryPlan::default();
    for (&id, t) in &deleted_at {
        out.deleted.push(DeletedBundle {
            id,
            deleted_unix_ms: *t,
            shards_found: by_bundle
                .get(&id)
                .map(|v| v.iter().map(|s| (s.shard_index, s.disk_id)).collect())
                .unwrap_or_default(),
        });
    }
    for (id, found) in by_bundle {
        if deleted_at.contains_key(&id) {
            continue;
        }
        for s in found.iter().filter(|s| s.code.is_none()) {
            let problem = s.problem.clone().unwrap_or_else(|| "no header".into());
            out.unreadable_shards.push((s.disk_id, id, problem));
        }
        match plan_bundle(id, &found, params) {
            Ok(b) => out.recovered.push(b),
            Err(u) if id.unix_ms().saturating_add(params.orphan_grace_ms) > params.now_unix_ms => {
                out.incomplete.push(u)
            }
            Err(u) => out.lost.push(u),
        }
    }
    out
}

fn plan_bundle(
    id: BundleId,
    found: &[&FoundShard],
    params: PlanParams,
) -> Result<RecoveredBundle, UnreadableBundle> {
    let unreadable = |code: Option<Code>, why: String| {
        let mut usable: Vec<(u32, u64)> = found
            .iter()
            .filter(|s| s.code.is_some_and(|c| (s.shard_index as usize) < c.total()))
            .map(|s| (s.shard_index, s.disk_id))
            .collect();
        usable.sort_unstable();
        UnreadableBundle {
            id,
            code,
            found: usable,
            labels: vote(found.iter().filter_map(|s| s.description.clone()))
                .map(|d| d.labels)
                .unwrap_or_default(),
            why,
        }
    };
    let facts = vote(
        found
            .iter()
            .filter_map(|s| Some((s.code?, s.footer.clone()?))),
    );
    let Some((code, footer)) = facts else {
        let code = vote(found.iter().filter_map(|s| s.code));
        return Err(unreadable(code, "no shard has a sound footer".into()));
    };
    let agrees = |s: &FoundShard| -> Result<bool, String> {
        if s.code != Some(code) {
            return Err(format!("its header names another code ({:?})", s.code));
        }
        if s.chunk_bytes != params.chunk_bytes {
            return Err(format!("chunk size {} B", s.chunk_bytes));
        }
        match &s.footer {
            Some(f) if *f != footer => Err("its footer disagrees with the others".into()),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    };
    let total = code.total();
    // Per shard index: (sound, disk) candidates.
    let mut slots: Vec<Vec<(bool, u64)>> = vec![Vec::new(); total];
    let mut extra = Vec::new();
    let mut described = Vec::new();
    for s in found {
        if s.code.is_none() {
            continue;
        }
        match agrees(s) {
            Ok(sound) if (s.shard_index as usize) < total => {
                slots[s.shard_index as usize].push((sound, s.disk_id));
                if sound {
                    described.extend(s.description.clone());
                }
            }
            Ok(_) => extra.push((s.shard_index, s.disk_id, "shard index out of range".into())),
            Err(why) => extra.push((s.shard_index, s.disk_id, why)),
        }
    }
    let mut placement = vec![0u64; total];
    let (mut missing, mut damaged) = (Vec::new(), Vec::new());
    // A placement names each disk once: a disk holding two shard indexes keeps the first.
    let mut used = std::collections::BTreeSet::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        // Sound first, then the lowest disk id.
        slot.sort_unstable_by_key(|&(sound, disk)| (!sound, disk));
        let chosen = slot.iter().position(|(_, disk)| !used.contains(disk));
        for (j, &(_, disk)) in slot.iter().enumerate() {
            if Some(j) != chosen {
                extra.push((i as u32, disk, format!("another copy of shard {i}")));
            }
        }
        match chosen.map(|j| slot[j]) {
            Some((sound, disk)) => {
                used.insert(disk);
                placement[i] = disk;
                if !sound {
                    damaged.push(i as u32);
                }
            }
            None => missing.push(i as u32),
        }
    }
    let usable = total - missing.len();
    if usable < code.data_shards as usize {
        return Err(unreadable(
            Some(code),
            format!(
                "{usable} usable shards of the {} needed ({} found)",
                code.data_shards,
                found.len()
            ),
        ));
    }
    let description = vote(described.into_iter());
    let without_description = description.is_none();
    let description = description.unwrap_or(FoundDescription {
        created_unix_ms: id.unix_ms(),
        file_count: 0,
        labels: BTreeMap::new(),
    });
    let record = BundleRecord {
        id,
        state: BundleState::Sealed,
        code,
        length: footer.length,
        index_offset: footer.index_offset,
        index_length: footer.index_length,
        sha256: footer.sha256.to_vec(),
        file_count: description.file_count,
        labels: description.labels,
        created_unix_ms: description.created_unix_ms,
        expires_unix_ms: 0,
        placement,
        placement_generation: 1,
        request_id: String::new(),
        accounted_shard_bytes: code.shard_bytes(footer.length),
        preservation: Default::default(),
    };
    extra.sort();
    Ok(RecoveredBundle {
        record,
        missing,
        damaged,
        extra,
        without_description,
    })
}

/// The value most items agree on (ties: the first seen).
fn vote<T: PartialEq>(items: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for item in items {
        match counts.iter_mut().find(|(v, _)| *v == item) {
            Some((_, n)) => *n += 1,
            None => counts.push((item, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::FoundFooter;

    const CHUNK: u32 = 65536;
    const NOW: u64 = 1_800_000_000_000;
    const GRACE: u64 = 3_600_000;

    fn params() -> PlanParams {
        PlanParams {
            now_unix_ms: NOW,
            orphan_grace_ms: GRACE,
            chunk_bytes: CHUNK,
        }
    }

    fn code() -> Code {
        Code {
            data_shards: 2,
            parity_shards: 1,
            cell_bytes: 1 << 20,
        }
    }

    fn footer(length: u64) -> FoundFooter {
        FoundFooter {
            length,
            index_offset: 10,
            index_length: 20,
            sha256: [4; 32],
        }
    }

    fn description() -> FoundDescription {
        FoundDescription {
            created_unix_ms: 5,
            file_count: 7,
            labels: [("shelf".to_owned(), "A1".to_owned())].into(),
        }
    }

    fn shard(id: BundleId, index: u32, disk: u64) -> FoundShard {
        FoundShard {
            bundle: id,
            shard_index: index,
            disk_id: disk,
            code: Some(code()),
            chunk_bytes: CHUNK,
            footer: Some(footer(1000)),
            description: Some(description()),
            problem: None,
        }
    }

    fn old_id(n: u128) -> BundleId {
        BundleId((u128::from(NOW - 10 * GRACE) << 80) | n)
    }

    #[test]
    fn a_full_set_becomes_a_sealed_record() {
        let id = old_id(1);
        let shards: Vec<_> = (0..3).map(|i| shard(id, i, 10 + u64::from(i))).collect();
        let p = plan(&shards, &[], params());
        assert_eq!(p.recovered.len(), 1);
        let b = &p.recovered[0];
        assert_eq!(b.record.state, BundleState::Sealed);
        assert_eq!(b.record.placement, vec![10, 11, 12]);
        assert_eq!(b.record.labels, description().labels);
        assert_eq!((b.record.file_count, b.record.created_unix_ms), (7, 5));
        assert_eq!(b.record.length, 1000);
        assert!(b.missing.is_empty() && b.damaged.is_empty() && b.extra.is_empty());
    }

    #[test]
    fn tombstones_win_over_any_number_of_shards() {
        let id = old_id(2);
        let shards: Vec<_> = (0..3).map(|i| shard(id, i, 10)).collect();
        let tomb = FoundTombstone {
            bundle: id,
            disk_id: 99,
            deleted_unix_ms: 77,
        };
        let p = plan(&shards, &[tomb], params());
        assert!(p.recovered.is_empty());
        assert_eq!(p.deleted.len(), 1);
        assert_eq!(p.deleted[0].shards_found.len(), 3);
    }

    #[test]
    fn missing_damaged_disagreeing_and_duplicate_shards() {
        let id = old_id(3);
        let mut damaged = shard(id, 1, 21);
        damaged.footer = None;
        damaged.description = None;
        let mut liar = shard(id, 0, 22);
        liar.footer = Some(footer(999));
        let shards = vec![shard(id, 0, 20), damaged, liar, shard(id, 0, 19)];
        let p = plan(&shards, &[], params());
        let b = &p.recovered[0];
        assert_eq!(b.record.placement, vec![19, 21, 0]);
        assert_eq!(b.missing, vec![2]);
        assert_eq!(b.damaged, vec![1]);
        assert_eq!(b.extra.len(), 2, "{:?}", b.extra);
        // Two shard indexes on one disk: the second index counts as missing.
        let id = old_id(8);
        let shards = vec![shard(id, 0, 5), shard(id, 1, 5), shard(id, 2, 6)];
        let b = &plan(&shards, &[], params()).recovered[0];
        assert_eq!(b.record.placement, vec![5, 0, 6]);
        assert_eq!(b.missing, vec![1]);
    }

    #[test]
    fn too_few_shards_is_lost_when_old_and_incomplete_when_young() {
        let old = old_id(4);
        let young = BundleId((u128::from(NOW - 1000) << 80) | 5);
        let shards = vec![shard(old, 0, 1), shard(young, 2, 1)];
        let p = plan(&shards, &[], params());
        assert!(p.recovered.is_empty());
        assert_eq!(p.lost.len(), 1);
        assert_eq!(p.lost[0].id, old);
        assert_eq!(p.lost[0].found, vec![(0, 1)]);
        assert_eq!(p.lost[0].labels, description().labels);
        assert_eq!(p.incomplete.len(), 1);
        assert_eq!(p.incomplete[0].id, young);
    }

    #[test]
    fn version_1_shards_recover_without_labels() {
        let id = old_id(6);
        let shards: Vec<_> = (0..2)
            .map(|i| FoundShard {
                description: None,
                ..shard(id, i, 30 + u64::from(i))
            })
            .collect();
        let p = plan(&shards, &[], params());
        let b = &p.recovered[0];
        assert!(b.without_description);
        assert!(b.record.labels.is_empty());
        assert_eq!(b.record.created_unix_ms, id.unix_ms());
        assert_eq!(b.missing, vec![2]);
    }

    #[test]
    fn unreadable_headers_are_listed() {
        let id = old_id(7);
        let mut bad = shard(id, 0, 3);
        bad.code = None;
        bad.footer = None;
        bad.problem = Some("header: bad magic".into());
        let p = plan(&[bad], &[], params());
        assert_eq!(p.unreadable_shards.len(), 1);
        assert_eq!(p.lost.len(), 1);
    }
}
