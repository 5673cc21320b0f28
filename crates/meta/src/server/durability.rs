//! The live durability figure: the model of `bitmountain_durability::live` applied to this
//! member's view of the cluster ([`crate::durability::live_cluster`]: disks in service, their
//! fill, the codes in use by bytes, disk failures over disk-years of service) and, on the
//! leader, the repair rate it measured.

use bitmountain_durability::{live_estimate, AfrPrior, LiveEstimate};
use bitmountain_proto::v1 as pb;

use super::MetaServer;
use crate::types::ClusterStatus;

impl MetaServer {
    /// The model's figures for the cluster in `st` (a status this member just built).
    pub(crate) fn live_durability(&self, st: &pb::ClusterStatusResponse) -> Option<LiveEstimate> {
        let status = ClusterStatus::from_proto(st.clone());
        let rate = (st.role == "leader").then(|| self.repair_rate());
        let live = crate::durability::live_cluster(&status, rate)?;
        match live_estimate(&live, AfrPrior::default()) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::debug!(error = %e, "no durability figure for this cluster");
                None
            }
        }
    }
}
