//! Deletion that is deliberate, with the real binary: a delete needs a reason; a retained
//! bundle refuses deletes until its date (`retained`, naming it), retention is extended and
//! never shortened; a legal hold refuses deletes until cleared (`legal_hold`, naming it), and
//! both show in `stat` and `ls --json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::{run, run_ok};

const CODE: &str = "2+1:65536";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn put(cluster: &Cluster, seed: u64, retain_until_unix_ms: u64) -> String {
    let files = sample_files(2, seed)
        .into_iter()
        .map(|(p, b)| UploadFile::from_bytes(p, b));
    let options = PutOptions {
        retain_until_unix_ms,
        ..PutOptions::default()
    };
    cluster
        .client(1)
        .put_files(files, &options)
        .await
        .unwrap()
        .bundle_id
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_and_holds_refuse_deletes_until_they_end() {
    let cluster = Cluster::start(3, 1, CODE);
    let client = cluster.client(2);

    // Retention: refused until the date, extended never shortened, then deletable.
    let until = now_ms() + 4_000;
    let a = put(&cluster, 1, until).await;
    assert_eq!(client.stat(&a).await.unwrap().retain_until_unix_ms, until);
    let e = client.delete(&a, "cleanup").await.unwrap_err();
    assert_eq!(e.kind(), Some("retained"), "{e}");
    assert!(e.to_string().contains(&until.to_string()), "{e}");
    let e = client.delete(&a, " ").await.unwrap_err();
    assert_eq!(e.kind(), Some("bad_request"), "{e}");
    let e = client.set_retention(&a, until - 1).await.unwrap_err();
    assert_eq!(e.kind(), Some("invalid_argument"), "{e}");
    assert!(e.to_string().contains("never shortened"), "{e}");
    let later = until + 2_000;
    let info = client.set_retention(&a, later).await.unwrap();
    assert_eq!(info.retain_until_unix_ms, later);
    tokio::time::sleep(Duration::from_millis(later.saturating_sub(now_ms()) + 200)).await;
    client.delete(&a, "retention over").await.unwrap();

    // Legal hold: independent of retention, refused until cleared, with its reason.
    let b = put(&cluster, 2, 0).await;
    let e = client.set_legal_hold(&b, true, "").await.unwrap_err();
    assert_eq!(e.kind(), Some("bad_request"), "{e}");
    let held = client
        .set_legal_hold(&b, true, "litigation 2026-17")
        .await
        .unwrap();
    assert_eq!(held.legal_hold.unwrap().reason, "litigation 2026-17");
    let e = client.delete(&b, "cleanup").await.unwrap_err();
    assert_eq!(e.kind(), Some("legal_hold"), "{e}");
    assert!(e.to_string().contains("litigation 2026-17"), "{e}");
    // Seen by every reader, through any node.
    let listed: serde_json::Value =
        serde_json::from_slice(&run_ok(&["ls", "--cluster", &cluster.addr(3), "--json"])).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["bundle_id"] == b.as_str())
        .unwrap();
    assert_eq!(entry["legal_hold"]["reason"], "litigation 2026-17");
    client
        .set_legal_hold(&b, false, "case closed")
        .await
        .unwrap();
    client.delete(&b, "superseded by a new scan").await.unwrap();
}

#[test]
fn the_cli_asks_for_reasons_and_dates() {
    let cluster = Cluster::start(3, 1, CODE);
    let addr = cluster.addr(1);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("page.tif"), b"scan").unwrap();
    let dir = root.path().to_str().unwrap();
    let id = run_ok(&["put", dir, "--retain", "1d", "--cluster", &addr]);
    let id = String::from_utf8(id).unwrap().trim().to_owned();

    let no_reason = run(&["rm", &id, "--cluster", &addr]);
    assert!(!no_reason.status.success());
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("--reason"));
    let retained = run(&["rm", &id, "--reason", "test", "--cluster", &addr]);
    assert!(!retained.status.success());
    assert!(String::from_utf8_lossy(&retained.stderr).contains("retained until"));
    let shorter = run(&[
        "retention",
        "set",
        &id,
        "--until",
        "2020-01-01",
        "--cluster",
        &addr,
    ]);
    assert!(!shorter.status.success());
    let out = run_ok(&[
        "retention",
        "set",
        &id,
        "--until",
        "2099-12-31",
        "--cluster",
        &addr,
    ]);
    assert!(String::from_utf8_lossy(&out).contains("retained until 2099-12-31"));
    let out = run_ok(&["hold", "set", &id, "--reason", "audit", "--cluster", &addr]);
    assert!(String::from_utf8_lossy(&out).contains("legal hold since"));
    let out = run_ok(&[
        "hold",
        "clear",
        &id,
        "--reason",
        "audit done",
        "--cluster",
        &addr,
    ]);
    assert!(String::from_utf8_lossy(&out).contains("no legal hold"));
    let bad_date = run(&[
        "retention",
        "set",
        &id,
        "--until",
        "31/12/2099",
        "--cluster",
        &addr,
    ]);
    assert!(!bad_date.status.success());
    assert!(String::from_utf8_lossy(&bad_date.stderr).contains("is not a date"));
}
