//! Every conversion between the domain types ([`crate::types`], [`MetaError`]) and the
//! generated `bitmountain_proto::v1` types, both directions.
//!
//! The conversions the server (`bitmountain-meta`) also makes are public and it uses them, so
//! client and server cannot disagree: ids, codes, states, labels (with their limits), repair
//! settings and tasks, batch item errors. The rest serve [`crate::MetaClient`] alone and are
//! crate-private. Requests made only of numbers and strings are written where they are sent.

use std::collections::BTreeMap;

use bitmountain_proto::v1 as pb;

use crate::error::{Field, MetaError, Result, DETAIL_KEY, ERROR_KIND_KEY, LEADER_KEY};
use crate::types::{
    AllocateRequest, Bundle, BundleCounts, BundleId, BundleRecord, BundleState, ClusterStatus,
    Code, CommitRequest, DiskInfo, DiskReport, DiskState, FinishedRepair, Heartbeat,
    HeartbeatReply, MemberInfo, NodeInfo, NodeState, PlannedMove, RebalancePlan, RedundancyLevel,
    RegisteredNode, Registration, RepairAssignment, RepairClaim, RepairPage, RepairSettings,
    RepairStatus, RepairTarget, RepairTask, RunningRepair, ShardLocation,
};

// ---- Shared with the server ---------------------------------------------------------------

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

// ---- Bundles, client side -----------------------------------------------------------------

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

// ---- Nodes: registration, heartbeats ------------------------------------------------------

impl DiskReport {
    fn to_proto(&self) -> pb::DiskInfo {
        pb::DiskInfo {
            disk_id: self.disk_id,
            path: self.path.clone(),
            capacity_bytes: self.capacity_bytes,
            used_bytes: self.used_bytes,
            state: self.state.to_proto() as i32,
            // The group's own figures, which a node does not report.
            accounted_bytes: 0,
            node_id: 0,
            last_scrub_unix_ms: self.last_scrub_unix_ms,
            last_scrub_damaged_shards: self.last_scrub_damaged_shards,
        }
    }
}

impl Registration {
    pub(crate) fn to_proto(&self) -> pb::RegisterNodeRequest {
        pb::RegisterNodeRequest {
            request_id: self.request_id.clone(),
            node_id: self.node_id,
            address: self.address.clone(),
            domain: Some(pb::FailureDomain {
                zone: self.zone.clone(),
                rack: self.rack.clone(),
                host: self.host.clone(),
            }),
            disks: self.disks.iter().map(DiskReport::to_proto).collect(),
        }
    }
}

impl RegisteredNode {
    pub(crate) fn from_proto(r: pb::RegisterNodeResponse) -> Self {
        RegisteredNode {
            node_id: r.node_id,
            disk_ids: r.disks.iter().map(|d| d.disk_id).collect(),
            cluster_id: r.cluster_id,
        }
    }
}

impl Heartbeat {
    pub(crate) fn to_proto(&self) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            node_id: self.node_id,
            disks: self.disks.iter().map(DiskReport::to_proto).collect(),
        }
    }
}

impl HeartbeatReply {
    pub(crate) fn from_proto(r: pb::HeartbeatResponse) -> Self {
        HeartbeatReply {
            cluster_id: r.cluster_id,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            repair_settings: r
                .repair
                .as_ref()
                .map(|s| RepairSettings::from_proto(Some(s))),
        }
    }
}

// ---- Repairs and rebalancing --------------------------------------------------------------

impl RepairPage {
    pub(crate) fn from_proto(r: pb::ListRepairsResponse) -> Result<Self> {
        Ok(RepairPage {
            repairs: r
                .repairs
                .into_iter()
                .map(RepairTask::from_proto)
                .collect::<Result<_>>()?,
            next_page_token: r.next_page_token,
            total: r.total,
        })
    }
}

impl RepairClaim {
    pub(crate) fn from_proto(r: pb::ClaimRepairsResponse) -> Self {
        RepairClaim {
            // One assignment the worker cannot name is no reason to refuse the others.
            assignments: r
                .repairs
                .into_iter()
                .filter_map(|a| {
                    Some(RepairAssignment {
                        bundle_id: BundleId::from_proto(a.bundle_id.as_ref()).ok()?,
                        placement_generation: a.placement_generation,
                        targets: a
                            .targets
                            .iter()
                            .map(|t| RepairTarget {
                                shard_index: t.shard_index,
                                disk_id: t.disk_id,
                                from_disk_id: t.from_disk_id,
                                copy: t.copy,
                            })
                            .collect(),
                    })
                })
                .collect(),
            settings: RepairSettings::from_proto(r.settings.as_ref()),
            lease_ms: r.lease_ms,
        }
    }
}

