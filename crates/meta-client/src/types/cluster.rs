//! The cluster map (nodes, disks, their states, failure domains) and what a storage node
//! tells the group about itself: its registration and its heartbeats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RepairSettings;
use crate::error::{Field, MetaError};

/// State of a storage node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving.
    Up,
    /// Down past its grace period (decided through Raft).
    Down,
    /// Shards being moved away.
    Draining,
    /// Gone.
    Removed,
}

/// State of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    /// Healthy.
    Ok,
    /// Failed: its shards are being rebuilt elsewhere.
    Failed,
    /// Shards being moved away.
    Draining,
    /// Gone.
    Removed,
}

/// A storage node in the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Id (assigned by the group).
    pub id: u64,
    /// Address clients and peers reach it at.
    pub address: String,
    /// Zone label.
    pub zone: String,
    /// Rack label.
    pub rack: String,
    /// Host label (defaults to `node-<id>`).
    pub host: String,
    /// State.
    pub state: NodeState,
}

/// A disk in the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Id (assigned by the group).
    pub id: u64,
    /// Node serving it.
    pub node_id: u64,
    /// Directory on the node.
    pub path: String,
    /// Capacity.
    pub capacity_bytes: u64,
    /// Bytes of shards placed here (pending estimates and sealed lengths).
    pub accounted_bytes: u64,
    /// State.
    pub state: DiskState,
    /// When the group first registered it (the leader's clock); 0 for disks registered before
    /// the field existed. Its years of service are the exposure the live durability model
    /// weighs observed disk failures against.
    #[serde(default)]
    pub added_unix_ms: u64,
    /// While `Failed` because its node's health check failed it (not an operator, and not
    /// flapping): the state it had, which it returns to once its node reports it healthy and
    /// checked (`rules::disk_return` in the group). `None` otherwise.
    #[serde(default)]
    pub reported_failed_from: Option<DiskState>,
    /// Automatic returns since `return_window_unix_ms` (the flap limit counts these).
    #[serde(default)]
    pub returns_in_window: u32,
    /// When the current window of automatic returns began (the leader's clock).
    #[serde(default)]
    pub return_window_unix_ms: u64,
}

/// Failure-domain level placement spreads shards across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DomainLevel {
    /// One shard per host (default).
    #[default]
    Host,
    /// One shard per rack.
    Rack,
    /// One shard per zone.
    Zone,
}

impl FromStr for DomainLevel {
    type Err = MetaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Self::Host),
            "rack" => Ok(Self::Rack),
            "zone" => Ok(Self::Zone),
            _ => Err(MetaError::InvalidArgument {
                field: Field::FailureDomainLevel,
                reason: format!("{s:?}: expected host, rack or zone"),
            }),
        }
    }
}

impl fmt::Display for DomainLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainLevel::Host => "host",
            DomainLevel::Rack => "rack",
            DomainLevel::Zone => "zone",
        })
    }
}

impl NodeRecord {
    /// The node's failure domain at `level`.
    pub fn domain(&self, level: DomainLevel) -> String {
        match level {
            DomainLevel::Host => format!("{}/{}/{}", self.zone, self.rack, self.host),
            DomainLevel::Rack => format!("{}/{}", self.zone, self.rack),
            DomainLevel::Zone => self.zone.clone(),
        }
    }
}

/// One disk as its node reports it, at registration and in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    /// 0 on first registration: the group assigns an id, which the node writes into the
    /// disk's identity file and sends from then on.
    pub disk_id: u64,
    /// Directory on the node.
    pub path: String,
    /// Capacity as the file system reports it.
    pub capacity_bytes: u64,
    /// Bytes in use as the file system reports them.
    pub used_bytes: u64,
    /// `Failed` when the disk failed its health check, else `Ok`.
    pub state: DiskState,
    /// When the node last finished verifying every shard on the disk (0: not since it
    /// started).
    pub last_scrub_unix_ms: u64,
    /// Damaged shards that scrub pass found.
    pub last_scrub_damaged_shards: u64,
}

/// A node's registration: who it is, where it is reached, where it stands, its disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Makes a retried registration return the first answer.
    pub request_id: String,
    /// 0 on first start: the group assigns one.
    pub node_id: u64,
    /// Address clients and peers reach the node at.
    pub address: String,
    /// Zone label.
    pub zone: String,
    /// Rack label.
    pub rack: String,
    /// Host label (empty: one host per node).
    pub host: String,
    /// The node's disks.
    pub disks: Vec<DiskReport>,
    /// The cluster id its disks carry ("" when it has new disks only).
    pub cluster_id: String,
}

/// The group's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    /// The node's id.
    pub node_id: u64,
    /// Its disks' ids, in the registration's order.
    pub disk_ids: Vec<u64>,
    /// Written into every disk identity file; a disk of another cluster is refused.
    pub cluster_id: String,
    /// The group is rebuilding itself from the disks: scan them and report.
    pub recovering: bool,
}

/// A node's heartbeat: it is alive, and how its disks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The node.
    pub node_id: u64,
    /// Its disks.
    pub disks: Vec<DiskReport>,
    /// Its background workers.
    pub workers: Vec<super::WorkerReport>,
    /// Disks that passed the node's return check since they last failed its health check.
    pub checked_disk_ids: Vec<u64>,
}

/// The leader's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The cluster the group belongs to (a node of another cluster stops collecting garbage).
    pub cluster_id: String,
    /// How often the group expects heartbeats.
    pub heartbeat_interval_ms: u64,
    /// The repair throttles in force; `None` when the leader sent none.
    pub repair_settings: Option<RepairSettings>,
    /// The version of the access-token table (a node refreshes its copy when it moves).
    pub tokens_version: u64,
    /// The table's fingerprint: with the version, it names the table's contents.
    pub tokens_fingerprint: u64,
    /// The group is rebuilding itself from the disks.
    pub recovering: bool,
    /// Until then, shards of bundles the group does not know are kept (0: no hold).
    pub orphan_hold_until_unix_ms: u64,
    /// This node's disks the group holds failed on the node's own report: each returns once
    /// the node names it in [`Heartbeat::checked_disk_ids`].
    pub returning_disk_ids: Vec<u64>,
}

/// The access-token table as the group holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTable {
    /// Every token, revoked ones included (their secrets' hashes, never the secrets).
    pub tokens: Vec<bitmountain_auth::TokenRecord>,
    /// Its version ([`HeartbeatReply::tokens_version`]).
    pub version: u64,
    /// Its fingerprint ([`HeartbeatReply::tokens_fingerprint`]).
    pub fingerprint: u64,
}
