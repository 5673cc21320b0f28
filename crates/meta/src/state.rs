//! The replicated state machine: commands, their deterministic application, and reads.
//!
//! Bundle records and their indexes live only in RocksDB (column family `sm`, layout in
//! [`crate::keys`]); the cluster map (nodes, disks, counters) is small and also cached in
//! memory, updated by the apply path in the same step that writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bitmountain_raftstore::rocksdb::{self, WriteBatch, DB};
use bitmountain_raftstore::{ApplyCtx, StateMachine, CF_SM};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::types::{
    BundleId, BundleRecord, BundleState, Code, DiskRecord, DiskState, NodeRecord, NodeState,
    RepairSettings, RepairTask,
};

/// Cluster-wide record: identity, id counters, counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Cluster id (set by the first registration), written to every disk identity file.
    pub cluster_id: String,
    /// Next node id to assign.
    pub next_node_id: u64,
    /// Next disk id to assign.
    pub next_disk_id: u64,
    /// Pending bundles.
    pub pending: u64,
    /// Sealed bundles.
    pub sealed: u64,
    /// Deleting bundles.
    pub deleting: u64,
    /// Queued repairs.
    pub repairs: u64,
    /// Repair throttles in force.
    #[serde(default)]
    pub repair_settings: RepairSettings,
    /// Shards rebuilt or moved since the cluster was created.
    #[serde(default)]
    pub shards_repaired: u64,
    /// Their bytes.
    #[serde(default)]
    pub bytes_repaired: u64,
    /// The value format every member writes bundle records, request values and the allocate
    /// and commit commands in (`keys::VALUE_V1` JSON or `keys::VALUE_V2` protobuf, see
    /// `crate::codec`). A group created by a binary that knows version 2 starts with it; a
    /// group created before keeps version 1 (0 in records written then), so that no member
    /// of a group meets a value it cannot read.
    #[serde(default)]
    pub value_format: u8,
}

impl ClusterRecord {
    /// The value format the group writes: a record from before the field existed (0) means
    /// version 1.
    pub fn value_format(&self) -> u8 {
        self.value_format.max(keys::VALUE_V1)
    }
}

/// The format a switch from `current` to `requested` leaves the group in, or why it is
/// refused: the leader checks before it asks the members, and every member again when it
/// applies the switch.
pub(crate) fn value_format_switch(current: u8, requested: u32) -> Result<u8> {
    let refuse = |reason: String| MetaError::ValueFormatRefused { requested, reason };
    let newest = keys::VALUE_FORMAT_NEWEST;
    let format = u8::try_from(requested)
        .ok()
        .filter(|f| (keys::VALUE_V1..=newest).contains(f))
        .ok_or_else(|| refuse(format!("this member reads value formats 1 to {newest}")))?;
    if format < current {
        return Err(refuse(format!(
            "the group already writes format {current}; a group never goes back to an older \
             format"
        )));
    }
    Ok(format)
}

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
}

impl ClusterMap {
    /// Whether a copy on this disk is gone: the disk is unknown, failed or removed, or its node
    /// is unknown, down or removed.
    pub fn copy_is_gone(&self, disk_id: u64) -> bool {
        let disk = self.disks.get(&disk_id);
        let node = disk.and_then(|x| self.nodes.get(&x.node_id));
        disk.is_none_or(|x| matches!(x.state, DiskState::Failed | DiskState::Removed))
            || node.is_none_or(|n| matches!(n.state, NodeState::Down | NodeState::Removed))
    }
}

