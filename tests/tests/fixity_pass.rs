//! The background fixity pass with the real binary: with a short `--fixity-interval`, every
//! bundle is checked by the node holding its shard 0, each check an audit event by
//! `system:fixity`, and the worker's status names the pass and the oldest check once a pass is
//! complete; a bundle with wrong bytes is found without anyone asking.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::run_ok;
use serde_json::Value;

fn fixity_events(cluster: &Cluster) -> Vec<Value> {
    let out = run_ok(&[
        "audit",
        "--json",
        "--action",
        "fixity check",
        "--agent",
        "system:fixity",
        "--cluster",
        &cluster.meta.addr(1),
    ]);
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bundle_is_checked_each_interval_and_recorded() {
    let cluster = Cluster::start_with(3, 1, "2+1:65536", &[], &["--fixity-interval", "6s"]);
    let client = cluster.client(1);
    let mut ids = BTreeSet::new();
    for seed in 0..4 {
        let files = sample_files(3, 60 + seed)
            .into_iter()
            .map(|(p, b)| UploadFile::from_bytes(p, b));
        ids.insert(
            client
                .put_files(files, &PutOptions::default())
                .await
                .unwrap()
                .bundle_id,
        );
    }
    // One shard lost: the pass still confirms the files (a degraded read).
    let shards = cluster.bundle_shards(ids.first().unwrap());
    std::fs::remove_file(&shards[1].2).unwrap();

    // Every bundle checked, by system:fixity, each reported by a node; all pass.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let events = fixity_events(&cluster);
        let checked: BTreeSet<String> = events
            .iter()
            .map(|e| e["bundle"].as_str().unwrap().to_owned())
            .collect();
        if ids.is_subset(&checked) {
            assert!(
                events.iter().all(|e| e["outcome"] == "success"),
                "{events:#?}"
            );
            assert!(events
                .iter()
                .all(|e| e["source"].as_str().unwrap().starts_with("node:")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every bundle was checked: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Within a few intervals some node has finished a pass and names its oldest check.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = serde_json::from_slice(&run_ok(&[
            "status",
            "--json",
            "--cluster",
            &cluster.meta.addr(1),
        ]))
        .unwrap();
        let notes: Vec<String> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["workers"].as_array().cloned().unwrap_or_default())
            .filter(|w| w["name"] == "fixity")
            .map(|w| w["note"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(notes.len(), 3, "{status}");
        if notes.iter().any(|n| n.contains("oldest check")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no node finished a pass: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
