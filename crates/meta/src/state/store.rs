//! The read side of the state machine: [`MetaStore`] (the DB's `sm` column family plus the
//! in-memory cluster map) and [`KeyReader`], typed single-key reads shared with the apply path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bitmountain_raftstore::rocksdb::{self, DB};
use bitmountain_raftstore::CF_SM;
use serde::de::DeserializeOwned;

use super::ClusterMap;
use crate::codec::{self, binary};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::types::{BundleId, BundleRecord, BundleState, DiskRecord, NodeRecord, RepairTask};

/// Typed single-key reads of the state machine over a source of raw values: the DB
/// ([`MetaStore`]) or, while applying, the DB plus a round's unwritten writes (`Applier`).
pub trait KeyReader {
    /// The raw value stored under `key`.
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The decoded value stored under `key`.
    fn get<T: DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>> {
        match self.get_raw(key)? {
            Some(v) => Ok(Some(codec::decode_value(&v, what)?)),
            None => Ok(None),
        }
    }

    /// A bundle record.
    fn bundle(&self, id: BundleId) -> Result<Option<BundleRecord>> {
        self.get_raw(&keys::bundle(id))?
            .map(|v| codec::decode_bundle(&v))
            .transpose()
    }

    /// The bundle an allocation request created, if it was applied.
    fn request_bundle(&self, request_id: &str) -> Result<Option<BundleId>> {
        self.get_raw(&keys::request(request_id))?
            .map(|v| codec::decode_request_bundle(&v))
            .transpose()
    }

    /// An access token's record.
    fn token(
        &self,
        id: bitmountain_auth::TokenId,
    ) -> Result<Option<bitmountain_auth::TokenRecord>> {
        self.get(&keys::token(id), "token record")
    }

    /// A bundle's repair entry, if queued.
    fn repair_task(&self, id: BundleId) -> Result<Option<RepairTask>> {
        let Some(healthy) = self.get_raw(&keys::repair_by_bundle(id))? else {
            return Ok(None);
        };
        let healthy = binary::decode_u32(&healthy, "repair entry of a bundle")?;
        self.get(&keys::repair(healthy, id), "repair task")
    }
}

impl KeyReader for MetaStore {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf()?, key).map_err(db_err)
    }
}

/// Read options for an iterator that stops at `upper` (exclusive) instead of stepping over
/// deleted keys beyond it until it finds a live one.
fn bounded_to(upper: Vec<u8>) -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(upper);
    ro
}

pub(super) fn db_err(e: rocksdb::Error) -> MetaError {
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
    topology_epoch: AtomicU64,
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
            topology_epoch: AtomicU64::new(0),
        });
        s.reload()?;
        Ok(s)
    }

    /// The DB the store reads.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The shared DB handle (a backup reads a consistent RocksDB snapshot of it).
    pub(crate) fn db_handle(&self) -> Arc<DB> {
        Arc::clone(&self.db)
    }

    pub(crate) fn cf(&self) -> Result<&rocksdb::ColumnFamily> {
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
            map.cluster = codec::decode_value(&v, "cluster record")?;
        }
        self.scan(&[keys::NODE], &[], usize::MAX, |_, v| {
            let n: NodeRecord = codec::decode_value(v, "node record")?;
            map.nodes.insert(n.id, n);
            Ok(())
        })?;
        self.scan(&[keys::DISK], &[], usize::MAX, |_, v| {
            let d: DiskRecord = codec::decode_value(v, "disk record")?;
            map.disks.insert(d.id, d);
            Ok(())
        })?;
        // Placed bytes written since a disk record was: they override its `accounted_bytes`
        // (a store written before the usage keys existed has none, and keeps the records').
        self.scan(&[keys::DISK_USAGE], &[], usize::MAX, |_, v| {
            for (id, bytes) in binary::decode_disk_usage(v)? {
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
    pub(crate) fn bump_topology_epoch(&self) {
        self.topology_epoch.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever nodes or disks are added or change state (read it before reading the
    /// map, so a map read after a change is never taken for the older epoch).
    pub fn topology_epoch(&self) -> u64 {
        self.topology_epoch.load(Ordering::Acquire)
    }

    pub(crate) fn write_map(&self) -> RwLockWriteGuard<'_, ClusterMap> {
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

    pub(crate) fn scan(
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
                out.push(codec::decode_bundle(v)?);
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
                let idx = binary::decode_u32(v, "shard index of the disk → bundles map")?;
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
            out.push(codec::decode_value(v, "repair task")?);
            Ok(())
        })?;
        Ok((out, next.unwrap_or_default()))
    }

    /// Every access token record (at most `limit`), in id order.
    pub fn list_tokens(&self, limit: usize) -> Result<Vec<bitmountain_auth::TokenRecord>> {
        let mut out = Vec::new();
        self.scan(&[keys::TOKEN], &[], limit, |_, v| {
            out.push(codec::decode_value(v, "token record")?);
            Ok(())
        })?;
        Ok(out)
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
            let mut exp = [0u8; 8];
            exp.copy_from_slice(&k[1..9]);
            let exp = u64::from_be_bytes(exp);
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
