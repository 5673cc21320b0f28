//! Conversions checked field by field, and batch item errors against unary statuses.

use bitmountain_proto::v1 as pb;

use super::{item_error, item_status, worker_to_proto};
use crate::error::{ErrorKind, Field, MetaError};
use crate::types::{
    BundleCounts, BundleId, ClusterStatus, DiskReport, DiskState, Heartbeat, RepairAssignment,
    RepairClaim, RepairSettings, RepairTarget, WorkerReport,
};

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
        lost_shards: vec![1, 2],
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
            lost_shards: vec![1, 2],
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
    let worker = WorkerReport {
        name: "scrub".into(),
        state: "idle".into(),
        steps: 3,
        errors: 1,
        last_run_unix_ms: 20,
        last_duration_ms: 5,
        last_error: "disk 3: read error".into(),
        last_error_unix_ms: 20,
        note: "last pass found 0 damaged shards".into(),
    };
    let wire = Heartbeat {
        node_id: 1,
        disks: vec![report],
        workers: vec![worker.clone()],
        checked_disk_ids: vec![3],
    }
    .to_proto();
    assert_eq!(wire.workers, vec![worker_to_proto(&worker)]);
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
    assert_eq!(wire.checked_disk_ids, vec![3]);
    let st = ClusterStatus::from_proto(pb::ClusterStatusResponse {
        nodes: vec![pb::NodeInfo {
            node_id: 1,
            state: 99,
            disks: vec![pb::DiskInfo {
                disk_id: 3,
                state: pb::DiskState::Draining as i32,
                ..Default::default()
            }],
            workers: wire.workers.clone(),
            ..Default::default()
        }],
        ..Default::default()
    });
    // A node's workers come back as they went out.
    assert_eq!(st.nodes[0].workers, vec![worker]);
    assert_eq!(st.bundles, BundleCounts::default());
    assert_eq!(st.nodes[0].state, None);
    assert_eq!(st.nodes[0].zone, "");
    assert_eq!(st.nodes[0].disks[0].state, Some(DiskState::Draining));
}
