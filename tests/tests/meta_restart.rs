//! Stop and restart every member (kill -9, then start from --data alone): the same state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bitmountain_meta_client::{AllocateRequest, BundleState, Code, CommitRequest};
use bitmountain_tests::meta_cluster::{register_fake_nodes, MetaCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_state() {
    let mut cluster = MetaCluster::start(3, &[]);
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client();
    register_fake_nodes(&client, 6, 1).await;
    let code = Code {
        data_shards: 4,
        parity_shards: 2,
        cell_bytes: 1 << 20,
    };
    let mut sealed = Vec::new();
    for i in 0..60 {
        let mut labels = BTreeMap::new();
        labels.insert("book".to_string(), format!("b{}", i % 3));
        let b = client
            .allocate_bundle(&AllocateRequest {
                request_id: format!("r{i}"),
                code: Some(code),
                labels,
                expected_length: 4 << 20,
                ttl_ms: 0,
                retain_until_unix_ms: 0,
            })
            .await
            .unwrap();
        if i % 4 == 3 {
            continue; // stays pending
        }
        let b = client
            .commit_bundle(
                b.record.id,
                &CommitRequest {
                    length: 4 << 20,
                    index_offset: 100,
                    index_length: 50,
                    sha256: vec![i as u8; 32],
                    file_count: 10,
                    missing_shards: vec![],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if i % 10 == 0 {
            client
                .delete_bundle(b.record.id, "test", &Default::default())
                .await
                .unwrap();
        }
        sealed.push(b.record.id);
    }
    let before_all = client.list_all_bundles(None, None).await.unwrap();
    let before_label = client
        .list_all_bundles(Some(("book", "b1")), None)
        .await
        .unwrap();
    let before_status = client.cluster_status().await.unwrap();

    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    let client = cluster.client();
    let after_all = client.list_all_bundles(None, None).await.unwrap();
    assert_eq!(before_all, after_all);
    let after_label = client
        .list_all_bundles(Some(("book", "b1")), None)
        .await
        .unwrap();
    assert_eq!(before_label, after_label);
    let after_status = client.cluster_status().await.unwrap();
    assert_eq!(before_status.bundles, after_status.bundles);
    assert_eq!(before_status.cluster_id, after_status.cluster_id);
    assert_eq!(before_status.nodes.len(), after_status.nodes.len());
    let counts = after_status.bundles;
    assert_eq!(
        (counts.pending, counts.sealed, counts.deleting),
        (15, 39, 6)
    );
    assert_eq!(
        client
            .list_all_bundles(None, Some(BundleState::Deleting))
            .await
            .unwrap()
            .len(),
        6
    );
    // And the group still takes writes.
    client
        .allocate_bundle(&AllocateRequest {
            request_id: "after-restart".into(),
            code: Some(code),
            ..Default::default()
        })
        .await
        .unwrap();
}
