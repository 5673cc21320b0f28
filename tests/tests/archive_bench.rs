//! Benchmarks of uploads and reads on a dev-sized cluster (ignored by default; figures in
//! docs/benchmarks.md, "Storage nodes, uploads and reads"). The cluster is the dev topology — one
//! metadata member and six storage nodes × two disks, RS(4,2), 1 MiB cells — but as separate
//! processes, so the coordinating node's memory can be read from /proc.
//!
//! Run with `scripts/bench-archive` (release binary). `ARCHIVE_BENCH_LARGE_GIB` sets the large
//! upload (default 2), `ARCHIVE_BENCH_MEMORY_GIB` the memory run (default 4; 0 skips it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_client::{ArchiveClient, PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::env_u64;

const CODE: &str = "4+2";
const MIB: f64 = 1024.0 * 1024.0;

/// Writes `total` bytes of 8 MiB files under `dir`.
fn make_tree(dir: &Path, total: u64) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let file_bytes = 8u64 << 20;
    let mut written = 0;
    let mut i = 0;
    while written < total {
        let len = file_bytes.min(total - written);
        std::fs::write(
            dir.join(format!("scan-{i:05}.tif")),
            pseudo_random_bytes(i, len as usize),
        )
        .unwrap();
        written += len;
        i += 1;
    }
    written
}

