//! Shared helpers for the integration tests in `tests/tests/`: locating the real `bitmountain`
//! binary and running it as a process.
//!
//! The binary is found through `BITMOUNTAIN_BIN` or next to the test executable in the cargo
//! target directory (`scripts/test` builds it first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod chaos;
pub mod cluster;
pub mod http;
pub mod meta_cluster;
pub mod pki;
pub mod pyvenv;
pub mod upload;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path to the `bitmountain` binary under test.
pub fn bitmountain_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BITMOUNTAIN_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let candidate = profile_dir.join("bitmountain");
    assert!(
        candidate.exists(),
        "bitmountain binary not found at {}: run `cargo build --bin bitmountain` first or set BITMOUNTAIN_BIN",
        candidate.display()
    );
    candidate
}

/// A `Command` for the binary under test. Client commands get the current test cluster's CA
/// and admin token ([`pki`]); a config file of the machine's user is never read.
pub fn bitmountain() -> Command {
    let mut cmd = Command::new(bitmountain_bin());
    cmd.env(
        "BITMOUNTAIN_CONFIG",
        "/nonexistent/bitmountain-test-config.toml",
    );
    if let Some((ca, token)) = pki::current() {
        cmd.env("BITMOUNTAIN_CA", ca);
        if let Some(token) = token {
            cmd.env("BITMOUNTAIN_TOKEN_FILE", token);
        }
    }
    cmd
}

/// Runs the binary with `args` and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    bitmountain()
        .args(args)
        .output()
        .expect("spawn bitmountain")
}

/// Runs the binary and asserts it succeeded; returns stdout.
pub fn run_ok(args: &[&str]) -> Vec<u8> {
    let out = run(args);
    assert!(
        out.status.success(),
        "bitmountain {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the future `make` returns on a runtime of its own, in a thread of its own: callable from
/// sync code and from inside a tokio runtime alike (clients made inside belong to that runtime).
pub fn on_own_runtime<T, F, Fut>(make: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        })
        .join()
        .expect("runtime thread")
    })
}

/// A benchmark's size or count from the environment variable `name`, `default` when it is
/// unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) process `pid` has used, in clock ticks (1/100 s); 0 if it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// The `x-bitmountain-error` kind of a status a node or member sent ("" when absent).
pub fn error_kind(status: &tonic::Status) -> String {
    bitmountain_proto::error_kind::kind_header(status)
        .unwrap_or("")
        .to_string()
}
