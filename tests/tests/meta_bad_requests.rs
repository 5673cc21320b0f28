//! Bad requests get typed errors that say what to do, and change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_meta_client::error::Field;
use bitmountain_meta_client::types::{DiskReport, Heartbeat, Registration};
use bitmountain_meta_client::{AllocateRequest, BundleId, Code, MetaError};
use bitmountain_tests::meta_cluster::{
    allocation, commit_request, register_fake_nodes, MetaCluster, RS_4_2,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors() {
    let cluster = MetaCluster::start(1, &[]);
    cluster.wait_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client();
    let disks = register_fake_nodes(&client, 6, 2).await;

    // Unknown bundle.
    let ghost = BundleId(0x1234);
    let e = client.get_bundle(ghost, false).await.unwrap_err();
    assert!(
        matches!(e, MetaError::UnknownBundle { id } if id == ghost),
        "{e:?}"
    );
    assert!(e.to_string().contains("allocate a new bundle"), "{e}");
    let e = client
        .commit_bundle(ghost, &commit_request(1))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownBundle { .. }), "{e:?}");
    let e = client
        .delete_bundle(ghost, "test", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownBundle { .. }), "{e:?}");

    // Unplaceable: 8 shards on 6 hosts.
    let e = client
        .allocate_bundle(&AllocateRequest {
            request_id: "too-wide".into(),
            code: Some(Code {
                data_shards: 6,
                parity_shards: 2,
                cell_bytes: 1 << 20,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Unplaceable {
                shards: 8,
                available: 6,
                ..
            }
        ),
        "{e:?}"
    );

    // Invalid codes and requests.
    let e = client
        .allocate_bundle(&AllocateRequest {
            request_id: "bad-code".into(),
            code: Some(Code {
                data_shards: 0,
                parity_shards: 2,
                cell_bytes: 1 << 20,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::InvalidCode { .. }), "{e:?}");
    let e = client
        .allocate_bundle(&allocation("", RS_4_2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::InvalidArgument {
                field: Field::RequestId,
                ..
            }
        ),
        "{e:?}"
    );

    // Idempotent allocation: the same request id returns the same bundle.
    let req = allocation("once", RS_4_2);
    let a = client.allocate_bundle(&req).await.unwrap();
    let b = client.allocate_bundle(&req).await.unwrap();
    assert_eq!(a.record.id, b.record.id);
    assert_eq!(a.locations.len(), 6);
    let hosts: std::collections::BTreeSet<u64> = a.locations.iter().map(|l| l.node_id).collect();
    assert_eq!(hosts.len(), 6, "two shards on one host");

    // Bad commits: checksum size, index outside the bundle, too many missing shards.
    let mut c = commit_request(1);
    c.sha256 = vec![1; 31];
    let e = client.commit_bundle(a.record.id, &c).await.unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::InvalidArgument {
                field: Field::Sha256,
                ..
            }
        ),
        "{e:?}"
    );
    let mut c = commit_request(1);
    c.index_offset = 9_500;
    let e = client.commit_bundle(a.record.id, &c).await.unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::InvalidArgument {
                field: Field::IndexOffset,
                ..
            }
        ),
        "{e:?}"
    );
    let mut c = commit_request(1);
    c.missing_shards = vec![0, 1];
    let e = client.commit_bundle(a.record.id, &c).await.unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::TooManyMissingShards {
                missing: 2,
                tolerated: 1,
                ..
            }
        ),
        "{e:?}"
    );

    // A commit with one missing shard seals and queues a repair; a retried commit is idempotent.
    let mut c = commit_request(1);
    c.missing_shards = vec![3];
    let sealed = client.commit_bundle(a.record.id, &c).await.unwrap();
    assert_eq!(client.commit_bundle(a.record.id, &c).await.unwrap(), sealed);
    let repairs = client.list_repairs(&[], 10).await.unwrap();
    assert_eq!(repairs.total, 1);
    assert_eq!(repairs.repairs[0].missing_shards, vec![3]);
    // A different commit of a sealed bundle is refused.
    let mut c2 = commit_request(1);
    c2.length = 20_000;
    let e = client.commit_bundle(a.record.id, &c2).await.unwrap_err();
    assert!(matches!(e, MetaError::WrongState { .. }), "{e:?}");

    // Placement CAS: wrong generation, malformed placements.
    let gen = sealed.record.placement_generation;
    let mut p = sealed.record.placement.clone();
    let e = client
        .update_placement(a.record.id, gen + 5, &p)
        .await
        .unwrap_err();
    assert!(
        matches!(e, MetaError::WrongGeneration { expected, actual, .. } if expected == gen + 5 && actual == gen),
        "{e:?}"
    );
    let e = client
        .update_placement(a.record.id, gen, &p[..5])
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::MalformedPlacement { .. }), "{e:?}");
    let mut dup = p.clone();
    dup[1] = dup[0];
    let e = client
        .update_placement(a.record.id, gen, &dup)
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::MalformedPlacement { .. }), "{e:?}");
    let mut unknown = p.clone();
    unknown[0] = 999_999;
    let e = client
        .update_placement(a.record.id, gen, &unknown)
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::MalformedPlacement { .. }), "{e:?}");
    // A valid move of the missing shard (3) to an unused disk on a host the bundle does not use.
    let used_nodes: std::collections::BTreeSet<u64> = sealed
        .locations
        .iter()
        .filter(|l| l.shard_index != 3)
        .map(|l| l.node_id)
        .collect();
    let st = client.cluster_status().await.unwrap();
    let target = st
        .nodes
        .iter()
        .filter(|n| !used_nodes.contains(&n.node_id))
        .flat_map(|n| n.disks.iter())
        .map(|d| d.disk_id)
        .find(|d| *d != p[3])
        .unwrap();
    p[3] = target;
    let moved = client.update_placement(a.record.id, gen, &p).await.unwrap();
    assert_eq!(moved.record.placement_generation, gen + 1);
    assert_eq!(moved.record.placement[3], target);
    assert_eq!(
        client.list_repairs(&[], 10).await.unwrap().total,
        0,
        "repair not cleared by the move"
    );
    // Retrying the same CAS is idempotent.
    assert_eq!(
        client
            .update_placement(a.record.id, gen, &p)
            .await
            .unwrap()
            .record
            .placement_generation,
        gen + 1
    );
    // The reverse map follows.
    let (on_target, _) = client.list_disk_bundles(target, &[], 100).await.unwrap();
    assert_eq!(on_target, vec![(a.record.id, 3)]);

    // Cluster map errors.
    let e = client
        .heartbeat(&Heartbeat {
            node_id: 4242,
            disks: vec![],
            workers: vec![],
            checked_disk_ids: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownNode { id: 4242 }), "{e:?}");
    let e = client
        .register_node(&Registration {
            request_id: "x".into(),
            node_id: 0,
            address: "127.0.0.1:1".into(),
            zone: String::new(),
            rack: String::new(),
            host: String::new(),
            disks: vec![DiskReport {
                disk_id: 777_777,
                path: String::new(),
                capacity_bytes: 0,
                used_bytes: 0,
                state: bitmountain_meta_client::DiskState::Ok,
                last_scrub_unix_ms: 0,
                last_scrub_damaged_shards: 0,
            }],
            cluster_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownDisk { id: 777_777 }), "{e:?}");
    let e = client
        .set_disk_state(888_888, bitmountain_meta_client::DiskState::Failed)
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownDisk { .. }), "{e:?}");

    // A failed disk queues repairs for its bundles and is never placed on again.
    let failed = disks[0];
    client
        .set_disk_state(failed, bitmountain_meta_client::DiskState::Failed)
        .await
        .unwrap();
    for i in 0..30 {
        let b = client
            .allocate_bundle(&allocation(&format!("after-fail-{i}"), RS_4_2))
            .await
            .unwrap();
        assert!(!b.record.placement.contains(&failed));
    }

    // A node taken down leaves 5 hosts for 6 shards: the next allocation is refused at once
    // (the leader's shared placement map follows topology changes), and once the node is up
    // again allocations succeed.
    let status = client.cluster_status().await.unwrap();
    let node = status
        .nodes
        .iter()
        .find(|n| n.disks.iter().any(|d| d.disk_id == disks[2]))
        .expect("node of a registered disk")
        .node_id;
    client
        .set_node_state(node, bitmountain_meta_client::NodeState::Down)
        .await
        .unwrap();
    let e = client
        .allocate_bundle(&allocation("node-down", RS_4_2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MetaError::Unplaceable {
                shards: 6,
                available: 5,
                ..
            }
        ),
        "{e:?}"
    );
    client
        .set_node_state(node, bitmountain_meta_client::NodeState::Up)
        .await
        .unwrap();
    client
        .allocate_bundle(&allocation("node-up", RS_4_2))
        .await
        .unwrap();

    // Abort: gone; delete of a pending bundle is refused; expired allocations disappear.
    let p = client
        .allocate_bundle(&allocation("to-abort", RS_4_2))
        .await
        .unwrap();
    let e = client
        .delete_bundle(p.record.id, "test", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::WrongState { .. }), "{e:?}");
    client.abort_bundle(p.record.id).await.unwrap();
    assert!(matches!(
        client.get_bundle(p.record.id, false).await.unwrap_err(),
        MetaError::UnknownBundle { .. }
    ));
    let short = client
        .allocate_bundle(&AllocateRequest {
            request_id: "short".into(),
            code: Some(RS_4_2),
            ttl_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_bundle(short.record.id, false).await {
            Err(MetaError::UnknownBundle { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired allocation never collected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = client
        .commit_bundle(short.record.id, &commit_request(1))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::UnknownBundle { .. }), "{e:?}");
}
