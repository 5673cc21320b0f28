//! A member down while the log is compacted past it catches up by snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_meta_client::{AllocateRequest, Code};
use bitmountain_tests::meta_cluster::{register_fake_nodes, MetaCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_by_snapshot() {
    let mut cluster = MetaCluster::start(3, &["--compact-log-entries", "40"]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client();
    register_fake_nodes(&client, 6, 1).await;
    let lagging = if leader == 3 { 2 } else { 3 };
    let down_applied = cluster
        .status_of(lagging, Duration::from_secs(2))
        .await
        .unwrap()
        .applied_index;
    cluster.kill(lagging);
    let code = Code {
        data_shards: 3,
        parity_shards: 2,
        cell_bytes: 1 << 20,
    };
    let mut ids = Vec::new();
    for i in 0..300 {
        let b = client
            .allocate_bundle(&AllocateRequest {
                request_id: format!("r{i}"),
                code: Some(code),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(b.record.id);
    }
    // The leader's log no longer reaches back to where the lagging member stopped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = client.cluster_status().await.unwrap();
        if st.role == "leader" && st.first_log_index > down_applied + 1 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log never compacted: first index {}",
            st.first_log_index
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.restart(lagging);
    cluster
        .wait_applied(lagging, st.commit_index, Duration::from_secs(30))
        .await;
    let lst = cluster
        .status_of(lagging, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        lst.first_log_index > down_applied + 1,
        "member {lagging} did not install a snapshot (its log starts at {})",
        lst.first_log_index
    );
    // The snapshot came as a file, and the installed file is gone (only a member's own
    // generated snapshots stay).
    let leftovers: Vec<String> = std::fs::read_dir(cluster.members[&lagging].data.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("gen-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    // Its own state machine has every record: stale reads are served by the member itself.
    let own = cluster.client_of(&[lagging]);
    for id in ids.iter().step_by(7) {
        own.get_bundle(*id, true).await.unwrap();
    }
    // And it can lead: hand it leadership and write through it.
    client.transfer_leader(lagging).await.unwrap();
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    client
        .allocate_bundle(&AllocateRequest {
            request_id: "after-snapshot".into(),
            code: Some(code),
            ..Default::default()
        })
        .await
        .unwrap();
}