/// Judges every shard of `b` against the map (and the damage and moves its repair entry holds).
pub fn shard_health(map: &ClusterMap, b: &BundleRecord, task: Option<&RepairTask>) -> ShardHealth {
    let mut health = ShardHealth::default();
    for (i, d) in b.placement.iter().enumerate() {
        let i = i as u32;
        let disk = map.disks.get(d);
        let node = disk.and_then(|x| map.nodes.get(&x.node_id));
        let damaged = task.is_some_and(|t| t.damaged_shards.contains(&i));
        if map.copy_is_gone(*d) || damaged {
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

/// The in-memory cluster map.
#[derive(Debug, Clone, Default)]
pub struct ClusterMap {
    /// Cluster record.
    pub cluster: ClusterRecord,
    /// Nodes by id.
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Disks by id.
    pub disks: BTreeMap<u64, DiskRecord>,
}

/// A disk in a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// 0 for a new disk.
    pub disk_id: u64,
    /// Directory.
    pub path: String,
    /// Capacity.
    pub capacity_bytes: u64,
}

/// A replicated command (what a log entry carries). Every field an apply needs — time,
/// generated ids, the chosen placement — is decided by the leader before proposing, so apply
/// is deterministic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Add or update a node and its disks.
    RegisterNode {
        /// Idempotency key.
        request_id: String,
        /// 0 for a new node.
        node_id: u64,
        /// Address.
        address: String,
        /// Zone.
        zone: String,
        /// Rack.
        rack: String,
        /// Host ("" → `node-<id>`).
        host: String,
        /// Disks.
        disks: Vec<DiskSpec>,
        /// Cluster id to adopt if none is set yet.
        cluster_id_candidate: String,
    },
    /// Operator or failure-detector decision on a disk.
    SetDiskState {
        /// Disk.
        disk_id: u64,
        /// New state.
        state: DiskState,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Decision on a node (operator, or the leader's failure detector).
    SetNodeState {
        /// Node.
        node_id: u64,
        /// New state.
        state: NodeState,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
    },
    /// New repair throttles.
    SetRepairSettings {
        /// Settings (a zero `max_repairs_per_node` keeps the current value).
        settings: RepairSettings,
    },
    /// Moves planned by a rebalance: each applies only if the bundle's placement generation is
    /// still the one it was planned against.
    QueueMoves {
        /// (bundle, shard, target disk, generation).
        moves: Vec<(BundleId, u32, u64, u64)>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Create a pending bundle.
    Allocate {
        /// Idempotency key.
        request_id: String,
        /// New id.
        id: BundleId,
        /// Code.
        code: Code,
        /// Labels.
        labels: BTreeMap<String, String>,
        /// Estimate for accounting.
        expected_length: u64,
        /// Disks by shard index.
        placement: Vec<u64>,
        /// Leader's clock.
        now_ms: u64,
        /// Expiry.
        expires_ms: u64,
    },
    /// Seal a pending bundle.
    Commit {
        /// Bundle.
        id: BundleId,
        /// Length.
        length: u64,
        /// Index offset.
        index_offset: u64,
        /// Index length.
        index_length: u64,
        /// SHA-256.
        sha256: Vec<u8>,
        /// Files.
        file_count: u64,
        /// Shards not durable (queued for repair).
        missing_shards: Vec<u32>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Drop a pending bundle.
    Abort {
        /// Bundle.
        id: BundleId,
    },
    /// Drop pending bundles whose allocation expired.
    Expire {
        /// Bundles.
        ids: Vec<BundleId>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Mark a sealed bundle deleting.
    Delete {
        /// Bundle.
        id: BundleId,
    },
    /// Remove a deleted bundle's record once its shards are gone.
    Purge {
        /// Bundle.
        id: BundleId,
    },
    /// Shards of a sealed bundle found missing or corrupt by a reader or scrubber: queue (or
    /// widen) its repair.
    ReportDamage {
        /// Bundle.
        id: BundleId,
        /// Damaged shard indexes.
        shards: Vec<u32>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Write bundle records and allocate/commit commands in `value_format` from this entry on
    /// (the leader proposes it only once every member confirmed it reads that format).
    SetValueFormat {
        /// `keys::VALUE_V1` or `keys::VALUE_V2`; never older than the current one.
        value_format: u8,
    },
    /// Compare-and-set a bundle's placement.
    UpdatePlacement {
        /// Bundle.
        id: BundleId,
        /// Expected generation.
        expected_generation: u64,
        /// New placement.
        placement: Vec<u64>,
        /// Leader's clock.
        now_ms: u64,
        /// Shards rewritten in place (their disk stays).
        #[serde(default)]
        rewritten_shards: Vec<u32>,
    },
}

impl Command {
    /// Version byte and the command in the group's `value_format`: protobuf for allocate and
    /// commit in version 2, JSON otherwise.
    pub fn encode(&self, value_format: u8) -> Vec<u8> {
        if value_format >= keys::VALUE_V2 {
            if let Some(v) = crate::codec::encode_command(self) {
                return v;
            }
        }
        encode_value(self)
    }

    fn decode(b: &[u8]) -> Result<Self> {
        match b.split_first() {
            Some((&keys::VALUE_V2, body)) => crate::codec::decode_command(body),
            _ => decode_value(b, "command"),
        }
    }
}

/// What an applied command returns to the proposer.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Registration result.
    Node {
        /// Node.
        node: NodeRecord,
        /// Its disks, in request order.
        disks: Vec<DiskRecord>,
        /// Cluster id.
        cluster_id: String,
    },
    /// A bundle after the command.
    Bundle(BundleRecord),
    /// A disk after the command.
    Disk {
        /// Disk.
        disk: DiskRecord,
        /// Repairs queued.
        repairs_queued: u64,
    },
    /// A node after the command.
    NodeUpdated(NodeRecord),
    /// Moves queued by a rebalance.
    MovesQueued(u64),
    /// Whether a damage report queued a repair.
    Damage {
        /// Queued (false: nothing new to repair).
        queued: bool,
    },
    /// Nothing to return.
    Done,
}

/// Response type of the state machine.
pub type ApplyResult = Result<Applied>;

/// Typed single-key reads of the state machine over a source of raw values: the DB
/// ([`MetaStore`]) or, while applying, the DB plus a round's unwritten writes (`Applier`).
pub trait KeyReader {
    /// The raw value stored under `key`.
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The decoded value stored under `key`.
    fn get<T: DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>> {
        match self.get_raw(key)? {
            Some(v) => Ok(Some(decode_value(&v, what)?)),
            None => Ok(None),
        }
    }

    /// A bundle record.
    fn bundle(&self, id: BundleId) -> Result<Option<BundleRecord>> {
        self.get_raw(&keys::bundle(id))?
            .map(|v| crate::codec::decode_bundle(&v))
            .transpose()
    }

    /// The bundle an allocation request created, if it was applied.
    fn request_bundle(&self, request_id: &str) -> Result<Option<BundleId>> {
        self.get_raw(&keys::request(request_id))?
            .map(|v| crate::codec::decode_request_bundle(&v))
            .transpose()
    }

    /// A bundle's repair entry, if queued.
    fn repair_task(&self, id: BundleId) -> Result<Option<RepairTask>> {
        let Some(healthy) = self.get_raw(&keys::repair_by_bundle(id))? else {
            return Ok(None);
        };
        let healthy = healthy
            .as_slice()
            .try_into()
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        self.get(&keys::repair(healthy, id), "repair task")
    }
}

impl KeyReader for MetaStore {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf()?, key).map_err(db_err)
    }
}

pub(crate) fn decode_value<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    match b.split_first() {
        Some((&keys::VALUE_V1, rest)) => {
            serde_json::from_slice(rest).map_err(|e| MetaError::Corrupt {
                what: format!("{what}: {e}"),
            })
        }
        _ => Err(MetaError::Corrupt {
            what: format!("{what}: unknown value version"),
        }),
    }
}

/// The `(disk id, placed bytes)` pairs of a `keys::DISK_USAGE` value.
fn decode_disk_usage(v: &[u8]) -> Result<Vec<(u64, u64)>> {
    let corrupt = |why: &str| MetaError::Corrupt {
        what: format!("disk usage value: {why}"),
    };
    let Some((&keys::VALUE_V1, rest)) = v.split_first() else {
        return Err(corrupt("unknown value version"));
    };
    if rest.len() % 16 != 0 {
        return Err(corrupt("length is not a whole number of 16-byte pairs"));
    }
    Ok(rest
        .chunks_exact(16)
        .map(|p| {
            let (id, bytes) = p.split_at(8);
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
            (word(id), word(bytes))
        })
        .collect())
}

pub(crate) fn encode_value<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![keys::VALUE_V1];
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out
}

/// Read options for an iterator that stops at `upper` (exclusive) instead of stepping over
/// deleted keys beyond it until it finds a live one.
fn bounded_to(upper: Vec<u8>) -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(upper);
    ro
}

fn db_err(e: rocksdb::Error) -> MetaError {
    MetaError::Corrupt {
        what: format!("rocksdb: {e}"),
    }
}

/// A shard on a disk: (bundle, shard index).
pub type DiskShard = (BundleId, u32);

/// Read side of the state machine, shared by the services and the apply path.
#[derive(Debug)]
pub struct MetaStore {
    db: Arc<DB>,
    map: RwLock<ClusterMap>,
    /// Bumped whenever nodes or disks are added or change state, or a snapshot replaces the
    /// map: what decides where shards may go (capacity and use aside) has changed.
    topology_epoch: std::sync::atomic::AtomicU64,
}

/// A filter for listing bundles.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Label key and value.
    pub label: Option<(String, String)>,
    /// State.
    pub state: Option<BundleState>,
}

impl MetaStore {
    /// Loads the cluster map from the DB.
    pub fn load(db: Arc<DB>) -> Result<Arc<Self>> {
        let s = Arc::new(Self {
            db,
            map: RwLock::new(ClusterMap::default()),
            topology_epoch: std::sync::atomic::AtomicU64::new(0),
        });
        s.reload()?;
        Ok(s)
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(CF_SM).ok_or_else(|| MetaError::Corrupt {
            what: "column family sm missing".into(),
        })
    }

    /// The value format the group writes (`ClusterRecord::value_format`).
    pub fn value_format(&self) -> u8 {
        self.map().cluster.value_format()
    }

