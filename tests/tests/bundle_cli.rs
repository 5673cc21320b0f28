//! The `bundle` offline tools, run as the real binary, and the interop test: Python's standard
//! library MIME parser reads our bundles byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bitmountain_tests::{run, run_ok};

/// A tree with every awkward kind of content: binary, empty, non-ASCII and nested paths, and
/// content full of CRLF, lone CR/LF and `--` sequences that look like boundaries.
fn awkward_tree(root: &Path) {
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    write("empty.txt", b"");
    write(
        "all-bytes.bin",
        &(0..=255u8).cycle().take(256 * 40).collect::<Vec<_>>(),
    );
    write(
        "crlf.txt",
        &b"\r\n--\r\n--bitmountain-\r\n\r\n--".repeat(300),
    );
    write("ends-with-cr.bin", b"data\r");
    write("ends-with-crlf.bin", b"data\r\n");
    write("ends-with-lf.bin", b"data\n\n");
    write("lone-cr-lf.bin", b"\r\r\n\n\r\n\r--\n--");
    write(
        "Bücher/Gödel, Escher/頁 0001.tif",
        &[0xff, 0xd8, 0x00, 0x0d, 0x0a, 0x2d, 0x2d],
    );
    write("a/b/c/d/e/f/deep.xml", b"<alto/>");
    write("quote\"and\\back%slash.txt", b"q");
    let mut pseudo_random = Vec::with_capacity(300_000);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..300_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pseudo_random.push((x >> 24) as u8);
    }
    write("scan/0001.jp2", &pseudo_random);
}

/// A temporary directory holding the awkward tree in `src/` and its bundle, packed by the real
/// binary, at `name`.
fn packed_awkward_bundle(
    name: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    awkward_tree(&src);
    let bundle = dir.path().join(name);
    run_ok(&[
        "bundle",
        "pack",
        src.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
    ]);
    (dir, src, bundle)
}