impl FinishedRepair {
    pub(crate) fn to_proto(&self) -> pb::FinishRepairRequest {
        pb::FinishRepairRequest {
            node_id: self.node_id,
            bundle_id: Some(self.bundle_id.to_proto()),
            shard_indexes: self.shard_indexes.clone(),
            ok: self.ok,
            bytes_written: self.bytes_written,
            error: self.error.clone(),
        }
    }
}

impl RepairStatus {
    pub(crate) fn from_proto(r: pb::RepairStatusResponse) -> Result<Self> {
        Ok(RepairStatus {
            queued_bundles: r.queued,
            running_shards: r.running,
            shards_repaired: r.shards_repaired,
            bytes_repaired: r.bytes_repaired,
            bytes_per_sec: r.bytes_per_sec,
            queued_bytes: r.queued_bytes,
            eta_ms: r.eta_ms,
            levels: r
                .levels
                .iter()
                .map(|l| RedundancyLevel {
                    healthy_shards: l.healthy_shards,
                    bundles: l.bundles,
                })
                .collect(),
            settings: RepairSettings::from_proto(r.settings.as_ref()),
            running_repairs: r
                .running_repairs
                .iter()
                .map(|x| {
                    Ok(RunningRepair {
                        bundle_id: BundleId::from_proto(x.bundle_id.as_ref())?,
                        shard_index: x.shard_index,
                        node_id: x.node_id,
                        running_ms: x.running_ms,
                    })
                })
                .collect::<Result<_>>()?,
            sealed_bundles: r.sealed_bundles,
            truncated: r.truncated,
        })
    }
}

impl RebalancePlan {
    pub(crate) fn from_proto(r: pb::RebalanceResponse) -> Result<Self> {
        Ok(RebalancePlan {
            moves: r
                .moves
                .iter()
                .map(|m| {
                    Ok(PlannedMove {
                        bundle_id: BundleId::from_proto(m.bundle_id.as_ref())?,
                        shard_index: m.shard_index,
                        from_disk_id: m.from_disk_id,
                        to_disk_id: m.to_disk_id,
                        bytes: m.bytes,
                    })
                })
                .collect::<Result<_>>()?,
            bytes: r.bytes,
            queued: r.queued,
        })
    }
}

// ---- Cluster status and membership --------------------------------------------------------

impl MemberInfo {
    pub(crate) fn from_proto(m: pb::MemberInfo) -> Self {
        MemberInfo {
            id: m.id,
            address: m.address,
            role: m.role,
            matched_index: m.matched_index,
        }
    }

    /// The members of a membership answer.
    pub(crate) fn all_from_proto(members: Vec<pb::MemberInfo>) -> Vec<Self> {
        members.into_iter().map(Self::from_proto).collect()
    }
}

impl DiskInfo {
    fn from_proto(d: &pb::DiskInfo) -> Self {
        DiskInfo {
            disk_id: d.disk_id,
            node_id: d.node_id,
            path: d.path.clone(),
            capacity_bytes: d.capacity_bytes,
            used_bytes: d.used_bytes,
            accounted_bytes: d.accounted_bytes,
            state: DiskState::from_proto(d.state()),
            last_scrub_unix_ms: d.last_scrub_unix_ms,
            last_scrub_damaged_shards: d.last_scrub_damaged_shards,
        }
    }
}

impl NodeInfo {
    fn from_proto(n: pb::NodeInfo) -> Self {
        let state = NodeState::from_proto(n.state());
        let domain = n.domain.unwrap_or_default();
        NodeInfo {
            node_id: n.node_id,
            address: n.address,
            zone: domain.zone,
            rack: domain.rack,
            host: domain.host,
            state,
            disks: n.disks.iter().map(DiskInfo::from_proto).collect(),
            last_heartbeat_age_ms: n.last_heartbeat_age_ms,
        }
    }
}

