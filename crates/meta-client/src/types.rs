//! Domain types of the metadata group and their conversions to and from the wire types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bitmountain_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::error::{Field, MetaError};

/// A 128-bit, time-ordered bundle id: milliseconds since the Unix epoch in the top 48 bits,
/// 80 random bits below. Printed as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BundleId(pub u128);

impl BundleId {
    /// A new id for `unix_ms` with random low bits.
    pub fn generate(unix_ms: u64) -> Self {
        let low: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
        Self(((unix_ms as u128) << 80) | low)
    }

    /// Milliseconds since the epoch when the id was made.
    pub fn unix_ms(&self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// Big-endian bytes (the wire and key form).
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// From big-endian bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, MetaError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| MetaError::InvalidArgument {
            field: Field::BundleId,
            reason: format!("must be 16 bytes, got {}", b.len()),
        })?;
        Ok(Self(u128::from_be_bytes(arr)))
    }

    /// From an optional wire id.
    pub fn from_proto(id: Option<&pb::BundleId>) -> Result<Self, MetaError> {
        match id {
            Some(id) => Self::from_bytes(&id.id),
            None => Err(MetaError::InvalidArgument {
                field: Field::BundleId,
                reason: "missing".into(),
            }),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::BundleId {
        pb::BundleId {
            id: self.to_bytes().to_vec(),
        }
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for BundleId {
    type Err = MetaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(MetaError::InvalidArgument {
                field: Field::BundleId,
                reason: format!("{s:?} is not 32 hex digits"),
            });
        }
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| MetaError::InvalidArgument {
                field: Field::BundleId,
                reason: format!("{s:?} is not 32 hex digits"),
            })
    }
}

/// An erasure code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// k.
    pub data_shards: u32,
    /// m.
    pub parity_shards: u32,
    /// Cell size in bytes.
    pub cell_bytes: u64,
}

/// Most shards a bundle may have.
pub const MAX_SHARDS: u32 = 64;
/// Largest cell.
pub const MAX_CELL_BYTES: u64 = 64 << 20;

impl Code {
    /// RS(10,4) with 1 MiB cells.
    pub const DEFAULT: Code = Code {
        data_shards: 10,
        parity_shards: 4,
        cell_bytes: 1 << 20,
    };

    /// k + m.
    pub fn total(&self) -> usize {
        (self.data_shards + self.parity_shards) as usize
    }

    /// Checks the code is one the cluster can store.
    pub fn validate(&self) -> Result<(), MetaError> {
        let bad = |reason: String| MetaError::InvalidCode { reason };
        if self.data_shards == 0 {
            return Err(bad("k (data shards) must be at least 1".into()));
        }
        if self.data_shards + self.parity_shards > MAX_SHARDS {
            return Err(bad(format!("k+m must be at most {MAX_SHARDS}")));
        }
        if self.cell_bytes == 0
            || self.cell_bytes > MAX_CELL_BYTES
            || !self.cell_bytes.is_multiple_of(4096)
        {
            return Err(bad(format!(
                "cell size {} must be a multiple of 4096 between 4096 and {MAX_CELL_BYTES}",
                self.cell_bytes
            )));
        }
        Ok(())
    }

    /// Bytes one shard of a bundle of `length` bytes takes (about length / k).
    pub fn shard_bytes(&self, length: u64) -> u64 {
        length.div_ceil(self.data_shards.max(1) as u64)
    }

    /// From the wire.
    pub fn from_proto(c: &pb::Code) -> Self {
        Self {
            data_shards: c.data_shards,
            parity_shards: c.parity_shards,
            cell_bytes: c.cell_bytes,
        }
    }

    /// To the wire.
    pub fn to_proto(&self) -> pb::Code {
        pb::Code {
            data_shards: self.data_shards,
            parity_shards: self.parity_shards,
            cell_bytes: self.cell_bytes,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RS({},{}) cell {} B",
            self.data_shards, self.parity_shards, self.cell_bytes
        )
    }
}

