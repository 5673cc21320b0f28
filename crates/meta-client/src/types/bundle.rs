//! Bundles: ids, codes, states, the stored record, and what a client sends and receives about
//! one (allocation, commit, the record with its shards' locations).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
    /// Retention and legal hold (what refuses a delete).
    #[serde(default)]
    pub preservation: Preservation,
}

/// What keeps a bundle from being deleted: a retention date and a legal hold, independent of
/// each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preservation {
    /// Deletes are refused before this time (0: no retention). Extended, never shortened.
    #[serde(default)]
    pub retain_until_unix_ms: u64,
    /// While set, deletes are refused whatever the retention.
    #[serde(default)]
    pub legal_hold: Option<LegalHold>,
}

impl Preservation {
    /// From the flat fields the wire and the stored record carry: a hold is set when its time
    /// is not 0.
    pub fn from_parts(
        retain_until_unix_ms: u64,
        hold_reason: String,
        hold_since_unix_ms: u64,
    ) -> Self {
        Self {
            retain_until_unix_ms,
            legal_hold: (hold_since_unix_ms != 0).then_some(LegalHold {
                reason: hold_reason,
                since_unix_ms: hold_since_unix_ms,
            }),
        }
    }

    /// The hold as those flat fields: its reason and time (`""`, 0: no hold).
    pub fn hold_parts(&self) -> (String, u64) {
        self.legal_hold
            .as_ref()
            .map_or((String::new(), 0), |h| (h.reason.clone(), h.since_unix_ms))
    }
}

/// A legal hold on a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    /// Why (required).
    pub reason: String,
    /// When it was set.
    pub since_unix_ms: u64,
}

/// Longest reason for a delete or a legal hold.
pub const MAX_REASON_BYTES: usize = 1024;

/// Whether `reason` (for a delete, a legal hold, a governance change of a retention) is one the
/// cluster takes: not blank, at most [`MAX_REASON_BYTES`]. Nodes and members both check it, each
/// with its own error.
pub fn reason_is_acceptable(reason: &str) -> bool {
    !reason.trim().is_empty() && reason.len() <= MAX_REASON_BYTES
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

/// Where one shard of a bundle lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLocation {
    /// Shard index (0..k data, k..k+m parity).
    pub shard_index: u32,
    /// Disk.
    pub disk_id: u64,
    /// Node serving the disk.
    pub node_id: u64,
    /// The node's address.
    pub node_address: String,
}

/// A bundle record with its shards' node addresses, as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The record (request id and accounting are not sent over the wire).
    pub record: BundleRecord,
    /// Shard locations by shard index.
    pub locations: Vec<ShardLocation>,
}

/// What an allocation asks for.
#[derive(Debug, Clone, Default)]
pub struct AllocateRequest {
    /// Idempotency key, unique per upload (required).
    pub request_id: String,
    /// Code; `None` for the cluster default.
    pub code: Option<Code>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Length estimate (0 if unknown).
    pub expected_length: u64,
    /// Allocation lifetime (0: default).
    pub ttl_ms: u64,
    /// Retention of the sealed bundle (0: none).
    pub retain_until_unix_ms: u64,
}

/// What a commit reports.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// Bundle length.
    pub length: u64,
    /// Index offset.
    pub index_offset: u64,
    /// Index length.
    pub index_length: u64,
    /// SHA-256 of the bundle.
    pub sha256: Vec<u8>,
    /// Files in the bundle.
    pub file_count: u64,
    /// Shards that are not durable.
    pub missing_shards: Vec<u32>,
    /// Who uploaded (the client a node uploads for): the ingestion event's agent.
    pub agent: super::Agent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_says_something_within_the_limit() {
        assert!(reason_is_acceptable("weeded from the collection"));
        assert!(!reason_is_acceptable(""));
        assert!(!reason_is_acceptable(" \t\n"));
        assert!(reason_is_acceptable(&"x".repeat(MAX_REASON_BYTES)));
        assert!(!reason_is_acceptable(&"x".repeat(MAX_REASON_BYTES + 1)));
    }
}
