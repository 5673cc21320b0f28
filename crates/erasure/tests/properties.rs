//! Property tests: random bundles, random codes, random damage to shards.
//! ≤ m damaged shards → every byte reads back identical (whole bundle and random ranges);
//! > m → an error, never wrong bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitmountain_erasure::{BundleReader, Code, ErasureError, IndexLocation};
use common::{bundle_bytes, encode};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug)]
enum Damage {
    Delete,
    Truncate,
    FlipBytes,
    FlipHeader,
    FlipChunkData,
}

const DAMAGES: [Damage; 5] = [
    Damage::Delete,
    Damage::Truncate,
    Damage::FlipBytes,
    Damage::FlipHeader,
    Damage::FlipChunkData,
];

/// Applies `damage` to one shard file; `None` means deleted.
fn apply(damage: Damage, mut shard: Vec<u8>, rng: &mut StdRng) -> Option<Vec<u8>> {
    match damage {
        Damage::Delete => return None,
        Damage::Truncate => {
            let at = rng.random_range(0..shard.len());
            shard.truncate(at);
        }
        Damage::FlipBytes => {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..shard.len());
                shard[at] ^= rng.random_range(1..=255u8);
            }
        }
        Damage::FlipHeader => {
            let at = rng.random_range(0..64);
            shard[at] ^= 0x80;
        }
        Damage::FlipChunkData => {
            // Somewhere between header and footer if there is data, else anywhere.
            let at = if shard.len() > 64 + 96 {
                rng.random_range(64..shard.len() - 96)
            } else {
                rng.random_range(0..shard.len())
            };
            shard[at] ^= 0x01;
        }
    }
    Some(shard)
}

fn code_strategy() -> impl Strategy<Value = Code> {
    (
        1usize..8,
        1usize..4,
        1u32..5,
        prop::sample::select(vec![64u32, 100, 128, 200]),
    )
        .prop_map(|(k, m, cells, chunk)| Code::with_sizes(k, m, 64 * cells, chunk).unwrap())
}

/// Encodes, damages `damaged` random shards, opens the rest from the files alone.
fn damaged_reader(
    code: Code,
    data: &[u8],
    damaged: usize,
    rng: &mut StdRng,
) -> Result<BundleReader<Vec<u8>>, ErasureError> {
    let index_len = (data.len() / 3) as u64;
    let index = IndexLocation {
        offset: data.len() as u64 - index_len,
        len: index_len,
    };
    let (info, shards) = encode(code, data, index);
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.shuffle(rng);
    let victims = &order[..damaged];
    let mut candidates = Vec::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let survivor = if victims.contains(&i) {
            let damage = DAMAGES[rng.random_range(0..DAMAGES.len())];
            apply(damage, shard, rng)
        } else {
            Some(shard)
        };
        candidates.extend(survivor);
    }
    candidates.shuffle(rng);
    let (reader, _) = BundleReader::open(candidates)?;
    if damaged <= code.parity_shards() {
        assert_eq!(
            *reader.info(),
            info,
            "undamaged shards outvote damaged ones"
        );
    }
    Ok(reader)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn up_to_m_damaged_shards_read_back_identical(
        code in code_strategy(),
        len in 0usize..12_000,
        seed in any::<u64>(),
        damaged_frac in 0.0f64..=1.0,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = bundle_bytes(len, seed);
        let damaged = (damaged_frac * code.parity_shards() as f64).round() as usize;
        let mut reader = damaged_reader(code, &data, damaged, &mut rng).unwrap();
        for _ in 0..4 {
            if len == 0 {
                break;
            }
            let offset = rng.random_range(0..len);
            let range_len = rng.random_range(0..=(len - offset).min(700));
            let got = reader.read_range(offset as u64, range_len as u64).unwrap();
            prop_assert_eq!(&got[..], &data[offset..offset + range_len]);
        }
        let mut out = Vec::new();
        reader.read_bundle(&mut out).unwrap();
        prop_assert_eq!(out, data);
    }

    #[test]
    fn more_than_m_damaged_shards_never_yield_wrong_bytes(
        code in code_strategy(),
        len in 1usize..4000,
        seed in any::<u64>(),
        extra in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = bundle_bytes(len, seed);
        let damaged = (code.parity_shards() + extra).min(code.total_shards());
        match damaged_reader(code, &data, damaged, &mut rng) {
            Err(_) => {}
            Ok(mut reader) => {
                let mut out = Vec::new();
                match reader.read_bundle(&mut out) {
                    Ok(()) => prop_assert_eq!(&out, &data),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                let offset = rng.random_range(0..len);
                if let Ok(got) = reader.read_range(offset as u64, (len - offset) as u64) {
                    prop_assert_eq!(&got[..], &data[offset..]);
                }
            }
        }
    }

    #[test]
    fn more_than_m_deleted_shards_is_an_error(
        code in code_strategy(),
        len in 1usize..4000,
        seed in any::<u64>(),
        extra in 1usize..4,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = bundle_bytes(len, seed);
        let (info, shards) = encode(code, &data, IndexLocation::default());
        let mut order: Vec<usize> = (0..shards.len()).collect();
        order.shuffle(&mut rng);
        let deleted = &order[..(code.parity_shards() + extra).min(code.total_shards())];
        let sources = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (!deleted.contains(&i)).then_some(s))
            .collect();
        // Shards that were deleted but hold none of the bundle's bytes (small bundles use only
        // the first cells) are not needed: then the read must succeed, else fail clearly.
        let holders: Vec<usize> = info
            .layout()
            .unwrap()
            .pieces(info.bundle_id, 0, len as u64)
            .unwrap()
            .iter()
            .map(|p| usize::from(p.shard))
            .collect();
        let needed_lost = deleted.iter().any(|d| holders.contains(d));
        let mut reader = BundleReader::new(info, sources).unwrap();
        let mut out = Vec::new();
        match reader.read_bundle(&mut out) {
            Ok(()) => {
                prop_assert!(!needed_lost, "read succeeded though a needed shard was lost");
                prop_assert_eq!(out, data);
            }
            Err(err) => {
                prop_assert!(needed_lost);
                let is_unrecoverable = matches!(err, ErasureError::Unrecoverable { .. });
                prop_assert!(is_unrecoverable, "{}", err);
            }
        }
    }
}
