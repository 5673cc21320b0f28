//! The invariant checker: does a member's stored state hold together? Run after every round
//! in the state-machine tests and offline as `bitmountain meta check --data DIR` (the test
//! harness runs it on every member of every integration-test cluster at its end).
//!
//! What must hold, for every applied prefix of the log:
//! - every stored value decodes;
//! - the bundle counts of the cluster record equal the bundles in each state and the state
//!   index; the repair count equals the queue;
//! - the indexes equal the records: the disk → bundles map holds exactly the placements, the
//!   label map exactly the labels of bundles that are not deleting, the state index each
//!   bundle's state, the expiry index each pending bundle's expiry, each bundle's request key
//!   points to it;
//! - the repair queue matches shard health (`rules::shard_health`): a sealed bundle has an
//!   entry exactly when a shard is lost or moving, keyed and counted as that judgement says;
//! - each disk's placed bytes are the sum of the shards placed on it; each disk's node and
//!   every id below its counter exist;
//! - every access token record decodes under its own id, and the cluster record counts them.
//!
//! Reads go through the store, point reads and prefix scans; nothing is held per bundle, so
//! the checker's memory does not grow with the number of bundles.

use std::collections::BTreeMap;
use std::path::Path;

use super::{KeyReader, MetaStore};
use crate::codec::{self, binary};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::rules;
use crate::types::{BundleRecord, BundleState, RepairTask};

/// Violations named one by one; beyond this many only their number is kept.
pub const MAX_NAMED_VIOLATIONS: usize = 1_000;

/// What the checker found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Bundle records checked.
    pub bundles: u64,
    /// Violations, each naming what is wrong (at most [`MAX_NAMED_VIOLATIONS`]).
    pub violations: Vec<String>,
    /// Violations found in all.
    pub violation_count: u64,
}

impl CheckReport {
    /// Whether every invariant holds.
    pub fn is_clean(&self) -> bool {
        self.violation_count == 0
    }

    fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_NAMED_VIOLATIONS {
            self.violations.push(what);
        }
    }
}

/// Opens a stopped member's data directory (finishing a snapshot install a crash cut short,
/// as a restart would) and checks its state; returns the report and the applied index.
pub fn check_data_dir(dir: &Path) -> Result<(CheckReport, u64)> {
    let (engine, store) = open_stopped_member(dir)?;
    let (applied, _) = engine.apply_state().map_err(crate::raft_error)?;
    Ok((check(&store)?, applied))
}

/// A stopped member's RocksDB and its state (offline tools: `meta check`, `meta backup --data`,
/// `audit verify --data`). A running member holds the DB's lock, so opening fails then.
pub fn open_stopped_member(
    dir: &Path,
) -> Result<(bitmountain_raftstore::Engine, std::sync::Arc<MetaStore>)> {
    if !bitmountain_raftstore::Engine::exists(dir) {
        return Err(MetaError::InvalidArgument {
            field: crate::error::Field::DataDir,
            reason: format!("{} holds no metadata member's data", dir.display()),
        });
    }
    let engine = bitmountain_raftstore::Engine::open(dir).map_err(crate::raft_error)?;
    let store = MetaStore::load(engine.db().clone())?;
    Ok((engine, store))
}

/// Checks every invariant of the state `store` holds (its cluster map as loaded).
pub fn check(store: &MetaStore) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut counts: BTreeMap<u8, u64> = BTreeMap::new();
    let mut placed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut queued = 0u64;
    store.scan(&[keys::BUNDLE], &[], usize::MAX, |_, v| {
        let b = match codec::decode_bundle(v) {
            Ok(b) => b,
            Err(e) => {
                report.violation(format!("a bundle record does not decode: {e}"));
                return Ok(());
            }
        };
        report.bundles += 1;
        *counts.entry(b.state.tag()).or_default() += 1;
        for d in &b.placement {
            *placed.entry(*d).or_default() += b.accounted_shard_bytes;
        }
        check_bundle(store, &b, &mut report)?;
        if check_repair_entry(store, &b, &mut report)? {
            queued += 1;
        }
        Ok(())
    })?;
    check_counts(store, &counts, queued, &mut report)?;
    check_indexes(store, &mut report)?;
    check_map(store, &placed, &mut report);
    check_tokens(store, &mut report)?;
    // The audit trail's chain, as `audit verify` walks it.
    if let Some(b) = store.verify_audit()?.first_break {
        report.violation(format!(
            "audit trail breaks at event {}: {}",
            b.seq, b.problem
        ));
    }
    Ok(report)
}

