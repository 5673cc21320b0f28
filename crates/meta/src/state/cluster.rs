//! The cluster map: the cluster record (identity, id counters, counts, settings, the value
//! format) and the nodes and disks. Small, replicated, and also held in memory by
//! [`super::MetaStore`], which the apply path updates in the same step that writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::types::{DiskRecord, NodeRecord, RepairSettings};

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
    /// Bumped by every change of the access-token table: nodes refresh their copy of it when
    /// a heartbeat answer names a newer version. 0: no token was ever made.
    #[serde(default)]
    pub tokens_version: u64,
    /// Chained over every token record written (see `Applier::put_token`): with the version
    /// it names the table's contents, which a recovered or restored group's version alone
    /// does not (it counts again from its own start).
    #[serde(default)]
    pub tokens_fingerprint: u64,
    /// Access tokens in the table (revoked ones included).
    #[serde(default)]
    pub tokens: u64,
    /// Disks that went into the failed state, counted since the field exists (the live
    /// durability model's observed failures).
    #[serde(default)]
    pub disk_failures: u64,
    /// Bytes of sealed bundles by code, counted since the field exists (bundles sealed
    /// earlier are not in it): the codes in use the live durability model weighs.
    #[serde(default)]
    pub sealed_bytes_by_code: Vec<CodeBytes>,
    /// A recovery in progress: the group is rebuilding bundle records from the disks' scans.
    #[serde(default)]
    pub recovery: Option<RecoveryState>,
    /// Until then nodes keep shards of bundles the group does not know (set by a recovery:
    /// shards of a bundle it found lost may yet be joined by a disk that comes back).
    #[serde(default)]
    pub orphan_hold_until_unix_ms: u64,
    /// The last `meta recover` request carried out.
    #[serde(default)]
    pub last_recovery_request: String,
    /// The audit trail's last event (`keys::AUDIT`): what `audit verify` checks the chain's
    /// end against.
    #[serde(default)]
    pub audit: crate::types::AuditHead,
}

/// A recovery in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryState {
    pub started_unix_ms: u64,
    /// The state came from a backup taken then (0: rebuilt from the disks alone).
    pub backup_unix_ms: u64,
    /// Disks whose scan is complete.
    pub disks_reported: std::collections::BTreeSet<u64>,
    /// Shard records and tombstones reported so far.
    pub shards_found: u64,
    pub tombstones_found: u64,
}

/// Bytes of sealed bundles with one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeBytes {
    pub data_shards: u32,
    pub parity_shards: u32,
    /// The bundles' own bytes (before coding).
    pub bytes: u64,
}

impl ClusterRecord {
    /// Counts `bytes` of sealed bundles of code `k+m` in or out (the list stays sorted by
    /// code). Out saturates at 0: bundles sealed before the count began leave it without having
    /// entered.
    pub(crate) fn count_sealed_bytes(&mut self, k: u32, m: u32, bytes: u64, add: bool) {
        let list = &mut self.sealed_bytes_by_code;
        let i = match list.binary_search_by_key(&(k, m), |c| (c.data_shards, c.parity_shards)) {
            Ok(i) => i,
            Err(i) if add => {
                list.insert(
                    i,
                    CodeBytes {
                        data_shards: k,
                        parity_shards: m,
                        bytes: 0,
                    },
                );
                i
            }
            Err(_) => return,
        };
        let c = &mut list[i];
        c.bytes = if add {
            c.bytes.saturating_add(bytes)
        } else {
            c.bytes.saturating_sub(bytes)
        };
        if c.bytes == 0 {
            list.remove(i);
        }
    }

    /// The value format the group writes: a record from before the field existed (0) means
    /// version 1.
    pub fn value_format(&self) -> u8 {
        self.value_format.max(keys::VALUE_V1)
    }
}

/// The format a switch from `current` to `requested` leaves the group in, or why it is
/// refused: the leader checks before it asks the members, and every member again when it
/// applies the switch.
pub fn value_format_switch(current: u8, requested: u32) -> Result<u8> {
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

/// The value format a new group's first command asks for (0: the newest), or why it is
/// refused (every member refuses alike; the member that proposed it checked its flag).
pub(crate) fn first_value_format(requested: u8) -> Result<u8> {
    match requested {
        0 => Ok(keys::VALUE_FORMAT_NEWEST),
        f => value_format_switch(keys::VALUE_V1, u32::from(f)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_by_code_stay_sorted_and_saturate() {
        let mut c = ClusterRecord::default();
        c.count_sealed_bytes(10, 4, 100, true);
        c.count_sealed_bytes(4, 2, 50, true);
        c.count_sealed_bytes(6, 3, 7, true);
        c.count_sealed_bytes(4, 2, 25, true);
        let codes: Vec<(u32, u32, u64)> = c
            .sealed_bytes_by_code
            .iter()
            .map(|x| (x.data_shards, x.parity_shards, x.bytes))
            .collect();
        assert_eq!(codes, [(4, 2, 75), (6, 3, 7), (10, 4, 100)]);
        // A code never counted in is left alone; one taken to 0 (or past it) leaves the list.
        c.count_sealed_bytes(2, 1, 10, false);
        c.count_sealed_bytes(6, 3, 1_000, false);
        c.count_sealed_bytes(4, 2, 75, false);
        assert_eq!(c.sealed_bytes_by_code.len(), 1);
        assert_eq!(c.sealed_bytes_by_code[0].data_shards, 10);
    }
}
