//! Uploads and reads through the public API of a real cluster (a metadata member and six
//! storage nodes as processes on loopback): bundles of 0 to 10,000 files, files of 0 bytes to
//! more than three cells, whole files, ranges, the index, export, listing by label, delete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};

/// 64 KiB cells, so "more than three cells" stays small.
const CELL_BYTES: u64 = 64 << 10;
const CODE: &str = "4+2:65536";

fn files_of_sizes(sizes: &[usize], seed: u64) -> Vec<UploadFile> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            UploadFile::from_bytes(
                format!("dir{}/file-{i:05}.bin", i % 7),
                pseudo_random_bytes(seed + i as u64, size),
            )
        })
        .collect()
}

fn bytes_of(file: &UploadFile) -> Vec<u8> {
    match &file.source {
        bitmountain_client::UploadSource::Bytes(b) => b.to_vec(),
        bitmountain_client::UploadSource::Path(p) => std::fs::read(p).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_round_trip_byte_for_byte() {
    let cluster = Cluster::start(6, 2, CODE);
    let client = cluster.client(1);
    let cell = CELL_BYTES as usize;

    // Files from 0 bytes to more than three cells, on and around cell and chunk edges.
    let sizes = [
        0,
        1,
        63,
        64,
        4095,
        65_535,
        cell,
        cell + 1,
        3 * cell - 1,
        3 * cell,
        3 * cell + 17,
        5 * cell + 12_345,
    ];
    let files = files_of_sizes(&sizes, 1);
    let mut labels = BTreeMap::new();
    labels.insert("collection".to_string(), "roundtrip".to_string());
    let options = PutOptions {
        labels,
        ..PutOptions::default()
    };
    let put = client.put_files(files.clone(), &options).await.unwrap();
    assert_eq!(put.file_count, sizes.len() as u64);
    assert!(put.missing_shards.is_empty(), "{put:?}");
    assert_eq!(put.files.len(), sizes.len());

    // Read every file back through another node.
    let reader = cluster.client(4);
    for f in &files {
        let back = reader.read_file(&put.bundle_id, &f.path).await.unwrap();
        assert_eq!(back, bytes_of(f), "{}", f.path);
    }
    // Ranges: inside a file, across a cell edge, to the end, empty.
    let big = &files[sizes.len() - 1];
    let big_bytes = bytes_of(big);
    for (offset, len) in [
        (0u64, 10u64),
        (cell as u64 - 5, 10),
        (1000, 3 * CELL_BYTES),
        (big_bytes.len() as u64 - 1, 1),
        (7, 0),
    ] {
        let mut out = Vec::new();
        reader
            .get_file(&put.bundle_id, &big.path, offset, Some(len), &mut out)
            .await
            .unwrap();
        assert_eq!(out, big_bytes[offset as usize..(offset + len) as usize]);
    }
    // The index lists every file with its SHA-256.
    let index = reader.index(&put.bundle_id).await.unwrap();
    assert_eq!(index.len(), sizes.len());
    for (entry, digest) in index.iter().zip(&put.files) {
        assert_eq!(entry.path, digest.path);
        assert_eq!(entry.sha256, digest.sha256);
    }
    // The export is a valid bundle that our offline reader verifies.
    let mut exported = Vec::new();
    let len = reader.export(&put.bundle_id, &mut exported).await.unwrap();
    assert_eq!(len, put.length_bytes);
    let offline = bitmountain_bundle::BundleReader::open(exported).unwrap();
    let report = offline.verify().unwrap();
    assert_eq!(report.files_checked, sizes.len() as u64);
    assert!(
        report.corrupt_files.is_empty(),
        "{:?}",
        report.corrupt_files
    );

    // Listing by label finds it; stat shows its placement on six distinct nodes.
    let listed = client
        .list_all(Some(("collection", "roundtrip")))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].bundle_id, put.bundle_id);
    let stat = client.stat(&put.bundle_id).await.unwrap();
    assert_eq!(stat.state, "sealed");
    let nodes: std::collections::BTreeSet<u64> = stat.shards.iter().map(|s| s.node_id).collect();
    assert_eq!(nodes.len(), 6, "one shard per node: {stat:?}");
    assert_eq!(cluster.bundle_shards(&put.bundle_id).len(), 6);

    // An empty bundle, and a bundle of one empty file.
    let empty = client
        .put_files(Vec::new(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(empty.file_count, 0);
    assert!(client.index(&empty.bundle_id).await.unwrap().is_empty());
    let one = client
        .put_files(
            vec![UploadFile::from_bytes("empty.txt", Vec::new())],
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        client.read_file(&one.bundle_id, "empty.txt").await.unwrap(),
        b""
    );

    // Delete: the bundle disappears for readers and its shard files go.
    client.delete(&put.bundle_id, "test").await.unwrap();
    let err = reader
        .read_file(&put.bundle_id, &files[0].path)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("unknown_bundle"), "{err}");
    assert!(cluster.bundle_shards(&put.bundle_id).is_empty());
    let err = client.delete(&put.bundle_id, "test").await.unwrap_err();
    assert_eq!(err.kind(), Some("unknown_bundle"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_files_in_one_bundle() {
    let cluster = Cluster::start(6, 1, CODE);
    let client = cluster.client(2);
    let sizes: Vec<usize> = (0..10_000).map(|i| (i * 37) % 700).collect();
    let files = files_of_sizes(&sizes, 99);
    let put = client
        .put_files(files.clone(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.file_count, 10_000);
    let index = client.index(&put.bundle_id).await.unwrap();
    assert_eq!(index.len(), 10_000);
    // Every file byte for byte through the export (one stream), and one in twenty through
    // GetFile on two other nodes.
    let mut exported = Vec::new();
    client.export(&put.bundle_id, &mut exported).await.unwrap();
    let offline = bitmountain_bundle::BundleReader::open(exported).unwrap();
    for f in &files {
        let mut back = Vec::new();
        offline.copy_file(&f.path, &mut back).unwrap();
        assert_eq!(back, bytes_of(f), "{}", f.path);
    }
    let other = cluster.client(5);
    for (i, f) in files.iter().enumerate().step_by(20) {
        let c = if i % 40 == 0 { &client } else { &other };
        assert_eq!(
            c.read_file(&put.bundle_id, &f.path).await.unwrap(),
            bytes_of(f)
        );
    }
}
