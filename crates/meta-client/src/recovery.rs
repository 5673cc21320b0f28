//! `MetaClient`'s disaster-recovery calls: a node's scan reports, and the recovery's state.

use bitmountain_proto::v1 as pb;

use crate::client::MetaClient;
use crate::error::Result;
use crate::types::{FoundShard, FoundTombstone};
use crate::wire;

/// Where a recovery stands (`MetaAdmin.Recovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryStatus {
    pub active: bool,
    pub started_unix_ms: u64,
    pub disks_reported: Vec<u64>,
    pub disks_registered: Vec<u64>,
    pub shards_found: u64,
    pub tombstones_found: u64,
    /// The last finished recovery's report as JSON (docs/formats.md, "Recovery");
    /// empty: none.
    pub report_json: String,
}

impl MetaClient {
    /// Sends part of one disk's scan; `last` says the disk's scan is complete.
    pub async fn report_scan(
        &self,
        node_id: u64,
        disk_id: u64,
        shards: &[FoundShard],
        tombstones: &[FoundTombstone],
        last: bool,
    ) -> Result<()> {
        let request = pb::ReportScanRequest {
            node_id,
            disk_id,
            shards: shards.iter().map(wire::found_shard_to_proto).collect(),
            tombstones: tombstones
                .iter()
                .map(wire::found_tombstone_to_proto)
                .collect(),
            last,
        };
        self.transport()
            .service(|mut c| {
                let request = request.clone();
                async move { c.report_scan(request).await }
            })
            .await?;
        Ok(())
    }

    /// The recovery's state; with `finish`, ends it first with the disks reported so far.
    pub async fn recovery(&self, finish: bool) -> Result<RecoveryStatus> {
        let r = self
            .transport()
            .admin(|mut c| async move { c.recovery(pb::RecoveryRequest { finish }).await })
            .await?;
        Ok(RecoveryStatus {
            active: r.active,
            started_unix_ms: r.started_unix_ms,
            disks_reported: r.disks_reported,
            disks_registered: r.disks_registered,
            shards_found: r.shards_found,
            tombstones_found: r.tombstones_found,
            report_json: r.report_json,
        })
    }
}
