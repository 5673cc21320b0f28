//! The deployment files outside the compose cluster, checked offline: the systemd units by
//! `systemd-analyze verify` (and their hardening), the Kubernetes manifests against the
//! Kubernetes schemas (PyPI `kubernetes-validate`, strict), every flag any of them passes to
//! `bitmountain` against the binary's own `--help`, the alert rules by `promtool` (and their
//! unit tests), and the dashboard's and the alerts' metric names against the contract in
//! `docs/formats.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bitmountain_tests::bitmountain_bin;

const KUBERNETES_VALIDATE: &str = "1.31.0";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The `--flags` of `bitmountain SUBCOMMAND --help`.
fn flags_of(subcommand: &str) -> String {
    let out = Command::new(bitmountain_bin())
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Every `--flag` in `text` after `subcommand` is one `bitmountain SUBCOMMAND` knows.
fn assert_flags_known(text: &str, subcommand: &str, origin: &Path) {
    let help = flags_of(subcommand);
    for word in text.split(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | '[' | ']')) {
        let Some(flag) = word.strip_prefix("--") else {
            continue;
        };
        let flag = flag.split('=').next().unwrap();
        if flag.is_empty() || !flag.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        assert!(
            help.contains(&format!("--{flag}")),
            "{}: `bitmountain {subcommand}` has no --{flag}",
            origin.display()
        );
    }
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let units = files(&deploy().join("systemd"), "service");
    assert_eq!(units.len(), 2);
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        for directive in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=",
            "Restart=on-failure",
            "User=bitmountain",
            "--tls-dir",
        ] {
            assert!(
                text.contains(directive),
                "{}: no {directive}",
                unit.display()
            );
        }
        let subcommand = if text.contains("bitmountain meta ") {
            "meta"
        } else {
            "node"
        };
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_flags_known(exec, subcommand, unit);
        // verify checks that the command exists: point it at the binary under test.
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(
            &copy,
            text.replace(
                "/usr/local/bin/bitmountain",
                bitmountain_bin().to_str().unwrap(),
            ),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(files(dir.path(), "service"))
        .output()
        .expect("systemd-analyze (systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify reports unknown or malformed settings as warnings and still exits 0.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// kubernetes-validate, in a virtualenv of its own.
fn kubernetes_validate() -> PathBuf {
    bitmountain_tests::pyvenv::venv(
        &format!("kubernetes-validate-{KUBERNETES_VALIDATE}"),
        &[format!("kubernetes-validate=={KUBERNETES_VALIDATE}")],
    )
    .join("bin/kubernetes-validate")
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let dir = deploy().join("kubernetes");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let manifests: Vec<PathBuf> = files(&dir, "yaml")
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    assert!(manifests.len() >= 5);
    for m in &manifests {
        let name = m.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(&format!("- {name}")),
            "kustomization.yaml does not list {name}"
        );
        let text = std::fs::read_to_string(m).unwrap();
        for (kind, subcommand) in [("name: meta\n", "meta"), ("name: node\n", "node")] {
            if text.contains("kind: StatefulSet") && text.contains(kind) {
                assert!(text.contains("readinessProbe") && text.contains("livenessProbe"));
                assert_flags_known(
                    &text[text.find("args:").unwrap()..text.find("ports:").unwrap()],
                    subcommand,
                    m,
                );
            }
        }
    }
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(&manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric names `docs/formats.md` lists (the contract), from its "Metrics" tables.
fn contract_names() -> Vec<String> {
    let formats =
        std::fs::read_to_string(deploy().join("../docs/formats.md")).expect("docs/formats.md");
    let start = formats.find("#### Metrics").expect("a Metrics section");
    let section = &formats[start..];
    let section = &section[..section[4..].find("####").map_or(section.len(), |e| e + 4)];
    let mut names = Vec::new();
    let mut stem = String::new();
    for cell in section.split('`') {
        if let Some(rest) = cell.strip_prefix("bitmountain_") {
            let name = format!("bitmountain_{rest}");
            stem = name
                .rsplit_once('_')
                .map_or(name.clone(), |(s, _)| s.to_owned());
            names.push(name);
        } else if let Some(suffix) = cell.strip_prefix('_') {
            // `bitmountain_raft_term`, `_is_leader`, ...: after the stem of the row's first name.
            names.push(format!("{stem}_{suffix}"));
        }
    }
    names
}

/// Every `bitmountain_...` name an expression uses is in the contract (histogram series by
/// their family's name).
fn assert_names_in_contract(expr: &str, contract: &[String], origin: &str) {
    for (i, _) in expr.match_indices("bitmountain_") {
        let name: String = expr[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_count"))
            .or_else(|| name.strip_suffix("_sum"))
            .unwrap_or(&name);
        assert!(
            contract.iter().any(|c| c == family),
            "{origin}: {name} is not a contract metric ({contract:?})"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    let promtool = home.join(".cache/bitmountain/tools/promtool");
    assert!(
        promtool.exists(),
        "{} missing: scripts/ensure-deps fetches it",
        promtool.display()
    );
    let dir = deploy().join("prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"][..],
    ] {
        let out = Command::new(&promtool)
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let contract = contract_names();
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        assert_names_in_contract(line, &contract, "alerts.yml");
    }
    for alert in [
        "BitMountainNoLeader",
        "BitMountainNodeDown",
        "BitMountainDiskFailed",
        "BitMountainBundlesDegraded",
        "BitMountainRepairStalled",
        "BitMountainScrubErrors",
        "BitMountainDiskFilling",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

#[test]
fn the_dashboard_uses_only_contract_metrics() {
    let text = std::fs::read_to_string(deploy().join("grafana/bitmountain.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let contract = contract_names();
    assert!(contract.len() >= 20, "{contract:?}");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for t in targets {
            assert_names_in_contract(t["expr"].as_str().unwrap(), &contract, "bitmountain.json");
        }
    }
}
