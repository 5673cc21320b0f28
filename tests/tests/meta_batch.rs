//! Batched allocations and commits: every item gets its own answer or typed error, bad items do
//! not spoil good ones, a batch past the limit is refused whole, and a client shared by many
//! callers really sends them together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bitmountain_meta_client::client::{MAX_BATCHES_IN_FLIGHT, MAX_BATCH_ITEMS};
use bitmountain_meta_client::wire::item_status;
use bitmountain_meta_client::{BundleId, BundleState, Code, CommitRequest, MetaError};
use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::batch_item::Item;
use bitmountain_proto::v1::batch_result::Result as Answer;
use bitmountain_proto::v1::meta_service_client::MetaServiceClient;
use bitmountain_tests::meta_cluster::{
    allocation, commit_request, register_fake_nodes, MetaCluster, RS_4_2,
};

fn allocate_item(request_id: &str, code: Code) -> pb::BatchItem {
    pb::BatchItem {
        item: Some(Item::Allocate(allocation(request_id, code).to_proto())),
    }
}

/// Every commit here seals three files.
fn commit() -> CommitRequest {
    commit_request(3)
}

fn commit_item(id: BundleId) -> pb::BatchItem {
    pb::BatchItem {
        item: Some(Item::Commit(commit().to_proto(id))),
    }
}

/// The bundle id an allocation answer carries.
fn allocated_id(r: &pb::BatchResult) -> BundleId {
    match &r.result {
        Some(Answer::Allocate(a)) => {
            BundleId::from_proto(a.bundle.as_ref().unwrap().id.as_ref()).unwrap()
        }
        other => panic!("expected an allocation, got {other:?}"),
    }
}

