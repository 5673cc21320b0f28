//! The web console of a real storage node (`--metrics-listen ADDR`, path `/`): its JSON
//! against `bitmountain status --json`, its refusals (no token, a wrong one, a token that may
//! not see repairs or the audit trail), and the page as headless Chromium (Debian's package, installed by
//! `scripts/ensure-deps`) draws it, checked against `status --json`, with a screenshot kept
//! at `$CARGO_TARGET_DIR/test-artifacts/console.png`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bitmountain_auth::{Role, Scope};
use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::Cluster;
use bitmountain_tests::http::request;
use bitmountain_tests::meta_cluster::free_port;
use bitmountain_tests::run_ok;
use serde_json::Value;

/// `GET path` with an optional bearer token: (status, headers, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let a = request(addr, "GET", path, token);
    (a.status, a.head, a.body)
}

fn console_json(addr: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = get(addr, "/api/console", token);
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// (id, state) pairs.
type States = BTreeSet<(u64, String)>;

/// The nodes (id, state) and disks (id, state) a `status --json` or console JSON lists.
fn states_of_status(status: &Value) -> (States, States) {
    let mut nodes = BTreeSet::new();
    let mut disks = BTreeSet::new();
    for n in status["nodes"].as_array().unwrap() {
        nodes.insert((
            n["id"].as_u64().unwrap(),
            n["state"].as_str().unwrap().to_owned(),
        ));
        for d in n["disks"].as_array().unwrap() {
            disks.insert((
                d["id"].as_u64().unwrap(),
                d["state"].as_str().unwrap().to_owned(),
            ));
        }
    }
    (nodes, disks)
}

fn states_of_console(view: &Value) -> (States, States) {
    let nodes: Vec<Value> = view["zones"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|z| z["nodes"].as_array().unwrap().clone())
        .collect();
    states_of_status(&serde_json::json!({ "nodes": nodes }))
}

/// Every `<tag ...>` opening tag in `dom` whose attributes include `marker`, as its attributes.
fn tags_with(dom: &str, marker: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    for piece in dom.split('<').skip(1) {
        let Some(tag) = piece.split('>').next() else {
            continue;
        };
        if !tag.contains(marker) {
            continue;
        }
        let mut attrs = std::collections::BTreeMap::new();
        let mut rest = tag;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].rsplit(' ').next().unwrap().to_owned();
            let after = &rest[eq + 2..];
            let end = after.find('"').unwrap();
            attrs.insert(name, after[..end].to_owned());
            rest = &after[end + 1..];
        }
        out.push(attrs);
    }
    out
}

fn chromium() -> PathBuf {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("chromium is not installed: run scripts/ensure-deps (it installs Debian's chromium)");
}

