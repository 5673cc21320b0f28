//! A partitioned minority cannot commit; a client talking to it is redirected or gets a clear
//! error. Partitions are made with the test-only fault-injection RPC: the members on each side
//! drop all Raft traffic from the other side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_meta_client::client::set_partition;
use bitmountain_meta_client::{Code, MetaError};
use bitmountain_tests::meta_cluster::{allocation, register_fake_nodes, MetaCluster};

const CODE: Code = Code {
    data_shards: 2,
    parity_shards: 1,
    cell_bytes: 1 << 20,
};

async fn isolate(cluster: &MetaCluster, alone: u64, all: &[u64]) {
    let creds = cluster.credentials();
    let others: Vec<u64> = all.iter().copied().filter(|i| *i != alone).collect();
    set_partition(&cluster.addr(alone), &creds, &others)
        .await
        .unwrap();
    for o in &others {
        set_partition(&cluster.addr(*o), &creds, &[alone])
            .await
            .unwrap();
    }
}

async fn heal(cluster: &MetaCluster, all: &[u64]) {
    let creds = cluster.credentials();
    for id in all {
        set_partition(&cluster.addr(*id), &creds, &[])
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_minority_cannot_commit() {
    let cluster = MetaCluster::start(3, &[]);
    let all = [1, 2, 3];
    let old_leader = cluster.wait_leader(&all, Duration::from_secs(20)).await;
    let client = cluster.client();
    register_fake_nodes(&client, 4, 1).await;

    // Cut the leader off. It cannot commit; a client that can only reach it gets a clear error.
    isolate(&cluster, old_leader, &all).await;
    let only_old = cluster
        .client_of(&[old_leader])
        .with_timeout(Duration::from_secs(4));
    let err = only_old
        .allocate_bundle(&allocation("minority-1", CODE))
        .await
        .unwrap_err();
    println!("minority leader answered: {err}");
    assert!(
        matches!(err, MetaError::NoMember { .. }),
        "expected a clear no-quorum error, got {err:?}"
    );
    // It stepped down (check_quorum) and knows no leader it can reach.
    let st = cluster
        .status_of(old_leader, Duration::from_secs(2))
        .await
        .unwrap();
    assert_ne!(st.role, "leader");

    // The majority elects a new leader and commits.
    let majority: Vec<u64> = all.iter().copied().filter(|i| *i != old_leader).collect();
    let new_leader = cluster
        .wait_leader(&majority, Duration::from_secs(20))
        .await;
    let maj_client = cluster.client_of(&majority);
    let b = maj_client
        .allocate_bundle(&allocation("majority-1", CODE))
        .await
        .unwrap();

    // The allocation the minority saw never became visible.
    assert!(maj_client
        .list_all_bundles(None, None)
        .await
        .unwrap()
        .iter()
        .all(|x| x.record.id == b.record.id));

    // Heal: the old leader rejoins as a follower and catches up.
    heal(&cluster, &all).await;
    let st = maj_client.cluster_status().await.unwrap();
    cluster
        .wait_applied(old_leader, st.commit_index, Duration::from_secs(20))
        .await;
    assert_eq!(
        cluster.wait_leader(&all, Duration::from_secs(20)).await,
        new_leader
    );

    // Now cut off a follower: a client that only knows it is redirected to the leader.
    let follower = *majority.iter().find(|i| **i != new_leader).unwrap();
    isolate(&cluster, follower, &all).await;
    let via_follower = cluster
        .client_of(&[follower])
        .with_timeout(Duration::from_secs(10));
    let b2 = via_follower
        .allocate_bundle(&allocation("via-follower", CODE))
        .await
        .unwrap();
    assert_eq!(
        via_follower.current_leader(),
        Some(cluster.addr(new_leader))
    );
    // ... while the isolated follower itself has not seen that write.
    let own = cluster
        .client_of(&[follower])
        .with_timeout(Duration::from_secs(2));
    let stale = own.get_bundle(b2.record.id, true).await;
    assert!(
        stale.is_err(),
        "the isolated member applied a write it cannot have received"
    );
    heal(&cluster, &all).await;
}