/// Sequential write of `bytes` to one file on the filesystem under `dir`, fsynced: the bound a
/// disk puts on storing that many bytes.
fn sequential_write_secs(dir: &Path, bytes: u64) -> f64 {
    let path = dir.join("baseline.bin");
    let block = pseudo_random_bytes(77, 8 << 20);
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    secs
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-archive"]
async fn large_upload_against_sequential_write() {
    let gib = env_u64("ARCHIVE_BENCH_LARGE_GIB", 2);
    let cluster = Cluster::start(6, 2, CODE);
    let tmp = tempfile::tempdir_in(cluster.meta.dir.path()).unwrap();
    let tree = tmp.path().join("tree");
    let content = make_tree(&tree, gib << 30);
    let client = cluster.client(1);
    let start = Instant::now();
    let put = client.put_dir(&tree, &PutOptions::default()).await.unwrap();
    let upload_secs = start.elapsed().as_secs_f64();
    let stored = put.length_bytes as f64 * 6.0 / 4.0;
    let base_secs = sequential_write_secs(tmp.path(), stored as u64);
    println!(
        "BENCH large-upload: {:.0} MiB bundle ({} files of 8 MiB) in {upload_secs:.2} s = {:.0} MiB/s of data; stored {:.0} MiB",
        put.length_bytes as f64 / MIB,
        put.file_count,
        put.length_bytes as f64 / MIB / upload_secs,
        stored / MIB
    );
    println!(
        "BENCH large-upload baseline: sequential fsynced write of the {:.0} MiB stored to the same filesystem: {base_secs:.2} s ({:.0} MiB/s of stored bytes)",
        stored / MIB,
        stored / MIB / base_secs
    );
    println!(
        "BENCH large-upload ratio (baseline time / upload time): {:.2} (target >= 0.5)",
        base_secs / upload_secs
    );
    assert_eq!(put.file_count, content.div_ceil(8 << 20));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-archive"]
async fn coordinator_memory_during_a_large_upload() {
    let gib = env_u64("ARCHIVE_BENCH_MEMORY_GIB", 4);
    if gib == 0 {
        return;
    }
    let cluster = Cluster::start(6, 2, CODE);
    let tmp = tempfile::tempdir_in(cluster.meta.dir.path()).unwrap();
    let tree = tmp.path().join("tree");
    make_tree(&tree, gib << 30);
    let pid = cluster.nodes[0].pid().unwrap();
    let before = peak_rss_mib(pid);
    let start = Instant::now();
    let put = cluster
        .client(1)
        .put_dir(&tree, &PutOptions::default())
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "BENCH memory: coordinator peak RSS {:.0} MiB (before the upload {before:.0} MiB) while uploading a {:.0} MiB bundle in {secs:.1} s ({:.0} MiB/s); target <= 256 MiB",
        peak_rss_mib(pid),
        put.length_bytes as f64 / MIB,
        put.length_bytes as f64 / MIB / secs
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-archive"]
async fn small_files_per_second() {
    let bundles = env_u64("ARCHIVE_BENCH_SMALL_BUNDLES", 100) as usize;
    let concurrency = env_u64("ARCHIVE_BENCH_SMALL_CONCURRENCY", 12) as usize;
    let cluster = Cluster::start(6, 2, CODE);
    let clients: Vec<Arc<ArchiveClient>> = (1..=6).map(|i| Arc::new(cluster.client(i))).collect();
    let batches: Vec<Vec<UploadFile>> = (0..bundles)
        .map(|b| {
            (0..1000)
                .map(|f| {
                    UploadFile::from_bytes(
                        format!("page-{f:04}.txt"),
                        pseudo_random_bytes((b * 1000 + f) as u64, 4096),
                    )
                })
                .collect()
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let queue = Arc::clone(&queue);
        let client = Arc::clone(&clients[w % clients.len()]);
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().unwrap().pop() else {
                    return;
                };
                client
                    .put_files(batch, &PutOptions::default())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let files = (bundles * 1000) as f64;
    println!(
        "BENCH small-files: {files:.0} files of 4 KiB in {bundles} bundles of 1,000, {concurrency} concurrent uploads over 6 nodes: {secs:.2} s = {:.0} files/s ({:.1} bundles/s); target >= 30,000 files/s, ratio {:.2}",
        files / secs,
        bundles as f64 / secs,
        files / secs / 30_000.0
    );
}

async fn random_reads(
    clients: &[Arc<ArchiveClient>],
    files: &Arc<Vec<(String, String)>>,
    reads: usize,
    concurrency: usize,
) -> (f64, Vec<Duration>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = Arc::clone(&clients[w % clients.len()]);
        let files = Arc::clone(files);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= reads {
                    return lat;
                }
                // A fixed pseudo-random order, the same in every run.
                let pick = (n.wrapping_mul(2_654_435_761) >> 3) % files.len();
                let (id, path) = &files[pick];
                let t = Instant::now();
                let bytes = client.read_file(id, path).await.unwrap();
                lat.push(t.elapsed());
                assert_eq!(bytes.len(), 64 << 10);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    (reads as f64 / secs, all)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-archive"]
async fn random_64k_reads_healthy_and_degraded() {
    let reads = env_u64("ARCHIVE_BENCH_READS", 5000) as usize;
    let mut cluster = Cluster::start(6, 2, CODE);
    let uploader = cluster.client(1);
    let mut files = Vec::new();
    for b in 0..100u64 {
        let batch: Vec<UploadFile> = (0..20u64)
            .map(|f| {
                UploadFile::from_bytes(
                    format!("img/{f:03}.jpg"),
                    pseudo_random_bytes(b * 100 + f, 64 << 10),
                )
            })
            .collect();
        let put = uploader
            .put_files(batch.clone(), &PutOptions::default())
            .await
            .unwrap();
        files.extend(batch.into_iter().map(|f| (put.bundle_id.clone(), f.path)));
    }
    let files = Arc::new(files);
    // Nodes 1-4 serve the reads (5 and 6 are the ones killed for the degraded run).
    let clients: Vec<Arc<ArchiveClient>> = (1..=4).map(|i| Arc::new(cluster.client(i))).collect();
    // Warm every serving node's record and index caches, and the clients' (so reads go to the
    // node holding the bytes).
    for c in &clients {
        for (id, path) in files.iter().step_by(20) {
            c.prepare(id).await.unwrap();
            c.read_file(id, path).await.unwrap();
        }
    }
    // Baseline: the same number of 64 KiB preads from a local file, 16 threads.
    let local = cluster.meta.dir.path().join("local.bin");
    std::fs::write(&local, pseudo_random_bytes(5, 64 << 20)).unwrap();
    let base_start = Instant::now();
    let base_lat: Vec<Duration> = {
        use std::os::unix::fs::FileExt;
        let f = Arc::new(std::fs::File::open(&local).unwrap());
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let f = Arc::clone(&f);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut lat = Vec::new();
                    for n in (t..reads).step_by(16) {
                        let at = ((n * 7919) % 1023) as u64 * (64 << 10);
                        let s = Instant::now();
                        f.read_exact_at(&mut buf, at).unwrap();
                        lat.push(s.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut all: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all
    };
    let base_rate = reads as f64 / base_start.elapsed().as_secs_f64();
    println!(
        "BENCH reads baseline: {reads} local 64 KiB preads (page cache), 16 threads: {base_rate:.0} reads/s, p50 {:?} p99 {:?}",
        percentile(&base_lat, 0.5),
        percentile(&base_lat, 0.99)
    );
    let (rate, lat) = random_reads(&clients, &files, reads, 16).await;
    let p99 = percentile(&lat, 0.99);
    println!(
        "BENCH reads healthy: {reads} random 64 KiB files across 100 bundles, 16 concurrent, indexes cached: {rate:.0} files/s, p50 {:?} p99 {p99:?} (target p99 <= 5 ms; p99 / target {:.2}); throughput {:.2} of the local pread baseline",
        percentile(&lat, 0.5),
        p99.as_secs_f64() / 0.005,
        rate / base_rate
    );
    cluster.kill_node(5);
    cluster.kill_node(6);
    // The first reads after the kill meet the dead nodes and mark them; then they are skipped.
    let (rate, lat) = random_reads(&clients, &files, reads, 16).await;
    let p99 = percentile(&lat, 0.99);
    println!(
        "BENCH reads degraded (m = 2 nodes killed): {rate:.0} files/s, p50 {:?} p99 {p99:?} (target p99 <= 5 ms; p99 / target {:.2})",
        percentile(&lat, 0.5),
        p99.as_secs_f64() / 0.005
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-archive"]
async fn single_read_latency() {
    let cluster = Cluster::start(6, 2, CODE);
    let client = cluster.client(1);
    let batch: Vec<UploadFile> = (0..20u64)
        .map(|f| {
            UploadFile::from_bytes(format!("img/{f:03}.jpg"), pseudo_random_bytes(f, 64 << 10))
        })
        .collect();
    let put = client
        .put_files(batch.clone(), &PutOptions::default())
        .await
        .unwrap();
    for node in 1..=6 {
        let c = cluster.client(node);
        if node > 3 {
            c.prepare(&put.bundle_id).await.unwrap();
        }
        let mut lat = Vec::new();
        for i in 0..200 {
            let path = &batch[i % 20].path;
            let t = Instant::now();
            c.read_file(&put.bundle_id, path).await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "BENCH single reads through node {node}{}: p50 {:?} p99 {:?} max {:?}",
            if node > 3 {
                " (client sends each read to the node holding it)"
            } else {
                ""
            },
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
    // The bare round trip: an index read, served from the node's cache.
    let c = cluster.client(2);
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let fresh = cluster.client(2);
        drop(fresh);
        let _ = c.stat(&put.bundle_id).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "BENCH stat round trips (node + metadata read): p50 {:?} p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let channel =
            bitmountain_tests::pki::connect(&cluster.addr(2), &cluster.token_credentials()).await;
        let mut stub =
            bitmountain_proto::archive::v1::archive_service_client::ArchiveServiceClient::new(
                channel,
            );
        let conn = t.elapsed();
        let t = Instant::now();
        let mut s = stub
            .get_index(bitmountain_proto::archive::v1::GetIndexRequest {
                bundle_id: put.bundle_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        while s.message().await.unwrap().is_some() {}
        lat.push(t.elapsed());
        let _ = conn;
    }
    lat.sort();
    println!(
        "BENCH cached index round trips: p50 {:?} p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    if std::env::var_os("BENCH_SHOW_LOG").is_some() {
        println!("{}", cluster.node_log_tail(1, 40));
    }
}
