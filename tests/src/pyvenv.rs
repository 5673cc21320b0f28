//! Python tools the tests check our output with (the Library of Congress `bagit`,
//! `kubernetes-validate`), each in a virtualenv of its own made once and kept outside the clone
//! (`~/.cache/bitmountain/pyvenv-<package>-<version>`), pinned to one version.

use std::path::PathBuf;
use std::process::Command;

/// The virtualenv holding `package==version`, made if missing; returns its directory.
pub fn venv(package: &str, version: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .expect("HOME is set");
    let venv = home
        .join(".cache/bitmountain")
        .join(format!("pyvenv-{package}-{version}"));
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
            .arg(format!("{package}=={version}"))
            .status()
            .expect("pip in the virtualenv");
        assert!(pip.success(), "pip install {package}=={version}");
        std::fs::write(&marker, b"").expect("write the virtualenv's marker");
    }
    venv
}
