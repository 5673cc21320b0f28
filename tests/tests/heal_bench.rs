//! Rebuild benchmark (ignored by default; figures in docs/benchmarks.md, "Self-healing"): a disk
//! is deleted from a cluster of N nodes × 2 disks, RS(4,2), 1 MiB cells, and the cluster heals
//! by itself. Measured in the same run, with repairs paused, is the degraded-read throughput of
//! the bundles that had a shard on that disk; rebuilding a shard reads k shards, so
//! `degraded read B/s ÷ k` bounds the restored bytes per second. The ratio is restored B/s over
//! that bound. Run for 6 and 12 nodes: more nodes are more eligible rebuild targets, so the time
//! to full redundancy must fall.
//!
//! `scripts/bench-heal`; `HEAL_BENCH_LAYOUT` (nodes × disks per node, default `6x2,12x2`),
//! `HEAL_BENCH_LOST_DISK_MIB` (shard bytes on the lost disk, default 512). With
//! `HEAL_BENCH_LAYOUT=6x2,12x1` both clusters have 12 disks and hold the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_meta_client::types::RepairSettings;
use bitmountain_meta_client::{BundleState, DiskState, MetaClient};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::env_u64;

const CODE: &str = "4+2";
const K: f64 = 4.0;
const MIB: f64 = 1024.0 * 1024.0;
const BUNDLE_FILES: usize = 8;
const FILE_BYTES: usize = 8 << 20;

async fn settings(meta: &MetaClient, paused: bool) {
    meta.set_repair_settings(RepairSettings {
        paused,
        ..RepairSettings::default()
    })
    .await
    .unwrap();
}

async fn disk_state(meta: &MetaClient, disk: u64) -> Option<DiskState> {
    let st = meta.cluster_status().await.ok()?;
    st.nodes
        .iter()
        .flat_map(|n| &n.disks)
        .find(|d| d.disk_id == disk)
        .and_then(|d| d.state)
}

