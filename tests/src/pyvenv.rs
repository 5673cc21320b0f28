//! Python tools the tests check our output with or run as clients (the Library of Congress
//! `bagit`, `kubernetes-validate`, grpcio), each in a virtualenv of its own made once and kept
//! outside the clone (`~/.cache/bitmountain/pyvenv-<name>`), with pinned versions.

use std::path::PathBuf;
use std::process::Command;

/// The virtualenv `name` holding `requirements` (pip specifiers, pinned), made if missing;
/// returns its directory.
pub fn venv(name: &str, requirements: &[String]) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let venv = home
        .join(".cache/bitmountain")
        .join(format!("pyvenv-{name}"));
    let marker = venv.join(".installed");
    if !marker.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (scripts/ensure-deps installs it)");
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(requirements)
            .status()
            .expect("pip in the virtualenv");
        assert!(
            pip.success(),
            "pip install {requirements:?} failed (is PyPI reachable?)"
        );
        std::fs::write(&marker, b"").expect("write the virtualenv's marker");
    }
    venv
}
