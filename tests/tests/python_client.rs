//! A client we did not write: Python stubs generated from `proto/archive.proto` with
//! grpcio-tools (from PyPI, in a virtualenv of their own) upload a bundle to a real cluster and
//! read it back through the public API (`tests/python/archive_client.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bitmountain_tests::cluster::Cluster;

/// Pinned so every run generates and runs the same stubs.
const GRPC_VERSION: &str = "1.85.1";

/// The virtualenv with grpcio-tools, made once and kept outside the clone.
fn venv() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home
        .join(".cache/bitmountain")
        .join(format!("pyvenv-grpc-{GRPC_VERSION}"));
    let python = dir.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 (scripts/ensure-deps installs it)");
        assert!(made.success(), "python3 -m venv {} failed", dir.display());
        let installed = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(format!("grpcio=={GRPC_VERSION}"))
            .arg(format!("grpcio-tools=={GRPC_VERSION}"))
            .arg(format!("grpcio-health-checking=={GRPC_VERSION}"))
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install of grpcio-tools failed (is PyPI reachable?)"
        );
    }
    python
}

#[test]
fn python_grpc_client_uploads_and_reads_back() {
    let python = venv();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let stubs = tempfile::tempdir().unwrap();
    let generated = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(proto.join("archive.proto"))
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "grpc_tools.protoc: {}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let cluster = Cluster::start(3, 1, "2+1");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/archive_client.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(stubs.path())
        .arg(cluster.addr(2))
        .arg(cluster.meta.pki.ca_file())
        .arg(bitmountain_tests::pki::find_admin_token(cluster.meta.dir.path()).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}{}\n--- node 2 log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.node_log_tail(2, 30)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"], 7);
    // The bundle the Python client wrote is there for the Rust client too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = summary["bundle_id"].as_str().unwrap();
    let data = rt
        .block_on(cluster.client(1).read_file(id, "notes/Übersicht – été.txt"))
        .unwrap();
    assert_eq!(data, "Grüße aus Python\n".as_bytes());
}
