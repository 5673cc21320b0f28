//! kill -9 the leader during a stream of commits: a new leader takes over, every acknowledged
//! commit is present exactly once, and the killed member catches up after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitmountain_meta_client::{AllocateRequest, BundleState, Code, CommitRequest, MetaClient};
use bitmountain_tests::meta_cluster::{register_fake_nodes, MetaCluster};

pub const SMALL: Code = Code {
    data_shards: 4,
    parity_shards: 2,
    cell_bytes: 1 << 20,
};

/// Allocates and commits one bundle labelled with its request id; returns the id on success.
async fn alloc_commit(
    client: &MetaClient,
    req_id: &str,
) -> Result<bitmountain_meta_client::BundleId, String> {
    let mut labels = BTreeMap::new();
    labels.insert("req".to_string(), req_id.to_string());
    let b = client
        .allocate_bundle(&AllocateRequest {
            request_id: req_id.to_string(),
            code: Some(SMALL),
            labels,
            expected_length: 1 << 20,
            ttl_ms: 0,
            retain_until_unix_ms: 0,
        })
        .await
        .map_err(|e| e.to_string())?;
    // Allocations of concurrent writers share log entries; each must get its own answer.
    assert_eq!(
        b.record.labels.get("req").map(String::as_str),
        Some(req_id),
        "allocation {req_id} was answered with another request's bundle"
    );
    let b = client
        .commit_bundle(
            b.record.id,
            &CommitRequest {
                length: 1000,
                index_offset: 900,
                index_length: 100,
                sha256: vec![7; 32],
                file_count: 3,
                missing_shards: vec![],
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        b.record.labels.get("req").map(String::as_str),
        Some(req_id),
        "commit {req_id} was answered with another request's bundle"
    );
    Ok(b.record.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_leader_during_commits() {
    let mut cluster = MetaCluster::start(3, &[]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = Arc::new(cluster.client());
    register_fake_nodes(&client, 6, 2).await;

    let acked: Arc<Mutex<BTreeMap<String, bitmountain_meta_client::BundleId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acked, stop, count) =
            (client.clone(), acked.clone(), stop.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let req = format!("w{w}-{i}");
                if let Ok(id) = alloc_commit(&client, &req).await {
                    acked.lock().unwrap().insert(req, id);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    // Let some commits through, then kill the leader mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "writes are not progressing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_kill = count.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    cluster.kill(leader);
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = cluster
        .wait_leader(&survivors, Duration::from_secs(20))
        .await;
    assert_ne!(new_leader, leader);
    // Commits resume under the new leader.
    while count.load(Ordering::Relaxed) < before_kill + 200 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "writes did not resume after failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("failover + 200 commits took {:?}", killed_at.elapsed());
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // Every acknowledged commit is sealed; no request produced two bundles.
    let sealed = client
        .list_all_bundles(None, Some(BundleState::Sealed))
        .await
        .unwrap();
    let mut by_req: BTreeMap<String, Vec<bitmountain_meta_client::BundleId>> = BTreeMap::new();
    for b in &sealed {
        by_req
            .entry(b.record.labels["req"].clone())
            .or_default()
            .push(b.record.id);
    }
    for (req, ids) in &by_req {
        assert_eq!(
            ids.len(),
            1,
            "request {req} produced {} sealed bundles",
            ids.len()
        );
    }
    let acked = acked.lock().unwrap().clone();
    for (req, id) in &acked {
        assert_eq!(
            by_req.get(req),
            Some(&vec![*id]),
            "acknowledged commit {req} ({id}) missing"
        );
    }
    let ids: BTreeSet<_> = sealed.iter().map(|b| b.record.id).collect();
    assert_eq!(ids.len(), sealed.len(), "a bundle is listed twice");

    // The killed member restarts from its data directory and catches up.
    cluster.restart(leader);
    let st = client.cluster_status().await.unwrap();
    cluster
        .wait_applied(leader, st.commit_index, Duration::from_secs(30))
        .await;
}
