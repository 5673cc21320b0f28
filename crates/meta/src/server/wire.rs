//! Domain records → protobuf: bundles with their shards' locations, disks and nodes with
//! the leader's latest heartbeat figures, members, the cluster status.

use bitmountain_proto::v1 as pb;
use bitmountain_raftstore::GroupStatus;

use super::MetaServer;
use crate::types::WorkerReport;
use crate::types::{now_unix_ms, BundleRecord, DiskRecord, DiskState, NodeRecord};
use crate::wire::{labels_to_proto, worker_to_proto};

impl MetaServer {
    pub(crate) fn to_proto(&self, b: &BundleRecord) -> pb::BundleRecord {
        let map = self.inner.store.map();
        let (legal_hold_reason, legal_hold_since_unix_ms) = b.preservation.hold_parts();
        pb::BundleRecord {
            id: Some(b.id.to_proto()),
            state: b.state.to_proto() as i32,
            code: Some(b.code.to_proto()),
            length: b.length,
            index_offset: b.index_offset,
            index_length: b.index_length,
            sha256: b.sha256.clone(),
            file_count: b.file_count,
            labels: labels_to_proto(&b.labels),
            created_unix_ms: b.created_unix_ms,
            expires_unix_ms: b.expires_unix_ms,
            retain_until_unix_ms: b.preservation.retain_until_unix_ms,
            legal_hold_reason,
            legal_hold_since_unix_ms,
            placement: b
                .placement
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let node = map.disks.get(d).map(|x| x.node_id).unwrap_or(0);
                    pb::ShardLocation {
                        shard_index: i as u32,
                        disk_id: *d,
                        node_id: node,
                        node_address: map
                            .nodes
                            .get(&node)
                            .map(|n| n.address.clone())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
            placement_generation: b.placement_generation,
        }
    }

    pub(crate) fn disk_proto(&self, d: &DiskRecord) -> pb::DiskInfo {
        let (used, scrub) = self
            .heartbeats()
            .get(&d.node_id)
            .map(|h| {
                (
                    h.used.get(&d.id).copied().unwrap_or(0),
                    h.scrub.get(&d.id).copied().unwrap_or((0, 0)),
                )
            })
            .unwrap_or((0, (0, 0)));
        pb::DiskInfo {
            disk_id: d.id,
            path: d.path.clone(),
            capacity_bytes: d.capacity_bytes,
            used_bytes: used,
            state: d.state.to_proto() as i32,
            accounted_bytes: d.accounted_bytes,
            node_id: d.node_id,
            last_scrub_unix_ms: scrub.0,
            last_scrub_damaged_shards: scrub.1,
        }
    }

    pub(crate) fn node_proto(&self, n: &NodeRecord, disks: Vec<pb::DiskInfo>) -> pb::NodeInfo {
        let (age, workers) = self
            .heartbeats()
            .get(&n.id)
            .map(|h| {
                let age = h.at.map(|at| at.elapsed().as_millis() as u64);
                (age, h.workers.clone())
            })
            .unwrap_or_default();
        pb::NodeInfo {
            node_id: n.id,
            address: n.address.clone(),
            domain: Some(pb::FailureDomain {
                zone: n.zone.clone(),
                rack: n.rack.clone(),
                host: n.host.clone(),
            }),
            state: n.state.to_proto() as i32,
            disks,
            last_heartbeat_age_ms: age,
            workers,
        }
    }

    pub(crate) fn members_proto(st: &GroupStatus) -> Vec<pb::MemberInfo> {
        let mut out = Vec::new();
        for (ids, role) in [(&st.voters, "voter"), (&st.learners, "learner")] {
            for id in ids {
                out.push(pb::MemberInfo {
                    id: *id,
                    address: st.members.get(id).cloned().unwrap_or_default(),
                    role: role.into(),
                    matched_index: st.progress.get(id).copied().unwrap_or(0),
                });
            }
        }
        out
    }

    /// Members of a conf state just applied (the published status may lag by one round).
    pub(crate) fn members_of(
        cs: &bitmountain_raftstore::ConfState,
        st: &GroupStatus,
        extra: Option<(u64, &str)>,
    ) -> Vec<pb::MemberInfo> {
        let addr = |id: u64| {
            st.members.get(&id).cloned().unwrap_or_else(|| {
                extra
                    .filter(|(e, _)| *e == id)
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default()
            })
        };
        let mut out = Vec::new();
        for (ids, role) in [(&cs.voters, "voter"), (&cs.learners, "learner")] {
            for id in ids.iter() {
                out.push(pb::MemberInfo {
                    id: *id,
                    address: addr(*id),
                    role: role.into(),
                    matched_index: st.progress.get(id).copied().unwrap_or(0),
                });
            }
        }
        out
    }

    pub(crate) fn status_proto(&self) -> pb::ClusterStatusResponse {
        let st = self.inner.raft.status();
        let map = self.inner.store.map().clone();
        let mut nodes = Vec::new();
        for n in map.nodes.values() {
            let disks = map
                .disks
                .values()
                .filter(|d| d.node_id == n.id)
                .map(|d| self.disk_proto(d))
                .collect();
            nodes.push(self.node_proto(n, disks));
        }
        let mut status = pb::ClusterStatusResponse {
            cluster_id: map.cluster.cluster_id.clone(),
            member_id: st.id,
            leader_id: st.leader_id,
            leader_address: st.members.get(&st.leader_id).cloned().unwrap_or_default(),
            term: st.term,
            commit_index: st.commit,
            applied_index: st.applied,
            first_log_index: st.first_index,
            last_log_index: st.last_index,
            members: Self::members_proto(&st),
            nodes,
            bundles: Some(pb::BundleCounts {
                pending: map.cluster.pending,
                sealed: map.cluster.sealed,
                deleting: map.cluster.deleting,
            }),
            repairs_queued: map.cluster.repairs,
            role: st.role.to_string(),
            value_format: u32::from(map.cluster.value_format()),
            newest_value_format: u32::from(crate::keys::VALUE_FORMAT_NEWEST),
            workers: self
                .inner
                .workers
                .statuses()
                .iter()
                .map(|s| worker_to_proto(&WorkerReport::from(s)))
                .collect(),
            durability_loss_probability_per_year: 0.0,
            default_code: Some(self.inner.cfg.default_code.to_proto()),
            sealed_bytes_by_code: map
                .cluster
                .sealed_bytes_by_code
                .iter()
                .map(|c| pb::CodeBytes {
                    code: Some(pb::Code {
                        data_shards: c.data_shards,
                        parity_shards: c.parity_shards,
                        cell_bytes: 0,
                    }),
                    bytes: c.bytes,
                })
                .collect(),
            disk_failures_seen: map.cluster.disk_failures,
            // Disks out of service stop adding exposure only when removed (a failed disk's
            // time is counted to now: a little more exposure, a slightly lower AFR).
            disk_years_observed: crate::durability::disk_years(
                map.disks
                    .values()
                    .filter(|d| d.state != DiskState::Removed)
                    .map(|d| d.added_unix_ms),
                now_unix_ms(),
            ),
        };
        status.durability_loss_probability_per_year = self
            .live_durability(&status)
            .map_or(0.0, |e| e.p_loss_per_year);
        status
    }
}
