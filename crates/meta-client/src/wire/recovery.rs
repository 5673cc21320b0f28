//! Recovery scans on the wire: found shards and tombstones, both directions (the node sends,
//! the member reads).

use bitmountain_proto::v1 as pb;

use super::{labels_from_proto, labels_to_proto};
use crate::error::{Field, MetaError, Result};
use crate::types::{BundleId, Code, FoundDescription, FoundFooter, FoundShard, FoundTombstone};

/// To the wire.
pub fn found_shard_to_proto(s: &FoundShard) -> pb::FoundShard {
    pb::FoundShard {
        bundle_id: s.bundle.to_bytes().to_vec(),
        shard_index: s.shard_index,
        code: s.code.map(|c| c.to_proto()),
        chunk_bytes: s.chunk_bytes,
        footer: s.footer.as_ref().map(|f| pb::FoundFooter {
            length: f.length,
            index_offset: f.index_offset,
            index_length: f.index_length,
            sha256: f.sha256.to_vec(),
        }),
        description: s.description.as_ref().map(|d| pb::FoundDescription {
            created_unix_ms: d.created_unix_ms,
            file_count: d.file_count,
            labels: labels_to_proto(&d.labels),
        }),
        problem: s.problem.clone().unwrap_or_default(),
    }
}

/// From the wire; `disk_id` is the disk the report is for.
pub fn found_shard_from_proto(s: &pb::FoundShard, disk_id: u64) -> Result<FoundShard> {
    let footer = match &s.footer {
        Some(f) => Some(FoundFooter {
            length: f.length,
            index_offset: f.index_offset,
            index_length: f.index_length,
            sha256: f
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| MetaError::InvalidArgument {
                    field: Field::Sha256,
                    reason: format!("a footer's SHA-256 is 32 bytes, not {}", f.sha256.len()),
                })?,
        }),
        None => None,
    };
    let description = match &s.description {
        Some(d) => Some(FoundDescription {
            created_unix_ms: d.created_unix_ms,
            file_count: d.file_count,
            labels: labels_from_proto(&d.labels)?,
        }),
        None => None,
    };
    Ok(FoundShard {
        bundle: BundleId::from_bytes(&s.bundle_id)?,
        shard_index: s.shard_index,
        disk_id,
        code: s.code.as_ref().map(Code::from_proto),
        chunk_bytes: s.chunk_bytes,
        footer,
        description,
        problem: (!s.problem.is_empty()).then(|| s.problem.clone()),
    })
}

/// To the wire.
pub fn found_tombstone_to_proto(t: &FoundTombstone) -> pb::FoundTombstone {
    pb::FoundTombstone {
        bundle_id: t.bundle.to_bytes().to_vec(),
        deleted_unix_ms: t.deleted_unix_ms,
    }
}

/// From the wire; `disk_id` is the disk the report is for.
pub fn found_tombstone_from_proto(t: &pb::FoundTombstone, disk_id: u64) -> Result<FoundTombstone> {
    Ok(FoundTombstone {
        bundle: BundleId::from_bytes(&t.bundle_id)?,
        disk_id,
        deleted_unix_ms: t.deleted_unix_ms,
    })
}
