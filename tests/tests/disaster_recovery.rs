//! Disaster recovery with the real binary: shards describe their bundles (labels, creation time,
//! file count) and deletes leave tombstones, so `recover scan` of the disks alone reports every
//! bundle; a backup of the metadata group restores a lost group that serves every file again;
//! `meta recover` rebuilds a lost group from the disks alone, or from a backup and the disks:
//! every sealed bundle listed with its labels and read back byte for byte, deleted bundles
//! absent, a cut upload absent, the lost shard queued and rebuilt, `meta check` clean (on drop).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bitmountain_client::{ArchiveClient, PutOptions};
use bitmountain_meta_client::types::Registration;
use bitmountain_tests::cluster::{assert_files_read_back, sample_files, Cluster};
use bitmountain_tests::upload::SlowUpload;
use bitmountain_tests::{run, run_ok};

const CODE: &str = "2+1:65536";

async fn put(
    client: &ArchiveClient,
    files: &[(String, Vec<u8>)],
    labels: &[(&str, &str)],
) -> String {
    let options = PutOptions {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PutOptions::default()
    };
    let upload = files
        .iter()
        .map(|(p, b)| bitmountain_client::UploadFile::from_bytes(p.clone(), b.clone()));
    client.put_files(upload, &options).await.unwrap().bundle_id
}

fn disks(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .flat_map(|n| n.disks.iter().map(|d| d.display().to_string()))
        .collect()
}

/// `recover scan --json` of every disk; bundles with too few shards count as lost at once
/// (no orphan grace: they are minutes old).
fn scan(cluster: &Cluster) -> (bool, serde_json::Value) {
    let mut args = vec![
        "recover".to_string(),
        "scan".into(),
        "--json".into(),
        "--orphan-grace-ms".into(),
        "0".into(),
    ];
    args.extend(disks(cluster));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "recover scan printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), doc)
}

