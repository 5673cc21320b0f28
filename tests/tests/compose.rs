//! The compose cluster of `deploy/compose/` on this machine's Docker engine: the image built
//! from the binary under test (`deploy/image/build`), 3 metadata members and 6 storage nodes as
//! containers on the project's own network, TLS and tokens on. From the host: a node's web
//! console, upload, list, read back byte for byte, kill a node's container, read again.
//! Everything the test started (containers, network, volumes, its image tag) is removed by
//! name at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bitmountain_tests::chaos::hosts::{compose_down, sh};
use bitmountain_tests::cluster::pseudo_random_bytes;
use bitmountain_tests::http::request;
use bitmountain_tests::{bitmountain, bitmountain_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The compose project: `docker-compose` with its name and image; `down -v` and the image tag
/// removed when dropped.
struct Project {
    name: String,
    image: String,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(repo().join("deploy/compose"))
            .args(["-f", "docker-compose.yml"])
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("BITMOUNTAIN_IMAGE", &self.image)
            .env("BITMOUNTAIN_PUBLISH", "127.0.0.1:")
            .env("BITMOUNTAIN_CONSOLE_PUBLISH", "127.0.0.1:");
        c
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        compose_down(|| self.compose());
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Runs the host's CLI against the cluster with `env` (address, CA, token).
fn cli(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = bitmountain();
    cmd.env_remove("BITMOUNTAIN_CA")
        .env_remove("BITMOUNTAIN_TOKEN_FILE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args);
    cmd.output().unwrap()
}

fn cli_ok(env: &[(String, String)], args: &[&str]) -> String {
    let out = cli(env, args);
    assert!(
        out.status.success(),
        "bitmountain {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compose_cluster_serves_the_host_cli_and_survives_a_node_kill() {
    let unique = format!(
        "bmtest{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let project = Project {
        image: format!("bitmountain:{unique}"),
        name: unique,
    };
    sh(Command::new(repo().join("deploy/image/build"))
        .args(["--tag", &project.image])
        .env("BITMOUNTAIN_BIN", bitmountain_bin()));
    // Small, and not root.
    let inspect = sh(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Size}} {{.Config.User}}",
        &project.image,
    ]));
    let (size, user) = inspect.trim().split_once(' ').unwrap();
    assert!(size.parse::<u64>().unwrap() <= 150_000_000, "{inspect}");
    assert_eq!(user, "65532:65532");
    sh(project.compose().args(["up", "-d"]));

    let client_dir = tempfile::tempdir().unwrap();
    let exports = sh(Command::new(repo().join("deploy/compose/client-env"))
        .env("COMPOSE_PROJECT_NAME", &project.name)
        .env("BITMOUNTAIN_IMAGE", &project.image)
        .env("CLIENT_DIR", client_dir.path()));
    let env: Vec<(String, String)> = exports
        .trim()
        .trim_start_matches("export ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env.len(), 3, "{exports}");

    // Every node registered (seen through n1: the members are not published).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = cli(&env, &["status", "--json"]);
        let nodes = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["nodes"].as_array().map(Vec::len));
        if nodes == Some(6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "6 nodes did not register: {nodes:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The web console of n1, published like its archive port, with the admin token.
    let console = sh(project.compose().args(["port", "n1", "9100"]));
    let token = std::fs::read_to_string(client_dir.path().join("admin.token")).unwrap();
    let answer = request(console.trim(), "GET", "/api/console", Some(token.trim()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let view: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let drawn: usize = view["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["nodes"].as_array().unwrap().len())
        .sum();
    assert_eq!(drawn, 6, "{view}");
    assert_eq!(request(console.trim(), "GET", "/", None).status, 200);

    let book = tempfile::tempdir().unwrap();
    let page = pseudo_random_bytes(7, 1_500_000);
    std::fs::create_dir_all(book.path().join("pages")).unwrap();
    std::fs::write(book.path().join("pages/0001.tif"), &page).unwrap();
    std::fs::write(book.path().join("mets.xml"), b"<mets/>").unwrap();
    let id = cli_ok(
        &env,
        &["put", book.path().to_str().unwrap(), "--label", "box=7"],
    )
    .trim()
    .to_owned();
    assert!(cli_ok(&env, &["ls", "--label", "box=7"]).contains(&id));
    let got = client_dir.path().join("p1.tif");
    let file = format!("{id}/pages/0001.tif");
    cli_ok(&env, &["get", &file, "-o", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), page);

    // A node's container killed: every byte still reads (from the other shards).
    sh(project.compose().args(["kill", "n4"]));
    let again = client_dir.path().join("p1-again.tif");
    cli_ok(&env, &["get", &file, "-o", again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&again).unwrap(), page);
    assert_eq!(cli_ok(&env, &["cat", &format!("{id}/mets.xml")]), "<mets/>");
}
