//! `bitmountain fixity check` with the real binary: every file read back and hashed against the
//! digest recorded at ingest; a corrupt shard is read around and passes, a bundle that lost
//! more shards than its code tolerates fails, per file, with a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::run;

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fixity_checks_every_file_and_names_failures() {
    let cluster = Cluster::start(3, 1, "2+1:65536");
    let client = cluster.client(1);
    let mut ids = Vec::new();
    for (seed, shelf) in [(51, "A"), (52, "B")] {
        let files = sample_files(6, seed)
            .into_iter()
            .map(|(p, b)| UploadFile::from_bytes(p, b));
        let options = PutOptions {
            labels: [("shelf".to_owned(), shelf.to_owned())].into(),
            ..PutOptions::default()
        };
        ids.push(client.put_files(files, &options).await.unwrap().bundle_id);
    }
    let addr = cluster.addr(2);
    let all = run(&["fixity", "check", "--all", "--json", "--cluster", &addr]);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let docs = lines(&all);
    assert_eq!(docs.len(), 3, "two bundles and the summary");
    assert_eq!(docs[2]["summary"]["files"], 12);
    assert_eq!(docs[2]["summary"]["failed_files"], 0);

    // A flipped byte in one shard: the CRC catches it, the read decodes around it, fixity holds.
    let shards = cluster.bundle_shards(&ids[0]);
    let mut bytes = std::fs::read(&shards[0].2).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&shards[0].2, &bytes).unwrap();
    let one = run(&["fixity", "check", "--bundle", &ids[0], "--cluster", &addr]);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );

    // Two of three shards gone: every file of that bundle fails, named; the other bundle passes.
    for (_, _, path) in &shards[1..] {
        std::fs::remove_file(path).unwrap();
    }
    let failed = run(&["fixity", "check", "--all", "--json", "--cluster", &addr]);
    assert!(!failed.status.success());
    let docs = lines(&failed);
    let bad = docs
        .iter()
        .find(|d| d["bundle_id"] == ids[0].as_str())
        .unwrap();
    assert!(!bad["failures"].as_array().unwrap().is_empty(), "{bad}");
    assert!(bad["failures"][0]["path"].is_string(), "{bad}");
    let good = docs
        .iter()
        .find(|d| d["bundle_id"] == ids[1].as_str())
        .unwrap();
    assert!(good["failures"].as_array().unwrap().is_empty(), "{good}");
    let b_only = run(&["fixity", "check", "--label", "shelf=B", "--cluster", &addr]);
    assert!(b_only.status.success());
    let nothing = run(&["fixity", "check", "--cluster", &addr]);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("--all"));
}