fn find<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"].as_str() == Some(id))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disks_alone_describe_every_bundle_and_every_delete() {
    let cluster = Cluster::start(4, 1, CODE);
    let client = cluster.client(1);
    let maps = sample_files(7, 1);
    let books = sample_files(3, 2);
    let gone = sample_files(2, 3);
    let a = put(&client, &maps, &[("collection", "maps"), ("shelf", "B-7")]).await;
    let b = put(&client, &books, &[("collection", "books")]).await;
    let c = put(&client, &gone, &[("collection", "weeded")]).await;
    client
        .delete(&c, "weeded from the collection")
        .await
        .unwrap();

    let (ok, doc) = scan(&cluster);
    assert!(ok, "{doc}");
    assert_eq!(doc["bundles"].as_array().unwrap().len(), 2, "{doc}");
    for (id, files) in [(&a, &maps), (&b, &books)] {
        let stat = client.stat(id).await.unwrap();
        let found = find(&doc["bundles"], id).unwrap_or_else(|| panic!("{id} missing: {doc}"));
        assert_eq!(found["state"], "complete");
        assert_eq!(found["length"], stat.length_bytes);
        assert_eq!(found["sha256"], stat.sha256.as_str());
        assert_eq!(found["file_count"], files.len() as u64);
        assert_eq!(found["created_unix_ms"], stat.created_unix_ms);
        assert_eq!(found["index_offset"], stat.index_offset);
        let labels: BTreeMap<String, String> =
            serde_json::from_value(found["labels"].clone()).unwrap();
        assert_eq!(labels, stat.labels);
        assert_eq!(found["placement"].as_array().unwrap().len(), 3);
    }
    let deleted = find(&doc["deleted"], &c).unwrap_or_else(|| panic!("{c} not deleted: {doc}"));
    assert!(deleted["deleted_unix_ms"].as_u64().unwrap() > 0);
    assert!(doc["lost"].as_array().unwrap().is_empty());

    // One shard of `a` lost, two of `b`: `a` is degraded, `b` is lost (named, with its labels)
    // and the scan exits non-zero.
    let shards_a = cluster.bundle_shards(&a);
    std::fs::remove_file(&shards_a[0].2).unwrap();
    for (_, _, path) in cluster.bundle_shards(&b).iter().take(2) {
        std::fs::remove_file(path).unwrap();
    }
    let (ok, doc) = scan(&cluster);
    assert!(!ok);
    let found = find(&doc["bundles"], &a).unwrap();
    assert_eq!(found["state"], "degraded");
    assert_eq!(found["missing_shards"], serde_json::json!([shards_a[0].1]));
    let lost = find(&doc["lost"], &b).unwrap_or_else(|| panic!("{b} not lost: {doc}"));
    assert_eq!(lost["labels"]["collection"], "books");

    // The readable bundle still reads through the cluster.
    assert_files_read_back(&client, &a, &maps).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_a_lost_metadata_group() {
    let mut cluster = Cluster::start(3, 1, CODE);
    let client = cluster.client_all();
    let first = sample_files(6, 11);
    let a = put(&client, &first, &[("collection", "letters")]).await;
    let member = cluster.meta.addr(1);
    let dir = cluster.meta.dir.path().to_path_buf();
    let backup = dir.join("meta.backup");
    let printed = run_ok(&[
        "meta",
        "backup",
        "--cluster",
        &member,
        "-o",
        backup.to_str().unwrap(),
        "--json",
    ]);
    let header: serde_json::Value = serde_json::from_slice(&printed).unwrap();
    assert!(header["applied_index"].as_u64().unwrap() > 0, "{header}");
    assert!(header["records"].as_u64().unwrap() > 0);
    // A second backup to the same file is refused; the first stays whole.
    let again = run(&[
        "meta",
        "backup",
        "--cluster",
        &member,
        "-o",
        backup.to_str().unwrap(),
    ]);
    assert!(!again.status.success());

    // After the backup: one more bundle, which the restored group will not know.
    let later = put(&client, &sample_files(2, 12), &[("collection", "later")]).await;

    // The whole group is lost.
    cluster.meta.kill(1);
    let data = cluster.meta.members[&1].data.clone();
    std::fs::remove_dir_all(&data).unwrap();

    let restore = |file: &std::path::Path| {
        run(&[
            "meta",
            "restore",
            file.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--id",
            "1",
            "--listen",
            &member,
        ])
    };
    // A damaged copy is refused before anything is written.
    let damaged = dir.join("damaged.backup");
    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&damaged, &bytes).unwrap();
    let refused = restore(&damaged);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("SHA-256"), "{err}");

    let restored = restore(&backup);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    // Restoring over a member's data is refused.
    let twice = restore(&backup);
    assert!(!twice.status.success());

    cluster.meta.restart(1);
    cluster
        .meta
        .wait_leader(&[1], Duration::from_secs(30))
        .await;
    cluster.wait_nodes_registered(3, Duration::from_secs(60));
    // The same nodes, the same token, every file of the backed-up bundle.
    assert_files_read_back(&client, &a, &first).await;
    let stat = client.stat(&a).await.unwrap();
    assert_eq!(stat.labels["collection"], "letters");
    let listed: Vec<String> = client
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.bundle_id)
        .collect();
    assert_eq!(
        listed,
        vec![a.clone()],
        "the group is the backup's: {later} is not in it"
    );
    // New uploads work against the restored group.
    let after = sample_files(3, 13);
    let c = put(&client, &after, &[("collection", "after")]).await;
    assert_files_read_back(&client, &c, &after).await;
}

