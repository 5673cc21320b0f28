//! The `shard` offline tools, run as the real binary: encode → delete, truncate or corrupt
//! shards → verify and decode; more than m lost → non-zero exit naming the bundle and shards,
//! and no partial output file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bitmountain_tests::{run, run_ok};

const BUNDLE_ID: &str = "00112233445566778899aabbccddeeff";

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `data` to a file and encodes it into `dir` with RS(k, m), 64 KiB cells.
fn encode(root: &Path, data: &[u8], k: usize, m: usize) -> (PathBuf, PathBuf) {
    let input = root.join("bundle.bin");
    std::fs::write(&input, data).unwrap();
    let dir = root.join("shards");
    let (k, m) = (k.to_string(), m.to_string());
    run_ok(&[
        "shard",
        "encode",
        s(&input),
        "--data",
        &k,
        "--parity",
        &m,
        "--cell-bytes",
        "65536",
        "--bundle-id",
        BUNDLE_ID,
        "--index-offset",
        "0",
        "--index-length",
        "0",
        "-o",
        s(&dir),
    ]);
    (input, dir)
}

fn shard_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{BUNDLE_ID}.{index}.shard"))
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn verify_json(dir: &Path) -> (bool, serde_like::Json) {
    let out = run(&["shard", "verify", s(dir), "--json"]);
    (
        out.status.success(),
        serde_like::Json(String::from_utf8(out.stdout).unwrap()),
    )
}

/// Minimal probing of the JSON text (the tests crate has no JSON parser dependency).
mod serde_like {
    #[derive(Debug)]
    pub struct Json(pub String);
    impl Json {
        pub fn has(&self, needle: &str) -> bool {
            let compact: String = self.0.split_whitespace().collect();
            compact.contains(needle)
        }
    }
}

#[test]
fn encode_then_decode_healthy_and_with_m_shards_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pseudo_random(1_000_003, 1);
    let (_, dir) = encode(tmp.path(), &data, 4, 2);
    for i in 0..6 {
        assert!(shard_path(&dir, i).exists(), "shard {i}");
    }
    let (ok, json) = verify_json(&dir);
    assert!(ok);
    assert!(json.has("\"state\":\"healthy\""), "{json:?}");

    // Lose one shard outright and truncate another: exactly m = 2.
    std::fs::remove_file(shard_path(&dir, 1)).unwrap();
    let truncated = shard_path(&dir, 4);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let out = tmp.path().join("decoded.bin");
    run_ok(&["shard", "decode", s(&dir), "-o", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let (ok, json) = verify_json(&dir);
    assert!(ok, "degraded but recoverable exits 0");
    assert!(
        json.has("\"state\":\"degraded\"") && json.has("\"recoverable\":true"),
        "{json:?}"
    );
    assert!(json.has("\"index\":1,\"status\":\"missing\""), "{json:?}");
}

#[test]
fn corrupt_chunks_and_bad_headers_are_reported_and_decoded_around() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pseudo_random(700_000, 2);
    let (_, dir) = encode(tmp.path(), &data, 3, 2);
    // A flipped byte in shard 0's second chunk (header 64 B + chunk 0 with its CRC).
    flip_byte(&shard_path(&dir, 0), 64 + 65540 + 10);
    // A garbled header on shard 2.
    flip_byte(&shard_path(&dir, 2), 20);

    let out = run(&["shard", "verify", s(&dir)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("corrupt chunks [1]"), "{text}");
    assert!(text.contains("bad header"), "{text}");
    assert!(text.contains("degraded"), "{text}");

    let decoded = tmp.path().join("decoded.bin");
    let out = run(&["shard", "decode", s(&dir), "-o", s(&decoded)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&decoded).unwrap(), data);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn more_than_m_lost_fails_naming_bundle_and_shards_without_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pseudo_random(500_000, 3);
    let (_, dir) = encode(tmp.path(), &data, 4, 2);
    std::fs::remove_file(shard_path(&dir, 0)).unwrap();
    std::fs::remove_file(shard_path(&dir, 3)).unwrap();
    flip_byte(&shard_path(&dir, 5), 64 + 100);

    let decoded = tmp.path().join("decoded.bin");
    let out = run(&["shard", "decode", s(&dir), "-o", s(&decoded)]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(stderr.contains(BUNDLE_ID), "{stderr}");
    assert!(
        stderr.contains("shard 0 (missing)") && stderr.contains("shard 3 (missing)"),
        "{stderr}"
    );
    assert!(stderr.contains("shard 5 chunk 0"), "{stderr}");
    assert!(!decoded.exists(), "no partial output");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("decoded"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = run(&["shard", "verify", s(&dir)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(BUNDLE_ID) && stderr.contains("not recoverable"),
        "{stderr}"
    );
}

#[test]
fn empty_and_tiny_bundles_round_trip() {
    for len in [0usize, 1, 65535, 65536 * 3 + 1] {
        let tmp = tempfile::tempdir().unwrap();
        let data = pseudo_random(len, 4);
        let (_, dir) = encode(tmp.path(), &data, 3, 1);
        std::fs::remove_file(shard_path(&dir, 2)).unwrap();
        let out = tmp.path().join("decoded.bin");
        run_ok(&["shard", "decode", s(&dir), "-o", s(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), data, "len {len}");
    }
}

#[test]
fn a_packed_bundle_gets_its_index_location_from_the_trailer() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("pages")).unwrap();
    for i in 0..5 {
        std::fs::write(
            tree.join(format!("pages/{i:04}.tif")),
            pseudo_random(30_000 + i, i as u32),
        )
        .unwrap();
    }
    let bundle = tmp.path().join("book.bundle");
    run_ok(&["bundle", "pack", s(&tree), "-o", s(&bundle)]);
    let dir = tmp.path().join("shards");
    let stdout = run_ok(&[
        "shard",
        "encode",
        s(&bundle),
        "--data",
        "3",
        "--parity",
        "2",
        "-o",
        s(&dir),
    ]);
    let stdout = String::from_utf8(stdout).unwrap();
    let index_line = stdout.lines().find(|l| l.starts_with("index ")).unwrap();
    assert_ne!(index_line, "index 0+0", "{stdout}");
    let (ok, json) = verify_json(&dir);
    assert!(ok && !json.has("\"index_len\":0,"), "{json:?}");
    let out = tmp.path().join("decoded.bundle");
    run_ok(&["shard", "decode", s(&dir), "-o", s(&out)]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&bundle).unwrap()
    );
}

#[test]
fn bad_arguments_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("x.bin");
    std::fs::write(&input, b"not a bundle").unwrap();
    let dir = tmp.path().join("out");
    // Not a bundle and no explicit index location.
    let out = run(&[
        "shard",
        "encode",
        s(&input),
        "--data",
        "2",
        "--parity",
        "1",
        "-o",
        s(&dir),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--index-offset"));
    // k + m over 256.
    let out = run(&[
        "shard",
        "encode",
        s(&input),
        "--data",
        "250",
        "--parity",
        "7",
        "--index-offset",
        "0",
        "--index-length",
        "0",
        "-o",
        s(&dir),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RS(250,7)"));
    // An empty directory.
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["shard", "decode", s(&dir), "-o", s(&tmp.path().join("y"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shard files"));
}
