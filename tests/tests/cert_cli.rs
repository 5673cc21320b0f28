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

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cert issue` with these values; `None` leaves the option out.
fn issue_args<'a>(
    ca: &'a Path,
    name: &'a str,
    role: &'a str,
    host: Option<&'a str>,
    out: &'a Path,
) -> Vec<&'a str> {
    let mut args = vec!["cert", "issue", "--ca-dir", path(ca), "--name", name];
    args.extend(["--role", role, "-o", path(out)]);
    if let Some(h) = host {
        args.extend(["--host", h]);
    }
    args
}

/// Runs the binary, asserts it failed, returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "bitmountain {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn starts_with(file: &Path, text: &str) -> bool {
    fs::read_to_string(file).unwrap().starts_with(text)
}

#[test]
fn init_and_issue_write_the_tls_dir_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = String::from_utf8(run_ok(&["cert", "init", "--dir", path(&ca)])).unwrap();
    assert!(out.contains("ca.pem") && out.contains("ca.key"), "{out}");
    assert!(starts_with(
        &ca.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----"
    ));
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca), 0o700);
    let ca_pem = fs::read(ca.join("ca.pem")).unwrap();
    let ca_key = fs::read(ca.join("ca.key")).unwrap();

    // A second init leaves the CA as it was.
    let err = fails(&["cert", "init", "--dir", path(&ca)]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(ca.join("ca.key")).unwrap(), ca_key);

    let m1 = tmp.path().join("m1");
    let mut args = issue_args(&ca, "m1", "meta", Some("127.0.0.1,meta1.example"), &m1);
    args.push("--json");
    let json = String::from_utf8(run_ok(&args)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["uri"], "spiffe://bitmountain/meta/m1", "{json}");
    assert_eq!(v["role"], "meta");
    assert_eq!(
        v["hosts"],
        serde_json::json!(["127.0.0.1", "meta1.example"])
    );

    // --host given twice adds up.
    let n1 = tmp.path().join("n1");
    let mut args = issue_args(&ca, "n1", "node", Some("10.0.0.5"), &n1);
    args.extend(["--host", "node1"]);
    let out = String::from_utf8(run_ok(&args)).unwrap();
    assert!(out.contains("node n1's certificate"), "{out}");
    assert!(out.contains("spiffe://bitmountain/node/n1"), "{out}");
    assert!(out.contains("10.0.0.5, node1"), "{out}");
    assert!(out.contains("--tls-dir"), "{out}");

    for dir in [&m1, &n1] {
        assert!(starts_with(
            &dir.join("cert.pem"),
            "-----BEGIN CERTIFICATE-----"
        ));
        assert!(starts_with(
            &dir.join("key.pem"),
            "-----BEGIN PRIVATE KEY-----"
        ));
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_pem);
    }

    // Issuing over an existing certificate is refused; the old files stay.
    let cert_before = fs::read(n1.join("cert.pem")).unwrap();
    let err = fails(&issue_args(&ca, "n1", "node", Some("10.0.0.5"), &n1));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(n1.join("cert.pem")).unwrap(), cert_before);
}

#[test]
fn bad_issue_requests_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("out");
    let err = fails(&issue_args(&ca, "n1", "node", Some("127.0.0.1"), &out));
    assert!(err.contains("no CA") && err.contains("cert init"), "{err}");
    run_ok(&["cert", "init", "--dir", path(&ca)]);

    for (name, role, host, expected) in [
        (
            "n1",
            "admin",
            Some("127.0.0.1"),
            "unknown role \"admin\": expected meta or node",
        ),
        ("n1", "node", None, "--host"),
        ("n1", "node", Some(""), "no host"),
        ("n1", "node", Some("10.0.0.1:7700"), "without a port"),
        ("../n1", "node", Some("127.0.0.1"), "invalid name"),
    ] {
        let err = fails(&issue_args(&ca, name, role, host, &out));
        assert!(err.contains(expected), "{name} {role} {host:?}: {err}");
    }
    assert!(!out.exists(), "nothing written on refusal");
}
