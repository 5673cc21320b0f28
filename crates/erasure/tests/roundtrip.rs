//! Encode → damage → read back, for fixed edge cases; properties live in `properties.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitmountain_erasure::{
    BundleId, BundleLayout, BundleReader, Candidate, Code, ErasureError, IndexLocation, RangeRead,
    ShardFooter, ShardHeader, ShardSource, StripeEncoder,
};
use common::{bundle_bytes, description, description_bytes, encode, Counting, Failing};

fn lengths_for(code: &Code) -> Vec<u64> {
    let cell = u64::from(code.cell_bytes());
    let stripe = code.stripe_data_bytes();
    let mut lens = vec![0, 1, 2, 63, 64, 65];
    for base in [cell, 2 * cell, stripe, 2 * stripe, 3 * stripe] {
        lens.extend([base - 1, base, base + 1]);
    }
    lens
}

#[test]
fn every_length_edge_case_round_trips_with_and_without_losses() {
    for (k, m) in [(1, 1), (2, 1), (3, 2), (4, 2), (6, 3)] {
        let code = Code::with_sizes(k, m, 128, 100).unwrap();
        for len in lengths_for(&code) {
            let data = bundle_bytes(len as usize, len);
            let (info, shards) = encode(code, &data, IndexLocation::default());
            assert_eq!(info.bundle_len, len);
            let layout = BundleLayout::new(code, len).unwrap();
            for s in &shards {
                assert_eq!(
                    s.len() as u64,
                    layout.shard_file_bytes() + description_bytes(),
                    "k={k} m={m} len={len}"
                );
            }
            // Healthy, then with the first m shards gone, then the last m.
            let drops: [Vec<usize>; 3] = [vec![], (0..m).collect(), (k..k + m).collect()];
            for dropped in drops {
                let sources: Vec<Option<&Vec<u8>>> = shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (!dropped.contains(&i)).then_some(s))
                    .collect();
                let mut reader = BundleReader::new(info, sources).unwrap();
                let mut out = Vec::new();
                reader.read_bundle(&mut out).unwrap();
                assert_eq!(out, data, "k={k} m={m} len={len} dropped={dropped:?}");
            }
        }
    }
}

#[test]
fn sans_io_encoder_output_equals_streaming_writer_output() {
    let code = Code::with_sizes(3, 2, 192, 100).unwrap();
    let data = bundle_bytes(5000, 1);
    let index = IndexLocation {
        offset: 4000,
        len: 1000,
    };
    let (_, expected) = encode(code, &data, index);
    let mut enc = StripeEncoder::new(code, BundleId([0x42; 16])).unwrap();
    let mut shards: Vec<Vec<u8>> = (0..5).map(|i| enc.header(i).to_vec()).collect();
    for stripe in enc.push(&data) {
        for (s, bytes) in shards.iter_mut().zip(stripe.shards) {
            s.extend_from_slice(&bytes);
        }
    }
    let finished = enc.finish(index, &description()).unwrap();
    for (s, tail) in shards.iter_mut().zip(finished.tails) {
        s.extend_from_slice(&tail);
    }
    assert_eq!(shards, expected);
}

#[test]
fn index_location_outside_bundle_is_rejected() {
    let code = Code::with_sizes(2, 1, 64, 64).unwrap();
    let enc = StripeEncoder::new(code, BundleId::default()).unwrap();
    let err = enc
        .finish(IndexLocation { offset: 0, len: 1 }, &description())
        .unwrap_err();
    assert!(
        matches!(err, ErasureError::InvalidIndexLocation { .. }),
        "{err}"
    );
}

