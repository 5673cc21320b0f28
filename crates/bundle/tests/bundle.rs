//! Round-trip, property and bad-input tests of the bundle format through its public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_bundle::{
    BundleError, BundleReader, BundleWriter, Index, PathProblem, Trailer, WriterOptions,
    TRAILER_BYTES,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn pack(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data) in files {
        w.add_file(
            path,
            "application/octet-stream",
            data.len() as u64,
            &data[..],
        )
        .unwrap();
    }
    w.finish().unwrap().output
}

fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("pages/0001.tif", (0..=255u8).cycle().take(70_000).collect()),
        (
            "Wörterbuch/頁.txt",
            b"\r\n--\r\n--boundary--\r\n".repeat(50),
        ),
        ("deep/a/b/c/d.bin", vec![0; 1]),
    ]
}

#[test]
fn every_file_reads_back_by_path_range_and_iteration() {
    let files = sample_files();
    let bundle = pack(&files);
    let reader = BundleReader::open(&bundle).unwrap();
    assert_eq!(reader.index().len(), files.len());
    for (path, data) in &files {
        let mut out = Vec::new();
        reader.copy_file(path, &mut out).unwrap();
        assert_eq!(&out, data, "{path}");
        let entry = reader.index().find(path).unwrap();
        assert_eq!(entry.sha256, <[u8; 32]>::from(Sha256::digest(data)));
        // The index offset points at the very bytes inside the MIME stream.
        let start = entry.offset as usize;
        assert_eq!(&bundle[start..start + data.len()], &data[..]);
        if data.len() > 10 {
            let mut range = Vec::new();
            reader.read_range(path, 3, 7, &mut range).unwrap();
            assert_eq!(range, data[3..10]);
        }
    }
    let report = reader.verify().unwrap();
    assert_eq!(report.files_checked, files.len() as u64);
    assert!(report.corrupt_files.is_empty());
    let paths: Vec<_> = reader
        .index()
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(paths, files.iter().map(|f| f.0).collect::<Vec<_>>());
}

#[test]
fn an_empty_bundle_is_valid() {
    let bundle = pack(&[]);
    let reader = BundleReader::open(&bundle).unwrap();
    assert!(reader.index().is_empty());
    reader.verify().unwrap();
}

#[test]
fn the_index_location_from_metadata_opens_the_bundle_without_the_trailer() {
    let files = sample_files();
    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data) in &files {
        w.add_file(path, "image/tiff", data.len() as u64, &data[..])
            .unwrap();
    }
    let summary = w.finish().unwrap();
    let mut bundle = summary.output;
    bundle.truncate(bundle.len() - TRAILER_BYTES);
    assert!(BundleReader::open(&bundle).is_err());
    let reader =
        BundleReader::open_with_index_at(&bundle, summary.index_offset, summary.index_length)
            .unwrap();
    assert_eq!(reader.index().len(), files.len());
}

#[test]
fn bad_paths_are_refused_with_the_path_named() {
    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let cases: Vec<(String, PathProblem)> = vec![
        ("".into(), PathProblem::Empty),
        ("../etc/passwd".into(), PathProblem::ParentComponent),
        ("/abs".into(), PathProblem::Absolute),
        ("nul\0byte".into(), PathProblem::Nul),
        (
            "x".repeat(5000),
            PathProblem::TooLong {
                bytes: 5000,
                limit_bytes: 4096,
            },
        ),
    ];
    for (path, problem) in cases {
        match w.start_file(&path, "text/plain", 0, None) {
            Err(BundleError::InvalidPath {
                path: p,
                problem: got,
            }) => {
                assert_eq!(p, path);
                assert_eq!(got, problem);
            }
            other => panic!("{path:?}: {other:?}"),
        }
    }
    // Refused files leave the writer usable.
    w.add_file("ok", "text/plain", 1, &b"x"[..]).unwrap();
    assert!(matches!(
        w.add_file("ok", "text/plain", 1, &b"x"[..]),
        Err(BundleError::DuplicatePath { path }) if path == "ok"
    ));
    let bundle = w.finish().unwrap().output;
    assert_eq!(BundleReader::open(&bundle).unwrap().index().len(), 1);
}