#[test]
fn python_email_parser_reads_every_part_byte_for_byte() {
    let (_dir, src, bundle) = packed_awkward_bundle("book.bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_bundle.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&bundle)
        .arg(&src)
        .output()
        .expect("python3 must be installed (scripts/ensure-deps installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python parser disagrees: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policy compat32: 11 files match byte for byte"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy default: 11 files match byte for byte"),
        "{stdout}"
    );
}

#[test]
fn pack_ls_cat_verify_unpack_round_trip() {
    let (dir, src, bundle) = packed_awkward_bundle("b.bundle");
    let b = bundle.to_str().unwrap();

    let listing: serde_json::Value =
        serde_json::from_slice(&run_ok(&["bundle", "ls", b, "--json"])).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 11);
    let cat = run_ok(&["bundle", "cat", b, "Bücher/Gödel, Escher/頁 0001.tif"]);
    assert_eq!(cat, [0xff, 0xd8, 0x00, 0x0d, 0x0a, 0x2d, 0x2d]);
    let range = run_ok(&[
        "bundle",
        "cat",
        b,
        "scan/0001.jp2",
        "--offset",
        "1000",
        "--length",
        "10",
    ]);
    assert_eq!(
        range,
        std::fs::read(src.join("scan/0001.jp2")).unwrap()[1000..1010]
    );
    run_ok(&["bundle", "verify", b]);

    let out = dir.path().join("out");
    run_ok(&["bundle", "unpack", b, "-o", out.to_str().unwrap()]);
    for entry in listing.as_array().unwrap() {
        let path = entry["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join(path)).unwrap(),
            std::fs::read(src.join(path)).unwrap(),
            "{path}"
        );
    }
    // Unpacking again into the now non-empty directory is refused, and nothing is overwritten.
    let again = run(&["bundle", "unpack", b, "-o", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn damage_is_reported_with_names_and_no_output_file_is_left() {
    let (dir, src, bundle) = packed_awkward_bundle("b.bundle");
    let b = bundle.to_str().unwrap();
    let listing: serde_json::Value =
        serde_json::from_slice(&run_ok(&["bundle", "ls", b, "--json"])).unwrap();
    let jp2 = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "scan/0001.jp2")
        .unwrap();
    let offset = jp2["offset"].as_u64().unwrap() as usize;

    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[offset + 5000] ^= 0x40;
    let damaged = dir.path().join("damaged.bundle");
    std::fs::write(&damaged, &bytes).unwrap();
    let d = damaged.to_str().unwrap();
    let verify = run(&["bundle", "verify", d]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("scan/0001.jp2"));
    let out = dir.path().join("out");
    let unpack = run(&["bundle", "unpack", d, "-o", out.to_str().unwrap()]);
    assert!(!unpack.status.success());
    assert!(String::from_utf8_lossy(&unpack.stderr).contains("scan/0001.jp2"));
    assert!(
        !out.join("scan/0001.jp2").exists(),
        "a corrupt file must not be extracted"
    );
    assert!(
        out.join("empty.txt").exists(),
        "intact files are still extracted"
    );
    let leftovers: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let truncated = dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let ls = run(&["bundle", "ls", truncated.to_str().unwrap()]);
    assert!(!ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stderr).contains("trailer"));

    // Packing a tree with a symlink fails with its name and leaves no bundle behind.
    std::os::unix::fs::symlink("empty.txt", src.join("link")).unwrap();
    let refused = dir.path().join("refused.bundle");
    let pack = run(&[
        "bundle",
        "pack",
        src.to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
    ]);
    assert!(!pack.status.success());
    assert!(String::from_utf8_lossy(&pack.stderr).contains("symbolic link"));
    assert!(!refused.exists());
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".partial-")));
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn shard_cat_reads_one_file_from_damaged_shards() {
    let (dir, src, bundle) = packed_awkward_bundle("b.bundle");
    let shards = dir.path().join("shards");
    run_ok(&[
        "shard",
        "encode",
        bundle.to_str().unwrap(),
        "--data",
        "3",
        "--parity",
        "2",
        "--cell-bytes",
        "4096",
        "-o",
        shards.to_str().unwrap(),
    ]);
    let mut files: Vec<_> = std::fs::read_dir(&shards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[4]).unwrap();
    let s = shards.to_str().unwrap();
    for path in [
        "scan/0001.jp2",
        "Bücher/Gödel, Escher/頁 0001.tif",
        "empty.txt",
        "crlf.txt",
    ] {
        assert_eq!(
            run_ok(&["shard", "cat", s, path]),
            std::fs::read(src.join(path)).unwrap(),
            "{path}"
        );
    }
    let missing = run(&["shard", "cat", s, "no/such/file"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no file \"no/such/file\""));
    std::fs::remove_file(&files[1]).unwrap();
    let lost = run(&["shard", "cat", s, "scan/0001.jp2"]);
    assert!(!lost.status.success());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("cannot be recovered"));
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--files",
        "30",
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("read all 32 files back out of the surviving shards: every byte identical"),
        "{text}"
    );
    assert!(text.contains("beyond repair"), "{text}");
}

#[test]
fn pack_to_stdout_pipes_into_shard_encode_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    awkward_tree(&src);
    let shards = dir.path().join("shards");
    let mut pack = bitmountain_tests::bitmountain()
        .args(["bundle", "pack", src.to_str().unwrap(), "-o", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let encode = bitmountain_tests::bitmountain()
        .args([
            "shard",
            "encode",
            "-",
            "--data",
            "4",
            "--parity",
            "2",
            "--cell-bytes",
            "8192",
            "-o",
        ])
        .arg(&shards)
        .stdin(pack.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(pack.wait().unwrap().success());
    assert!(
        encode.status.success(),
        "{}",
        String::from_utf8_lossy(&encode.stderr)
    );
    let s = shards.to_str().unwrap();
    for path in ["scan/0001.jp2", "crlf.txt", "empty.txt"] {
        assert_eq!(
            run_ok(&["shard", "cat", s, path]),
            std::fs::read(src.join(path)).unwrap(),
            "{path}"
        );
    }
    // A stream that is not a bundle is refused and leaves no shard files.
    let refused = dir.path().join("refused");
    let mut child = bitmountain_tests::bitmountain()
        .args(["shard", "encode", "-", "--data", "2", "--parity", "1", "-o"])
        .arg(&refused)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"not a bundle").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("trailer"));
    assert_eq!(
        std::fs::read_dir(&refused).unwrap().count(),
        0,
        "no shard files may be left"
    );
}