#[test]
fn raw_bytes_stay_within_the_overhead_bound() {
    // Arithmetic over many lengths and codes, checked against real encodes for some.
    let codes = [
        Code::new(10, 4).unwrap(),
        Code::new(4, 2).unwrap(),
        Code::new(1, 1).unwrap(),
        Code::new(17, 3).unwrap(),
        Code::with_sizes(200, 56, 64 << 10, 64 << 10).unwrap(),
    ];
    for code in codes {
        let n = code.total_shards() as f64;
        let k = code.data_shards() as f64;
        let mut lens: Vec<u64> = vec![0, 1, 4096, 4 << 20, 1 << 30, (1 << 30) + 1];
        let stripe = code.stripe_data_bytes();
        for i in 0..400u64 {
            lens.push(i * 7919 * 1031 % (5 * stripe));
            lens.push(stripe * (i % 7) + i);
        }
        for len in lens {
            let layout = BundleLayout::new(code, len).unwrap();
            let raw = layout.shard_file_bytes() as f64 * n;
            let bound = 1.05 * n / k * len as f64 + 65536.0 * n;
            assert!(raw <= bound, "{code} len {len}: raw {raw} > bound {bound}");
        }
    }
    // 4 MiB at RS(10,4) costs about 5.6 MiB, not 8.
    let code = Code::new(10, 4).unwrap();
    let data = bundle_bytes(4 << 20, 9);
    let (_, shards) = encode(code, &data, IndexLocation::default());
    let raw: usize = shards.iter().map(Vec::len).sum();
    assert!(raw as f64 <= 1.41 * (4 << 20) as f64, "raw {raw}");
}

#[test]
fn reading_4_kib_from_healthy_shards_reads_one_chunk_of_one_data_shard() {
    let code = Code::new(4, 2).unwrap();
    let data = bundle_bytes(9 << 20, 2);
    let (info, shards) = encode(code, &data, IndexLocation::default());
    let counting: Vec<Counting> = shards.iter().map(Counting::new).collect();
    let mut reader = BundleReader::new(info, counting.iter().map(Some).collect()).unwrap();
    let offset = (1 << 20) + 5 * 65536 + 100;
    let got = reader.read_range(offset, 4096).unwrap();
    assert_eq!(got, data[offset as usize..offset as usize + 4096]);
    let total: u64 = counting.iter().map(|c| c.bytes_read.get()).sum();
    assert_eq!(total, 65536 + 4);
    assert_eq!(counting[1].bytes_read.get(), 65536 + 4);

    // The sans-IO planner says the same: one fetch.
    let mut read = RangeRead::new(&info, offset, 4096, &[], None).unwrap();
    let fetches = read.plan().unwrap();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].shard, 1);
    assert_eq!(fetches[0].range.len, 65536 + 4);
    let mut buf = vec![0u8; fetches[0].range.len as usize];
    shards[1]
        .read_at(fetches[0].range.offset, &mut buf)
        .unwrap();
    read.supply(&fetches[0], Some(buf));
    assert!(read.plan().unwrap().is_empty());
    assert_eq!(
        read.finish().unwrap(),
        data[offset as usize..offset as usize + 4096]
    );
}

#[test]
fn a_corrupt_chunk_is_reconstructed_from_the_same_chunk_of_k_others() {
    let code = Code::new(4, 2).unwrap();
    let data = bundle_bytes(9 << 20, 3);
    let (info, mut shards) = encode(code, &data, IndexLocation::default());
    let offset: u64 = (1 << 20) + 5 * 65536 + 100;
    // Stripe 0 is full (4 × 1 MiB): the range sits in cell 1 at offset 5·64 KiB + 100, i.e. in
    // chunk 5 of shard 1. Flip a byte inside that chunk.
    let layout = BundleLayout::new(code, data.len() as u64).unwrap();
    let phys = layout.chunk_physical_range(5..6);
    shards[1][phys.offset as usize + 200] ^= 0x01;
    let counting: Vec<Counting> = shards.iter().map(Counting::new).collect();
    let mut reader = BundleReader::new(info, counting.iter().map(Some).collect()).unwrap();
    let got = reader.read_range(offset, 4096).unwrap();
    assert_eq!(got, data[offset as usize..offset as usize + 4096]);
    assert_eq!(reader.lost_chunks().len(), 1);
    assert_eq!(
        (reader.lost_chunks()[0].shard, reader.lost_chunks()[0].chunk),
        (1, 5)
    );
    // 1 bad chunk + k = 4 more good chunks of the same column.
    let total: u64 = counting.iter().map(|c| c.bytes_read.get()).sum();
    assert_eq!(total, 5 * (65536 + 4));
}