#[test]
fn too_many_files_is_refused() {
    let options = WriterOptions {
        max_files: 2,
        ..WriterOptions::default()
    };
    let mut w = BundleWriter::new(Vec::new(), options).unwrap();
    w.add_file("a", "text/plain", 0, &b""[..]).unwrap();
    w.add_file("b", "text/plain", 0, &b""[..]).unwrap();
    assert!(matches!(
        w.add_file("c", "text/plain", 0, &b""[..]),
        Err(BundleError::TooManyFiles { limit: 2 })
    ));
}

#[test]
fn wrong_lengths_and_digests_are_refused_and_poison_the_writer() {
    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let err = w
        .add_file("short", "text/plain", 10, &b"abc"[..])
        .unwrap_err();
    assert!(matches!(
        err,
        BundleError::LengthMismatch {
            declared_bytes: 10,
            actual_bytes: 3,
            ..
        }
    ));
    assert!(matches!(
        w.start_file("next", "text/plain", 0, None),
        Err(BundleError::Misuse { .. })
    ));
    assert!(w.finish().is_err());

    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let err = w
        .add_file("long", "text/plain", 2, &b"abc"[..])
        .unwrap_err();
    assert!(matches!(
        err,
        BundleError::LengthMismatch {
            declared_bytes: 2,
            actual_bytes: 3,
            ..
        }
    ));

    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let mut f = w.start_file("sha", "text/plain", 3, Some([0; 32])).unwrap();
    f.write_chunk(b"abc").unwrap();
    assert!(matches!(f.finish(), Err(BundleError::Sha256Mismatch { path, .. }) if path == "sha"));

    let mut w = BundleWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    assert!(matches!(
        w.start_file("ct", "not a type", 0, None),
        Err(BundleError::InvalidContentType { .. })
    ));
}

#[test]
fn truncated_bundles_are_rejected_at_every_length() {
    let bundle = pack(&sample_files());
    // Every proper prefix: either the trailer is gone, or it is the wrong one.
    for len in (0..bundle.len())
        .step_by(97)
        .chain(bundle.len() - 3..bundle.len())
    {
        let prefix = &bundle[..len];
        assert!(
            BundleReader::open(prefix).is_err(),
            "prefix of {len} bytes opened"
        );
    }
}

#[test]
fn corrupt_content_is_found_by_verify_and_copy() {
    let files = sample_files();
    let mut bundle = pack(&files);
    let entry = BundleReader::open(&bundle)
        .unwrap()
        .index()
        .find("pages/0001.tif")
        .unwrap()
        .clone();
    bundle[entry.offset as usize + 1000] ^= 0xff;
    let reader = BundleReader::open(&bundle).unwrap();
    let report = reader.verify().unwrap();
    assert_eq!(report.corrupt_files.len(), 1);
    assert!(
        matches!(&report.corrupt_files[0], BundleError::Sha256Mismatch { path, .. } if path == "pages/0001.tif")
    );
    assert!(matches!(
        reader.copy_file("pages/0001.tif", &mut Vec::new()),
        Err(BundleError::Sha256Mismatch { .. })
    ));
}

#[test]
fn garbled_structure_is_found_by_verify() {
    let bundle = pack(&sample_files());
    let reader = BundleReader::open(&bundle).unwrap();
    let entry = reader.index().find("deep/a/b/c/d.bin").unwrap().clone();
    // Damage the part header of one file (its Content-Length digit) without touching content.
    let text_start = entry.offset as usize - 10;
    let mut garbled = bundle.clone();
    let header_region = &bundle[..entry.offset as usize];
    let cl = header_region
        .windows(16)
        .rposition(|w| w == b"Content-Length: ")
        .unwrap();
    garbled[cl + 16] = b'7';
    assert!(text_start > cl);
    let reader = BundleReader::open(&garbled).unwrap();
    assert!(matches!(
        reader.verify(),
        Err(BundleError::BadPartHeader { .. })
    ));
    // Damage the boundary line of the first part.
    let mut garbled = bundle.clone();
    let first = bundle.windows(4).position(|w| w == b"\r\n--").unwrap() + 4;
    garbled[first + 2] ^= 1;
    let reader = BundleReader::open(&garbled).unwrap();
    assert!(matches!(
        reader.verify(),
        Err(BundleError::BadStructure { .. })
    ));
}

