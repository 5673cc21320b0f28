//! The audit trail with the real binary on a TLS cluster: every action on content and cluster
//! is an event with the agent that did it — uploads, retention, holds, deletes with their
//! reasons, refusals (a hold, a scope, a bad token), fixity checks, a repair, disk state
//! changes, token changes, node registrations — reads go to the node's own access log, the
//! listing filters by bundle, agent and action, and `audit verify` finds the chain intact online
//! and on a stopped member's data. (An event edited in RocksDB is caught by the same walk:
//! `state::tests::audit_verify_names_the_first_edited_event`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitmountain_auth::{Role, Scope};
use bitmountain_client::{ArchiveClient, PutOptions, UploadFile};
use bitmountain_meta_client::DiskState;
use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::{run, run_ok};
use serde_json::Value;

const CODE: &str = "2+1:65536";

/// Every event, as `audit --json` prints them (with `filter` arguments).
fn audit(cluster: &Cluster, filter: &[&str]) -> Vec<Value> {
    let addr = cluster.meta.addr(1);
    let mut args = vec!["audit", "--json", "--cluster", addr.as_str()];
    args.extend_from_slice(filter);
    String::from_utf8(run_ok(&args))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first event with `action`, `outcome` and an agent whose printed form contains `agent`
/// (and, if given, about `bundle`), waiting for it up to 60 s (reported events arrive within
/// about a second; a repair takes longer).
fn wait_event(
    cluster: &Cluster,
    action: &str,
    outcome: &str,
    agent: &str,
    bundle: Option<&str>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = audit(cluster, &["--action", action]);
        let found = events.iter().find(|e| {
            e["outcome"] == outcome
                && agent_text(e).contains(agent)
                && bundle.is_none_or(|b| e["bundle"] == b)
        });
        if let Some(e) = found {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {action}/{outcome} event by {agent} about {bundle:?}; {action} events: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent_text(e: &Value) -> String {
    format!(
        "{}:{} ({})",
        e["agent"]["kind"].as_str().unwrap_or(""),
        e["agent"]["id"].as_str().unwrap_or(""),
        e["agent"]["name"].as_str().unwrap_or("")
    )
}

async fn put(client: &ArchiveClient, seed: u64, shelf: &str) -> String {
    let files = sample_files(3, seed)
        .into_iter()
        .map(|(p, b)| UploadFile::from_bytes(p, b));
    let options = PutOptions {
        labels: [("shelf".to_owned(), shelf.to_owned())].into(),
        ..PutOptions::default()
    };
    client.put_files(files, &options).await.unwrap().bundle_id
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_is_an_event_with_its_agent_and_the_chain_verifies() {
    let mut cluster = Cluster::start(3, 1, CODE);
    let admin = cluster.meta.client();
    let mut secrets = Vec::new();
    for (name, role, scope) in [
        ("scanner", Role::Writer, vec![]),
        ("curator", Role::Curator, vec![]),
        ("shelf-c-reader", Role::Reader, vec!["shelf=C"]),
    ] {
        let scope = Scope::parse(scope).unwrap();
        let (_, t) = admin.create_token(name, role, &scope, 0).await.unwrap();
        secrets.push(t.expose_secret());
    }
    cluster.wait_token_everywhere(&secrets[2]).await;
    let as_token = |secret: &str| {
        ArchiveClient::new([cluster.addr(1)])
            .unwrap()
            .with_credentials(cluster.meta.pki.with_token(secret))
    };
    let (scanner, curator, reader) = (
        as_token(&secrets[0]),
        as_token(&secrets[1]),
        as_token(&secrets[2]),
    );

    // Uploads: ingestion by the uploading token.
    let a = put(&scanner, 1, "A").await;
    let b = put(&scanner, 2, "B").await;
    let e = wait_event(&cluster, "ingestion", "success", "(scanner)", Some(&a));
    assert!(e["detail"].as_str().unwrap().contains("3 files"), "{e}");

    // Retention and holds: policy assignments; a held bundle's delete refused, then done.
    let until = bitmountain_meta_client::types::now_unix_ms() + 1_000;
    curator.set_retention(&a, until).await.unwrap();
    curator
        .set_legal_hold(&a, true, "litigation 2026-17")
        .await
        .unwrap();
    let refused = curator.delete(&a, "weeding").await.unwrap_err();
    assert_eq!(refused.kind(), Some("legal_hold"), "{refused}");
    let e = wait_event(&cluster, "deletion", "refused", "(curator)", Some(&a));
    assert!(e["detail"].as_str().unwrap().contains("litigation"), "{e}");
    curator
        .set_legal_hold(&a, false, "case closed")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the retention
    curator.delete(&a, "duplicate scan").await.unwrap();
    let e = wait_event(&cluster, "deletion", "success", "(curator)", Some(&a));
    assert!(
        e["detail"].as_str().unwrap().contains("duplicate scan"),
        "{e}"
    );
    let policy = audit(&cluster, &["--bundle", &a, "--action", "policy assignment"]);
    let details: Vec<&str> = policy
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        policy.len(),
        3,
        "retention, hold set, hold cleared: {details:?}"
    );
    assert!(details[0].starts_with("retention until"), "{details:?}");
    assert!(
        details[1].contains("legal hold set: litigation 2026-17"),
        "{details:?}"
    );
    assert!(
        details[2].contains("legal hold cleared: case closed"),
        "{details:?}"
    );
    // The bundle's whole history, in order, and nothing about another bundle.
    let history = audit(&cluster, &["--bundle", &a]);
    let actions: Vec<&str> = history
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "ingestion",
            "policy assignment",
            "policy assignment",
            "deletion",
            "policy assignment",
            "deletion"
        ]
    );
    assert!(history.iter().all(|e| e["bundle"] == a.as_str()));

    // Governance mode: only an admin may shorten a retention, with a reason, audited.
    let far = bitmountain_meta_client::types::now_unix_ms() + 86_400_000;
    curator.set_retention(&b, far).await.unwrap();
    let e = curator
        .shorten_retention(&b, 0, "set by mistake")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("permission_denied"), "{e}");
    wait_event(
        &cluster,
        "policy assignment",
        "refused",
        "(curator)",
        Some(&b),
    );
    let plain = curator.set_retention(&b, far - 1).await.unwrap_err();
    assert_eq!(plain.kind(), Some("invalid_argument"), "{plain}");
    let admin_client = cluster.client(1);
    let info = admin_client
        .shorten_retention(&b, 0, "set by mistake (ticket 4411)")
        .await
        .unwrap();
    assert_eq!(info.retain_until_unix_ms, 0);
    let e = wait_event(&cluster, "policy assignment", "success", "admin", Some(&b));
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("governance mode: set by mistake (ticket 4411)"),
        "{detail}"
    );

    // A read outside the reader's scope (shelf C; the bundle is on shelf B) is refused by the
    // node, which reports it.
    let mut sink = Vec::new();
    let path = &sample_files(3, 2)[0].0;
    reader
        .get_file(&b, path, 0, None, &mut sink)
        .await
        .unwrap_err();
    let e = wait_event(
        &cluster,
        "dissemination",
        "refused",
        "(shelf-c-reader)",
        Some(&b),
    );
    assert!(e["source"].as_str().unwrap().starts_with("node:"), "{e}");
    // A token the group never made is refused by the layer, recorded by its id.
    let bogus = format!("bmt_00112233445566ff_{}", "0".repeat(64));
    let stranger = ArchiveClient::new([cluster.addr(2)])
        .unwrap()
        .with_credentials(cluster.meta.pki.with_token(&bogus));
    assert!(stranger.status().await.is_err());
    wait_event(
        &cluster,
        "request",
        "refused",
        "token:00112233445566ff",
        None,
    );

    // Reads go to the node's access log, not to the group.
    let mut bytes = Vec::new();
    scanner
        .get_file(&b, path, 0, None, &mut bytes)
        .await
        .unwrap();
    let log = cluster
        .meta
        .dir
        .path()
        .join("node1/state/access-log/reads.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["bundle"] == b.as_str()
                && v["path"] == path.as_str()
                && v["agent"].as_str().unwrap().contains("(scanner)")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read not in {}: {text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(audit(&cluster, &["--action", "dissemination"])
        .iter()
        .all(|e| e["outcome"] == "refused"));

    // A fixity check run by a node, recorded with the admin token as its agent.
    let addr = cluster.addr(3);
    run_ok(&["fixity", "check", "--bundle", &b, "--cluster", &addr]);
    let e = wait_event(&cluster, "fixity check", "success", "admin", Some(&b));
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("every SHA-256 matches"),
        "{e}"
    );

    // A lost shard found by a scrub and rebuilt: replication by system:repair.
    let shards = cluster.bundle_shards(&b);
    std::fs::remove_file(&shards[0].2).unwrap();
    run_ok(&["scrub", "--cluster", &cluster.addr(1)]);
    let e = wait_event(
        &cluster,
        "replication",
        "success",
        "system:repair",
        Some(&b),
    );
    assert!(e["detail"].as_str().unwrap().contains("rebuilt"), "{e}");

    // Operator and admin changes: a disk's state, a token revoked; nodes registered.
    let status = admin.cluster_status().await.unwrap();
    let disk = status.nodes[0].disks[0].disk_id;
    admin
        .set_disk_state(disk, DiskState::Draining)
        .await
        .unwrap();
    admin.set_disk_state(disk, DiskState::Ok).await.unwrap();
    let changes = audit(&cluster, &["--action", "disk state change"]);
    assert!(changes.len() >= 2, "{changes:#?}");
    assert!(
        changes.iter().all(|e| agent_text(e).contains("admin")),
        "{changes:#?}"
    );
    let (_, t) = admin
        .create_token("temp", Role::Reader, &Scope::default(), 0)
        .await
        .unwrap();
    admin.revoke_token(t.id()).await.unwrap();
    wait_event(&cluster, "token creation", "success", "admin", None);
    let e = wait_event(&cluster, "token revocation", "success", "admin", None);
    assert_eq!(e["object"], format!("token {}", t.id()));
    let first = audit(&cluster, &["--action", "token creation"]);
    assert!(
        first
            .iter()
            .any(|e| agent_text(e).contains("system:bootstrap")),
        "{first:#?}"
    );
    let registered = audit(&cluster, &["--action", "node registration"]);
    assert!(registered.len() >= 3, "{registered:#?}");
    assert!(
        registered.iter().all(|e| e["agent"]["kind"] == "node"),
        "{registered:#?}"
    );

    // Agent filters, time filters, a limit, text output.
    let by_curator = audit(&cluster, &["--agent", "curator"]);
    assert!(by_curator.len() >= 6, "{by_curator:#?}");
    assert!(by_curator
        .iter()
        .all(|e| agent_text(e).contains("(curator)")));
    assert!(audit(&cluster, &["--since", "2h", "--limit", "2"]).len() == 2);
    assert!(audit(&cluster, &["--until", "2001-01-01"]).is_empty());
    let text = String::from_utf8(run_ok(&[
        "audit",
        "--bundle",
        &a,
        "--cluster",
        &cluster.meta.addr(1),
    ]))
    .unwrap();
    assert!(
        text.contains("deletion") && text.contains("duplicate scan"),
        "{text}"
    );
    let bad = run(&[
        "audit",
        "--action",
        "frobnicate",
        "--cluster",
        &cluster.meta.addr(1),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fixity check"));

    // The chain, online and on the stopped member's data.
    let out = String::from_utf8(run_ok(&[
        "audit",
        "verify",
        "--cluster",
        &cluster.meta.addr(1),
    ]))
    .unwrap();
    assert!(out.contains("audit trail intact"), "{out}");
    let events = audit(&cluster, &[]).len();
    for i in 1..=cluster.nodes.len() {
        cluster.kill_node(i);
    }
    cluster.meta.kill(1);
    let data = cluster.meta.members[&1].data.clone();
    let report: Value = serde_json::from_slice(&run_ok(&[
        "audit",
        "verify",
        "--json",
        "--data",
        data.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(report["first_break"], Value::Null, "{report}");
    assert!(
        report["events"].as_u64().unwrap() >= events as u64,
        "{report}"
    );
}
