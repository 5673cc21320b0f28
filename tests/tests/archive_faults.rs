//! Fault tests on a real cluster (processes on loopback): kill -9 storage nodes, flip bytes in
//! shard files, kill upload targets and the coordinator mid-upload; then check every byte reads
//! back, or that a failed upload left nothing visible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{
    assert_files_read_back, pseudo_random_bytes, sample_files, Cluster,
};
use bitmountain_tests::error_kind;
use bitmountain_tests::upload::SlowUpload;

const CODE: &str = "4+2:65536";

fn uploads(files: &[(String, Vec<u8>)]) -> Vec<UploadFile> {
    files
        .iter()
        .map(|(p, b)| UploadFile::from_bytes(p.clone(), b.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_survive_m_nodes_killed() {
    let mut cluster = Cluster::start(6, 2, CODE);
    let client = cluster.client(1);
    let mut stored = Vec::new();
    for b in 0..3 {
        let files = sample_files(12, b);
        let put = client
            .put_files(uploads(&files), &PutOptions::default())
            .await
            .unwrap();
        stored.push((put.bundle_id, files));
    }
    // m = 2: kill two nodes that are not the one we read through.
    cluster.kill_node(3);
    cluster.kill_node(6);
    for (id, files) in &stored {
        assert_files_read_back(&client, id, files).await;
    }
    // A client that knows every node keeps working when its first node dies too (it fails
    // over to the next; reads still need only 4 of 6 shards... of which 3 nodes are left, so
    // this only checks failover for metadata-level calls and degraded reads elsewhere).
    let all = cluster.client_all();
    let listed = all.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 3);
    // Bring them back: reads are served from the healthy shards again.
    cluster.restart_node(3);
    cluster.restart_node(6);
    cluster.wait_nodes_registered(6, Duration::from_secs(30));
    let other = cluster.client(3);
    for (id, files) in &stored {
        assert_files_read_back(&other, id, files).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_shards_are_decoded_around_and_reported() {
    let cluster = Cluster::start(6, 1, CODE);
    let client = cluster.client(1);
    let files = sample_files(18, 7);
    let put = client
        .put_files(uploads(&files), &PutOptions::default())
        .await
        .unwrap();
    // Flip bytes all over two of the six shard files (m = 2), past their headers.
    let shards = cluster.bundle_shards(&put.bundle_id);
    assert_eq!(shards.len(), 6);
    for (_, shard, path) in shards.iter().filter(|(_, s, _)| *s == 0 || *s == 4) {
        let mut bytes = std::fs::read(path).unwrap();
        let len = bytes.len();
        for at in (100..len.saturating_sub(200)).step_by(4096) {
            bytes[at] ^= 0x5a;
        }
        std::fs::write(path, bytes).unwrap();
        eprintln!("corrupted shard {shard} at {}", path.display());
    }
    assert_files_read_back(&cluster.client(2), &put.bundle_id, &files).await;
    // The corruption was reported: the metadata group queued a repair.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.status().await.unwrap();
        if status.repairs_queued >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no repair queued: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A third corrupt shard is more than the code tolerates: reads of damaged regions fail
    // with a clear error instead of returning wrong bytes.
    let (_, _, path) = shards.iter().find(|(_, s, _)| *s == 1).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    for b in bytes.iter_mut().skip(64) {
        *b ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
    let mut failures = 0;
    for (p, want) in &files {
        match cluster.client(3).read_file(&put.bundle_id, p).await {
            Ok(got) => assert!(got == *want, "{p}: wrong bytes returned"),
            Err(e) => {
                assert_eq!(e.kind(), Some("unrecoverable"), "{e}");
                failures += 1;
            }
        }
    }
    assert!(
        failures > 0,
        "three corrupt shards of six must make some reads fail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_killed_mid_upload_leaves_a_readable_bundle_with_a_queued_repair() {
    let mut cluster = Cluster::start(6, 1, CODE);
    let upload = SlowUpload::start(&cluster.addr(1)).await;
    let first = pseudo_random_bytes(1, 3 << 20);
    assert!(upload.file("a.bin", &first).await);
    // One target dies mid-stream: m − 1 = 1 shard may be missing at commit.
    cluster.kill_node(4);
    let second = pseudo_random_bytes(2, 2 << 20);
    assert!(upload.file("b.bin", &second).await);
    let response = upload.end().await.expect("commits with one shard missing");
    assert_eq!(response.missing_shards.len(), 1, "{response:?}");
    let client = cluster.client(2);
    assert_eq!(
        client
            .read_file(&response.bundle_id, "a.bin")
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        client
            .read_file(&response.bundle_id, "b.bin")
            .await
            .unwrap(),
        second
    );
    assert!(client.status().await.unwrap().repairs_queued >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_targets_killed_mid_upload_fail_it_and_nothing_is_visible() {
    let mut cluster = Cluster::start(6, 1, CODE);
    let client = cluster.client(1);
    let upload = SlowUpload::start(&cluster.addr(1)).await;
    assert!(upload.file("a.bin", &pseudo_random_bytes(3, 2 << 20)).await);
    cluster.kill_node(2);
    cluster.kill_node(5);
    upload.file("b.bin", &pseudo_random_bytes(4, 4 << 20)).await;
    let status = upload
        .end()
        .await
        .expect_err("cannot commit with two of six shards missing");
    assert_eq!(error_kind(&status), "not_enough_nodes", "{status:?}");
    assert!(
        status.message().contains("upload again"),
        "{}",
        status.message()
    );
    assert!(client.list_all(None).await.unwrap().is_empty());
    assert_eq!(client.status().await.unwrap().bundles_sealed, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_killed_mid_upload_gives_an_error_and_nothing_visible() {
    // Short allocation lifetime and orphan grace, so garbage collection can be watched.
    let mut cluster = Cluster::start_with(
        6,
        1,
        CODE,
        &["--allocation-ttl-ms", "2000"],
        &["--gc-interval-ms", "500", "--orphan-grace-ms", "3000"],
    );
    let upload = SlowUpload::start(&cluster.addr(3)).await;
    assert!(upload.file("a.bin", &pseudo_random_bytes(5, 1 << 20)).await);
    cluster.kill_node(3);
    upload.file("b.bin", &pseudo_random_bytes(6, 1 << 20)).await;
    let status = upload.end().await.expect_err("the coordinator is dead");
    eprintln!("client saw: {status:?}");
    let client = cluster.client(1);
    assert!(client.list_all(None).await.unwrap().is_empty());
    assert_eq!(client.status().await.unwrap().bundles_sealed, 0);
    // The allocation expires and its record goes: nothing pending is left either.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.status().await.unwrap();
        if status.bundles_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "allocation never expired: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_removes_orphan_shards_and_keeps_live_ones() {
    let cluster = Cluster::start_with(
        6,
        1,
        CODE,
        &[],
        &["--gc-interval-ms", "300", "--orphan-grace-ms", "60000"],
    );
    let client = cluster.client(1);
    let files = sample_files(6, 11);
    let put = client
        .put_files(uploads(&files), &PutOptions::default())
        .await
        .unwrap();
    let live = cluster.bundle_shards(&put.bundle_id);
    assert_eq!(live.len(), 6);
    // Plant orphans: copies of a live shard under bundle ids the cluster never allocated, one
    // allocated long ago (past the grace: collected) and one just now (within it: kept).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old_id = format!("{:012x}{:020x}", now_ms - 3_600_000, 0xabcdu64);
    let new_id = format!("{:012x}{:020x}", now_ms, 0xabceu64);
    let (_, _, source) = &live[0];
    let fan_dir = |id: &str| source.parent().unwrap().parent().unwrap().join(&id[..2]);
    let mut planted = Vec::new();
    for id in [&old_id, &new_id] {
        std::fs::create_dir_all(fan_dir(id)).unwrap();
        let path = fan_dir(id).join(format!("{id}.0.shard"));
        std::fs::copy(source, &path).unwrap();
        planted.push(path);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while planted[0].exists() {
        assert!(Instant::now() < deadline, "old orphan not collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more passes: the young orphan and the live shards stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        planted[1].exists(),
        "an orphan within its grace was deleted"
    );
    assert_eq!(cluster.bundle_shards(&put.bundle_id).len(), 6);
    assert_files_read_back(&client, &put.bundle_id, &files).await;
}