/// The index keys a bundle record implies, with their values.
fn index_keys(b: &BundleRecord) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = b
        .placement
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let value = binary::encode_u32(i as u32).to_vec();
            (keys::disk_bundle(*d, b.id), value)
        })
        .collect();
    // A delete takes the bundle out of the label index (it is invisible to readers).
    if b.state != BundleState::Deleting {
        for (k, v) in &b.labels {
            out.push((keys::label(k, v, b.id), Vec::new()));
        }
    }
    out.push((keys::state(b.state.tag(), b.id), Vec::new()));
    if b.state == BundleState::Pending {
        out.push((keys::expiry(b.expires_unix_ms, b.id), Vec::new()));
    }
    out
}

fn check_bundle(store: &MetaStore, b: &BundleRecord, report: &mut CheckReport) -> Result<()> {
    let id = b.id;
    if b.placement.len() != b.code.total() {
        report.violation(format!(
            "bundle {id}: {} disks placed for {} shards",
            b.placement.len(),
            b.code.total()
        ));
    }
    for (key, value) in index_keys(b) {
        match store.get_raw(&key)? {
            None => report.violation(format!("bundle {id}: index key {} missing", hex(&key))),
            Some(v) if v != value => report.violation(format!(
                "bundle {id}: index key {} holds {}, not {}",
                hex(&key),
                hex(&v),
                hex(&value)
            )),
            Some(_) => {}
        }
    }
    if !b.request_id.is_empty() {
        match store.request_bundle(&b.request_id) {
            Ok(Some(r)) if r == id => {}
            Ok(other) => report.violation(format!(
                "bundle {id}: its request {:?} names {other:?}",
                b.request_id
            )),
            Err(e) => report.violation(format!("bundle {id}: its request key: {e}")),
        }
    }
    Ok(())
}

/// Checks a bundle's repair entry against its shard health; returns whether it has one.
fn check_repair_entry(
    store: &MetaStore,
    b: &BundleRecord,
    report: &mut CheckReport,
) -> Result<bool> {
    let id = b.id;
    let task = match store.repair_task(id) {
        Ok(t) => t,
        Err(e) => {
            report.violation(format!("bundle {id}: its repair entry: {e}"));
            return Ok(true);
        }
    };
    let health = rules::shard_health(&store.map(), b, task.as_ref());
    let Some(task) = task else {
        if b.state == BundleState::Sealed && !health.is_empty() {
            report.violation(format!(
                "bundle {id}: shards lost {:?} and moving {:?} but no repair entry",
                health.lost, health.moving
            ));
        }
        return Ok(false);
    };
    if b.state != BundleState::Sealed {
        report.violation(format!(
            "bundle {id} is {:?} but queued for repair",
            b.state
        ));
        return Ok(true);
    }
    if health.is_empty() {
        report.violation(format!("bundle {id}: queued for repair with nothing to do"));
    }
    let healthy = (b.placement.len() - health.lost.len()) as u32;
    let mut missing: Vec<u32> = health.lost.iter().chain(&health.moving).copied().collect();
    missing.sort_unstable();
    if task.bundle_id != id
        || task.healthy_shards != healthy
        || task.missing_shards != missing
        || task.moving_shards != health.moving
    {
        report.violation(format!(
            "bundle {id}: repair entry says {} healthy, missing {:?}, moving {:?}; its shards \
             say {healthy} healthy, missing {missing:?}, moving {:?}",
            task.healthy_shards, task.missing_shards, task.moving_shards, health.moving
        ));
    }
    if store
        .get_raw(&keys::repair(task.healthy_shards, id))?
        .is_none()
    {
        report.violation(format!(
            "bundle {id}: its repair entry is not under its healthy count {}",
            task.healthy_shards
        ));
    }
    Ok(true)
}

fn check_counts(
    store: &MetaStore,
    counts: &BTreeMap<u8, u64>,
    queued: u64,
    report: &mut CheckReport,
) -> Result<()> {
    let cluster = store.map().cluster.clone();
    for (state, recorded) in [
        (BundleState::Pending, cluster.pending),
        (BundleState::Sealed, cluster.sealed),
        (BundleState::Deleting, cluster.deleting),
    ] {
        let records = counts.get(&state.tag()).copied().unwrap_or(0);
        let mut indexed = 0u64;
        store.scan(&keys::state_prefix(state.tag()), &[], usize::MAX, |_, _| {
            indexed += 1;
            Ok(())
        })?;
        if recorded != records || indexed != records {
            report.violation(format!(
                "{state:?} bundles: the cluster record counts {recorded}, the state index \
                 {indexed}, the records {records}"
            ));
        }
    }
    let mut entries = 0u64;
    store.scan(&[keys::REPAIR], &[], usize::MAX, |k, v| {
        entries += 1;
        check_queue_entry(store, k, v, report)
    })?;
    if cluster.repairs != entries || queued != entries {
        report.violation(format!(
            "repair queue: the cluster record counts {}, the queue holds {entries}, bundles \
             name {queued}",
            cluster.repairs
        ));
    }
    Ok(())
}