async fn run(nodes: usize, disks_per_node: usize, lost_disk_bytes: u64) -> (f64, f64, f64) {
    let c = Cluster::start_with(nodes, disks_per_node, CODE, &[], &[]);
    let meta = c.meta.client().with_timeout(Duration::from_secs(30));
    // Stored bytes are data × 1.5, spread over every disk.
    let data_bytes = lost_disk_bytes * (disks_per_node * nodes) as u64 * 2 / 3;
    let bundle_bytes = (BUNDLE_FILES * FILE_BYTES) as u64;
    let bundles = data_bytes.div_ceil(bundle_bytes);
    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for worker in 0..4 {
        let client = c.client(1 + worker % nodes);
        let next = Arc::clone(&next);
        uploads.spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= bundles {
                    return;
                }
                let files = (0..BUNDLE_FILES).map(|i| {
                    UploadFile::from_bytes(
                        format!("scan-{i:03}.tif"),
                        pseudo_random_bytes(b * 100 + i as u64, FILE_BYTES),
                    )
                });
                client
                    .put_files(files, &PutOptions::default())
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = uploads.join_next().await {
        r.unwrap();
    }
    println!(
        "BENCH heal nodes={nodes}x{disks_per_node}: uploaded {bundles} bundles ({:.0} MiB) in {:.1} s",
        (bundles * bundle_bytes) as f64 / MIB,
        started.elapsed().as_secs_f64()
    );

    // The victim: node 1's first disk.
    settings(&meta, true).await;
    let st = meta.cluster_status().await.unwrap();
    let node1 = st.nodes.iter().find(|n| n.address == c.addr(1)).unwrap();
    let victim = node1.disks[0].disk_id;
    let (on_victim, _) = meta.list_disk_bundles(victim, &[], 100_000).await.unwrap();
    let affected: Vec<String> = on_victim.iter().map(|(id, _)| id.to_string()).collect();
    std::fs::remove_dir_all(&c.nodes[0].disks[0]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while disk_state(&meta, victim).await != Some(DiskState::Failed) {
        assert!(Instant::now() < deadline, "disk {victim} not marked failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Degraded reads of the affected bundles, 8 at a time, repairs paused.
    let client = Arc::new(c.client_all());
    let read_start = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    let queue = Arc::new(std::sync::Mutex::new(affected.clone()));
    for _ in 0..8 {
        let client = Arc::clone(&client);
        let queue = Arc::clone(&queue);
        reads.spawn(async move {
            let mut bytes = 0u64;
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return bytes;
                };
                let mut sink = std::io::sink();
                bytes += client.export(&id, &mut sink).await.unwrap();
            }
        });
    }
    let mut read_bytes = 0;
    while let Some(r) = reads.join_next().await {
        read_bytes += r.unwrap();
    }
    let read_rate = read_bytes as f64 / read_start.elapsed().as_secs_f64();

    // Rebuild: resume and wait until the failed disk holds nothing and nothing is queued.
    let before = meta.repair_status().await.unwrap().bytes_repaired;
    let rebuild_start = Instant::now();
    settings(&meta, false).await;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let r = meta.repair_status().await.unwrap();
        let left = meta
            .list_disk_bundles(victim, &[], 10)
            .await
            .unwrap()
            .0
            .len();
        if r.queued_bundles == 0 && r.running_shards == 0 && left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "rebuild did not finish: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rebuild_secs = rebuild_start.elapsed().as_secs_f64();
    let restored = meta.repair_status().await.unwrap().bytes_repaired - before;
    let restore_rate = restored as f64 / rebuild_secs;
    let bound = read_rate / K;
    println!(
        "BENCH heal nodes={nodes}x{disks_per_node}: lost disk held {} shards, {:.0} MiB; degraded read of those {} bundles {:.1} MiB/s → bound {:.1} MiB/s restored (÷ k = {K})",
        on_victim.len(),
        restored as f64 / MIB,
        affected.len(),
        read_rate / MIB,
        bound / MIB
    );
    println!(
        "BENCH heal nodes={nodes}x{disks_per_node}: rebuilt {:.0} MiB in {rebuild_secs:.1} s = {:.1} MiB/s; ratio to bound {:.2} (target ≥ 0.5)",
        restored as f64 / MIB,
        restore_rate / MIB,
        restore_rate / bound
    );
    // Every bundle still reads: spot-check one file of each affected bundle.
    for id in affected.iter().take(20) {
        let back = client.read_file(id, "scan-000.tif").await.unwrap();
        assert_eq!(back.len(), FILE_BYTES);
    }
    let sealed = meta
        .list_all_bundles(None, Some(BundleState::Sealed))
        .await
        .unwrap();
    assert!(sealed.iter().all(|b| !b.record.placement.contains(&victim)));
    (rebuild_secs, restore_rate, restore_rate / bound)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench-heal"]
async fn rebuild_of_a_lost_disk() {
    let lost = env_u64("HEAL_BENCH_LOST_DISK_MIB", 512) << 20;
    let list = std::env::var("HEAL_BENCH_LAYOUT").unwrap_or_else(|_| "6x2,12x2".into());
    let mut results = Vec::new();
    for layout in list.split(',') {
        let (nodes, disks) = layout
            .trim()
            .split_once('x')
            .and_then(|(n, d)| Some((n.parse::<usize>().ok()?, d.parse::<usize>().ok()?)))
            .unwrap_or_else(|| panic!("HEAL_BENCH_LAYOUT entry {layout:?}: expected NODESxDISKS"));
        let (secs, rate, ratio) = run(nodes, disks, lost).await;
        results.push((nodes, secs, rate, ratio));
        println!(
            "BENCH heal summary: {nodes:>2} nodes × {disks} disks: time to full redundancy {secs:.1} s, {:.1} MiB/s restored, ratio {ratio:.2}",
            rate / MIB
        );
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        if results.len() > 1 {
            println!(
                "BENCH heal declustered: {} → {} nodes: time {:.1} s → {:.1} s ({:.2}×)",
                first.0,
                last.0,
                first.1,
                last.1,
                first.1 / last.1
            );
        }
    }
}
