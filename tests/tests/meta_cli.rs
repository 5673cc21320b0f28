//! The operator commands against real members: `status --json`, `member transfer-leader`,
//! `member set-value-format`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_tests::meta_cluster::MetaCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_transfer_leader_commands() {
    let cluster = MetaCluster::start(3, &[]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let addr = cluster.addr(if leader == 1 { 2 } else { 1 });
    let out = tokio::task::spawn_blocking(move || {
        bitmountain_tests::run_ok(&["status", "--cluster", &addr, "--json"])
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["leader_id"].as_u64(), Some(leader));
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    assert!(v["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["reachable"] == true));

    let to = if leader == 3 { 2 } else { 3 };
    let addr = cluster.addr(leader);
    let out = tokio::task::spawn_blocking(move || {
        bitmountain_tests::run_ok(&[
            "member",
            "transfer-leader",
            "--cluster",
            &addr,
            &to.to_string(),
        ])
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains(&format!("member {to}")));
    assert_eq!(
        cluster
            .wait_leader(&[1, 2, 3], Duration::from_secs(20))
            .await,
        to
    );

    // Human output names the leader.
    let addr = cluster.addr(1);
    let out = tokio::task::spawn_blocking(move || {
        bitmountain_tests::run_ok(&["status", "--cluster", &addr])
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains(&format!("leader    member {to}")));

    // A member that is down: a clear error.
    let dead = format!("127.0.0.1:{}", bitmountain_tests::meta_cluster::free_port());
    let out = tokio::task::spawn_blocking(move || {
        bitmountain_tests::run(&["status", "--cluster", &dead])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no metadata member answered"));
}

/// Runs `bitmountain member set-value-format` against `addr`; returns the process output.
async fn set_value_format(addr: String, value_format: &str) -> std::process::Output {
    let value_format = value_format.to_string();
    tokio::task::spawn_blocking(move || {
        bitmountain_tests::run(&[
            "member",
            "set-value-format",
            "--cluster",
            &addr,
            &value_format,
        ])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_format_switch_checks_every_member() {
    let mut cluster = MetaCluster::start(3, &[]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    // The first registration puts a new group on the newest format.
    bitmountain_tests::meta_cluster::register_fake_nodes(&cluster.client(), 6, 1).await;
    let addr = cluster.addr(leader);
    let status = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            bitmountain_tests::run_ok(&["status", "--cluster", &addr, "--json"])
        })
        .await
        .unwrap()
    };
    let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(v["value_format"].as_u64(), Some(3), "{v}");
    for m in v["members"].as_array().unwrap() {
        assert_eq!(m["newest_value_format"].as_u64(), Some(3), "{m}");
    }

    // The current format: every member confirms, nothing changes.
    let out = set_value_format(addr.clone(), "3").await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("value format: 3"));

    // Formats the group cannot take, each with the reason.
    let out = set_value_format(addr.clone(), "4").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reads value formats 1 to 3"), "{err}");
    let out = set_value_format(addr.clone(), "2").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never goes back"), "{err}");

    // A member that does not answer blocks the switch, by name.
    let down = if leader == 3 { 2 } else { 3 };
    cluster.kill(down);
    let out = set_value_format(addr.clone(), "3").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("member {down} at {}", cluster.addr(down)))
            && err.contains("did not answer"),
        "{err}"
    );
}

/// The first admin token is made once, by the member that leads first, into its data
/// directory (0600); `token create|list|revoke` work against the group, and the list never
/// shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_token_and_token_commands() {
    use std::os::unix::fs::PermissionsExt as _;
    let cluster = MetaCluster::start(3, &[]);
    let leader = cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let holders = loop {
        let holders: Vec<u64> = cluster
            .members
            .values()
            .filter(|m| m.data.join("admin.token").exists())
            .map(|m| m.id)
            .collect();
        if !holders.is_empty() || std::time::Instant::now() > deadline {
            break holders;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(holders, vec![leader], "exactly the first leader holds it");
    let file = cluster.members[&leader].data.join("admin.token");
    assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    let admin = std::fs::read_to_string(&file).unwrap();
    assert!(admin.trim().starts_with("bmt_") && admin.trim().len() == 85);

    let addr = cluster.addr(leader);
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--cluster", addr.as_str()]);
            bitmountain_tests::run(&all)
        };
        let created = run(&[
            "token", "create", "--role", "writer", "--label", "c=maps", "--name", "scanner",
        ]);
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        let secret = String::from_utf8(created.stdout).unwrap();
        let id = secret.trim().split('_').nth(1).unwrap().to_string();
        let refused = run(&["token", "create", "--role", "admin", "--label", "c=maps"]);
        assert!(!refused.status.success());
        let revoked = run(&["token", "revoke", &id]);
        assert!(
            revoked.status.success(),
            "{}",
            String::from_utf8_lossy(&revoked.stderr)
        );
        let listed = run(&["token", "list", "--json"]);
        assert!(listed.status.success());
        (secret, id, String::from_utf8(listed.stdout).unwrap())
    })
    .await
    .unwrap();
    let (secret, id, listed) = out;
    assert!(!listed.contains(secret.trim()) && !listed.contains(admin.trim()));
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let tokens = list.as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    let scanner = tokens.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(scanner["role"], "writer");
    assert_eq!(scanner["scope"]["c"], "maps");
    assert!(scanner["revoked_unix_ms"].as_u64().is_some());
}