    /// Re-reads the cluster map (after a snapshot replaced the column family).
    pub fn reload(&self) -> Result<()> {
        let cf = self.cf()?;
        let mut map = ClusterMap::default();
        if let Some(v) = self.db.get_cf(cf, keys::CLUSTER).map_err(db_err)? {
            map.cluster = decode_value(&v, "cluster record")?;
        }
        self.scan(&[keys::NODE], &[], usize::MAX, |_, v| {
            let n: NodeRecord = decode_value(v, "node record")?;
            map.nodes.insert(n.id, n);
            Ok(())
        })?;
        self.scan(&[keys::DISK], &[], usize::MAX, |_, v| {
            let d: DiskRecord = decode_value(v, "disk record")?;
            map.disks.insert(d.id, d);
            Ok(())
        })?;
        // Placed bytes written since a disk record was: they override its `accounted_bytes`
        // (a store written before the usage keys existed has none, and keeps the records').
        self.scan(&[keys::DISK_USAGE], &[], usize::MAX, |_, v| {
            for (id, bytes) in decode_disk_usage(v)? {
                if let Some(d) = map.disks.get_mut(&id) {
                    d.accounted_bytes = bytes;
                }
            }
            Ok(())
        })?;
        *self.write_map() = map;
        self.bump_topology_epoch();
        Ok(())
    }

