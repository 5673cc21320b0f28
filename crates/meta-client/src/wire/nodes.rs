//! What a node tells the group (registration, heartbeats) and what the group answers about
//! itself (cluster status, membership).

use bitmountain_proto::v1 as pb;

use crate::types::{
    BundleCounts, ClusterStatus, DiskInfo, DiskReport, DiskState, Heartbeat, HeartbeatReply,
    MemberInfo, NodeInfo, NodeState, RegisteredNode, Registration, RepairSettings, WorkerReport,
};

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
            cluster_id: self.cluster_id.clone(),
        }
    }
}

impl RegisteredNode {
    pub(crate) fn from_proto(r: pb::RegisterNodeResponse) -> Self {
        RegisteredNode {
            node_id: r.node_id,
            disk_ids: r.disks.iter().map(|d| d.disk_id).collect(),
            cluster_id: r.cluster_id,
            recovering: r.recovering,
        }
    }
}

impl Heartbeat {
    pub(crate) fn to_proto(&self) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            node_id: self.node_id,
            disks: self.disks.iter().map(DiskReport::to_proto).collect(),
            workers: self.workers.iter().map(worker_to_proto).collect(),
            checked_disk_ids: self.checked_disk_ids.clone(),
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
            tokens_version: r.tokens_version,
            tokens_fingerprint: r.tokens_fingerprint,
            recovering: r.recovering,
            orphan_hold_until_unix_ms: r.orphan_hold_until_unix_ms,
            returning_disk_ids: r.returning_disk_ids,
        }
    }
}

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
            workers: n.workers.into_iter().map(worker_from_proto).collect(),
        }
    }
}

impl ClusterStatus {
    /// From the wire (a member's own status too, for the durability model's inputs).
    pub fn from_proto(s: pb::ClusterStatusResponse) -> Self {
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
            durability_loss_probability_per_year: s.durability_loss_probability_per_year,
            default_code: s.default_code.as_ref().map(crate::types::Code::from_proto),
            sealed_bytes_by_code: s
                .sealed_bytes_by_code
                .iter()
                .filter_map(|c| Some((crate::types::Code::from_proto(c.code.as_ref()?), c.bytes)))
                .collect(),
            disk_failures_seen: s.disk_failures_seen,
            disk_years_observed: s.disk_years_observed,
            workers: s.workers.into_iter().map(worker_from_proto).collect(),
        }
    }
}

/// A worker's status as heartbeats and the cluster status carry it (the server converts its
/// own workers' with it too).
pub fn worker_to_proto(w: &WorkerReport) -> pb::WorkerStatus {
    pb::WorkerStatus {
        name: w.name.clone(),
        state: w.state.clone(),
        steps: w.steps,
        errors: w.errors,
        last_run_unix_ms: w.last_run_unix_ms,
        last_duration_ms: w.last_duration_ms,
        last_error: w.last_error.clone(),
        last_error_unix_ms: w.last_error_unix_ms,
        note: w.note.clone(),
    }
}

fn worker_from_proto(w: pb::WorkerStatus) -> WorkerReport {
    WorkerReport {
        name: w.name,
        state: w.state,
        steps: w.steps,
        errors: w.errors,
        last_run_unix_ms: w.last_run_unix_ms,
        last_duration_ms: w.last_duration_ms,
        last_error: w.last_error,
        last_error_unix_ms: w.last_error_unix_ms,
        note: w.note,
    }
}