#[test]
fn failing_sources_are_erasures() {
    let code = Code::with_sizes(3, 2, 256, 128).unwrap();
    let data = bundle_bytes(10_000, 4);
    let (info, shards) = encode(code, &data, IndexLocation::default());
    let mut sources: Vec<Option<Box<dyn ShardSource>>> = shards
        .iter()
        .map(|s| Some(Box::new(s.clone()) as Box<dyn ShardSource>))
        .collect();
    sources[0] = Some(Box::new(Failing));
    sources[2] = Some(Box::new(Failing));
    let mut reader = BundleReader::new(info, sources).unwrap();
    let mut out = Vec::new();
    reader.read_bundle(&mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn more_than_m_lost_is_a_clear_error_naming_bundle_and_shards() {
    let code = Code::with_sizes(3, 2, 256, 128).unwrap();
    let data = bundle_bytes(10_000, 5);
    let (info, shards) = encode(code, &data, IndexLocation::default());
    let sources: Vec<Option<&Vec<u8>>> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (![0, 3, 4].contains(&i)).then_some(s))
        .collect();
    let mut reader = BundleReader::new(info, sources).unwrap();
    let err = reader.read_bundle(&mut Vec::new()).unwrap_err();
    match &err {
        ErasureError::Unrecoverable {
            bundle_id,
            lost_shards,
            ..
        } => {
            assert_eq!(*bundle_id, info.bundle_id);
            assert_eq!(lost_shards, &vec![0, 3, 4]);
        }
        other => panic!("unexpected {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&info.bundle_id.to_hex()) && msg.contains("[0, 3, 4]"),
        "{msg}"
    );
}

#[test]
fn open_places_shards_by_header_and_reports_rejects() {
    let code = Code::with_sizes(3, 2, 256, 128).unwrap();
    let data = bundle_bytes(5_000, 6);
    let index = IndexLocation {
        offset: 10,
        len: 20,
    };
    let (info, mut shards) = encode(code, &data, index);
    shards[2][3] ^= 0xff; // bad header
    let len = shards[4].len();
    shards[4].truncate(len - 10); // bad footer, chunks still usable
    let candidates: Vec<Vec<u8>> = shards.iter().rev().cloned().collect();
    let (mut reader, outcome) = BundleReader::open(candidates).unwrap();
    assert_eq!(*reader.info(), info);
    assert!(matches!(
        outcome[0],
        Candidate::Placed {
            shard_index: 4,
            footer_error: Some(_)
        }
    ));
    assert!(matches!(
        outcome[2],
        Candidate::Rejected {
            shard_index: None,
            ..
        }
    ));
    assert!(matches!(
        outcome[4],
        Candidate::Placed {
            shard_index: 0,
            footer_error: None
        }
    ));
    let mut out = Vec::new();
    reader.read_bundle(&mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn rebuild_produces_byte_identical_shards() {
    for (k, m, len) in [
        (3usize, 2usize, 10_000usize),
        (4, 2, 0),
        (2, 2, 1),
        (5, 3, 77_777),
    ] {
        let code = Code::with_sizes(k, m, 512, 200).unwrap();
        let data = bundle_bytes(len, 7);
        let (info, shards) = encode(code, &data, IndexLocation::default());
        let targets: Vec<u16> = vec![0, (k + m - 1) as u16];
        let sources: Vec<Option<&Vec<u8>>> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (!targets.contains(&(i as u16))).then_some(s))
            .collect();
        let mut reader = BundleReader::new(info, sources)
            .unwrap()
            .with_description(Some(description()));
        let sinks = vec![Vec::new(); targets.len()];
        let mut rebuilt = sinks;
        reader
            .rebuild_shards(&targets, rebuilt.iter_mut().collect())
            .unwrap();
        for (t, bytes) in targets.iter().zip(&rebuilt) {
            assert_eq!(
                bytes,
                &shards[usize::from(*t)],
                "k={k} m={m} len={len} shard {t}"
            );
        }
    }
}

#[test]
fn files_are_written_atomically_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let code = Code::with_sizes(4, 2, 4096, 1024).unwrap();
    let data = bundle_bytes(100_000, 8);
    let id = BundleId([1; 16]);
    let (info, paths) = bitmountain_erasure::write_shard_files(
        dir.path(),
        code,
        id,
        &mut &data[..],
        IndexLocation::default(),
        &description(),
    )
    .unwrap();
    assert_eq!(paths.len(), 6);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".shard")));
    let sources = paths
        .iter()
        .map(|p| Some(bitmountain_erasure::FileShardSource::open(p).unwrap()))
        .collect();
    let mut reader = BundleReader::new(info, sources).unwrap();
    let mut out = Vec::new();
    reader.read_bundle(&mut out).unwrap();
    assert_eq!(out, data);
    for (i, p) in paths.iter().enumerate() {
        let src = bitmountain_erasure::FileShardSource::open(p).unwrap();
        let meta = bitmountain_erasure::read_shard_meta(&src).unwrap();
        assert_eq!(usize::from(meta.header.shard_index), i);
        assert!(meta.footer.is_ok());
        let layout = BundleLayout::new(code, data.len() as u64).unwrap();
        assert!(bitmountain_erasure::scan_shard(&src, &layout, i as u16)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn widest_codes_round_trip() {
    for (k, m) in [(255usize, 1usize), (1, 255), (200, 56), (128, 128)] {
        let code = Code::with_sizes(k, m, 64, 64).unwrap();
        for len in [0usize, 1, 64 * k - 1, 64 * k, 64 * k + 1, 3 * 64 * k + 17] {
            let data = bundle_bytes(len, (k + len) as u64);
            let (info, shards) = encode(code, &data, IndexLocation::default());
            // Lose m shards spread over data and parity.
            let lost: Vec<usize> = (0..k + m).step_by((k + m) / m).take(m).collect();
            let sources = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (!lost.contains(&i)).then_some(s))
                .collect();
            let mut reader = BundleReader::new(info, sources).unwrap();
            let mut out = Vec::new();
            reader.read_bundle(&mut out).unwrap();
            assert_eq!(out, data, "RS({k},{m}) len {len}");
        }
    }
}

#[test]
fn sans_io_rebuild_driven_by_hand_matches_the_original_shard() {
    use bitmountain_erasure::ShardRebuild;
    let code = Code::with_sizes(4, 2, 1024, 300).unwrap();
    let data = bundle_bytes(50_000, 10);
    let (info, mut shards) = encode(code, &data, IndexLocation { offset: 1, len: 2 });
    let original = shards[4].clone();
    // Shard 4 (parity) is being rebuilt; shard 1 has a corrupt chunk the rebuild must avoid.
    shards[1][64 + 10] ^= 0xff;
    let mut rebuild = ShardRebuild::new(info, &[4]).unwrap();
    let mut rebuilt: Vec<u8> = rebuild.headers()[0].to_vec();
    while let Some(mut gather) = rebuild.next_window(&[]) {
        loop {
            let fetches = gather.plan().unwrap();
            if fetches.is_empty() {
                break;
            }
            for f in fetches {
                assert_ne!(f.shard, 4, "the target is never read");
                let mut buf = gather.buffer(f.range.len as usize);
                let n = shards[usize::from(f.shard)]
                    .read_at(f.range.offset, &mut buf)
                    .unwrap();
                buf.truncate(n);
                gather.supply(&f, Some(buf));
            }
        }
        gather.decode().unwrap();
        rebuilt.extend_from_slice(&rebuild.frame_window(&gather).unwrap()[0]);
    }
    rebuilt.extend_from_slice(&rebuild.tails(Some(&description())).unwrap()[0]);
    assert_eq!(rebuilt, original);
    assert!(ShardRebuild::new(info, &[4, 4]).is_err());
    assert!(ShardRebuild::new(info, &[6]).is_err());
}

#[test]
fn in_memory_shards_are_lent_checked_and_decoded_in_place() {
    // Vec<u8> shards lend their bytes (no copy); the reader must still check every chunk and
    // rebuild corrupt and missing ones, for ranges that straddle chunk, cell and stripe edges.
    let code = Code::new(4, 2).unwrap();
    let data = bundle_bytes((9 << 20) + 12_345, 7);
    let (info, mut shards) = encode(code, &data, IndexLocation::default());
    let layout = BundleLayout::new(code, data.len() as u64).unwrap();
    let bad_chunk = 21; // stripe 1, second chunk of its cells
    let phys = layout.chunk_physical_range(bad_chunk..bad_chunk + 1);
    shards[1][phys.offset as usize + 7] ^= 0x40;
    let sources: Vec<Option<&Vec<u8>>> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (i != 3).then_some(s))
        .collect();
    let mut reader = BundleReader::new(info, sources).unwrap();
    let cell = 1u64 << 20;
    let stripe = 4 * cell;
    for (offset, len) in [
        (0, data.len() as u64),
        (stripe + cell + 65_536 - 10, 20),
        (stripe + 2 * cell - 100, 200),
        (stripe - 1, 3 * cell + 2),
        (stripe + 3 * cell + 5, 70_000),
        (2 * stripe + 5, 300_000),
        (data.len() as u64 - 1, 1),
    ] {
        let got = reader.read_range(offset, len).unwrap();
        assert!(
            got == data[offset as usize..(offset + len) as usize],
            "range {offset} + {len}"
        );
    }
    assert!(reader
        .lost_chunks()
        .iter()
        .any(|l| (l.shard, l.chunk) == (1, bad_chunk)));
    let mut out = Vec::new();
    reader.read_bundle(&mut out).unwrap();
    assert!(out == data);
}

