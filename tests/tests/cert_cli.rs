//! `bitmountain cert init|issue` as an operator runs them: the real binary, the files it writes
//! and their modes, and its refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use bitmountain_tests::{run, run_ok};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary, asserts it failed, returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "bitmountain {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_and_issue_write_the_tls_dir_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = text(run_ok(&["cert", "init", "--dir", path(&ca)]));
    assert!(out.contains("ca.pem") && out.contains("ca.key"), "{out}");
    assert!(fs::read_to_string(ca.join("ca.pem"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca), 0o700);
    let ca_pem = fs::read(ca.join("ca.pem")).unwrap();
    let ca_key = fs::read(ca.join("ca.key")).unwrap();

    // A second init leaves the CA as it was.
    let err = fails(&["cert", "init", "--dir", path(&ca)]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(ca.join("ca.key")).unwrap(), ca_key);

    let m1 = tmp.path().join("m1");
    let json = text(run_ok(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "m1",
        "--role",
        "meta",
        "--host",
        "127.0.0.1,meta1.example",
        "-o",
        path(&m1),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["uri"], "spiffe://bitmountain/meta/m1", "{json}");
    assert_eq!(v["role"], "meta");
    assert_eq!(
        v["hosts"],
        serde_json::json!(["127.0.0.1", "meta1.example"])
    );

    let n1 = tmp.path().join("n1");
    let out = text(run_ok(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "node",
        "--host",
        "10.0.0.5",
        "--host",
        "node1",
        "-o",
        path(&n1),
    ]));
    assert!(out.contains("node n1's certificate"), "{out}");
    assert!(out.contains("spiffe://bitmountain/node/n1"), "{out}");
    assert!(out.contains("--tls-dir"), "{out}");

    for dir in [&m1, &n1] {
        assert!(fs::read_to_string(dir.join("cert.pem"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(fs::read_to_string(dir.join("key.pem"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_pem);
    }

    // Issuing over an existing certificate is refused; the old files stay.
    let cert_before = fs::read(n1.join("cert.pem")).unwrap();
    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "node",
        "--host",
        "10.0.0.5",
        "-o",
        path(&n1),
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(n1.join("cert.pem")).unwrap(), cert_before);
}

#[test]
fn bad_issue_requests_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("out");
    // No CA yet.
    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "node",
        "--host",
        "127.0.0.1",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("cert init"), "{err}");
    run_ok(&["cert", "init", "--dir", path(&ca)]);

    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "admin",
        "--host",
        "127.0.0.1",
        "-o",
        path(&out),
    ]);
    assert!(
        err.contains("unknown role") && err.contains("meta or node"),
        "{err}"
    );

    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "node",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("--host"), "{err}");

    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "n1",
        "--role",
        "node",
        "--host",
        "10.0.0.1:7700",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("without a port"), "{err}");

    let err = fails(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca),
        "--name",
        "../n1",
        "--role",
        "node",
        "--host",
        "127.0.0.1",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("invalid name"), "{err}");
    assert!(!out.exists(), "nothing written on refusal");
}
