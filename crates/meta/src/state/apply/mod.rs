//! Applying commands, one file per family: [`access`] (access tokens), [`bundles`] (allocate,
//! commit, abort, expire, delete, purge), [`placement`] (placement changes and planned moves),
//! [`repair`] (the repair queue, damage reports, throttles), [`topology`] (nodes, disks, the
//! value format), [`recovery`] (rebuilding the group from the disks' scans), [`audit`] (the audit trail's
//! writes, which the others call). The dispatch is `Command::apply` (`crate::command`).
//!
//! An [`Applier`] is one entry's view: reads see the DB plus the round's earlier entries
//! (never the entry's own writes), writes are collected and reach the round's batch at its
//! end, and the cluster map is updated in place under its write lock.
//!
//! Errors an apply returns are refusals every member reaches alike (unknown bundle, wrong
//! state, ...). What cannot be decided alike — a value that does not decode, a counter that
//! would go below zero — is a broken invariant: the member stops (`MetaStateMachine`), since
//! a member that skipped or bent the entry would hold a different state from then on.

pub(crate) mod access;
mod audit;
mod bundles;
mod placement;
mod recovery;
mod repair;
mod topology;

use std::collections::BTreeMap;
use std::sync::RwLockWriteGuard;

use serde::Serialize;

use super::machine::RoundDirty;
use super::{ClusterMap, KeyReader, MetaStore};
use crate::codec;
use crate::error::{Field, MetaError, Result};
use crate::keys;
use crate::types::{BundleId, BundleRecord, BundleState};

/// One entry's view of the state machine while it is applied.
pub(crate) struct Applier<'a> {
    store: &'a MetaStore,
    map: RwLockWriteGuard<'a, ClusterMap>,
    /// Writes of earlier entries of this round, not in the DB yet.
    unwritten: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// This entry's writes, in order.
    written: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Records and usage chunks the round changed (written once, at its end).
    dirty: &'a mut RoundDirty,
}

impl KeyReader for Applier<'_> {
    /// A single key as the earlier entries left it (this round's unwritten ones included).
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.unwritten.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get_raw(key),
        }
    }
}

impl<'a> Applier<'a> {
    pub(super) fn new(
        store: &'a MetaStore,
        unwritten: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        dirty: &'a mut RoundDirty,
    ) -> Self {
        Self {
            store,
            map: store.write_map(),
            unwritten,
            written: Vec::new(),
            dirty,
        }
    }

    /// The entry's writes, in order (they become visible to the next entries only now).
    pub(super) fn into_writes(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.written
    }
}

impl Applier<'_> {
    // Writes are collected per entry and reach the batch at the end of the round
    // (`MetaStateMachine::add_round_to`), so they cannot fail here.
    fn put<T: Serialize>(&mut self, key: &[u8], v: &T) {
        self.written
            .push((key.to_vec(), Some(codec::encode_value(v))));
    }

    fn put_bundle(&mut self, b: &BundleRecord) {
        let v = codec::encode_bundle(b, self.map.cluster.value_format());
        self.written.push((keys::bundle(b.id), Some(v)));
    }

    fn put_raw(&mut self, key: &[u8], v: &[u8]) {
        self.written.push((key.to_vec(), Some(v.to_vec())));
    }

    fn del(&mut self, key: &[u8]) {
        self.written.push((key.to_vec(), None));
    }

    /// Adds or takes back a shard's placed bytes on a disk. Every charge is matched by one
    /// taken back when the shard moves or its bundle goes, so a disk missing from the map or
    /// a count below zero is a broken invariant.
    fn charge(&mut self, disk: u64, bytes: u64, add: bool) {
        let Some(d) = self.map.disks.get_mut(&disk) else {
            panic!("placed bytes charged to disk {disk}, which the cluster map does not hold");
        };
        let new = if add {
            d.accounted_bytes.checked_add(bytes)
        } else {
            d.accounted_bytes.checked_sub(bytes)
        };
        d.accounted_bytes = new.unwrap_or_else(|| {
            panic!(
                "disk {disk}: placed bytes {} {} {bytes} leave the range of a u64",
                d.accounted_bytes,
                if add { "+" } else { "-" }
            )
        });
        self.dirty.usage.insert(keys::disk_usage_chunk(disk));
    }

    /// Counts a bundle into or out of a state.
    fn count(&mut self, state: BundleState, add: bool) {
        let c = &mut self.map.cluster;
        let slot = match state {
            BundleState::Pending => &mut c.pending,
            BundleState::Sealed => &mut c.sealed,
            BundleState::Deleting => &mut c.deleting,
        };
        *slot = counted(*slot, add, state);
    }

    fn known_bundle(&self, id: BundleId) -> Result<BundleRecord> {
        self.bundle(id)?.ok_or(MetaError::UnknownBundle { id })
    }
}

/// `n` plus or minus one; below zero or past `u64::MAX` is a broken invariant.
fn counted(n: u64, add: bool, what: impl std::fmt::Debug) -> u64 {
    let new = if add {
        n.checked_add(1)
    } else {
        n.checked_sub(1)
    };
    new.unwrap_or_else(|| panic!("count of {what:?} at {n} cannot change by one"))
}

/// The error for a shard index beyond a bundle's code, naming the field it came in.
fn no_such_shard(field: Field, shard: u32, b: &BundleRecord) -> MetaError {
    MetaError::InvalidArgument {
        field,
        reason: format!(
            "shard {shard} does not exist in a {}-shard bundle",
            b.code.total()
        ),
    }
}