/// The typed error an item answer carries, decoded as the client decodes it.
fn item_err(r: &pb::BatchResult) -> MetaError {
    match &r.result {
        Some(Answer::Error(e)) => MetaError::from_status("leader", &item_status(e)),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn raw_client(addr: &str) -> MetaServiceClient<bitmountain_proto::AuthChannel> {
    MetaServiceClient::new(bitmountain_tests::pki::node_channel(addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_of_a_batch_gets_its_own_answer() {
    let cluster = MetaCluster::start(1, &[]);
    cluster.wait_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client();
    register_fake_nodes(&client, 6, 2).await;
    let mut raw = raw_client(&cluster.addr(1)).await;

    let ghost = BundleId(0xdead_beef);
    let too_wide = Code {
        data_shards: 10,
        parity_shards: 4,
        cell_bytes: 1 << 20,
    };
    let items = vec![
        allocate_item("batch-a", RS_4_2),
        // The same request id twice in one batch: one allocation, answered twice.
        allocate_item("batch-a", RS_4_2),
        allocate_item("", RS_4_2),
        commit_item(ghost),
        pb::BatchItem { item: None },
        allocate_item("batch-too-wide", too_wide),
        allocate_item("batch-b", RS_4_2),
    ];
    let results = raw
        .batch(pb::BatchRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 7, "one result per item, in order");
    let a = allocated_id(&results[0]);
    assert_eq!(allocated_id(&results[1]), a, "a retried request id");
    assert!(
        matches!(item_err(&results[2]), MetaError::InvalidArgument { field, .. } if field == "request_id"),
        "{:?}",
        item_err(&results[2])
    );
    assert!(
        matches!(item_err(&results[3]), MetaError::UnknownBundle { id } if id == ghost),
        "{:?}",
        item_err(&results[3])
    );
    assert!(
        matches!(item_err(&results[4]), MetaError::InvalidArgument { .. }),
        "{:?}",
        item_err(&results[4])
    );
    assert!(
        matches!(
            item_err(&results[5]),
            MetaError::Unplaceable {
                shards: 14,
                available: 6,
                ..
            }
        ),
        "{:?}",
        item_err(&results[5])
    );
    let b = allocated_id(&results[6]);
    assert_ne!(a, b);

    // Commits in a batch, one of a bundle that is already sealed by the first (idempotent).
    let results = raw
        .batch(pb::BatchRequest {
            items: vec![commit_item(a), commit_item(a), commit_item(b)],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    for r in &results {
        assert!(matches!(r.result, Some(Answer::Commit(_))), "{r:?}");
    }
    for id in [a, b] {
        let got = client.get_bundle(id, false).await.unwrap().record;
        assert_eq!(got.state, BundleState::Sealed);
        assert_eq!(got.file_count, 3);
    }

    // Past the limit, the whole batch is refused and nothing is allocated.
    let before = client.cluster_status().await.unwrap().bundles;
    let items = (0..=MAX_BATCH_ITEMS)
        .map(|i| allocate_item(&format!("over-{i}"), RS_4_2))
        .collect();
    let status = raw.batch(pb::BatchRequest { items }).await.unwrap_err();
    let e = MetaError::from_status("leader", &status);
    assert!(
        matches!(&e, MetaError::InvalidArgument { field, reason } if *field == "items" && reason.contains("split")),
        "{e:?}"
    );
    let after = client.cluster_status().await.unwrap().bundles;
    assert_eq!(before, after, "a refused batch allocates nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_a_whole_batch() {
    let cluster = MetaCluster::start(3, &[]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client();
    register_fake_nodes(&client, 6, 2).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let status = raw_client(&cluster.addr(follower))
        .await
        .batch(pb::BatchRequest {
            items: vec![allocate_item("via-follower", RS_4_2)],
        })
        .await
        .unwrap_err();
    match MetaError::from_status("follower", &status) {
        MetaError::Raft {
            kind, leader: l, ..
        } => {
            assert_eq!(kind, "not_leader");
            assert_eq!(l.as_deref(), Some(cluster.addr(leader).as_str()));
        }
        e => panic!("expected not_leader, got {e:?}"),
    }
    // A client that starts at the follower is redirected and its batch lands.
    let via_follower = cluster.client_of(&[follower]);
    let b = via_follower
        .allocate_bundle(&allocation("via-follower", RS_4_2))
        .await
        .unwrap();
    assert_eq!(b.record.state, BundleState::Pending);
}

/// Many callers sharing one client: while the only member is stopped (SIGSTOP), the first calls
/// hang in flight and the rest queue; once it continues, the queue leaves in one `Batch` call,
/// and every caller gets its own bundle or its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_sharing_a_client_are_sent_together() {
    let cluster = MetaCluster::start(1, &[]);
    cluster.wait_leader(&[1], Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    register_fake_nodes(&client, 6, 2).await;
    let pid = cluster.members[&1].pid().unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };

    const CALLERS: u64 = 64;
    const GHOSTS: u64 = 8;
    let ghost = |i: u64| BundleId(0x6400 + i as u128);
    signal("-STOP");
    let allocations: Vec<_> = (0..CALLERS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .allocate_bundle(&allocation(&format!("shared-{i}"), RS_4_2))
                    .await
            })
        })
        .collect();
    let ghost_commits: Vec<_> = (0..GHOSTS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.commit_bundle(ghost(i), &commit()).await })
        })
        .collect();
    // Every caller queued: let the member go on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.batch_stats().queued < CALLERS + GHOSTS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            client.batch_stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal("-CONT");

    let mut ids = Vec::new();
    for t in allocations {
        let b = t.await.unwrap().unwrap();
        assert_eq!(b.record.state, BundleState::Pending);
        ids.push(b.record.id);
    }
    for (i, t) in ghost_commits.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert!(
            matches!(r, Err(MetaError::UnknownBundle { id }) if id == ghost(i as u64)),
            "{r:?}"
        );
    }
    let stats = client.batch_stats();
    assert_eq!(stats.sent, CALLERS + GHOSTS, "{stats:?}");
    // At most MAX_BATCHES_IN_FLIGHT calls were in flight when the member stopped; everything
    // queued behind them left in the one call the first free slot sent.
    assert!(
        stats.calls <= MAX_BATCHES_IN_FLIGHT as u64 + 1,
        "callers were not sent together: {stats:?}"
    );

    let distinct: std::collections::BTreeSet<_> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        CALLERS,
        "every caller got its own bundle"
    );
    let commits: Vec<_> = ids
        .iter()
        .map(|id| {
            let (client, id) = (client.clone(), *id);
            tokio::spawn(async move { client.commit_bundle(id, &commit()).await })
        })
        .collect();
    for (t, id) in commits.into_iter().zip(&ids) {
        let b = t.await.unwrap().unwrap();
        assert_eq!((b.record.id, b.record.state), (*id, BundleState::Sealed));
    }
    let counts = client.cluster_status().await.unwrap().bundles;
    assert_eq!((counts.sealed, counts.pending), (CALLERS, 0));
}