impl FromStr for Code {
    type Err = MetaError;
    /// `K+M` (1 MiB cells) or `K+M:CELL_BYTES`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MetaError::InvalidCode {
            reason: format!("{s:?}: expected K+M or K+M:CELL_BYTES, e.g. 10+4"),
        };
        let (km, cell) = match s.split_once(':') {
            Some((a, b)) => (a, b.parse().map_err(|_| bad())?),
            None => (s, 1u64 << 20),
        };
        let (k, m) = km.split_once('+').ok_or_else(bad)?;
        let c = Code {
            data_shards: k.trim().parse().map_err(|_| bad())?,
            parity_shards: m.trim().parse().map_err(|_| bad())?,
            cell_bytes: cell,
        };
        c.validate()?;
        Ok(c)
    }
}

/// Lifecycle of a bundle record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleState {
    /// Allocated, being written; invisible to readers; expires.
    Pending,
    /// Committed and readable.
    Sealed,
    /// Deleted by a client; its shards are being collected.
    Deleting,
}

impl BundleState {
    /// Tag byte used in state-index keys.
    pub fn tag(self) -> u8 {
        match self {
            BundleState::Pending => 1,
            BundleState::Sealed => 2,
            BundleState::Deleting => 3,
        }
    }

    /// To the wire.
    pub fn to_proto(self) -> pb::BundleState {
        match self {
            BundleState::Pending => pb::BundleState::Pending,
            BundleState::Sealed => pb::BundleState::Sealed,
            BundleState::Deleting => pb::BundleState::Deleting,
        }
    }

    /// From the wire (`None` for unspecified).
    pub fn from_proto(s: pb::BundleState) -> Option<Self> {
        match s {
            pb::BundleState::Unspecified => None,
            pb::BundleState::Pending => Some(BundleState::Pending),
            pb::BundleState::Sealed => Some(BundleState::Sealed),
            pb::BundleState::Deleting => Some(BundleState::Deleting),
        }
    }
}

/// One bundle's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// Id.
    pub id: BundleId,
    /// State.
    pub state: BundleState,
    /// Erasure code.
    pub code: Code,
    /// Bundle length in bytes (sealed).
    pub length: u64,
    /// Offset of the index part (sealed).
    pub index_offset: u64,
    /// Length of the index part (sealed).
    pub index_length: u64,
    /// SHA-256 of the whole bundle (sealed).
    #[serde(with = "hex_bytes")]
    pub sha256: Vec<u8>,
    /// Number of files (sealed).
    pub file_count: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created_unix_ms: u64,
    /// Pending only: expiry.
    pub expires_unix_ms: u64,
    /// Disk of each shard, by shard index.
    pub placement: Vec<u64>,
    /// Bumped on every placement change (compare-and-set).
    pub placement_generation: u64,
    /// The allocation's request id (idempotency).
    pub request_id: String,
    /// Bytes charged to each placement disk.
    pub accounted_shard_bytes: u64,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

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

