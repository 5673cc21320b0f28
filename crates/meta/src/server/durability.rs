//! The live durability figure: the model of `bitmountain_durability::live` applied to this
//! member's view of the cluster (disks in service, their fill, the default code, failed disks)
//! and, on the leader, the repair rate it measured. No disk-years of exposure are known to the
//! group, so the prior AFR stands (the figure says so in `bitmountain durability --cluster`).

use bitmountain_durability::{
    live_estimate, AfrPrior, DiskSample, LiveCluster, LiveEstimate, Scheme,
};
use bitmountain_proto::v1 as pb;

use super::MetaServer;

impl MetaServer {
    /// The model's figures for the cluster in `st` (a status this member just built).
    pub(crate) fn live_durability(&self, st: &pb::ClusterStatusResponse) -> Option<LiveEstimate> {
        let code = self.inner.cfg.default_code;
        let scheme = Scheme::rs(code.data_shards, code.parity_shards).ok()?;
        let disks: Vec<DiskSample> = st
            .nodes
            .iter()
            .flat_map(|n| n.disks.iter().map(move |d| (n.node_id, d)))
            .map(|(node_id, d)| DiskSample {
                node_id,
                capacity_bytes: d.capacity_bytes,
                used_bytes: d.used_bytes.max(d.accounted_bytes),
                in_service: d.state == pb::DiskState::Ok as i32
                    || d.state == pb::DiskState::Draining as i32,
                failed: d.state == pb::DiskState::Failed as i32,
            })
            .collect();
        let rate = (st.role == "leader").then(|| self.repair_rate());
        let live = LiveCluster::from_disks(scheme, &disks, rate);
        match live_estimate(&live, AfrPrior::default()) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::debug!(error = %e, "no durability figure for this cluster");
                None
            }
        }
    }
}