impl ClusterStatus {
    pub(crate) fn from_proto(s: pb::ClusterStatusResponse) -> Self {
        let bundles = s.bundles.unwrap_or_default();
        ClusterStatus {
            cluster_id: s.cluster_id,
            member_id: s.member_id,
            leader_id: s.leader_id,
            leader_address: s.leader_address,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            first_log_index: s.first_log_index,
            last_log_index: s.last_log_index,
            members: MemberInfo::all_from_proto(s.members),
            nodes: s.nodes.into_iter().map(NodeInfo::from_proto).collect(),
            bundles: BundleCounts {
                pending: bundles.pending,
                sealed: bundles.sealed,
                deleting: bundles.deleting,
            },
            repairs_queued: s.repairs_queued,
            role: s.role,
            value_format: s.value_format,
            newest_value_format: s.newest_value_format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A batch item's error decodes to what the unary call's status decodes to.
    #[test]
    fn item_errors_decode_like_unary_statuses() {
        let cases = [
            MetaError::UnknownBundle {
                id: BundleId(0xabc),
            },
            MetaError::InvalidArgument {
                field: Field::Sha256,
                reason: "must be 32 bytes, got 3".into(),
            },
            MetaError::Raft {
                kind: ErrorKind::NotLeader,
                leader: Some("127.0.0.1:7001".into()),
                message: "member 2 is not the leader".into(),
            },
        ];
        for e in cases {
            let unary = MetaError::from_status("m", &tonic::Status::from(e.clone()));
            let item = MetaError::from_status("m", &item_status(&item_error(e.clone())));
            assert_eq!(format!("{unary:?}"), format!("{item:?}"));
            assert_eq!(format!("{item:?}"), format!("{e:?}"));
        }
        // Keys other than the error keys are not carried back into a status.
        let mut odd = item_error(MetaError::UnknownBundle { id: BundleId(1) });
        odd.metadata.insert("x-other".into(), "1".into());
        assert!(item_status(&odd).metadata().get("x-other").is_none());
    }

    /// A claim keeps the assignments it can name and defaults absent settings.
    #[test]
    fn a_claim_skips_assignments_without_a_valid_id() {
        let good = pb::RepairAssignment {
            bundle_id: Some(BundleId(7).to_proto()),
            placement_generation: 3,
            targets: vec![pb::RepairTarget {
                shard_index: 2,
                disk_id: 5,
                from_disk_id: 4,
                copy: true,
            }],
        };
        let bad = pb::RepairAssignment {
            bundle_id: Some(pb::BundleId { id: vec![1, 2] }),
            ..Default::default()
        };
        let claim = RepairClaim::from_proto(pb::ClaimRepairsResponse {
            repairs: vec![bad, good],
            settings: None,
            lease_ms: 9,
        });
        assert_eq!(
            claim.assignments,
            vec![RepairAssignment {
                bundle_id: BundleId(7),
                placement_generation: 3,
                targets: vec![RepairTarget {
                    shard_index: 2,
                    disk_id: 5,
                    from_disk_id: 4,
                    copy: true,
                }],
            }]
        );
        assert_eq!(claim.settings, RepairSettings::default());
        assert_eq!(claim.lease_ms, 9);
    }

    /// A node report goes out with the group's own figures zero; a status keeps an unknown
    /// state as `None` and an absent domain or count as empty.
    #[test]
    fn disks_and_nodes_convert_field_by_field() {
        let report = DiskReport {
            disk_id: 3,
            path: "/d".into(),
            capacity_bytes: 100,
            used_bytes: 40,
            state: DiskState::Failed,
            last_scrub_unix_ms: 11,
            last_scrub_damaged_shards: 2,
        };
        let wire = Heartbeat {
            node_id: 1,
            disks: vec![report],
        }
        .to_proto();
        assert_eq!(
            wire.disks,
            vec![pb::DiskInfo {
                disk_id: 3,
                path: "/d".into(),
                capacity_bytes: 100,
                used_bytes: 40,
                state: pb::DiskState::Failed as i32,
                accounted_bytes: 0,
                node_id: 0,
                last_scrub_unix_ms: 11,
                last_scrub_damaged_shards: 2,
            }]
        );
        let st = ClusterStatus::from_proto(pb::ClusterStatusResponse {
            nodes: vec![pb::NodeInfo {
                node_id: 1,
                state: 99,
                disks: vec![pb::DiskInfo {
                    disk_id: 3,
                    state: pb::DiskState::Draining as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(st.bundles, BundleCounts::default());
        assert_eq!(st.nodes[0].state, None);
        assert_eq!(st.nodes[0].zone, "");
        assert_eq!(st.nodes[0].disks[0].state, Some(DiskState::Draining));
    }
}
