//! Benchmark (ignored; `cargo test -p bitmountain-tests --test fixity_bench -- --ignored
//! --nocapture`): `fixity check` throughput against the read bound of the same bundles, in the
//! same run — the bound being every file of those bundles read through the same node with
//! `get` (the read path a fixity check uses, plus the client's own SHA-256 check). Measured
//! healthy and degraded (one shard of every bundle deleted, so every stripe is decoded).
//! Target: fixity / read ≥ 0.8.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};

const BUNDLES: u64 = 12;
const FILES: u64 = 8;
const FILE_BYTES: usize = 1 << 20;

/// Seconds to read every file of `ids` through node 1 (whole files, SHA-256 checked).
async fn read_all(cluster: &Cluster, ids: &[String]) -> f64 {
    let client = cluster.client(1);
    let started = Instant::now();
    for id in ids {
        for f in 0..FILES {
            let mut sink = std::io::sink();
            client
                .get_file(id, &format!("f{f}.bin"), 0, None, &mut sink)
                .await
                .unwrap();
        }
    }
    started.elapsed().as_secs_f64()
}

/// Seconds for node 1 to check every bundle of `ids`.
async fn check_all(cluster: &Cluster, ids: &[String]) -> f64 {
    let client = cluster.client(1);
    let started = Instant::now();
    for id in ids {
        let r = client.check_fixity(id).await.unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.recorded);
    }
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn fixity_check_against_the_read_bound() {
    let cluster = Cluster::start(3, 1, "2+1:65536");
    let client = cluster.client(1);
    let mut ids = Vec::new();
    for b in 0..BUNDLES {
        let files = (0..FILES).map(|f| {
            UploadFile::from_bytes(
                format!("f{f}.bin"),
                pseudo_random_bytes(b * 100 + f, FILE_BYTES),
            )
        });
        ids.push(
            client
                .put_files(files, &PutOptions::default())
                .await
                .unwrap()
                .bundle_id,
        );
    }
    let mib = (BUNDLES * FILES * FILE_BYTES as u64) as f64 / f64::from(1 << 20);
    println!(
        "{BUNDLES} bundles x {FILES} files x {} KiB = {mib} MiB, code 2+1, 3 nodes",
        FILE_BYTES >> 10
    );
    for phase in ["healthy", "degraded"] {
        if phase == "degraded" {
            // Repairs paused, so the shards stay lost for the whole phase.
            let paused = bitmountain_meta_client::types::RepairSettings {
                paused: true,
                ..Default::default()
            };
            cluster
                .meta
                .client()
                .set_repair_settings(paused)
                .await
                .unwrap();
            for id in &ids {
                let shards = cluster.bundle_shards(id);
                std::fs::remove_file(&shards[0].2).unwrap();
            }
        }
        // Alternate, twice each, so neither side gets the warm caches alone.
        let mut reads = Vec::new();
        let mut checks = Vec::new();
        for _ in 0..2 {
            reads.push(read_all(&cluster, &ids).await);
            checks.push(check_all(&cluster, &ids).await);
        }
        let read = reads.iter().copied().fold(f64::MAX, f64::min);
        let check = checks.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "{phase}: read bound {:.1} MiB/s ({reads:.2?} s), fixity check {:.1} MiB/s ({checks:.2?} s), ratio {:.2}",
            mib / read,
            mib / check,
            read / check
        );
    }
}
