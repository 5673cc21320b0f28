//! Prometheus metrics of real processes: a member's and a node's `--metrics-listen` endpoint
//! (`/metrics`, `/healthz`, `/readyz`), the contract names, and that they move with the work:
//! an upload, a read, a refused request, the cluster's nodes and disks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitmountain_tests::cluster::Cluster;
use bitmountain_tests::http::request;
use bitmountain_tests::meta_cluster::free_port;

/// `METHOD path` over plain HTTP/1.1: (status, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let a = request(addr, method, path, None);
    (a.status, a.body)
}

/// The value of the series `series` (name and labels exactly as exposed), if present.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_nodes_export_the_contract_metrics() {
    let meta_metrics = format!("127.0.0.1:{}", free_port());
    let node_metrics = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start_with(
        2,
        1,
        "2+1",
        &["--metrics-listen", meta_metrics.as_str()],
        &[],
    );
    let third = cluster.add_node(1, &["--metrics-listen", node_metrics.as_str()]);
    cluster.wait_nodes_registered(3, Duration::from_secs(60));

    // Health and readiness, and nothing else.
    assert_eq!(http(&node_metrics, "GET", "/healthz").0, 200);
    assert_eq!(http(&node_metrics, "GET", "/readyz").0, 200);
    assert_eq!(http(&node_metrics, "GET", "/nope").0, 404);
    assert_eq!(http(&node_metrics, "POST", "/metrics").0, 405);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(&meta_metrics, "GET", "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "the member never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Work through the third node: an upload, a read, a request without a token.
    let client = cluster.client(third);
    let put = client
        .put_files(
            [bitmountain_client::UploadFile::from_bytes(
                "a.bin",
                vec![7u8; 300_000],
            )],
            &bitmountain_client::PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .read_file(&put.bundle_id, "a.bin")
            .await
            .unwrap()
            .len(),
        300_000
    );
    let anonymous = bitmountain_client::ArchiveClient::new([cluster.addr(third)])
        .unwrap()
        .with_credentials(cluster.meta.pki.anonymous());
    assert!(anonymous.status().await.is_err());

    let (status, node) = http(&node_metrics, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        value(&node, "bitmountain_upload_bytes_total").unwrap() >= 300_000.0,
        "{node}"
    );
    assert!(
        value(&node, "bitmountain_read_bytes_total").unwrap() >= 300_000.0,
        "{node}"
    );
    for series in [
        "bitmountain_requests_total{rpc=\"ArchiveService/PutBundle\",code=\"OK\"}",
        "bitmountain_requests_total{rpc=\"ArchiveService/GetFile\",code=\"OK\"}",
        "bitmountain_requests_total{rpc=\"ArchiveService/ClusterStatus\",code=\"UNAUTHENTICATED\"}",
    ] {
        assert!(
            value(&node, series).unwrap_or(0.0) >= 1.0,
            "{series} in:\n{node}"
        );
    }
    assert!(
        node.contains("bitmountain_request_duration_seconds_bucket{"),
        "{node}"
    );
    assert!(node.contains("bitmountain_degraded_reads_total"), "{node}");
    assert!(node.contains("bitmountain_scrub_errors_total"), "{node}");

    let (status, meta) = http(&meta_metrics, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        value(&meta, "bitmountain_raft_is_leader"),
        Some(1.0),
        "{meta}"
    );
    let p = value(&meta, "bitmountain_durability_loss_probability_per_year").unwrap();
    assert!(p > 0.0 && p < 1.0, "{meta}");
    assert!(value(&meta, "bitmountain_raft_term").unwrap() >= 1.0);
    assert!(value(&meta, "bitmountain_raft_applied_index").unwrap() >= 1.0);
    assert!(value(&meta, "bitmountain_raft_commit_index").unwrap() >= 1.0);
    assert!(value(&meta, "bitmountain_raft_leader_changes_total").unwrap() >= 1.0);
    assert_eq!(
        value(&meta, "bitmountain_bundles{state=\"sealed\"}"),
        Some(1.0),
        "{meta}"
    );
    assert_eq!(meta.matches("bitmountain_node_up{").count(), 3, "{meta}");
    assert_eq!(
        meta.matches("bitmountain_disk_capacity_bytes{").count(),
        3,
        "{meta}"
    );
    assert_eq!(
        meta.matches("bitmountain_disk_state{").count(),
        12,
        "{meta}"
    );
    assert_eq!(
        meta.lines()
            .filter(|l| l.starts_with("bitmountain_disk_state{")
                && l.contains("state=\"ok\"")
                && l.ends_with(" 1"))
            .count(),
        3,
        "{meta}"
    );
    for name in [
        "bitmountain_repair_queue_bundles",
        "bitmountain_repair_running_shards",
        "bitmountain_repair_bytes_total",
        "bitmountain_disk_used_bytes{",
        "bitmountain_requests_total{rpc=\"MetaService/Heartbeat\",code=\"OK\"}",
    ] {
        assert!(meta.contains(name), "{name} missing:\n{meta}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("member.log");
    let mut child = bitmountain_tests::bitmountain()
        .args([
            "meta",
            "--log-format",
            "json",
            "--insecure",
            "--id",
            "1",
            "--data",
        ])
        .arg(dir.path().join("m1"))
        .args(["--listen", &addr, "--bootstrap", &format!("1={addr}")])
        .env("BITMOUNTAIN_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("first admin token") {
            break text;
        }
        assert!(Instant::now() < deadline, "no admin token logged:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    // The token file's path is logged; the token itself never is.
    let token = std::fs::read_to_string(dir.path().join("m1/admin.token")).unwrap();
    assert!(!text.contains(token.trim()), "the secret reached the log");
}