/// Turns a version-2 shard into the version-1 shard an older writer made: no description, a
/// version-1 footer.
fn as_version_1(shard: &[u8]) -> Vec<u8> {
    let header = ShardHeader::decode(shard).unwrap();
    let footer_at = shard.len() - bitmountain_erasure::format::FOOTER_BYTES;
    let footer = ShardFooter::decode(&shard[footer_at..], &header).unwrap();
    let mut v1 = shard[..footer_at - footer.description_bytes() as usize].to_vec();
    v1.extend_from_slice(
        &ShardFooter {
            description: None,
            ..footer
        }
        .encode(),
    );
    v1
}

#[test]
fn shards_carry_the_description_and_version_1_shards_stay_readable() {
    let code = Code::with_sizes(3, 2, 256, 64).unwrap();
    let data = bundle_bytes(5000, 3);
    let index = IndexLocation {
        offset: 4000,
        len: 500,
    };
    let (_, shards) = encode(code, &data, index);
    let (reader, _) = BundleReader::open(shards.iter().collect()).unwrap();
    assert_eq!(reader.description(), Some(&description()));
    for s in &shards {
        let meta = bitmountain_erasure::read_shard_meta(s).unwrap();
        assert_eq!(meta.description.unwrap().unwrap(), description());
    }

    let old: Vec<Vec<u8>> = shards.iter().map(|s| as_version_1(s)).collect();
    let layout = BundleLayout::new(code, 5000).unwrap();
    assert!(old
        .iter()
        .all(|s| s.len() as u64 == layout.shard_file_bytes()));
    // Two version-1 shards lost; the rest still decode, and a rebuild writes version 1 again.
    let (mut reader, outcome) = BundleReader::open(old[..3].iter().collect()).unwrap();
    assert!(outcome.iter().all(|c| matches!(
        c,
        Candidate::Placed {
            footer_error: None,
            ..
        }
    )));
    assert_eq!(reader.description(), None);
    assert_eq!(reader.read_range(0, 5000).unwrap(), data);
    let rebuilt = reader.rebuild_shards(&[3], vec![Vec::new()]).unwrap();
    assert_eq!(rebuilt[0], old[3]);

    // A garbled description is reported, and the shard's data stays usable.
    let mut bad = shards[0].clone();
    let at = bad.len() - bitmountain_erasure::format::FOOTER_BYTES - 3;
    bad[at] ^= 1;
    let meta = bitmountain_erasure::read_shard_meta(&bad).unwrap();
    assert!(meta.footer.is_ok());
    let err = meta.description.unwrap().unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}
