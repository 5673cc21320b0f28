//! Bundles from the wire, and the bundle requests that carry more than numbers and strings.

use bitmountain_proto::v1 as pb;

use super::labels_from_proto;
use crate::error::{Field, MetaError, Result};
use crate::types::{
    Bundle, BundleId, BundleRecord, BundleState, Code, Preservation, ShardLocation,
};

impl Bundle {
    /// From the wire.
    pub(crate) fn from_proto(b: pb::BundleRecord) -> Result<Self> {
        let id = BundleId::from_proto(b.id.as_ref())?;
        let state = BundleState::from_proto(b.state()).ok_or(MetaError::InvalidArgument {
            field: Field::BundleState,
            reason: "unspecified".into(),
        })?;
        let code = b
            .code
            .as_ref()
            .map(Code::from_proto)
            .ok_or(MetaError::InvalidArgument {
                field: Field::Code,
                reason: "missing".into(),
            })?;
        let mut locations: Vec<ShardLocation> = b
            .placement
            .iter()
            .map(|l| ShardLocation {
                shard_index: l.shard_index,
                disk_id: l.disk_id,
                node_id: l.node_id,
                node_address: l.node_address.clone(),
            })
            .collect();
        locations.sort_by_key(|l| l.shard_index);
        Ok(Self {
            record: BundleRecord {
                id,
                state,
                code,
                length: b.length,
                index_offset: b.index_offset,
                index_length: b.index_length,
                sha256: b.sha256,
                file_count: b.file_count,
                labels: labels_from_proto(&b.labels)?,
                created_unix_ms: b.created_unix_ms,
                expires_unix_ms: b.expires_unix_ms,
                placement: locations.iter().map(|l| l.disk_id).collect(),
                placement_generation: b.placement_generation,
                request_id: String::new(),
                accounted_shard_bytes: 0,
                preservation: Preservation::from_parts(
                    b.retain_until_unix_ms,
                    b.legal_hold_reason,
                    b.legal_hold_since_unix_ms,
                ),
            },
            locations,
        })
    }

    /// The bundle a response carries, which it must.
    pub(crate) fn from_response(b: Option<pb::BundleRecord>) -> Result<Self> {
        Self::from_proto(b.ok_or(MetaError::InvalidArgument {
            field: Field::Bundle,
            reason: "missing in response".into(),
        })?)
    }
}

/// A page of bundles, filtered by label and state.
pub(crate) fn list_bundles_request(
    label: Option<(&str, &str)>,
    state: Option<BundleState>,
    page_token: &[u8],
    page_size: u32,
) -> pb::ListBundlesRequest {
    pb::ListBundlesRequest {
        label: label.map(|(k, v)| pb::Label {
            key: k.into(),
            value: v.into(),
        }),
        state: state.map_or(0, |s| s.to_proto() as i32),
        page_token: page_token.to_vec(),
        page_size,
        stale_ok: false,
    }
}

/// A placement compare-and-set: `disks` by shard index.
pub(crate) fn update_placement_request(
    id: BundleId,
    expected_generation: u64,
    disks: &[u64],
    rewritten: &[u32],
) -> pb::UpdatePlacementRequest {
    pb::UpdatePlacementRequest {
        id: Some(id.to_proto()),
        expected_generation,
        placement: disks
            .iter()
            .enumerate()
            .map(|(i, d)| pb::ShardLocation {
                shard_index: i as u32,
                disk_id: *d,
                ..Default::default()
            })
            .collect(),
        rewritten_shards: rewritten.to_vec(),
    }
}

/// A page of a disk's shards: (bundle, shard index) and the next page token.
pub(crate) type DiskShardPage = (Vec<(BundleId, u32)>, Vec<u8>);

/// A page of a disk's shards from the wire.
pub(crate) fn disk_shards_from_proto(r: pb::ListDiskBundlesResponse) -> Result<DiskShardPage> {
    let shards = r
        .shards
        .into_iter()
        .map(|s| Ok((BundleId::from_proto(s.bundle_id.as_ref())?, s.shard_index)))
        .collect::<Result<Vec<_>>>()?;
    Ok((shards, r.next_page_token))
}
