//! What a new user does first, as the README shows it: `bitmountain dev`, then `put`, `ls`,
//! `get`, `cat`, `export`, `status`, `rm` from the command line; stop the cluster, start it
//! again on the same data directory, and the data is still there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use bitmountain_tests::bitmountain;
use bitmountain_tests::cluster::pseudo_random_bytes;
use bitmountain_tests::http::request;
use bitmountain_tests::meta_cluster::free_port;

struct Dev {
    child: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bitmountain dev` and waits until it says it is up.
#[allow(clippy::zombie_processes)] // `Dev` kills and waits for it when dropped.
fn start_dev(data: &Path, listen: &str, config: &Path, console: Option<&str>) -> Dev {
    let mut child = bitmountain()
        .args(["dev", "--data"])
        .arg(data)
        .args(["--listen", listen])
        .args(console.map(|c| ["--console", c]).into_iter().flatten())
        .env("BITMOUNTAIN_LOG", "warn")
        .env("BITMOUNTAIN_CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the banner, so the cluster never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let up = line.contains("dev cluster is up");
                seen.push(line);
                if up {
                    return Dev { child };
                }
            }
            Err(_) => panic!("bitmountain dev did not come up; it printed: {seen:?}"),
        }
    }
}

/// Runs a command as a user would after `scripts/dev`: no flags, the client config file the dev
/// cluster wrote (at `config`), nothing from the test harness's environment.
fn cli(config: &Path, args: &[&str]) -> Output {
    bitmountain()
        .env("BITMOUNTAIN_CONFIG", config)
        .env_remove("BITMOUNTAIN_CA")
        .env_remove("BITMOUNTAIN_TOKEN")
        .env_remove("BITMOUNTAIN_TOKEN_FILE")
        .env_remove("BITMOUNTAIN_CLUSTER")
        .args(args)
        .output()
        .unwrap()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = cli(config, args);
    assert!(
        out.status.success(),
        "bitmountain {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// TLS and tokens are on: a client without the CA is told to pass one, a client without a
/// token is told it has none (`no_config`: a config file that does not exist).
fn tls_and_tokens_are_required(no_config: &Path, listen: &str, data: &Path) {
    let plain = bitmountain()
        .env("BITMOUNTAIN_CONFIG", no_config)
        .args(["ls", "--cluster", listen])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && err.contains("--ca"), "{err}");
    let ca = data.join("tls/ca/ca.pem");
    let tokenless = bitmountain()
        .env("BITMOUNTAIN_CONFIG", no_config)
        .args(["ls", "--cluster", listen, "--ca", ca.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&tokenless.stderr);
    assert!(
        !tokenless.status.success() && err.contains("token"),
        "{err}"
    );
}

#[test]
fn dev_cluster_put_ls_get_status_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let config = tmp.path().join("config.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    let book = tmp.path().join("book");
    std::fs::create_dir_all(book.join("pages")).unwrap();
    let page = pseudo_random_bytes(1, 3_000_000);
    std::fs::write(book.join("pages/0001.tif"), &page).unwrap();
    std::fs::write(book.join("pages/0002.tif"), b"second page").unwrap();
    std::fs::write(book.join("mets.xml"), b"<mets/>").unwrap();

    let console = format!("127.0.0.1:{}", free_port());
    let dev = start_dev(&data, &listen, &config, Some(&console));
    // The commands of the README, unchanged: the dev cluster wrote the client config.
    let c: [&str; 0] = [];
    let id = ok(
        &config,
        &[
            &["put", book.to_str().unwrap(), "--label", "collection=books"],
            &c[..],
        ]
        .concat(),
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 32, "put prints the bundle id: {id:?}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains(&listen), "{written}");

    tls_and_tokens_are_required(&tmp.path().join("none.toml"), &listen, &data);

    let listed = ok(
        &config,
        &[&["ls", "--label", "collection=books"], &c[..]].concat(),
    );
    assert!(listed.contains(&id), "{listed}");
    let files = ok(&config, &[&["ls", id.as_str()], &c[..]].concat());
    assert!(
        files.contains("pages/0001.tif") && files.contains("mets.xml"),
        "{files}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(
        &config,
        &[&["ls", id.as_str(), "--json"], &c[..]].concat(),
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let out = tmp.path().join("page1.tif");
    let file = format!("{id}/pages/0001.tif");
    ok(
        &config,
        &[&["get", file.as_str(), "-o", out.to_str().unwrap()], &c[..]].concat(),
    );
    assert_eq!(std::fs::read(&out).unwrap(), page);
    let cat = cli(
        &config,
        &[&["cat", &format!("{id}/pages/0002.tif")], &c[..]].concat(),
    );
    assert_eq!(cat.stdout, b"second page");

    let export = tmp.path().join("book.bundle");
    ok(
        &config,
        &[
            &["export", id.as_str(), "-o", export.to_str().unwrap()],
            &c[..],
        ]
        .concat(),
    );
    // The offline tool verifies the exported bundle.
    ok(&config, &["bundle", "verify", export.to_str().unwrap()]);

    let status: serde_json::Value =
        serde_json::from_str(&ok(&config, &[&["status", "--json"], &c[..]].concat())).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(status["bundles_sealed"], 1);
    // The web console of `--console`, with the admin token the dev cluster made.
    let token = std::fs::read_to_string(
        bitmountain_tests::pki::find_admin_token(&data).expect("the admin token"),
    )
    .unwrap();
    let answer = request(&console, "GET", "/api/console", Some(token.trim()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let view: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(view["bundles"]["sealed"], 1);
    let human = ok(&config, &[&["status"], &c[..]].concat());
    assert!(human.contains("nodes     6"), "{human}");

    // Errors an operator can act on.
    let missing = cli(
        &config,
        &[&["get", &format!("{id}/nope.tif")], &c[..]].concat(),
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("nope.tif") && err.contains("bitmountain ls"),
        "{err}"
    );

    // Stop and start again on the same data: the bundle is still there.
    drop(dev);
    let dev = start_dev(&data, &listen, &config, None);
    let again = tmp.path().join("page1-again.tif");
    ok(
        &config,
        &[
            &["get", file.as_str(), "-o", again.to_str().unwrap()],
            &c[..],
        ]
        .concat(),
    );
    assert_eq!(std::fs::read(&again).unwrap(), page);

    ok(
        &config,
        &[&["rm", id.as_str(), "--reason", "dev test"], &c[..]].concat(),
    );
    let gone = cli(&config, &[&["cat", &file], &c[..]].concat());
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
    drop(dev);
    // The embedded member's state holds together (`bitmountain meta check`).
    bitmountain_tests::meta_cluster::check_member_data(&data.join("meta"));
}
