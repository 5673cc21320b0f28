//! The member's Prometheus gauges, set from its own view of the group each time it is
//! scraped: its Raft progress, the cluster map (nodes, disks, bundle counts) and, on the
//! leader, the repair queue. A follower exports the map as it has applied it.

use bitmountain_metrics::families::{
    DiskLabels, DiskStateLabels, HealthyLabel, NodeLabel, SpareLabel, StateLabel,
};
use bitmountain_metrics::Metrics;
use bitmountain_proto::v1 as pb;

use super::MetaServer;

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl MetaServer {
    /// Sets the cluster's gauges in `m` from this member's view.
    pub(crate) fn refresh_metrics(&self, m: &Metrics) {
        let raft = self.inner.raft.status();
        m.raft_term.set(gauge(raft.term));
        m.raft_is_leader.set(i64::from(raft.role == "leader"));
        m.raft_commit_index.set(gauge(raft.commit));
        m.raft_applied_index.set(gauge(raft.applied));
        let seen = m.raft_leader_changes.get();
        m.raft_leader_changes
            .inc_by(raft.leader_changes.saturating_sub(seen));

        let st = self.status_proto();
        let counts = st.bundles.unwrap_or_default();
        for (state, n) in [
            ("pending", counts.pending),
            ("sealed", counts.sealed),
            ("deleting", counts.deleting),
        ] {
            m.bundles
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(gauge(n));
        }
        m.repair_queue_bundles.set(gauge(st.repairs_queued));
        m.durability_loss_probability_per_year
            .set(st.durability_loss_probability_per_year);
        // Nodes and disks come and go: the families are rebuilt from the map each time.
        m.node_up.clear();
        m.disk_capacity_bytes.clear();
        m.disk_used_bytes.clear();
        m.disk_state.clear();
        m.scrub_last_pass_timestamp_seconds.clear();
        for n in &st.nodes {
            let node = n.node_id.to_string();
            let up = n.state == pb::NodeState::Up as i32;
            m.node_up
                .get_or_create(&NodeLabel { node: node.clone() })
                .set(i64::from(up));
            for d in &n.disks {
                let labels = DiskLabels {
                    node: node.clone(),
                    disk: d.disk_id.to_string(),
                };
                m.disk_capacity_bytes
                    .get_or_create(&labels)
                    .set(gauge(d.capacity_bytes));
                m.disk_used_bytes
                    .get_or_create(&labels)
                    .set(gauge(d.used_bytes.max(d.accounted_bytes)));
                if d.last_scrub_unix_ms != 0 {
                    m.scrub_last_pass_timestamp_seconds
                        .get_or_create(&labels)
                        .set(gauge(d.last_scrub_unix_ms / 1000));
                }
                let current =
                    pb::DiskState::try_from(d.state).unwrap_or(pb::DiskState::Unspecified);
                for s in [
                    pb::DiskState::Ok,
                    pb::DiskState::Failed,
                    pb::DiskState::Draining,
                    pb::DiskState::Removed,
                ] {
                    m.disk_state
                        .get_or_create(&DiskStateLabels {
                            node: labels.node.clone(),
                            disk: labels.disk.clone(),
                            state: s
                                .as_str_name()
                                .trim_start_matches("DISK_STATE_")
                                .to_lowercase(),
                        })
                        .set(i64::from(s == current));
                }
            }
        }
        // The queue's detail only the leader knows (leases of running repairs, bytes done).
        m.bundles_by_healthy_shards.clear();
        m.bundles_by_spare_shards.clear();
        if raft.role == "leader" {
            m.placement_domains.set(gauge(self.usable_domains() as u64));
            m.placement_stripe_shards
                .set(gauge(self.inner.cfg.default_code.total() as u64));
            if let Ok(snapshot) = self.repair_snapshot(true) {
                for (spare, bundles) in &snapshot.by_spare {
                    m.bundles_by_spare_shards
                        .get_or_create(&SpareLabel {
                            spare: spare.to_string(),
                        })
                        .set(gauge(*bundles));
                }
                let r = snapshot.response;
                m.repair_running_shards.set(gauge(r.running));
                let seen = m.repair_bytes.get();
                m.repair_bytes.inc_by(r.bytes_repaired.saturating_sub(seen));
                for level in &r.levels {
                    m.bundles_by_healthy_shards
                        .get_or_create(&HealthyLabel {
                            healthy: level.healthy_shards.to_string(),
                        })
                        .set(gauge(level.bundles));
                }
            }
        } else {
            // 0 on followers, so `max` over the members is the leader's view.
            m.placement_domains.set(0);
            m.placement_stripe_shards.set(0);
        }
    }
}