/// Chromium, headless, at `url` until the page has settled: the DOM it drew, and a screenshot
/// when `screenshot` is given.
fn render(url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox", // root in a container has no user namespaces for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,1600",
        // Run the page's timers on virtual time (waiting out fetches) for up to 25 s.
        "--virtual-time-budget=25000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn artefact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_status_shows_and_asks_for_a_token() {
    let console = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start_with(0, 2, "2+1", &["--node-down-grace-ms", "2000"], &[]);
    cluster.add_node(2, &["--zone", "z1", "--metrics-listen", console.as_str()]);
    for zone in ["z1", "z2", "z3"] {
        cluster.add_node(2, &["--zone", zone]);
    }
    cluster.wait_nodes_registered(4, Duration::from_secs(60));
    let admin = cluster.meta.admin_token();
    let (_, reader) = cluster
        .meta
        .client()
        .create_token("console-reader", Role::Reader, &Scope::default(), 0)
        .await
        .unwrap();
    let reader = reader.expose_secret();
    cluster.wait_token_everywhere(&reader).await;

    // Three bundles, then a node of another zone dies: repairs and a down node to show.
    let client = cluster.client(1);
    for i in 0..3u8 {
        client
            .put_files(
                [UploadFile::from_bytes("page.tif", vec![i; 200_000])],
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    cluster.kill_node(4);
    let members = cluster.meta.endpoints().join(",");
    let status = || -> Value {
        serde_json::from_slice(&run_ok(&["status", "--cluster", &members, "--json"])).unwrap()
    };
    // Node 4 down and its shards rebuilt elsewhere: the figures hold still for a while (the
    // repair rate the durability model uses is the last minute's).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = status();
        let down = states_of_status(&s)
            .0
            .iter()
            .any(|(_, state)| state == "down");
        if down && s["repairs_queued"] == 0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never went down and healed: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The JSON: refusals first, then what each token may see.
    let (code, body) = console_json(&console, None);
    assert_eq!(
        (code, body["kind"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    let (code, body) = console_json(&console, Some("bmt_not-a-token"));
    assert_eq!(
        (code, body["kind"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    let (code, as_reader) = console_json(&console, Some(&reader));
    assert_eq!(code, 200, "{as_reader}");
    assert_eq!(as_reader["repair"]["shown"], "false");
    assert!(as_reader["repair"]["reason"]
        .as_str()
        .unwrap()
        .contains("operate"));
    assert_eq!(as_reader["audit"]["available"], false);
    assert!(as_reader["audit"]["note"]
        .as_str()
        .unwrap()
        .contains("operate"));
    assert_eq!(as_reader["audit"]["events"], serde_json::json!([]));
    let (code, view) = console_json(&console, Some(&admin));
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["repair"]["shown"], "true", "{view}");
    // The newest audit events, newest first: the three uploads' ingestions are among them.
    let audit = &view["audit"];
    assert_eq!(audit["available"], true, "{audit}");
    let events = audit["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.first().copied(), audit["head_seq"].as_u64(), "{audit}");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let ingested = events
        .iter()
        .filter(|e| e["action"] == "ingestion" && e["outcome"] == "success")
        .count();
    assert_eq!(ingested, 3, "{audit}");
    assert_eq!(states_of_console(&view), states_of_status(&status));
    assert_eq!(view["cluster_id"], status["cluster_id"]);
    assert_eq!(view["bundles"]["sealed"], status["bundles_sealed"]);
    assert_eq!(view["bundles"]["sealed"], 3);
    let zones: Vec<&str> = view["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["z1", "z2", "z3"]);
    let durability = status["durability_loss_probability_per_year"]
        .as_f64()
        .unwrap();
    assert!(durability > 0.0, "{status}");

    // The page and its files, with a policy that loads nothing from elsewhere.
    let (code, head, html) = get(&console, "/", None);
    assert_eq!(code, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(html.contains("console.js"));
    assert_eq!(get(&console, "/console.js", None).0, 200);
    assert_eq!(get(&console, "/nope", None).0, 404);

    // Chromium without a token: the page asks for one.
    let url = format!("http://{console}/");
    let dom = render(&url, None);
    let body = tags_with(&dom, "data-state=\"login\"");
    assert_eq!(body.len(), 1, "the page did not ask for a token: {dom}");

    // With the admin token (given in the fragment, which never reaches the server).
    let with_token = format!("{url}#token={admin}");
    let dom = render(&with_token, None);
    assert_eq!(
        tags_with(&dom, "data-state=\"loaded\"").len(),
        1,
        "the page did not load: {dom}"
    );
    let mut drawn_nodes = BTreeSet::new();
    let mut drawn_disks = BTreeSet::new();
    for row in tags_with(&dom, "tr class=\"node\"") {
        drawn_nodes.insert((
            row["data-node-id"].parse().unwrap(),
            row["data-state"].clone(),
        ));
    }
    for row in tags_with(&dom, "tr class=\"disk\"") {
        drawn_disks.insert((
            row["data-disk-id"].parse().unwrap(),
            row["data-state"].clone(),
        ));
    }
    assert_eq!((drawn_nodes, drawn_disks), states_of_status(&status));
    let bundles = &tags_with(&dom, "id=\"bundles\"")[0];
    assert_eq!(bundles["data-sealed"], status["bundles_sealed"].to_string());
    let drawn: f64 = tags_with(&dom, "id=\"durability\"")[0]["data-value"]
        .parse()
        .unwrap();
    // The same figure (disks' reported use moves it a little between heartbeats).
    assert!(
        (drawn / durability - 1.0).abs() < 0.1,
        "page {drawn}, status {durability}"
    );
    let zones_drawn: Vec<String> = tags_with(&dom, "class=\"zone\"")
        .iter()
        .map(|z| z["data-zone"].clone())
        .collect();
    assert_eq!(zones_drawn, ["z1", "z2", "z3"]);
    assert!(
        !tags_with(&dom, "data-healthy=\"full\"").is_empty(),
        "no redundancy table"
    );
    // Drawn newest first, from at least the newest event the JSON named (more arrive, such as
    // the refusals above, reported within a second).
    let drawn_seqs: Vec<u64> = tags_with(&dom, "tr class=\"audit\"")
        .iter()
        .map(|r| r["data-seq"].parse().unwrap())
        .collect();
    let newest = view["audit"]["head_seq"].as_u64().unwrap();
    assert!(
        drawn_seqs.first().is_some_and(|s| *s >= newest)
            && drawn_seqs.windows(2).all(|w| w[0] > w[1]),
        "audit table {drawn_seqs:?}, newest in the JSON {newest}"
    );

    // The screenshot, kept for people to look at.
    let shot = artefact_dir().join("console.png");
    let _ = std::fs::remove_file(&shot);
    render(&with_token, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "screenshot {}",
        shot.display()
    );
    eprintln!("console screenshot: {}", shot.display());
}
