//! `bitmountain inventory` with the real binary: every bundle, its files with digests, labels
//! and storage locations, one JSON line each; filtered by label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::run_ok;

#[tokio::test(flavor = "multi_thread")]
async fn the_inventory_lists_every_bundle_file_digest_and_location() {
    let cluster = Cluster::start(3, 1, "2+1:65536");
    let client = cluster.client(1);
    let mut ids = Vec::new();
    for (i, shelf) in ["A", "A", "B"].iter().enumerate() {
        let files = sample_files(3 + i, 40 + i as u64)
            .into_iter()
            .map(|(p, b)| UploadFile::from_bytes(p, b));
        let options = PutOptions {
            labels: [("shelf".to_owned(), shelf.to_string())].into(),
            ..PutOptions::default()
        };
        ids.push(client.put_files(files, &options).await.unwrap().bundle_id);
    }
    let addr = cluster.addr(2);
    let text = String::from_utf8(run_ok(&["inventory", "--jsonl", "--cluster", &addr])).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines {
        assert_eq!(line["format"], 1);
        let id = line["bundle"]["bundle_id"].as_str().unwrap();
        assert!(ids.iter().any(|i| i == id), "{id}");
        let index = client.index(id).await.unwrap();
        let files = line["files"].as_array().unwrap();
        assert_eq!(files.len(), index.len());
        for (f, want) in files.iter().zip(index.iter()) {
            assert_eq!(f["path"], want.path.as_str());
            assert_eq!(f["sha256"], want.sha256.as_str());
            assert_eq!(f["size_bytes"], want.size_bytes);
        }
        let shards = line["bundle"]["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 3);
        assert!(shards
            .iter()
            .all(|s| s["node_address"].as_str().unwrap().contains(':')));
    }
    let text = String::from_utf8(run_ok(&[
        "inventory",
        "--jsonl",
        "--label",
        "shelf=B",
        "--cluster",
        &addr,
    ]))
    .unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&ids[2]));
}
