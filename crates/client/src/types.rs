//! The client's domain types, converted from the wire at the boundary.

use std::collections::BTreeMap;

use bitmountain_proto::archive::v1 as pb;
use serde::Serialize;

/// An erasure code: k data shards, m parity shards, cell size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Code {
    pub data_shards: u32,
    pub parity_shards: u32,
    pub cell_bytes: u64,
}

impl Code {
    pub(crate) fn from_proto(c: Option<&pb::Code>) -> Option<Self> {
        c.map(|c| Code {
            data_shards: c.data_shards,
            parity_shards: c.parity_shards,
            cell_bytes: c.cell_bytes,
        })
    }

    pub(crate) fn to_proto(self) -> pb::Code {
        pb::Code {
            data_shards: self.data_shards,
            parity_shards: self.parity_shards,
            cell_bytes: self.cell_bytes,
        }
    }

    /// Parses `K+M` or `K+M:CELL_BYTES`.
    pub fn parse(text: &str) -> Option<Self> {
        let (km, cell) = match text.split_once(':') {
            Some((km, cell)) => (km, cell.trim().parse().ok()?),
            None => (text, 0),
        };
        let (k, m) = km.split_once('+')?;
        Some(Code {
            data_shards: k.trim().parse().ok()?,
            parity_shards: m.trim().parse().ok()?,
            cell_bytes: cell,
        })
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RS({},{})", self.data_shards, self.parity_shards)
    }
}

/// One shard of a bundle and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardInfo {
    pub shard_index: u32,
    pub disk_id: u64,
    pub node_id: u64,
    pub node_address: String,
}

/// A bundle's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleInfo {
    pub bundle_id: String,
    pub state: String,
    pub code: Option<Code>,
    pub length_bytes: u64,
    pub file_count: u64,
    pub sha256: String,
    pub labels: BTreeMap<String, String>,
    pub created_unix_ms: u64,
    pub index_offset: u64,
    pub index_length: u64,
    pub shards: Vec<ShardInfo>,
    pub placement_generation: u64,
    /// Deletes are refused before this time (0: no retention).
    pub retain_until_unix_ms: u64,
    /// A legal hold, while one refuses deletes.
    pub legal_hold: Option<LegalHoldInfo>,
}

/// A legal hold on a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegalHoldInfo {
    pub reason: String,
    pub since_unix_ms: u64,
}

impl BundleInfo {
    /// The bundle an answer must carry.
    pub(crate) fn from_answer(b: Option<pb::BundleInfo>) -> crate::error::Result<Self> {
        b.map(Self::from_proto).ok_or_else(|| {
            crate::error::ClientError::Integrity("the node answered without a bundle".into())
        })
    }

    pub(crate) fn from_proto(b: pb::BundleInfo) -> Self {
        BundleInfo {
            code: Code::from_proto(b.code.as_ref()),
            bundle_id: b.bundle_id,
            state: b.state,
            length_bytes: b.length_bytes,
            file_count: b.file_count,
            sha256: b.sha256,
            labels: b.labels.into_iter().map(|l| (l.key, l.value)).collect(),
            created_unix_ms: b.created_unix_ms,
            index_offset: b.index_offset,
            index_length: b.index_length,
            shards: b
                .shards
                .into_iter()
                .map(|s| ShardInfo {
                    shard_index: s.shard_index,
                    disk_id: s.disk_id,
                    node_id: s.node_id,
                    node_address: s.node_address,
                })
                .collect(),
            placement_generation: b.placement_generation,
            retain_until_unix_ms: b.retain_until_unix_ms,
            legal_hold: (b.legal_hold_since_unix_ms != 0).then_some(LegalHoldInfo {
                reason: b.legal_hold_reason,
                since_unix_ms: b.legal_hold_since_unix_ms,
            }),
        }
    }
}

/// One file of a bundle, as its index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Offset of the file's content inside the bundle's MIME stream.
    pub bundle_offset: u64,
}

impl FileInfo {
    pub(crate) fn from_proto(f: pb::FileInfo) -> Self {
        FileInfo {
            path: f.path,
            content_type: f.content_type,
            size_bytes: f.size_bytes,
            sha256: f.sha256,
            bundle_offset: f.bundle_offset,
        }
    }
}

/// A file as stored by an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDigest {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
}

/// A committed upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutResult {
    pub bundle_id: String,
    pub length_bytes: u64,
    pub file_count: u64,
    pub bundle_sha256: String,
    /// Per file in upload order (empty for very large bundles: read the index instead).
    pub files: Vec<FileDigest>,
    pub code: Option<Code>,
    /// Shards not written; the bundle is committed with them queued for repair.
    pub missing_shards: Vec<u32>,
    /// The node that coordinated the upload.
    pub node: String,
}

impl PutResult {
    pub(crate) fn from_proto(r: pb::PutBundleResponse, node: &str) -> Self {
        PutResult {
            bundle_id: r.bundle_id,
            length_bytes: r.length_bytes,
            file_count: r.file_count,
            bundle_sha256: r.bundle_sha256,
            files: r
                .files
                .into_iter()
                .map(|f| FileDigest {
                    path: f.path,
                    size_bytes: f.size_bytes,
                    sha256: f.sha256,
                })
                .collect(),
            code: Code::from_proto(r.code.as_ref()),
            missing_shards: r.missing_shards,
            node: node.to_owned(),
        }
    }
}

/// One disk in the cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskStatus {
    pub disk_id: u64,
    pub path: String,
    pub state: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
}

/// One storage node in the cluster status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub address: String,
    pub state: String,
    pub zone: String,
    pub rack: String,
    pub host: String,
    pub last_heartbeat_age_ms: Option<u64>,
    pub disks: Vec<DiskStatus>,
}

/// The cluster as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub meta_leader_id: u64,
    pub meta_leader_address: String,
    pub meta_term: u64,
    pub nodes: Vec<NodeStatus>,
    pub bundles_pending: u64,
    pub bundles_sealed: u64,
    pub bundles_deleting: u64,
    pub repairs_queued: u64,
    pub answered_by: String,
}

impl ClusterStatus {
    pub(crate) fn from_proto(s: pb::ClusterStatusResponse) -> Self {
        ClusterStatus {
            cluster_id: s.cluster_id,
            meta_leader_id: s.meta_leader_id,
            meta_leader_address: s.meta_leader_address,
            meta_term: s.meta_term,
            nodes: s
                .nodes
                .into_iter()
                .map(|n| NodeStatus {
                    node_id: n.node_id,
                    address: n.address,
                    state: n.state,
                    zone: n.zone,
                    rack: n.rack,
                    host: n.host,
                    last_heartbeat_age_ms: n.last_heartbeat_age_ms,
                    disks: n
                        .disks
                        .into_iter()
                        .map(|d| DiskStatus {
                            disk_id: d.disk_id,
                            path: d.path,
                            state: d.state,
                            capacity_bytes: d.capacity_bytes,
                            used_bytes: d.used_bytes,
                        })
                        .collect(),
                })
                .collect(),
            bundles_pending: s.bundles_pending,
            bundles_sealed: s.bundles_sealed,
            bundles_deleting: s.bundles_deleting,
            repairs_queued: s.repairs_queued,
            answered_by: s.answered_by,
        }
    }
}