#[test]
fn a_bad_trailer_or_index_is_a_typed_error() {
    let bundle = pack(&sample_files());
    let mut bad = bundle.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    assert!(matches!(
        BundleReader::open(&bad),
        Err(BundleError::BadTrailer { .. })
    ));
    let trailer = Trailer::decode(&bundle[n - TRAILER_BYTES..]).unwrap();
    let mut bad = bundle.clone();
    bad[trailer.index_offset as usize + 20] ^= 1;
    assert!(matches!(
        BundleReader::open(&bad),
        Err(BundleError::BadIndex { .. })
    ));
    // A trailer pointing past the end.
    let mut bad = bundle[..n - TRAILER_BYTES].to_vec();
    bad.extend_from_slice(
        &Trailer {
            index_offset: n as u64,
            index_length: 10,
            file_count: 4,
        }
        .encode(),
    );
    assert!(matches!(
        BundleReader::open(&bad),
        Err(BundleError::Truncated { .. })
    ));
}

#[test]
fn range_errors_name_the_file() {
    let bundle = pack(&sample_files());
    let reader = BundleReader::open(&bundle).unwrap();
    assert!(matches!(
        reader.read_range("empty", 0, 1, &mut Vec::new()),
        Err(BundleError::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        reader.read_range("pages/0001.tif", u64::MAX, 2, &mut Vec::new()),
        Err(BundleError::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        reader.copy_file("missing", &mut Vec::new()),
        Err(BundleError::FileNotFound { .. })
    ));
}

#[test]
fn the_writer_streams_without_buffering_files() {
    // A 20 MiB file written in 64 KiB chunks into a sink that counts: the writer's own memory is
    // not observable here, but every byte must reach the sink before finish() (nothing held back).
    struct Counting(u64);
    impl std::io::Write for Counting {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = BundleWriter::new(Counting(0), WriterOptions::default()).unwrap();
    let total = 20u64 << 20;
    let mut f = w
        .start_file("big", "application/octet-stream", total, None)
        .unwrap();
    let chunk = vec![7u8; 64 << 10];
    for _ in 0..(total / chunk.len() as u64) {
        f.write_chunk(&chunk).unwrap();
    }
    f.finish().unwrap();
    assert!(w.output_mut().0 > total);
    w.finish().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bundles_round_trip(
        files in proptest::collection::btree_map(
            "[a-zA-Zé頁0-9_]{1,8}(/[a-z0-9]{1,6}){0,3}",
            proptest::collection::vec(any::<u8>(), 0..3000),
            0..12,
        )
    ) {
        // Drop paths that would be a directory of another path in the same sample.
        let mut chosen: Vec<(String, Vec<u8>)> = Vec::new();
        for (path, data) in files {
            let conflicts = chosen.iter().any(|(p, _)| {
                path.starts_with(&format!("{p}/")) || p.starts_with(&format!("{path}/"))
            });
            if !conflicts {
                chosen.push((path, data));
            }
        }
        let refs: Vec<(&str, Vec<u8>)> = chosen.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
        let bundle = pack(&refs);
        let reader = BundleReader::open(&bundle).unwrap();
        for (path, data) in &chosen {
            let mut out = Vec::new();
            reader.copy_file(path, &mut out).unwrap();
            prop_assert_eq!(&out, data);
        }
        prop_assert!(reader.verify().unwrap().corrupt_files.is_empty());
        let decoded = Index::decode(&reader.index().encode(), reader.index_location().0).unwrap();
        prop_assert_eq!(decoded.entries(), reader.index().entries());
    }

    #[test]
    fn random_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = BundleReader::open(&bytes).map(|r| r.verify());
        let _ = Index::decode(&bytes, u64::MAX);
        let _ = bitmountain_bundle::mime::parse_part_headers(&bytes, "fuzz");
    }
}
