//! What a scan of the disks finds, as disaster recovery reads it: shards with what their
//! headers, footers and descriptions say, and tombstones of deleted bundles. Nodes report these
//! to a recovering metadata group; `bitmountain recover scan` builds them from disks offline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bundle::{BundleId, Code};

/// One shard file found on a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundShard {
    pub bundle: BundleId,
    pub shard_index: u32,
    pub disk_id: u64,
    /// The code from the shard's header; `None` when the header is unreadable.
    pub code: Option<Code>,
    /// The header's CRC chunk size (the cluster writes one size; another cannot be recorded).
    pub chunk_bytes: u32,
    /// What the footer says; `None` when it is unusable (`problem` says why).
    pub footer: Option<FoundFooter>,
    /// The bundle description; `None` in a version-1 shard or when it is damaged.
    pub description: Option<FoundDescription>,
    /// What is wrong with the file, if anything.
    pub problem: Option<String>,
}

/// A shard footer's facts about its bundle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FoundFooter {
    pub length: u64,
    pub index_offset: u64,
    pub index_length: u64,
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
}

/// A shard's bundle description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundDescription {
    pub created_unix_ms: u64,
    pub file_count: u64,
    pub labels: BTreeMap<String, String>,
}

/// A tombstone found on a disk: the bundle was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundTombstone {
    pub bundle: BundleId,
    pub disk_id: u64,
    pub deleted_unix_ms: u64,
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
