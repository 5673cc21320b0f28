//! Disaster-recovery benchmark (ignored by default; figures in docs/benchmarks.md, "Disaster
//! recovery"): N bundles (default 100,000, one small file each, labelled) on a cluster of one
//! member and 3 nodes × 1 disk, RS(2,1). Measured:
//!
//! 1. the scan rate of one disk (`bitmountain recover scan DISK`: every shard's header, footer
//!    and description, and the plan) against a plain loop in this process that opens each of
//!    the same files and reads its header and footer (the baseline), both with the files in the
//!    page cache;
//! 2. the whole recovery: the member killed and its data deleted, `meta recover` started, every
//!    node restarted; time until the group has left recovery (the settle time, 1 s, included),
//!    and the scan-report phase alone (from the recovery's start to the last disk reported).
//!
//! `RECOVERY_BENCH_BUNDLES` (default 100000), `RECOVERY_BENCH_UPLOADS` (concurrent uploads,
//! default 24, spread over the nodes). Run: `cargo test -p bitmountain-tests --test recovery_bench -- --ignored
//! --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::run;

const CODE: &str = "2+1:65536";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every shard file under a disk directory.
fn shard_files(disk: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(disk.join("shards")).unwrap().flatten() {
        for f in std::fs::read_dir(fan.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}

/// The baseline: open each file, read its 64-byte header and 96-byte footer.
fn plain_loop(files: &[std::path::PathBuf]) -> Duration {
    let started = Instant::now();
    let mut header = [0u8; 64];
    let mut footer = [0u8; 96];
    let mut checksum = 0u64;
    for path in files {
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        (&f).read_exact(&mut header).unwrap();
        f.read_exact_at(&mut footer, len - 96).unwrap();
        checksum = checksum.wrapping_add(u64::from(header[12]) + u64::from(footer[80]));
    }
    std::hint::black_box(checksum);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly"]
async fn recovery_of_many_bundles() {
    let bundles = env_usize("RECOVERY_BENCH_BUNDLES", 100_000);
    let uploads = env_usize("RECOVERY_BENCH_UPLOADS", 24);
    let mut cluster = Cluster::start(3, 1, CODE);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..uploads {
        // Spread over the nodes: each coordinates at most 16 uploads at once.
        let client = cluster.client(1 + t % cluster.nodes.len());
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bundles {
                    return;
                }
                let options = PutOptions {
                    labels: [("batch".to_owned(), format!("{}", i / 1000))].into(),
                    ..PutOptions::default()
                };
                let file = UploadFile::from_bytes(
                    format!("page-{i:06}.tif"),
                    pseudo_random_bytes(i as u64, 2048),
                );
                client.put_files([file], &options).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let upload_s = started.elapsed().as_secs_f64();
    println!(
        "uploaded {bundles} bundles in {upload_s:.1} s ({:.0} bundles/s)",
        bundles as f64 / upload_s
    );

    // 1. One disk: the scan against the plain loop, files warm (read once before either).
    let disk = cluster.nodes[0].disks[0].clone();
    let files = shard_files(&disk);
    for f in &files {
        let mut b = [0u8; 64];
        std::fs::File::open(f).unwrap().read_exact(&mut b).unwrap();
    }
    let baseline = plain_loop(&files);
    let scan_started = Instant::now();
    let out = run(&["recover", "scan", disk.to_str().unwrap(), "--json"]);
    let scan = scan_started.elapsed();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One disk holds one shard of each RS(2,1) bundle: fewer than k, so every bundle shows as
    // lost or (young) as an upload that never committed; the scan read them all the same.
    let described = ["bundles", "lost", "incomplete_uploads"]
        .iter()
        .map(|k| doc[*k].as_array().map_or(0, Vec::len))
        .sum::<usize>();
    let scan_ms = doc["disks"][0]["scan_ms"].as_f64().unwrap();
    let n = files.len() as f64;
    println!(
        "one disk, {} shard files ({described} bundles seen): the disk's scan {:.2} s = {:.0} \
         shards/s; plain header+footer loop {:.2} s = {:.0} shards/s; ratio {:.2}; the whole \
         `recover scan --json` command (start, scan, plan, JSON out) {:.2} s",
        files.len(),
        scan_ms / 1000.0,
        n * 1000.0 / scan_ms,
        baseline.as_secs_f64(),
        n / baseline.as_secs_f64(),
        baseline.as_secs_f64() * 1000.0 / scan_ms,
        scan.as_secs_f64()
    );

    // 2. The whole group lost and rebuilt from the disks.
    cluster.meta.kill(1);
    let data = cluster.meta.members[&1].data.clone();
    std::fs::remove_dir_all(&data).unwrap();
    let recovery_started = Instant::now();
    cluster
        .meta
        .recover(1, None, &["--recovery-settle-ms", "1000"]);
    for i in 1..=cluster.nodes.len() {
        cluster.restart_node(i);
    }
    let member = cluster.meta.addr(1);
    let deadline = Instant::now() + Duration::from_secs(3600);
    let doc = loop {
        let out = run(&["meta", "recover", "status", "--cluster", &member, "--json"]);
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if doc["active"] == false && doc["report"].is_object() {
                break doc;
            }
        }
        assert!(Instant::now() < deadline, "recovery did not finish");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total = recovery_started.elapsed().as_secs_f64();
    let r = &doc["report"];
    let in_group = (r["finished_unix_ms"].as_u64().unwrap()
        - r["started_unix_ms"].as_u64().unwrap()) as f64
        / 1000.0;
    println!(
        "recovery: {} bundles recovered, {} lost, {} shards found; {total:.1} s from `meta recover` \
         to leaving recovery ({in_group:.1} s from entering recovery to the report, 1 s settle \
         included); {:.0} bundles/s",
        r["recovered"], r["lost_count"], r["shards_found"],
        bundles as f64 / total
    );
    assert_eq!(r["recovered"].as_u64().unwrap(), bundles as u64, "{doc}");
    cluster.meta.forget_admin_token();
}
