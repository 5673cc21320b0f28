//! A client we did not write: Python stubs generated from `proto/archive.proto` with
//! grpcio-tools (from PyPI, in a virtualenv of their own) upload a bundle to a real cluster and
//! read it back through the public API (`tests/python/archive_client.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bitmountain_tests::cluster::Cluster;

/// Pinned so every run generates and runs the same stubs.
const GRPC_VERSION: &str = "1.85.1";

/// The virtualenv's Python with grpcio-tools.
fn venv() -> PathBuf {
    let requirements = ["grpcio", "grpcio-tools", "grpcio-health-checking"]
        .map(|p| format!("{p}=={GRPC_VERSION}"));
    bitmountain_tests::pyvenv::venv(&format!("grpc-{GRPC_VERSION}"), &requirements)
        .join("bin/python")
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
