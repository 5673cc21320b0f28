//! [`MetaStateMachine`]: what the Raft driver applies entries to. It decodes each command,
//! hands it to its family's apply (`apply/`), keeps a round's writes in memory until the round
//! is written as one batch, and stops the member on anything it cannot apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bitmountain_raftstore::rocksdb::WriteBatch;
use bitmountain_raftstore::{ApplyCtx, StateMachine};

use super::apply::Applier;
use super::MetaStore;
use crate::codec::{self, binary};
use crate::command::{ApplyResult, Command};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::types::DiskRecord;

/// The state machine the Raft driver applies entries to.
///
/// The driver writes one batch per round of committed entries, so the DB does not show the
/// earlier entries of a round yet. Their writes to the state-machine column family are kept
/// in `unwritten`, and the hot commands (allocate, commit, ...) read through it; commands
/// that scan key ranges (disk and node state changes, registration) first have the earlier
/// writes written out. Disk, node and cluster records changed by a round are written once,
/// at its end: the in-memory cluster map is their source of truth meanwhile. Placed bytes,
/// which every allocation and commit changes on all its disks, go into one binary value per
/// chunk of disk ids (`keys::DISK_USAGE`) rather than into the JSON disk records, which a
/// round then rewrites only when a disk itself changed.
///
/// `unwritten` is ordered, and goes into the batch in key order: RocksDB's memtable
/// (a skip list) finds each insert's place starting from the previous one, so keys that
/// arrive sorted — new bundle ids are time-ordered, and each index groups them by disk,
/// state or expiry — cost a short walk instead of a search from the top. Inserting in
/// application order was most of a member's apply CPU.
#[derive(Debug)]
pub struct MetaStateMachine {
    store: Arc<MetaStore>,
    unwritten: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    dirty: RoundDirty,
}

/// What a round changed of the records the in-memory map holds newest: written once, at the
/// round's end.
#[derive(Debug, Default)]
pub(crate) struct RoundDirty {
    /// Disk records.
    pub(crate) disks: BTreeSet<u64>,
    /// Chunks (`keys::DISK_USAGE`) whose disks' placed bytes changed.
    pub(crate) usage: BTreeSet<u64>,
    /// Node records.
    pub(crate) nodes: BTreeSet<u64>,
}

impl MetaStateMachine {
    /// Wraps the shared store.
    pub fn new(store: Arc<MetaStore>) -> Self {
        Self {
            store,
            unwritten: BTreeMap::new(),
            dirty: RoundDirty::default(),
        }
    }

    /// Adds the round's writes to `batch`, in key order, then its cluster, disk and node
    /// records (which the in-memory map holds newest), and forgets them.
    fn add_round_to(&mut self, batch: &mut WriteBatch) -> Result<()> {
        let cf = self.store.cf()?;
        for (key, value) in std::mem::take(&mut self.unwritten) {
            match value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        let map = self.store.map();
        batch.put_cf(cf, keys::CLUSTER, codec::encode_value(&map.cluster));
        for id in std::mem::take(&mut self.dirty.disks) {
            let Some(d) = map.disks.get(&id) else {
                panic!("disk {id} changed this round but is not in the cluster map");
            };
            // Placed bytes live in the disk's usage chunk (written below, with the value the
            // round ends with), so the record does not depend on where in a round it was
            // written.
            let record = DiskRecord {
                accounted_bytes: 0,
                ..d.clone()
            };
            batch.put_cf(cf, keys::disk(id), codec::encode_value(&record));
            self.dirty.usage.insert(keys::disk_usage_chunk(id));
        }
        for chunk in std::mem::take(&mut self.dirty.usage) {
            let first = chunk * keys::DISK_USAGE_CHUNK;
            // Inclusive and saturating: the chunk of the highest possible id has no end
            // beyond `u64::MAX` (ids are assigned one by one, but the range must not overflow).
            let last = first.saturating_add(keys::DISK_USAGE_CHUNK - 1);
            let pairs = map
                .disks
                .range(first..=last)
                .map(|(id, d)| (*id, d.accounted_bytes));
            batch.put_cf(
                cf,
                keys::disk_usage(chunk),
                binary::encode_disk_usage(pairs),
            );
        }
        for id in std::mem::take(&mut self.dirty.nodes) {
            let Some(n) = map.nodes.get(&id) else {
                panic!("node {id} changed this round but is not in the cluster map");
            };
            batch.put_cf(cf, keys::node(id), codec::encode_value(n));
        }
        Ok(())
    }
}

/// A member that cannot apply a committed entry stops: one that skipped or bent it would
/// hold a different state from the rest of the group from then on.
fn cannot_apply(index: u64, e: impl std::fmt::Display) -> ! {
    panic!(
        "committed log entry {index} cannot be applied on this member ({e}); stopping rather \
         than diverge from the group: check this member's disk, or replace the member \
         (`bitmountain member remove`, then add it back with an empty --data)"
    )
}

impl StateMachine for MetaStateMachine {
    type Response = ApplyResult;

    fn apply(&mut self, mut ctx: ApplyCtx<'_>, command: &[u8]) -> ApplyResult {
        let index = ctx.index;
        let cmd = match Command::decode(command) {
            Ok(cmd) => cmd,
            // A command this binary cannot read was written by a newer one (or the log is
            // damaged).
            Err(e) => panic!(
                "committed log entry {index} holds a command this member cannot apply ({e}); \
                 stopping rather than diverge from the group: upgrade bitmountain on this \
                 member (or restore it from a snapshot of a healthy one)"
            ),
        };
        let reads_only_single_keys = cmd.reads_only_single_keys();
        if !reads_only_single_keys {
            if let Err(e) = self.add_round_to(ctx.batch) {
                cannot_apply(index, e);
            }
            if let Err(e) = ctx.write_earlier() {
                cannot_apply(index, e);
            }
        }
        let mut a = Applier::new(&self.store, &self.unwritten, &mut self.dirty);
        let result = cmd.apply(&mut a);
        // This entry's writes become visible to the next entries only now: an entry never
        // reads its own writes (as when every entry was written on its own).
        let written = a.into_writes();
        if let Err(e @ MetaError::Corrupt { .. }) = &result {
            cannot_apply(index, e);
        }
        if !reads_only_single_keys {
            // Registration and disk or node state changes are the commands that change the
            // topology (and the only ones that scan key ranges).
            self.store.bump_topology_epoch();
        }
        self.unwritten.extend(written);
        result
    }

    fn before_write(&mut self, batch: &mut WriteBatch) {
        // The column family exists from the first open on; not finding it is a broken store.
        if let Err(e) = self.add_round_to(batch) {
            panic!("metadata store is broken: {e}");
        }
    }

    fn restored(&mut self) {
        self.unwritten.clear();
        self.dirty = RoundDirty::default();
        // A member whose map does not match its store would decide from the wrong state.
        if let Err(e) = self.store.reload() {
            panic!("reloading the cluster map after a snapshot install failed: {e}");
        }
    }
}
