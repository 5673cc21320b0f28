//! Fixity at ingest, with the real binary: a client sends each file's SHA-256 in advance and the
//! cluster refuses an upload whose bytes differ (`digest_mismatch`, nothing stored); `put
//! --manifest FILE` takes the digests from `sha256sum` output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::{run, run_ok};

const CODE: &str = "2+1:65536";

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    // Through the same tool a curator would use, so the test does not trust our own hashing.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut d = [0u8; 32];
    hex_decode(&text[..64], &mut d);
    d
}

fn hex_decode(text: &str, out: &mut [u8; 32]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_with_expected_digests_are_checked_on_arrival() {
    let cluster = Cluster::start(3, 1, CODE);
    let client = cluster.client(1);
    let a = pseudo_random_bytes(1, 300_000);
    let b = pseudo_random_bytes(2, 5_000);
    let good = vec![
        UploadFile::from_bytes("a.tif", a.clone()).with_sha256(sha256_of(&a)),
        UploadFile::from_bytes("b.txt", b.clone()).with_sha256(sha256_of(&b)),
    ];
    let put = client
        .put_files(good, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(client.read_file(&put.bundle_id, "a.tif").await.unwrap(), a);

    // One byte differs from what the sender hashed: refused, named, nothing stored.
    let mut changed = b.clone();
    changed[17] ^= 1;
    let bad = vec![
        UploadFile::from_bytes("a.tif", a.clone()).with_sha256(sha256_of(&a)),
        UploadFile::from_bytes("b.txt", changed).with_sha256(sha256_of(&b)),
    ];
    let err = client
        .put_files(bad, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("digest_mismatch"), "{err}");
    assert!(err.to_string().contains("b.txt"), "{err}");
    let listed = client.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 1, "only the good bundle: {listed:?}");
    assert_eq!(client.status().await.unwrap().bundles_pending, 0);
}

#[test]
fn put_manifest_takes_sha256sum_output() {
    let cluster = Cluster::start(3, 1, CODE);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("book");
    std::fs::create_dir_all(dir.join("pages")).unwrap();
    for i in 0..4 {
        std::fs::write(
            dir.join(format!("pages/{i:04}.tif")),
            pseudo_random_bytes(10 + i, 70_000 * (i as usize + 1)),
        )
        .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), b"accession 2026-114").unwrap();
    let manifest = root.path().join("manifest-sha256.txt");
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f | sort | xargs sha256sum")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&manifest, &out.stdout).unwrap();
    let addr = cluster.addr(1);
    let (dir_s, manifest_s) = (dir.to_str().unwrap(), manifest.to_str().unwrap());

    let id = run_ok(&["put", dir_s, "--manifest", manifest_s, "--cluster", &addr]);
    let id = String::from_utf8(id).unwrap().trim().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    // The index holds exactly the manifest's digests.
    let index: serde_json::Value =
        serde_json::from_slice(&run_ok(&["ls", &id, "--cluster", &addr, "--json"])).unwrap();
    let manifest_text = String::from_utf8(out.stdout.clone()).unwrap();
    let entries = index.as_array().unwrap();
    assert_eq!(entries.len(), manifest_text.lines().count());
    for line in manifest_text.lines() {
        let (digest, path) = (&line[..64], line[66..].trim_start_matches("./"));
        let entry = entries.iter().find(|e| e["path"] == path).unwrap();
        assert_eq!(entry["sha256"], digest, "{path}");
    }

    // A file changed after its digest was taken: the cluster refuses it, nothing is stored.
    std::fs::write(dir.join("notes.txt"), b"accession 2026-115").unwrap();
    let refused = run(&["put", dir_s, "--manifest", manifest_s, "--cluster", &addr]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("SHA-256"),
        "{err}"
    );

    // A file the manifest does not list, and a listed file that is not there: refused before
    // anything is sent.
    std::fs::write(dir.join("extra.bin"), b"x").unwrap();
    let unlisted = run(&["put", dir_s, "--manifest", manifest_s, "--cluster", &addr]);
    assert!(!unlisted.status.success());
    assert!(String::from_utf8_lossy(&unlisted.stderr).contains("extra.bin is not in the manifest"));
    std::fs::remove_file(dir.join("extra.bin")).unwrap();
    std::fs::remove_file(dir.join("pages/0003.tif")).unwrap();
    let absent = run(&["put", dir_s, "--manifest", manifest_s, "--cluster", &addr]);
    assert!(!absent.status.success());
    assert!(
        String::from_utf8_lossy(&absent.stderr).contains("pages/0003.tif"),
        "{}",
        String::from_utf8_lossy(&absent.stderr)
    );

    let ls = run_ok(&["ls", "--cluster", &addr, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&ls).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}