/// A queue entry names a bundle whose by-bundle index points back to it.
fn check_queue_entry(
    store: &MetaStore,
    k: &[u8],
    v: &[u8],
    report: &mut CheckReport,
) -> Result<()> {
    let Some(id) = keys::trailing_bundle_id(k) else {
        report.violation(format!("repair queue key {} is too short", hex(k)));
        return Ok(());
    };
    let task: RepairTask = match codec::decode_value(v, "repair task") {
        Ok(t) => t,
        Err(e) => {
            report.violation(format!("repair queue entry of bundle {id}: {e}"));
            return Ok(());
        }
    };
    if keys::repair(task.healthy_shards, id) != k {
        report.violation(format!(
            "repair queue entry of bundle {id} is keyed apart from its healthy count {}",
            task.healthy_shards
        ));
    }
    if store.bundle(id)?.is_none() {
        report.violation(format!(
            "repair queue entry of bundle {id}, which has no record"
        ));
    }
    Ok(())
}

/// Every index key belongs to a bundle record that implies it.
fn check_indexes(store: &MetaStore, report: &mut CheckReport) -> Result<()> {
    for prefix in [keys::DISK_BUNDLE, keys::LABEL, keys::STATE, keys::EXPIRY] {
        store.scan(&[prefix], &[], usize::MAX, |k, _| {
            let Some(id) = keys::trailing_bundle_id(k) else {
                report.violation(format!("index key {} is too short", hex(k)));
                return Ok(());
            };
            match store.bundle(id) {
                Ok(Some(b)) if index_keys(&b).iter().any(|(key, _)| key == k) => {}
                Ok(Some(b)) => report.violation(format!(
                    "index key {} names bundle {id}, whose {:?} record does not imply it",
                    hex(k),
                    b.state
                )),
                Ok(None) => report.violation(format!(
                    "index key {} names bundle {id}, which has no record",
                    hex(k)
                )),
                Err(e) => report.violation(format!("bundle {id}: {e}")),
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Placed bytes, node references and id counters.
fn check_map(store: &MetaStore, placed: &BTreeMap<u64, u64>, report: &mut CheckReport) {
    let map = store.map();
    for (disk, bytes) in placed {
        if !map.disks.contains_key(disk) {
            report.violation(format!(
                "shards of {bytes} bytes are placed on disk {disk}, which the map does not hold"
            ));
        }
    }
    for d in map.disks.values() {
        let sum = placed.get(&d.id).copied().unwrap_or(0);
        if d.accounted_bytes != sum {
            report.violation(format!(
                "disk {}: {} placed bytes recorded, its shards add up to {sum}",
                d.id, d.accounted_bytes
            ));
        }
        if !map.nodes.contains_key(&d.node_id) {
            report.violation(format!(
                "disk {} belongs to unknown node {}",
                d.id, d.node_id
            ));
        }
        if d.id >= map.cluster.next_disk_id {
            report.violation(format!(
                "disk {} is not below the next disk id {}",
                d.id, map.cluster.next_disk_id
            ));
        }
    }
    for n in map.nodes.values() {
        if n.id >= map.cluster.next_node_id {
            report.violation(format!(
                "node {} is not below the next node id {}",
                n.id, map.cluster.next_node_id
            ));
        }
    }
}

/// Token records decode under their own id, and the cluster record counts them.
fn check_tokens(store: &MetaStore, report: &mut CheckReport) -> Result<()> {
    let mut count = 0u64;
    store.scan(&[keys::TOKEN], &[], usize::MAX, |k, v| {
        count += 1;
        match codec::decode_value::<bitmountain_auth::TokenRecord>(v, "token record") {
            Ok(t) if keys::token(t.id) == k => {}
            Ok(t) => report.violation(format!("token {} is stored under key {}", t.id, hex(k))),
            Err(e) => report.violation(format!("token key {}: {e}", hex(k))),
        }
        Ok(())
    })?;
    let cluster = store.map().cluster.clone();
    if cluster.tokens != count || cluster.tokens_version < count {
        report.violation(format!(
            "tokens: the cluster record counts {} at version {}, the table holds {count}",
            cluster.tokens, cluster.tokens_version
        ));
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}
