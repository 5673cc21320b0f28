//! Every conversion between the domain types ([`crate::types`], [`MetaError`]) and the
//! generated `bitmountain_proto::v1` types, both directions.
//!
//! The conversions the server (`bitmountain-meta`) also makes are here, public, and it uses
//! them, so client and server cannot disagree: ids, codes, states, labels (with their limits),
//! repair settings and tasks, allocation and commit requests, batch item errors. The rest serve
//! [`crate::MetaClient`] alone and are crate-private, one file per family: `bundles.rs`,
//! `nodes.rs` (registration, heartbeats, cluster status, membership), `repairs.rs` (claims,
//! progress, rebalance plans). Requests made only of numbers and strings are written where
//! they are sent.

use std::collections::BTreeMap;

use bitmountain_proto::v1 as pb;

use crate::error::{Field, MetaError, Result, DETAIL_KEY, ERROR_KIND_KEY, LEADER_KEY};
use crate::types::{
    AllocateRequest, BundleId, BundleState, Code, CommitRequest, DiskState, NodeState,
    RepairSettings, RepairTask,
};

mod audit;
pub use audit::{
    agent_from_proto, agent_to_proto, event_from_proto, event_to_proto, head_from_proto,
};
mod access;
pub use access::{
    role_from_str, scope_from_proto, token_from_proto, token_id_from_str, token_to_proto,
};
mod bundles;
mod nodes;
pub use nodes::worker_to_proto;
mod recovery;
pub use recovery::{
    found_shard_from_proto, found_shard_to_proto, found_tombstone_from_proto,
    found_tombstone_to_proto,
};
mod repairs;
#[cfg(test)]
mod tests;

pub(crate) use bundles::{disk_shards_from_proto, list_bundles_request, update_placement_request};

impl BundleId {
    /// From an optional wire id.
    pub fn from_proto(id: Option<&pb::BundleId>) -> Result<Self> {
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

impl Code {
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

impl BundleState {
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

    /// From the wire (`None` for unspecified).
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

    /// From the wire (`None` for unspecified).
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

/// Labels from the wire, validated.
pub fn labels_from_proto(labels: &[pb::Label]) -> Result<BTreeMap<String, String>> {
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

    /// From the wire; what the wire does not carry (moves, shard bytes) is empty.
    pub(crate) fn from_proto(t: pb::RepairTask) -> Result<Self> {
        Ok(RepairTask {
            bundle_id: BundleId::from_proto(t.bundle_id.as_ref())?,
            healthy_shards: t.healthy_shards,
            missing_shards: t.missing_shards,
            queued_unix_ms: t.queued_unix_ms,
            damaged_shards: t.damaged_shards,
            moves: BTreeMap::new(),
            moving_shards: t.moving_shards,
            shard_bytes: 0,
        })
    }
}

impl AllocateRequest {
    /// To the wire (public for tests that speak the wire themselves).
    pub fn to_proto(&self) -> pb::AllocateBundleRequest {
        pb::AllocateBundleRequest {
            request_id: self.request_id.clone(),
            code: self.code.map(|c| c.to_proto()),
            labels: labels_to_proto(&self.labels),
            expected_length: self.expected_length,
            ttl_ms: self.ttl_ms,
            retain_until_unix_ms: self.retain_until_unix_ms,
        }
    }
}

impl CommitRequest {
    /// To the wire, as the commit of bundle `id` (public for tests that speak the wire
    /// themselves).
    pub fn to_proto(&self, id: BundleId) -> pb::CommitBundleRequest {
        pb::CommitBundleRequest {
            id: Some(id.to_proto()),
            length: self.length,
            index_offset: self.index_offset,
            index_length: self.index_length,
            sha256: self.sha256.clone(),
            file_count: self.file_count,
            missing_shards: self.missing_shards.clone(),
            on_behalf_of: Some(agent_to_proto(&self.agent)),
        }
    }
}

/// The metadata keys an item of a batch carries over from the status its error maps to.
const ITEM_ERROR_KEYS: [&str; 3] = [ERROR_KIND_KEY, LEADER_KEY, DETAIL_KEY];

/// One batch item's error, carrying what the unary call's status would have carried (code,
/// message, error metadata), so the client decodes it the same way ([`item_status`]).
pub fn item_error(e: MetaError) -> pb::ItemError {
    let status = tonic::Status::from(e);
    let metadata = ITEM_ERROR_KEYS
        .iter()
        .filter_map(|key| {
            let value = status.metadata().get(*key)?.to_str().ok()?;
            Some((key.to_string(), value.to_string()))
        })
        .collect();
    pb::ItemError {
        code: status.code() as i32,
        message: status.message().to_string(),
        metadata,
    }
}

/// The status a batch item's error stands for: the inverse of [`item_error`]. Metadata keys
/// other than the error keys are ignored.
pub fn item_status(e: &pb::ItemError) -> tonic::Status {
    let mut status = tonic::Status::new(tonic::Code::from_i32(e.code), e.message.clone());
    for key in ITEM_ERROR_KEYS {
        if let Some(value) = e.metadata.get(key).and_then(|v| v.parse().ok()) {
            status.metadata_mut().insert(key, value);
        }
    }
    status
}