    /// See [`MetaStore::topology_epoch`].
    fn bump_topology_epoch(&self) {
        self.topology_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes whenever nodes or disks are added or change state (read it before reading the
    /// map, so a map read after a change is never taken for the older epoch).
    pub fn topology_epoch(&self) -> u64 {
        self.topology_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn write_map(&self) -> RwLockWriteGuard<'_, ClusterMap> {
        match self.map.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The cluster map.
    pub fn map(&self) -> RwLockReadGuard<'_, ClusterMap> {
        match self.map.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        let cf = self.cf()?;
        let start = if after.is_empty() || !after.starts_with(prefix) {
            prefix.to_vec()
        } else {
            let mut s = after.to_vec();
            s.push(0);
            s
        };
        let mut it = self
            .db
            .raw_iterator_cf_opt(cf, bounded_to(keys::prefix_end(prefix)));
        it.seek(&start);
        let mut n = 0;
        let mut last = None;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) {
                return Ok(None);
            }
            if n == limit {
                return Ok(last);
            }
            f(k, v)?;
            last = Some(k.to_vec());
            n += 1;
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok(None)
    }

    /// A page of bundles; returns the next page token (empty when done).
    pub fn list_bundles(
        &self,
        filter: &ListFilter,
        token: &[u8],
        limit: usize,
    ) -> Result<(Vec<BundleRecord>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let prefix = match (&filter.label, filter.state) {
            (Some((k, v)), _) => keys::label_prefix(k, v),
            (None, Some(s)) => keys::state_prefix(s.tag()),
            (None, None) => vec![keys::BUNDLE],
        };
        let next = if filter.label.is_none() && filter.state.is_none() {
            self.scan(&prefix, token, limit, |_, v| {
                out.push(crate::codec::decode_bundle(v)?);
                Ok(())
            })?
        } else {
            self.scan(&prefix, token, limit, |k, _| {
                if let Some(id) = keys::trailing_bundle_id(k) {
                    ids.push(id);
                }
                Ok(())
            })?
        };
        for id in ids {
            if let Some(b) = self.bundle(id)? {
                if filter.state.is_none_or(|s| s == b.state) {
                    out.push(b);
                }
            }
        }
        Ok((out, next.unwrap_or_default()))
    }

    /// A page of the disk → bundles reverse map: (bundle, shard index).
    pub fn list_disk_bundles(
        &self,
        disk_id: u64,
        token: &[u8],
        limit: usize,
    ) -> Result<(Vec<DiskShard>, Vec<u8>)> {
        let mut out = Vec::new();
        let next = self.scan(&keys::disk_bundle_prefix(disk_id), token, limit, |k, v| {
            if let Some(id) = keys::trailing_bundle_id(k) {
                let idx = v.try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
                out.push((id, idx));
            }
            Ok(())
        })?;
        Ok((out, next.unwrap_or_default()))
    }

    /// A page of the repair queue, most endangered first.
    pub fn list_repairs(&self, token: &[u8], limit: usize) -> Result<(Vec<RepairTask>, Vec<u8>)> {
        let mut out = Vec::new();
        let next = self.scan(&[keys::REPAIR], token, limit, |_, v| {
            out.push(decode_value(v, "repair task")?);
            Ok(())
        })?;
        Ok((out, next.unwrap_or_default()))
    }

    /// How many shards the reverse map places on a disk (counted up to `limit`).
    pub fn disk_shard_count(&self, disk_id: u64, limit: usize) -> Result<u64> {
        let mut n = 0;
        self.scan(&keys::disk_bundle_prefix(disk_id), &[], limit, |_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Pending bundles whose allocation expired by `now_ms` (at most `limit`).
    pub fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<BundleId>> {
        let mut out = Vec::new();
        let cf = self.cf()?;
        // The bound keeps the scan away from the expiry keys of bundles committed since the
        // last compaction: their deletions lie after `now_ms` and would otherwise be stepped
        // over one by one on every scan.
        let mut bound = vec![keys::EXPIRY];
        bound.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
        let mut it = self.db.raw_iterator_cf_opt(cf, bounded_to(bound));
        it.seek([keys::EXPIRY]);
        while it.valid() && out.len() < limit {
            let Some(k) = it.key() else { break };
            if k.first() != Some(&keys::EXPIRY) || k.len() != 25 {
                break;
            }
            let exp = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            if exp > now_ms {
                break;
            }
            if let Some(id) = keys::trailing_bundle_id(k) {
                out.push(id);
            }
            it.next();
        }
        Ok(out)
    }
}

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
    dirty_disks: BTreeSet<u64>,
    /// Chunks (`keys::DISK_USAGE`) whose disks' placed bytes changed this round.
    dirty_usage: BTreeSet<u64>,
    dirty_nodes: BTreeSet<u64>,
}

impl MetaStateMachine {
    /// Wraps the shared store.
    pub fn new(store: Arc<MetaStore>) -> Self {
        Self {
            store,
            unwritten: BTreeMap::new(),
            dirty_disks: BTreeSet::new(),
            dirty_usage: BTreeSet::new(),
            dirty_nodes: BTreeSet::new(),
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
        batch.put_cf(cf, keys::CLUSTER, encode_value(&map.cluster));
        for id in std::mem::take(&mut self.dirty_disks) {
            if let Some(d) = map.disks.get(&id) {
                // Placed bytes live in the disk's usage chunk (written below, with the value
                // the round ends with), so the record does not depend on where in a round it
                // was written.
                let record = DiskRecord {
                    accounted_bytes: 0,
                    ..d.clone()
                };
                batch.put_cf(cf, keys::disk(id), encode_value(&record));
                self.dirty_usage.insert(keys::disk_usage_chunk(id));
            }
        }
        for chunk in std::mem::take(&mut self.dirty_usage) {
            let first = chunk * keys::DISK_USAGE_CHUNK;
            let mut value = vec![keys::VALUE_V1];
            // Inclusive and saturating: the chunk of the highest possible id has no end
            // beyond `u64::MAX` (ids are assigned one by one, but the range must not overflow).
            let last = first.saturating_add(keys::DISK_USAGE_CHUNK - 1);
            for (id, d) in map.disks.range(first..=last) {
                value.extend_from_slice(&id.to_be_bytes());
                value.extend_from_slice(&d.accounted_bytes.to_be_bytes());
            }
            batch.put_cf(cf, keys::disk_usage(chunk), value);
        }
        for id in std::mem::take(&mut self.dirty_nodes) {
            if let Some(n) = map.nodes.get(&id) {
                batch.put_cf(cf, keys::node(id), encode_value(n));
            }
        }
        Ok(())
    }
}

impl Command {
    /// Whether this command may share a log entry with others
    /// ([`bitmountain_raftstore::RaftHandle::propose_shared`]): those that scan key ranges
    /// while applied write out the earlier entries first, which needs an entry of their own.
    pub fn may_share_entry(&self) -> bool {
        self.reads_only_single_keys()
    }

    /// Whether applying this command reads only single keys (which `unwritten` can answer)
    /// and never scans a key range of the DB.
    fn reads_only_single_keys(&self) -> bool {
        !matches!(
            self,
            Command::RegisterNode { .. }
                | Command::SetDiskState { .. }
                | Command::SetNodeState { .. }
        )
    }
}

impl StateMachine for MetaStateMachine {
    type Response = ApplyResult;

    fn apply(&mut self, mut ctx: ApplyCtx<'_>, command: &[u8]) -> ApplyResult {
        let cmd = match Command::decode(command) {
            Ok(cmd) => cmd,
            // Every member must apply every committed entry: one that skipped it would hold
            // a different state from then on. A command this binary cannot read was written
            // by a newer one (or the log is damaged), so the member stops instead.
            Err(e) => panic!(
                "committed log entry {} holds a command this member cannot apply ({e}); \
                 stopping rather than diverge from the group: upgrade bitmountain on this \
                 member (or restore it from a snapshot of a healthy one)",
                ctx.index
            ),
        };
        let reads_only_single_keys = cmd.reads_only_single_keys();
        if !reads_only_single_keys {
            self.add_round_to(ctx.batch)?;
            ctx.write_earlier().map_err(crate::raft_error)?;
        }
        let mut a = Applier {
            store: &self.store,
            map: self.store.write_map(),
            unwritten: &self.unwritten,
            written: Vec::new(),
            dirty_disks: &mut self.dirty_disks,
            dirty_usage: &mut self.dirty_usage,
            dirty_nodes: &mut self.dirty_nodes,
        };
        let result = a.apply(cmd);
        if !reads_only_single_keys {
            // Registration and disk or node state changes are the commands that change the
            // topology (and the only ones that scan key ranges).
            self.store.bump_topology_epoch();
        }
        // This entry's writes become visible to the next entries only now: an entry never
        // reads its own writes (as when every entry was written on its own).
        let written = std::mem::take(&mut a.written);
        drop(a);
        self.unwritten.extend(written);
        result
    }

    fn before_write(&mut self, batch: &mut WriteBatch) {
        // The column family exists from the first open on; not finding it is a broken store.
        if let Err(e) = self.add_round_to(batch) {
            tracing::error!(error = %e, "cannot add the round's writes to the apply batch");
            panic!("metadata store is broken: {e}");
        }
    }

    fn restored(&mut self) {
        self.unwritten.clear();
        self.dirty_disks.clear();
        self.dirty_usage.clear();
        self.dirty_nodes.clear();
        if let Err(e) = self.store.reload() {
            tracing::error!(error = %e, "reloading the cluster map after a snapshot failed");
        }
    }
}

struct Applier<'a> {
    store: &'a MetaStore,
    map: RwLockWriteGuard<'a, ClusterMap>,
    /// Writes of earlier entries of this round, not in the DB yet.
    unwritten: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// This entry's writes, in order.
    written: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    dirty_disks: &'a mut BTreeSet<u64>,
    dirty_usage: &'a mut BTreeSet<u64>,
    dirty_nodes: &'a mut BTreeSet<u64>,
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

impl Applier<'_> {
    // Writes are collected per entry and reach the batch at the end of the round
    // (`MetaStateMachine::add_round_to`), so they cannot fail here.
    fn put<T: Serialize>(&mut self, key: &[u8], v: &T) {
        self.written.push((key.to_vec(), Some(encode_value(v))));
    }

    fn put_bundle(&mut self, b: &BundleRecord) {
        let v = crate::codec::encode_bundle(b, self.map.cluster.value_format());
        self.written.push((keys::bundle(b.id), Some(v)));
    }

    fn put_raw(&mut self, key: &[u8], v: &[u8]) {
        self.written.push((key.to_vec(), Some(v.to_vec())));
    }

    fn del(&mut self, key: &[u8]) {
        self.written.push((key.to_vec(), None));
    }

    fn charge(&mut self, disk: u64, bytes: u64, add: bool) {
        if let Some(d) = self.map.disks.get_mut(&disk) {
            d.accounted_bytes = if add {
                d.accounted_bytes.saturating_add(bytes)
            } else {
                d.accounted_bytes.saturating_sub(bytes)
            };
            self.dirty_usage.insert(keys::disk_usage_chunk(disk));
        }
    }

    fn count(&mut self, state: BundleState, add: bool) {
        let c = &mut self.map.cluster;
        let slot = match state {
            BundleState::Pending => &mut c.pending,
            BundleState::Sealed => &mut c.sealed,
            BundleState::Deleting => &mut c.deleting,
        };
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }

    fn known_bundle(&self, id: BundleId) -> Result<BundleRecord> {
        self.bundle(id)?.ok_or(MetaError::UnknownBundle { id })
    }

    fn apply(&mut self, cmd: Command) -> ApplyResult {
        match cmd {
            Command::RegisterNode {
                request_id,
                node_id,
                address,
                zone,
                rack,
                host,
                disks,
                cluster_id_candidate,
            } => self.register(
                request_id,
                node_id,
                address,
                zone,
                rack,
                host,
                disks,
                cluster_id_candidate,
            ),
            Command::SetDiskState {
                disk_id,
                state,
                now_ms,
            } => self.set_disk_state(disk_id, state, now_ms),
            Command::SetNodeState {
                node_id,
                state,
                now_ms,
            } => self.set_node_state(node_id, state, now_ms),
            Command::SetValueFormat { value_format } => {
                self.map.cluster.value_format =
                    value_format_switch(self.map.cluster.value_format(), value_format.into())?;
                Ok(Applied::Done)
            }
            Command::SetRepairSettings { settings } => {
                let current = &mut self.map.cluster.repair_settings;
                if settings.max_repairs_per_node != 0 {
                    current.max_repairs_per_node = settings.max_repairs_per_node;
                }
                current.bytes_per_sec = settings.bytes_per_sec;
                current.paused = settings.paused;
                Ok(Applied::Done)
            }
            Command::QueueMoves { moves, now_ms } => {
                let mut queued = 0;
                for (id, shard, to_disk, generation) in moves {
                    let Some(b) = self.bundle(id)? else {
                        continue;
                    };
                    let target_ok = self
                        .map
                        .disks
                        .get(&to_disk)
                        .is_some_and(|d| d.state == DiskState::Ok);
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
            Command::Allocate {
                request_id,
                id,
                code,
                labels,
                expected_length,
                placement,
                now_ms,
                expires_ms,
            } => {
                if let Some(existing) = self.request_bundle(&request_id)? {
                    if let Some(b) = self.bundle(existing)? {
                        return Ok(Applied::Bundle(b));
                    }
                }
                if placement.len() != code.total() {
                    return Err(MetaError::MalformedPlacement {
                        id,
                        reason: format!("{} disks for {} shards", placement.len(), code.total()),
                    });
                }
                for d in &placement {
                    let disk = self
                        .map
                        .disks
                        .get(d)
                        .ok_or(MetaError::UnknownDisk { id: *d })?;
                    if disk.state != DiskState::Ok {
                        return Err(MetaError::PlacementStale {
                            id,
                            disk_id: *d,
                            state: disk.state,
                        });
                    }
                }
                let shard_bytes = code.shard_bytes(expected_length);
                let rec = BundleRecord {
                    id,
                    state: BundleState::Pending,
                    code,
                    length: 0,
                    index_offset: 0,
                    index_length: 0,
                    sha256: Vec::new(),
                    file_count: 0,
                    labels,
                    created_unix_ms: now_ms,
                    expires_unix_ms: expires_ms,
                    placement: placement.clone(),
                    placement_generation: 1,
                    request_id: request_id.clone(),
                    accounted_shard_bytes: shard_bytes,
                };
                for (i, d) in placement.iter().enumerate() {
                    self.put_raw(&keys::disk_bundle(*d, id), &(i as u32).to_be_bytes());
                    self.charge(*d, shard_bytes, true);
                }
                for (k, v) in &rec.labels {
                    self.put_raw(&keys::label(k, v, id), &[]);
                }
                self.put_raw(&keys::state(BundleState::Pending.tag(), id), &[]);
                self.put_raw(&keys::expiry(expires_ms, id), &[]);
                let request_value =
                    crate::codec::encode_request_bundle(id, self.map.cluster.value_format());
                self.put_raw(&keys::request(&request_id), &request_value);
                self.put_bundle(&rec);
                self.count(BundleState::Pending, true);
                Ok(Applied::Bundle(rec))
            }
            Command::Commit {
                id,
                length,
                index_offset,
                index_length,
                sha256,
                file_count,
                missing_shards,
                now_ms,
            } => {
                let mut b = self.known_bundle(id)?;
                match b.state {
                    BundleState::Sealed => {
                        if b.length == length && b.sha256 == sha256 {
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
                if now_ms > b.expires_unix_ms {
                    return Err(MetaError::AllocationExpired {
                        id,
                        expires_unix_ms: b.expires_unix_ms,
                    });
                }
                let mut missing: Vec<u32> = missing_shards;
                missing.sort_unstable();
                missing.dedup();
                if let Some(bad) = missing.iter().find(|s| **s as usize >= b.code.total()) {
                    return Err(MetaError::InvalidArgument {
                        field: crate::error::Field::MissingShards,
                        reason: format!(
                            "shard {bad} does not exist in a {}-shard bundle",
                            b.code.total()
                        ),
                    });
                }
                let tolerated = b.code.parity_shards.saturating_sub(1) as usize;
                if missing.len() > tolerated {
                    return Err(MetaError::TooManyMissingShards {
                        id,
                        missing: missing.len(),
                        tolerated,
                    });
                }
                let new_shard = b.code.shard_bytes(length);
                for d in b.placement.clone() {
                    self.charge(d, b.accounted_shard_bytes, false);
                    self.charge(d, new_shard, true);
                }
                self.del(&keys::state(BundleState::Pending.tag(), id));
                self.del(&keys::expiry(b.expires_unix_ms, id));
                self.put_raw(&keys::state(BundleState::Sealed.tag(), id), &[]);
                self.count(BundleState::Pending, false);
                self.count(BundleState::Sealed, true);
                b.state = BundleState::Sealed;
                b.length = length;
                b.index_offset = index_offset;
                b.index_length = index_length;
                b.sha256 = sha256;
                b.file_count = file_count;
                b.accounted_shard_bytes = new_shard;
                b.expires_unix_ms = 0;
                self.put_bundle(&b);
                if !missing.is_empty() {
                    self.set_repair(&b, missing, BTreeMap::new(), now_ms)?;
                }
                Ok(Applied::Bundle(b))
            }
            Command::Abort { id } => match self.bundle(id)? {
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
            },
            Command::Expire { ids, now_ms } => {
                for id in ids {
                    if let Some(b) = self.bundle(id)? {
                        if b.state == BundleState::Pending && b.expires_unix_ms <= now_ms {
                            self.remove_record(&b)?;
                        }
                    }
                }
                Ok(Applied::Done)
            }
            Command::Delete { id } => {
                let mut b = self.known_bundle(id)?;
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
                self.unqueue_repair(id)?;
                b.state = BundleState::Deleting;
                self.put_bundle(&b);
                Ok(Applied::Bundle(b))
            }
            Command::Purge { id } => match self.bundle(id)? {
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
            },
            Command::ReportDamage { id, shards, now_ms } => {
                let b = self.known_bundle(id)?;
                if b.state != BundleState::Sealed {
                    return Ok(Applied::Damage { queued: false });
                }
                if let Some(bad) = shards.iter().find(|s| **s as usize >= b.code.total()) {
                    return Err(MetaError::InvalidArgument {
                        field: crate::error::Field::ShardIndexes,
                        reason: format!(
                            "shard {bad} does not exist in a {}-shard bundle",
                            b.code.total()
                        ),
                    });
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
            Command::UpdatePlacement {
                id,
                expected_generation,
                placement,
                now_ms,
                rewritten_shards,
            } => {
                let mut b = self.known_bundle(id)?;
                if b.placement_generation != expected_generation {
                    if b.placement_generation == expected_generation + 1 && b.placement == placement
                    {
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
                self.validate_placement(&b, &placement)?;
                if let Some(bad) = rewritten_shards
                    .iter()
                    .find(|s| **s as usize >= b.code.total())
                {
                    return Err(MetaError::InvalidArgument {
                        field: crate::error::Field::RewrittenShards,
                        reason: format!(
                            "shard {bad} does not exist in a {}-shard bundle",
                            b.code.total()
                        ),
                    });
                }
                let mut done: Vec<u32> = rewritten_shards;
                for (i, (old, new)) in b.placement.clone().iter().zip(&placement).enumerate() {
                    if old != new {
                        done.push(i as u32);
                        self.del(&keys::disk_bundle(*old, id));
                        self.put_raw(&keys::disk_bundle(*new, id), &(i as u32).to_be_bytes());
                        self.charge(*old, b.accounted_shard_bytes, false);
                        self.charge(*new, b.accounted_shard_bytes, true);
                    }
                }
                b.placement = placement;
                b.placement_generation += 1;
                self.put_bundle(&b);
                done.sort_unstable();
                done.dedup();
                self.map.cluster.shards_repaired += done.len() as u64;
                self.map.cluster.bytes_repaired = self
                    .map
                    .cluster
                    .bytes_repaired
                    .saturating_add(done.len() as u64 * b.accounted_shard_bytes);
                let task = self.repair_task(id)?;
                let (mut damaged, mut moves, since) = Self::task_parts(task.as_ref(), now_ms);
                damaged.retain(|s| !done.contains(s));
                moves.retain(|s, _| !done.contains(s));
                self.set_repair(&b, damaged, moves, since)?;
                Ok(Applied::Bundle(b))
            }
        }
    }

    fn validate_placement(&self, b: &BundleRecord, placement: &[u64]) -> Result<()> {
        let bad = |reason: String| MetaError::MalformedPlacement { id: b.id, reason };
        if placement.len() != b.code.total() {
            return Err(bad(format!(
                "{} disks given for {} shards (k+m)",
                placement.len(),
                b.code.total()
            )));
        }
        let mut seen = BTreeSet::new();
        for d in placement {
            if !seen.insert(*d) {
                return Err(bad(format!("disk {d} appears twice")));
            }
            let disk = self
                .map
                .disks
                .get(d)
                .ok_or_else(|| bad(format!("disk {d} is not in the cluster map")))?;
            if disk.state == DiskState::Removed {
                return Err(bad(format!("disk {d} is removed")));
            }
        }
        Ok(())
    }

    /// The damaged shards, moves and queue time of a repair entry (empty for none).
    fn task_parts(task: Option<&RepairTask>, now_ms: u64) -> (Vec<u32>, BTreeMap<u32, u64>, u64) {
        match task {
            Some(t) => (t.damaged_shards.clone(), t.moves.clone(), t.queued_unix_ms),
            None => (Vec::new(), BTreeMap::new(), now_ms),
        }
    }

    /// Recomputes a bundle's repair entry from the map plus the damaged shards and moves given,
    /// and queues, re-keys or removes it. Returns whether an entry remains.
    fn set_repair(
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
        let health = shard_health(&self.map, b, Some(&task));
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
            &task.healthy_shards.to_be_bytes(),
        );
        self.map.cluster.repairs += 1;
        Ok(true)
    }

    /// Recomputes the repair entries of every bundle with a shard on these disks (after a disk
    /// or node changed state).
    fn requeue_disks(&mut self, disks: &[u64], now_ms: u64) -> Result<u64> {
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

    fn unqueue_repair(&mut self, id: BundleId) -> Result<()> {
        if let Some(v) = self.get_raw(&keys::repair_by_bundle(id))? {
            let healthy = v.as_slice().try_into().map(u32::from_be_bytes).unwrap_or(0);
            self.del(&keys::repair(healthy, id));
            self.del(&keys::repair_by_bundle(id));
            self.map.cluster.repairs = self.map.cluster.repairs.saturating_sub(1);
        }
        Ok(())
    }

    /// Removes every key of a pending (aborted, expired) or deleted (purged) bundle and gives
    /// its disks their accounted bytes back.
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

    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        request_id: String,
        node_id: u64,
        address: String,
        zone: String,
        rack: String,
        host: String,
        disks: Vec<DiskSpec>,
        cluster_id_candidate: String,
    ) -> ApplyResult {
        if self.map.cluster.cluster_id.is_empty() {
            // The group's first registration: it writes the newest value format from here on
            // (every member applies this same entry, so all switch at the same index).
            self.map.cluster.cluster_id = cluster_id_candidate;
            self.map.cluster.value_format = keys::VALUE_FORMAT_NEWEST;
        }
        let prior: Option<u64> = if request_id.is_empty() {
            None
        } else {
            self.store
                .get(&keys::request(&request_id), "request record")?
        };
        // Validate before changing anything.
        let id = match (prior, node_id) {
            (Some(p), _) => p,
            (None, 0) => 0,
            (None, n) => {
                if !self.map.nodes.contains_key(&n) {
                    return Err(MetaError::UnknownNode { id: n });
                }
                n
            }
        };
        for d in &disks {
            if d.disk_id != 0 {
                let disk = self
                    .map
                    .disks
                    .get(&d.disk_id)
                    .ok_or(MetaError::UnknownDisk { id: d.disk_id })?;
                if id != 0 && disk.node_id != id {
                    return Err(MetaError::DiskOwnedByOtherNode {
                        disk_id: d.disk_id,
                        owner: disk.node_id,
                        node_id: id,
                    });
                }
            }
        }
        let id = if id == 0 {
            self.map.cluster.next_node_id = self.map.cluster.next_node_id.max(1);
            let n = self.map.cluster.next_node_id;
            self.map.cluster.next_node_id += 1;
            n
        } else {
            id
        };
        if !request_id.is_empty() {
            self.put(&keys::request(&request_id), &id);
        }
        let node = NodeRecord {
            id,
            address,
            zone,
            rack,
            host: if host.is_empty() {
                format!("node-{id}")
            } else {
                host
            },
            state: NodeState::Up,
        };
        self.map.nodes.insert(id, node.clone());
        self.dirty_nodes.insert(id);
        let mut out = Vec::new();
        let prior_disks: Vec<u64> = if prior.is_some() {
            self.map
                .disks
                .values()
                .filter(|d| d.node_id == id)
                .map(|d| d.id)
                .collect()
        } else {
            Vec::new()
        };
        let mut reuse = prior_disks.into_iter();
        for spec in disks {
            let disk_id = if spec.disk_id != 0 {
                spec.disk_id
            } else if let Some(r) = reuse.next() {
                r // a retried registration: the disks it created, in order
            } else {
                self.map.cluster.next_disk_id = self.map.cluster.next_disk_id.max(1);
                let n = self.map.cluster.next_disk_id;
                self.map.cluster.next_disk_id += 1;
                n
            };
            let entry = self.map.disks.entry(disk_id).or_insert(DiskRecord {
                id: disk_id,
                node_id: id,
                path: spec.path.clone(),
                capacity_bytes: spec.capacity_bytes,
                accounted_bytes: 0,
                state: DiskState::Ok,
            });
            entry.path = spec.path;
            entry.capacity_bytes = spec.capacity_bytes;
            out.push(entry.clone());
            self.dirty_disks.insert(disk_id);
        }
        Ok(Applied::Node {
            node,
            disks: out,
            cluster_id: self.map.cluster.cluster_id.clone(),
        })
    }

    fn set_disk_state(&mut self, disk_id: u64, state: DiskState, now_ms: u64) -> ApplyResult {
        let was = self
            .map
            .disks
            .get(&disk_id)
            .ok_or(MetaError::UnknownDisk { id: disk_id })?
            .state;
        if state == DiskState::Removed {
            let shards = self.store.disk_shard_count(disk_id, usize::MAX)?;
            if shards > 0 {
                return Err(MetaError::StillHoldsShards {
                    what: format!("disk {disk_id}"),
                    command: "disk".into(),
                    id: disk_id,
                    shards,
                });
            }
        }
        let disk = {
            let Some(disk) = self.map.disks.get_mut(&disk_id) else {
                return Err(MetaError::UnknownDisk { id: disk_id });
            };
            disk.state = state;
            disk.clone()
        };
        self.dirty_disks.insert(disk_id);
        let queued = if state != was {
            self.requeue_disks(&[disk_id], now_ms)?
        } else {
            0
        };
        Ok(Applied::Disk {
            disk,
            repairs_queued: queued,
        })
    }

    fn set_node_state(&mut self, node_id: u64, state: NodeState, now_ms: u64) -> ApplyResult {
        let was = self
            .map
            .nodes
            .get(&node_id)
            .ok_or(MetaError::UnknownNode { id: node_id })?
            .state;
        let disks: Vec<u64> = self
            .map
            .disks
            .values()
            .filter(|d| d.node_id == node_id)
            .map(|d| d.id)
            .collect();
        if state == NodeState::Removed {
            let mut shards = 0;
            for d in &disks {
                shards += self.store.disk_shard_count(*d, usize::MAX)?;
            }
            if shards > 0 {
                return Err(MetaError::StillHoldsShards {
                    what: format!("node {node_id}"),
                    command: "node".into(),
                    id: node_id,
                    shards,
                });
            }
        }
        let node = {
            let Some(n) = self.map.nodes.get_mut(&node_id) else {
                return Err(MetaError::UnknownNode { id: node_id });
            };
            n.state = state;
            n.clone()
        };
        self.dirty_nodes.insert(node_id);
        if state == NodeState::Removed {
            for d in &disks {
                if let Some(disk) = self.map.disks.get_mut(d) {
                    disk.state = DiskState::Removed;
                    self.dirty_disks.insert(*d);
                }
            }
        }
        if state != was {
            self.requeue_disks(&disks, now_ms)?;
        }
        Ok(Applied::NodeUpdated(node))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(keys::prefix_end(&[0x23, 0x01]), vec![0x23, 0x02]);
        assert_eq!(keys::prefix_end(&[0x21, 0x00, 0xff]), vec![0x21, 0x01]);
        // No state-machine key starts with 0xff, so this bound is above all of them.
        assert_eq!(keys::prefix_end(&[0xff, 0xff]), vec![0xff; 17]);
    }

    fn map() -> ClusterMap {
        let mut m = ClusterMap::default();
        for n in 1..=4u64 {
            m.nodes.insert(
                n,
                NodeRecord {
                    id: n,
                    address: format!("127.0.0.1:{n}"),
                    zone: String::new(),
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
                },
            );
        }
        m
    }

    fn bundle() -> BundleRecord {
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

    /// The commands of a short history: registrations, allocations (one retried), commits (one
    /// with a missing shard, one repeated), an abort, and a disk failure in the middle.
    fn history(disks: &[u64]) -> Vec<Command> {
        let code = Code {
            data_shards: 2,
            parity_shards: 2,
            ..Code::DEFAULT
        };
        let alloc = |i: u64, request: &str| Command::Allocate {
            request_id: request.into(),
            id: BundleId(1_000 + i as u128),
            code,
            labels: BTreeMap::from([("book".to_string(), format!("b{}", i % 3))]),
            expected_length: 4 << 20,
            placement: (0..4).map(|k| disks[((i + k) % 6) as usize]).collect(),
            now_ms: 10 + i,
            expires_ms: 1_000_000,
        };
        let commit = |i: u64, missing: Vec<u32>| Command::Commit {
            id: BundleId(1_000 + i as u128),
            length: 3 << 20,
            index_offset: 100,
            index_length: 100,
            sha256: vec![i as u8; 32],
            file_count: 10,
            missing_shards: missing,
            now_ms: 500,
        };
        let mut h = Vec::new();
        for i in 0..8 {
            h.push(alloc(i, &format!("a{i}")));
        }
        // A retried allocation: answered with the first one's bundle, whatever id it carries.
        h.push(alloc(20, "a3"));
        h.push(commit(0, vec![]));
        h.push(commit(1, vec![1]));
        h.push(commit(2, vec![]));
        h.push(Command::SetDiskState {
            disk_id: disks[5],
            state: DiskState::Failed,
            now_ms: 600,
        });
        h.push(commit(3, vec![]));
        h.push(commit(3, vec![]));
        h.push(Command::Abort {
            id: BundleId(1_006),
        });
        h.push(alloc(9, "a9"));
        h.push(commit(9, vec![]));
        h
    }

    /// Every key-value of a column family, in key order.
    type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

    /// Applies `cmds` in rounds of `round` entries, as the driver does; returns every answer
    /// and every key-value of the state machine.
    fn run_in_rounds(round: usize) -> (Vec<String>, KeyValues) {
        let dir = tempfile::tempdir().unwrap();
        let engine = bitmountain_raftstore::Engine::open(dir.path()).unwrap();
        let store = MetaStore::load(engine.db().clone()).unwrap();
        let mut sm = MetaStateMachine::new(store.clone());
        let mut index = 10;
        let mut answers = Vec::new();
        let mut apply =
            |sm: &mut MetaStateMachine, cmds: Vec<Command>, answers: &mut Vec<String>| {
                for chunk in cmds.chunks(round) {
                    let mut batch = WriteBatch::default();
                    for c in chunk {
                        index += 1;
                        let ctx = ApplyCtx::new(index, 1, &mut batch, &engine, (index - 1, 1));
                        answers.push(format!(
                            "{:?}",
                            sm.apply(ctx, &c.encode(keys::VALUE_FORMAT_NEWEST))
                        ));
                    }
                    sm.before_write(&mut batch);
                    engine.write(batch, false).unwrap();
                }
            };
        let register: Vec<Command> = (1..=6)
            .map(|n| Command::RegisterNode {
                request_id: format!("n{n}"),
                node_id: 0,
                address: format!("127.0.0.1:{n}"),
                zone: String::new(),
                rack: String::new(),
                host: format!("host-{n}"),
                disks: vec![DiskSpec {
                    disk_id: 0,
                    path: "/d".into(),
                    capacity_bytes: 1 << 40,
                }],
                cluster_id_candidate: "c".into(),
            })
            .collect();
        apply(&mut sm, register, &mut answers);
        let disks: Vec<u64> = store.map().disks.keys().copied().collect();
        assert_eq!(disks.len(), 6);
        apply(&mut sm, history(&disks), &mut answers);
        // What a restart reads back: the disks' placed bytes come from the usage keys, which
        // rounds of allocations write instead of the disk records.
        let reloaded = MetaStore::load(engine.db().clone()).unwrap();
        assert_eq!(reloaded.map().disks, store.map().disks);
        assert!(store.map().disks.values().any(|d| d.accounted_bytes > 0));
        let cf = store.cf().unwrap();
        let kvs = engine
            .db()
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        (answers, kvs)
    }

    /// A state machine on a fresh store that applies one entry per round, as the leader
    /// encodes it (in the store's current value format).
    struct OneByOne {
        _dir: tempfile::TempDir,
        engine: bitmountain_raftstore::Engine,
        store: Arc<MetaStore>,
        sm: MetaStateMachine,
        index: u64,
    }

    impl OneByOne {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine = bitmountain_raftstore::Engine::open(dir.path()).unwrap();
            let store = MetaStore::load(engine.db().clone()).unwrap();
            let sm = MetaStateMachine::new(store.clone());
            Self {
                _dir: dir,
                engine,
                store,
                sm,
                index: 10,
            }
        }

        fn apply_bytes(&mut self, command: &[u8]) -> ApplyResult {
            let mut batch = WriteBatch::default();
            self.index += 1;
            let earlier = (self.index - 1, 1);
            let ctx = ApplyCtx::new(self.index, 1, &mut batch, &self.engine, earlier);
            let r = self.sm.apply(ctx, command);
            self.sm.before_write(&mut batch);
            self.engine.write(batch, false).unwrap();
            r
        }

        fn apply(&mut self, c: &Command) -> ApplyResult {
            let bytes = c.encode(self.store.value_format());
            self.apply_bytes(&bytes)
        }
    }

    #[test]
    #[should_panic(expected = "upgrade bitmountain on this member")]
    fn a_committed_command_this_member_cannot_read_stops_it() {
        // Version 3 does not exist (yet): what a newer binary might write.
        let _ = OneByOne::new().apply_bytes(&[3, 0x0a, 0x00]);
    }

    #[test]
    fn groups_write_the_value_format_their_cluster_record_names() {
        let mut one = OneByOne::new();
        let store = one.store.clone();
        // No cluster record before the first registration: version 1 (as in a record
        // written before the field existed).
        assert_eq!(store.value_format(), keys::VALUE_V1);
        let disks: Vec<u64> = (1..=4)
            .map(|n| {
                let cmd = Command::RegisterNode {
                    request_id: format!("n{n}"),
                    node_id: 0,
                    address: format!("127.0.0.1:{n}"),
                    zone: String::new(),
                    rack: String::new(),
                    host: format!("h{n}"),
                    disks: vec![DiskSpec {
                        disk_id: 0,
                        path: "/d".into(),
                        capacity_bytes: 1 << 40,
                    }],
                    cluster_id_candidate: "c".into(),
                };
                match one.apply(&cmd).unwrap() {
                    Applied::Node { disks, .. } => disks[0].id,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        // The first registration switched the group to version 2.
        assert_eq!(store.value_format(), keys::VALUE_V2);
        let code = Code {
            data_shards: 2,
            parity_shards: 2,
            ..Code::DEFAULT
        };
        let id = BundleId(77);
        one.apply(&Command::Allocate {
            request_id: "r".into(),
            id,
            code,
            labels: BTreeMap::new(),
            expected_length: 10,
            placement: disks.clone(),
            now_ms: 1,
            expires_ms: 1_000,
        })
        .unwrap();
        let raw = store.get_raw(&keys::bundle(id)).unwrap().unwrap();
        assert_eq!(raw[0], keys::VALUE_V2);
        let raw = store.get_raw(&keys::request("r")).unwrap().unwrap();
        assert_eq!(raw[0], keys::VALUE_V2);
        assert_eq!(store.request_bundle("r").unwrap(), Some(id));
        // A record still in version 1 (written before the switch) reads back as well.
        let mut old = store.bundle(id).unwrap().unwrap();
        old.file_count = 5;
        let cf = store.cf().unwrap();
        store
            .db
            .put_cf(cf, keys::bundle(id), encode_value(&old))
            .unwrap();
        assert_eq!(store.bundle(id).unwrap().unwrap(), old);
    }

    #[test]
    fn a_group_switches_to_a_newer_value_format_and_never_back() {
        let mut one = OneByOne::new();
        let store = one.store.clone();
        let mut apply = |value_format: u8| one.apply(&Command::SetValueFormat { value_format });
        assert_eq!(store.value_format(), keys::VALUE_V1);
        assert!(apply(keys::VALUE_V1).is_ok());
        assert!(apply(keys::VALUE_V2).is_ok());
        assert_eq!(store.value_format(), keys::VALUE_V2);
        for refused in [keys::VALUE_V1, keys::VALUE_FORMAT_NEWEST + 1] {
            let e = apply(refused).unwrap_err();
            assert!(
                matches!(e, MetaError::ValueFormatRefused { requested, .. } if requested == u32::from(refused)),
                "{e}"
            );
        }
        assert_eq!(store.value_format(), keys::VALUE_V2);
        // The switch is in the stored cluster record, not only in memory.
        store.reload().unwrap();
        assert_eq!(store.value_format(), keys::VALUE_V2);
    }

    #[test]
    fn disk_usage_values_decode_or_say_what_is_wrong() {
        let mut v = vec![keys::VALUE_V1];
        for (id, bytes) in [(3u64, 7u64), (64, 1 << 40)] {
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&bytes.to_be_bytes());
        }
        assert_eq!(decode_disk_usage(&v).unwrap(), vec![(3, 7), (64, 1 << 40)]);
        let short = decode_disk_usage(&v[..20]).unwrap_err().to_string();
        assert!(short.contains("16-byte pairs"), "{short}");
        let version = decode_disk_usage(&[9]).unwrap_err().to_string();
        assert!(version.contains("unknown value version"), "{version}");
    }

    #[test]
    fn rounds_of_any_size_reach_the_same_state() {
        let (answers, state) = run_in_rounds(1);
        // The history did what it says: the retry got bundle 3, the abort removed bundle 6.
        assert!(answers[6 + 8].contains("1003"), "{}", answers[6 + 8]);
        assert!(state
            .iter()
            .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_000)).as_slice()));
        assert!(!state
            .iter()
            .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_006)).as_slice()));
        assert!(!state
            .iter()
            .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_020)).as_slice()));
        // A commit moved bundle 3 from the pending index to the sealed one (a delete and a put
        // of the round's sorted writes).
        let has = |key: Vec<u8>| state.iter().any(|(k, _)| *k == key);
        assert!(!has(keys::state(
            BundleState::Pending.tag(),
            BundleId(1_003)
        )));
        assert!(has(keys::state(BundleState::Sealed.tag(), BundleId(1_003))));
        for round in [2, 3, 7, 100] {
            let (a, s) = run_in_rounds(round);
            assert_eq!(a, answers, "answers differ with rounds of {round}");
            assert!(s == state, "state differs with rounds of {round}");
        }
    }
}