/// Waits until the recovering group has left recovery; returns `meta recover status --json`.
fn wait_recovered(cluster: &Cluster) -> serde_json::Value {
    let member = cluster.meta.addr(1);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = run(&["meta", "recover", "status", "--cluster", &member, "--json"]);
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if doc["active"] == false && doc["report"].is_object() {
                return doc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the group did not leave recovery: {}\n{}\n--- member log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.meta.log_tail(1, 40)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Kills the whole metadata group, deletes its data and starts `meta recover` (from `backup` if
/// given). The nodes register with the new group and report their disks: restarted when
/// `restart_nodes`, else by themselves when their heartbeats meet a group that does not know
/// them.
fn lose_and_recover(
    cluster: &mut Cluster,
    backup: Option<&std::path::Path>,
    restart_nodes: bool,
) -> serde_json::Value {
    cluster.meta.kill(1);
    let data = cluster.meta.members[&1].data.clone();
    let token = std::fs::read(data.join("admin.token")).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    if backup.is_some() {
        // The backup's token table holds the old admin token; keep its file where the CLI of
        // the tests looks (a group rebuilt without a backup makes a new one).
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("admin.token"), &token).unwrap();
    }
    cluster
        .meta
        .recover(1, backup, &["--recovery-settle-ms", "1500"]);
    if restart_nodes {
        for i in 1..=cluster.nodes.len() {
            cluster.restart_node(i);
        }
    }
    let doc = wait_recovered(cluster);
    cluster.meta.forget_admin_token();
    cluster.wait_nodes_registered(cluster.nodes.len(), Duration::from_secs(60));
    doc
}

/// A bundle's files: (path, bytes).
type Files = Vec<(String, Vec<u8>)>;

struct Uploaded {
    maps: (String, Files),
    books: (String, Files),
    weeded: String,
}

/// Two bundles with labels, one deleted, one upload cut before its commit; one shard of the
/// first bundle lost.
async fn archive_some(cluster: &Cluster) -> Uploaded {
    let client = cluster.client_all();
    let maps = sample_files(6, 21);
    let books = sample_files(4, 22);
    let a = put(&client, &maps, &[("collection", "maps"), ("shelf", "B-7")]).await;
    let b = put(&client, &books, &[("collection", "books")]).await;
    let c = put(&client, &sample_files(2, 23), &[("collection", "weeded")]).await;
    client
        .delete(&c, "weeded from the collection")
        .await
        .unwrap();
    let cut = SlowUpload::start(&cluster.addr(2)).await;
    assert!(cut.file("partial.bin", &sample_files(5, 24)[4].1).await);
    assert!(cut.cut().await.is_err(), "a cut upload must not commit");
    let shard = &cluster.bundle_shards(&a)[0];
    std::fs::remove_file(&shard.2).unwrap();
    Uploaded {
        maps: (a, maps),
        books: (b, books),
        weeded: c,
    }
}

async fn assert_recovered(
    cluster: &Cluster,
    u: &Uploaded,
    report: &serde_json::Value,
    older: Option<(&String, &Files)>,
) {
    let client = cluster.client_all();
    let mut listed: Vec<String> = client
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.bundle_id)
        .collect();
    listed.sort();
    let mut expected = vec![u.maps.0.clone(), u.books.0.clone()];
    if let Some((id, files)) = older {
        expected.push(id.clone());
        assert_files_read_back(&client, id, files).await;
    }
    expected.sort();
    assert_eq!(listed, expected, "{report}");
    assert!(
        client.stat(&u.weeded).await.is_err(),
        "a deleted bundle came back"
    );
    let stat = client.stat(&u.maps.0).await.unwrap();
    assert_eq!(stat.labels["collection"], "maps");
    assert_eq!(stat.labels["shelf"], "B-7");
    assert_eq!(stat.file_count, u.maps.1.len() as u64);
    let stat = client.stat(&u.books.0).await.unwrap();
    assert_eq!(stat.labels["collection"], "books");
    assert_files_read_back(&client, &u.maps.0, &u.maps.1).await;
    assert_files_read_back(&client, &u.books.0, &u.books.1).await;
    // The bundle that lost a shard was queued for repair, and the repair brings it back.
    assert!(
        report["report"]["queued_for_repair"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.bundle_shards(&u.maps.0).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the lost shard was never rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_group_is_rebuilt_from_the_disks_alone() {
    let mut cluster = Cluster::start(4, 1, CODE);
    let uploaded = archive_some(&cluster).await;
    let report = lose_and_recover(&mut cluster, None, false);
    let r = &report["report"];
    assert_eq!(r["recovered"], 2, "{report}");
    assert_eq!(r["deleted"], 1, "{report}");
    assert_eq!(r["lost_count"], 0, "{report}");
    assert_recovered(&cluster, &uploaded, &report, None).await;
    // A node whose disks belong to another cluster is refused, naming both clusters.
    let e = cluster
        .meta
        .client()
        .register_node(&Registration {
            request_id: "stranger".into(),
            node_id: 0,
            address: "127.0.0.1:1".into(),
            zone: String::new(),
            rack: String::new(),
            host: "stranger".into(),
            disks: vec![],
            cluster_id: "ffffffffffffffffffffffffffffffff".into(),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("belong to cluster ffff"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_group_is_rebuilt_from_a_backup_and_the_disks() {
    let mut cluster = Cluster::start(4, 1, CODE);
    let client = cluster.client_all();
    let early = sample_files(3, 31);
    let e = put(&client, &early, &[("collection", "early")]).await;
    let backup = cluster.meta.dir.path().join("before.backup");
    run_ok(&[
        "meta",
        "backup",
        "--cluster",
        &cluster.meta.addr(1),
        "-o",
        backup.to_str().unwrap(),
    ]);
    // After the backup: more bundles, a delete of one the backup holds.
    let uploaded = archive_some(&cluster).await;
    let report = lose_and_recover(&mut cluster, Some(&backup), true);
    let r = &report["report"];
    assert_eq!(r["added"], 2, "the bundles newer than the backup: {report}");
    assert!(r["backup_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(r["recovered"], 3, "{report}");
    assert_recovered(&cluster, &uploaded, &report, Some((&e, &early))).await;
}