impl NodeState {
    /// To the wire.
    pub fn to_proto(self) -> pb::NodeState {
        match self {
            NodeState::Up => pb::NodeState::Up,
            NodeState::Down => pb::NodeState::Down,
            NodeState::Draining => pb::NodeState::Draining,
            NodeState::Removed => pb::NodeState::Removed,
        }
    }
    /// From the wire.
    pub fn from_proto(s: pb::NodeState) -> Option<Self> {
        match s {
            pb::NodeState::Unspecified => None,
            pb::NodeState::Up => Some(NodeState::Up),
            pb::NodeState::Down => Some(NodeState::Down),
            pb::NodeState::Draining => Some(NodeState::Draining),
            pb::NodeState::Removed => Some(NodeState::Removed),
        }
    }
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

impl DiskState {
    /// To the wire.
    pub fn to_proto(self) -> pb::DiskState {
        match self {
            DiskState::Ok => pb::DiskState::Ok,
            DiskState::Failed => pb::DiskState::Failed,
            DiskState::Draining => pb::DiskState::Draining,
            DiskState::Removed => pb::DiskState::Removed,
        }
    }
    /// From the wire.
    pub fn from_proto(s: pb::DiskState) -> Option<Self> {
        match s {
            pb::DiskState::Unspecified => None,
            pb::DiskState::Ok => Some(DiskState::Ok),
            pb::DiskState::Failed => Some(DiskState::Failed),
            pb::DiskState::Draining => Some(DiskState::Draining),
            pb::DiskState::Removed => Some(DiskState::Removed),
        }
    }
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

/// A queued repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTask {
    /// Bundle.
    pub bundle_id: BundleId,
    /// Shards on healthy disks when queued.
    pub healthy_shards: u32,
    /// Shard indexes to rebuild or move, when queued.
    pub missing_shards: Vec<u32>,
    /// When queued.
    pub queued_unix_ms: u64,
    /// Shards found damaged (corrupt or missing files) on disks that are otherwise fine: they
    /// are rewritten even though their disk and node are healthy.
    #[serde(default)]
    pub damaged_shards: Vec<u32>,
    /// Shards a rebalance moves, with the disk each goes to.
    #[serde(default)]
    pub moves: BTreeMap<u32, u64>,
    /// Shards to move (drain, rebalance) rather than rebuild, when queued.
    #[serde(default)]
    pub moving_shards: Vec<u32>,
    /// Bytes of one shard of the bundle (for the repair ETA).
    #[serde(default)]
    pub shard_bytes: u64,
}

/// Repair throttles, replicated so every leader enforces the same and nodes learn them from
/// heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSettings {
    /// Repairs and moves one node runs at once.
    pub max_repairs_per_node: u32,
    /// Bytes per second one node writes rebuilt or moved shards at; 0: unlimited.
    pub bytes_per_sec: u64,
    /// No new repairs are handed out; running ones finish.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            max_repairs_per_node: 4,
            bytes_per_sec: 0,
            paused: false,
        }
    }
}

impl RepairSettings {
    /// To the wire.
    pub fn to_proto(&self) -> pb::RepairSettings {
        pb::RepairSettings {
            max_repairs_per_node: self.max_repairs_per_node,
            bytes_per_sec: self.bytes_per_sec,
            paused: self.paused,
        }
    }
    /// From the wire (absent: the defaults).
    pub fn from_proto(s: Option<&pb::RepairSettings>) -> Self {
        s.map(|s| RepairSettings {
            max_repairs_per_node: s.max_repairs_per_node,
            bytes_per_sec: s.bytes_per_sec,
            paused: s.paused,
        })
        .unwrap_or_default()
    }
}

impl RepairTask {
    /// To the wire.
    pub fn to_proto(&self) -> pb::RepairTask {
        pb::RepairTask {
            bundle_id: Some(self.bundle_id.to_proto()),
            healthy_shards: self.healthy_shards,
            missing_shards: self.missing_shards.clone(),
            queued_unix_ms: self.queued_unix_ms,
            damaged_shards: self.damaged_shards.clone(),
            moving_shards: self.moving_shards.clone(),
        }
    }
}

/// Labels from the wire, validated.
pub fn labels_from_proto(labels: &[pb::Label]) -> Result<BTreeMap<String, String>, MetaError> {
    let mut out = BTreeMap::new();
    for l in labels {
        if l.key.is_empty() || l.key.len() > 256 || l.value.len() > 1024 {
            return Err(MetaError::InvalidArgument {
                field: Field::Label,
                reason: format!(
                    "label {:?}: key must be 1..=256 bytes and value at most 1024 bytes",
                    l.key
                ),
            });
        }
        if out.insert(l.key.clone(), l.value.clone()).is_some() {
            return Err(MetaError::InvalidArgument {
                field: Field::Label,
                reason: format!("label {:?} given twice", l.key),
            });
        }
    }
    if out.len() > 64 {
        return Err(MetaError::InvalidArgument {
            field: Field::Label,
            reason: "at most 64 labels per bundle".into(),
        });
    }
    Ok(out)
}

/// Labels to the wire.
pub fn labels_to_proto(labels: &BTreeMap<String, String>) -> Vec<pb::Label> {
    labels
        .iter()
        .map(|(k, v)| pb::Label {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
