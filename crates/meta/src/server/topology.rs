//! The topology commands on the leader: registration, heartbeats (leader soft state, never
//! proposed), disk and node state decisions. Their apply is `crate::state::apply::topology`.

use std::time::Instant;

use bitmountain_proto::v1 as pb;

use super::{
    unexpected, Heartbeat, MetaServer, MAX_REPORTED_WORKERS, MAX_REQUEST_ID_BYTES,
    MAX_WORKER_TEXT_BYTES,
};
use crate::command::{Applied, Command, DiskSpec, RegisterNode};
use crate::error::{MetaError, Result};
use crate::rules;
use crate::types::{now_unix_ms, DiskState, NodeState};

impl MetaServer {
    /// A node registers (new, or again after a restart): its id, its disks' ids, the
    /// cluster id.
    pub(crate) async fn register(
        &self,
        r: pb::RegisterNodeRequest,
        agent: crate::types::Agent,
    ) -> Result<pb::RegisterNodeResponse> {
        if r.address.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Address,
                reason: "a node must say where it can be reached".into(),
            });
        }
        if r.request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::RequestId,
                reason: format!("at most {MAX_REQUEST_ID_BYTES} bytes"),
            });
        }
        self.require_leader()?;
        self.enter_pending_recovery().await?;
        let domain = r.domain.unwrap_or_default();
        let cmd = Command::RegisterNode(RegisterNode {
            request_id: r.request_id,
            node_id: r.node_id,
            address: r.address,
            zone: domain.zone,
            rack: domain.rack,
            host: domain.host,
            disks: r
                .disks
                .iter()
                .map(|d| DiskSpec {
                    disk_id: d.disk_id,
                    path: d.path.clone(),
                    capacity_bytes: d.capacity_bytes,
                })
                .collect(),
            cluster_id_candidate: format!("{:032x}", rand::random::<u128>()),
            cluster_id: r.cluster_id,
            now_ms: now_unix_ms(),
            agent,
            first_value_format: self.inner.cfg.initial_value_format,
        });
        match self.propose(cmd).await? {
            Applied::Node {
                node,
                disks,
                cluster_id,
            } => {
                {
                    let mut hb = self.heartbeats();
                    let used = r
                        .disks
                        .iter()
                        .zip(&disks)
                        .map(|(a, b)| (b.id, a.used_bytes))
                        .collect();
                    let entry = hb.entry(node.id).or_default();
                    entry.at = Some(Instant::now());
                    entry.used = used;
                }
                Ok(pb::RegisterNodeResponse {
                    node_id: node.id,
                    disks: disks.iter().map(|d| self.disk_proto(d)).collect(),
                    cluster_id,
                    recovering: self.inner.store.map().cluster.recovery.is_some(),
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// A node's heartbeat: leader soft state (when heard, disk use, failed disks, scrubs),
    /// answered with the settings nodes follow.
    pub(crate) fn heard(&self, r: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        self.require_leader()?;
        let cluster_id = {
            let map = self.inner.store.map();
            if !map.nodes.contains_key(&r.node_id) {
                return Err(MetaError::UnknownNode { id: r.node_id });
            }
            map.cluster.cluster_id.clone()
        };
        let heard = Heartbeat {
            at: Some(Instant::now()),
            used: r.disks.iter().map(|d| (d.disk_id, d.used_bytes)).collect(),
            failed: r
                .disks
                .iter()
                .filter(|d| d.state() == pb::DiskState::Failed)
                .map(|d| d.disk_id)
                .collect(),
            // Only disks the heartbeat reports (which bounds the list).
            checked: r
                .disks
                .iter()
                .map(|d| d.disk_id)
                .filter(|id| r.checked_disk_ids.contains(id))
                .collect(),
            scrub: r
                .disks
                .iter()
                .filter(|d| d.last_scrub_unix_ms > 0)
                .map(|d| {
                    (
                        d.disk_id,
                        (d.last_scrub_unix_ms, d.last_scrub_damaged_shards),
                    )
                })
                .collect(),
            workers: r
                .workers
                .into_iter()
                .take(MAX_REPORTED_WORKERS)
                .map(bounded_worker)
                .collect(),
        };
        self.heartbeats().insert(r.node_id, heard);
        let map = self.inner.store.map();
        // Only the disks this node reports: a lookup each, not a walk over every disk of the
        // cluster on every heartbeat.
        let returning_disk_ids = r
            .disks
            .iter()
            .map(|d| d.disk_id)
            .filter(|id| {
                map.disks
                    .get(id)
                    .is_some_and(|d| d.node_id == r.node_id && rules::disk_return(d).is_some())
            })
            .collect();
        Ok(pb::HeartbeatResponse {
            cluster_id,
            heartbeat_interval_ms: self.inner.cfg.heartbeat_interval_ms,
            repair: Some(map.cluster.repair_settings.to_proto()),
            tokens_version: map.cluster.tokens_version,
            tokens_fingerprint: map.cluster.tokens_fingerprint,
            recovering: map.cluster.recovery.is_some(),
            orphan_hold_until_unix_ms: map.cluster.orphan_hold_until_unix_ms,
            returning_disk_ids,
        })
    }

    /// An operator's (or a node's) decision on a disk.
    pub(crate) async fn change_disk_state(
        &self,
        r: pb::SetDiskStateRequest,
        agent: crate::types::Agent,
    ) -> Result<pb::SetDiskStateResponse> {
        let state = DiskState::from_proto(r.state()).ok_or(MetaError::InvalidArgument {
            field: crate::error::Field::State,
            reason: "required".into(),
        })?;
        self.require_leader()?;
        match self
            .propose(Command::SetDiskState {
                disk_id: r.disk_id,
                state,
                now_ms: now_unix_ms(),
                agent,
            })
            .await?
        {
            Applied::Disk {
                disk,
                repairs_queued,
            } => Ok(pb::SetDiskStateResponse {
                disk: Some(self.disk_proto(&disk)),
                repairs_queued,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// An operator's decision on a node.
    pub(crate) async fn change_node_state(
        &self,
        r: pb::SetNodeStateRequest,
        agent: crate::types::Agent,
    ) -> Result<pb::SetNodeStateResponse> {
        let state = NodeState::from_proto(r.state()).ok_or(MetaError::InvalidArgument {
            field: crate::error::Field::State,
            reason: "required".into(),
        })?;
        self.require_leader()?;
        match self
            .propose(Command::SetNodeState {
                node_id: r.node_id,
                state,
                now_ms: now_unix_ms(),
                agent,
            })
            .await?
        {
            Applied::NodeUpdated(n) => Ok(pb::SetNodeStateResponse {
                node: Some(self.node_proto(&n, vec![])),
            }),
            other => Err(unexpected(other)),
        }
    }
}

/// A worker status from a node, its texts cut to [`MAX_WORKER_TEXT_BYTES`] (it is kept in the
/// leader's memory and shown in every status).
fn bounded_worker(mut w: pb::WorkerStatus) -> pb::WorkerStatus {
    for text in [&mut w.name, &mut w.state, &mut w.last_error, &mut w.note] {
        if text.len() > MAX_WORKER_TEXT_BYTES {
            let mut end = MAX_WORKER_TEXT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    }
    w
}
