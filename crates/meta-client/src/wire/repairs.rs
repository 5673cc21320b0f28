//! Repairs (the queue, claims, reports, progress) and rebalance plans from and to the wire.

use bitmountain_proto::v1 as pb;

use crate::error::Result;
use crate::types::{
    BundleId, FinishedRepair, PlannedMove, RebalancePlan, RedundancyLevel, RepairAssignment,
    RepairClaim, RepairPage, RepairSettings, RepairStatus, RepairTarget, RepairTask, RunningRepair,
};

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
                        lost_shards: a.lost_shards,
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
