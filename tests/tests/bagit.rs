//! BagIt in and out with the real binary, judged by the Library of Congress `bagit` library
//! (PyPI, pinned): a bag it makes is accepted by `put --bagit` (labels from bag-info on request)
//! and comes back from `export --bagit` byte for byte; a bundle that was never a bag exports as
//! a bag the library validates; bags with a wrong digest, a missing or extra payload file, or a
//! bad Payload-Oxum are refused before anything is uploaded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bitmountain_tests::cluster::{sample_files, Cluster};
use bitmountain_tests::{run, run_ok};

const BAGIT: &str = "1.9.0";

fn python() -> PathBuf {
    bitmountain_tests::pyvenv::venv(&format!("bagit-{BAGIT}"), &[format!("bagit=={BAGIT}")])
        .join("bin/python")
}

/// Runs Python with the bagit library; panics with its output if it fails.
fn py(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bag made by the library from some sample files (payload manifests in SHA-256 and SHA-512).
fn make_bag(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for (path, bytes) in sample_files(4, seed) {
        let p = dir.join(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    py(
        "import bagit, sys; bagit.make_bag(sys.argv[1], \
         {'Source-Organization': 'Test Archive', 'External-Identifier': 'book-17'}, \
         checksums=['sha256', 'sha512'])",
        &[dir],
    );
}

fn validate_with_library(dir: &Path) {
    py(
        "import bagit, sys; bagit.Bag(sys.argv[1]).validate(); print('valid')",
        &[dir],
    );
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn bundles(addr: &str) -> usize {
    let out = run_ok(&["ls", "--json", "--cluster", addr]);
    serde_json::from_slice::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .map_or(0, Vec::len)
}

fn put_bag(addr: &str, bag: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "put",
        "--bagit",
        bag.to_str().unwrap(),
        "--json",
        "--cluster",
        addr,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn bags_go_in_valid_and_come_out_valid() {
    let cluster = Cluster::start(3, 1, "2+1:65536");
    let addr = cluster.addr(1);
    let work = tempfile::tempdir().unwrap();

    // A bag the library made: accepted, with a label from bag-info, and back byte for byte.
    let bag = work.path().join("bag");
    make_bag(&bag, 31);
    let out = put_bag(
        &addr,
        &bag,
        &["--label-from-bag-info", "External-Identifier"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = put["bundle_id"].as_str().unwrap().to_owned();
    let stat: serde_json::Value =
        serde_json::from_slice(&run_ok(&["ls", "--json", "--cluster", &addr])).unwrap();
    let record = stat
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bundle_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        record["labels"]["External-Identifier"], "book-17",
        "{record}"
    );
    let back = work.path().join("back");
    run_ok(&[
        "export",
        &id,
        "--bagit",
        "-o",
        back.to_str().unwrap(),
        "--cluster",
        &addr,
    ]);
    assert_eq!(tree(&back), tree(&bag), "the bag comes back byte for byte");
    validate_with_library(&back);
    let again = run(&[
        "export",
        &id,
        "--bagit",
        "-o",
        back.to_str().unwrap(),
        "--cluster",
        &addr,
    ]);
    assert!(
        !again.status.success(),
        "an existing directory is not overwritten"
    );

    // A bundle that was never a bag: exported as one the library validates.
    let plain = work.path().join("plain");
    let files = sample_files(3, 32);
    for (path, bytes) in &files {
        let p = plain.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let plain_id = String::from_utf8(run_ok(&[
        "put",
        plain.to_str().unwrap(),
        "--label",
        "shelf=7",
        "--cluster",
        &addr,
    ]))
    .unwrap()
    .trim()
    .to_owned();
    let made = work.path().join("made");
    run_ok(&[
        "export",
        &plain_id,
        "--bagit",
        "-o",
        made.to_str().unwrap(),
        "--cluster",
        &addr,
    ]);
    validate_with_library(&made);
    let made_tree = tree(&made);
    for (path, bytes) in &files {
        assert_eq!(&made_tree[&format!("data/{path}")], bytes, "{path}");
    }
    let info = String::from_utf8(made_tree["bag-info.txt"].clone()).unwrap();
    for want in [
        format!("External-Identifier: {plain_id}"),
        "Bit-Mountain-Label: shelf=7".to_owned(),
        "Bagging-Date: ".to_owned(),
        format!(
            "Payload-Oxum: {}.{}",
            files.iter().map(|f| f.1.len()).sum::<usize>(),
            files.len()
        ),
    ] {
        assert!(info.contains(&want), "{want:?} not in {info}");
    }
    let info_fields = py(
        "import bagit, sys; print(bagit.Bag(sys.argv[1]).info['Bit-Mountain-Bundle-Id'])",
        &[&made],
    );
    assert_eq!(info_fields.trim(), plain_id);

    // Invalid bags are refused, naming the problem, and nothing is uploaded.
    let before = bundles(&addr);
    let mut refusals = Vec::new();
    let broken = |name: &str, seed: u64, damage: &dyn Fn(&Path)| {
        let dir = work.path().join(name);
        make_bag(&dir, seed);
        damage(&dir);
        let out = put_bag(&addr, &dir, &[]);
        assert!(!out.status.success(), "{name} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = |dir: &Path| {
        let mut names: Vec<_> = tree(&dir.join("data")).into_keys().collect();
        names.sort();
        dir.join("data").join(&names[0])
    };
    refusals.push((
        broken("wrong-digest", 41, &|d| {
            std::fs::write(first(d), b"other bytes").unwrap()
        }),
        "hash to",
    ));
    refusals.push((
        broken("missing-file", 42, &|d| {
            std::fs::remove_file(first(d)).unwrap()
        }),
        "which is not in the bag's data/",
    ));
    refusals.push((
        broken("extra-file", 43, &|d| {
            std::fs::write(d.join("data/stray.tif"), b"x").unwrap()
        }),
        "data/stray.tif is in data/ but not in manifest",
    ));
    refusals.push((
        broken("bad-oxum", 44, &|d| {
            let info = std::fs::read_to_string(d.join("bag-info.txt")).unwrap();
            let info: String = info
                .lines()
                .map(|l| {
                    if l.starts_with("Payload-Oxum") {
                        "Payload-Oxum: 1.1\n".to_owned()
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(d.join("bag-info.txt"), info).unwrap();
            for t in ["tagmanifest-sha256.txt", "tagmanifest-sha512.txt"] {
                let _ = std::fs::remove_file(d.join(t));
            }
        }),
        "Payload-Oxum 1.1",
    ));
    refusals.push((
        broken("not-a-bag", 45, &|d| {
            std::fs::remove_file(d.join("bagit.txt")).unwrap()
        }),
        "no bagit.txt",
    ));
    for (stderr, want) in &refusals {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
        assert!(stderr.contains("nothing was uploaded"), "{stderr}");
    }
    assert_eq!(bundles(&addr), before, "a refused bag uploaded something");
}
