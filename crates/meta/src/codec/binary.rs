//! Fixed-width values: a shard index (the disk → bundles map), a healthy-shard count (the
//! repair queue's by-bundle index) and the disks' placed bytes (`keys::DISK_USAGE`).

use super::corrupt;
use crate::error::Result;
use crate::keys;

/// A shard index or healthy-shard count: 4 bytes, big-endian.
pub(crate) fn encode_u32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// The inverse of [`encode_u32`].
pub(crate) fn decode_u32(v: &[u8], what: &str) -> Result<u32> {
    let bytes: [u8; 4] = v
        .try_into()
        .map_err(|_| corrupt(what, format!("{} bytes, not 4", v.len())))?;
    Ok(u32::from_be_bytes(bytes))
}

/// A `keys::DISK_USAGE` value: the version byte, then (disk id, placed bytes) pairs of two
/// big-endian u64s.
pub(crate) fn encode_disk_usage(pairs: impl Iterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut value = vec![keys::VALUE_V1];
    for (id, bytes) in pairs {
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(&bytes.to_be_bytes());
    }
    value
}

/// The `(disk id, placed bytes)` pairs of a `keys::DISK_USAGE` value.
pub(crate) fn decode_disk_usage(v: &[u8]) -> Result<Vec<(u64, u64)>> {
    const WHAT: &str = "disk usage value";
    let Some((&keys::VALUE_V1, rest)) = v.split_first() else {
        return Err(corrupt(WHAT, "unknown value version"));
    };
    if rest.len() % 16 != 0 {
        return Err(corrupt(
            WHAT,
            "length is not a whole number of 16-byte pairs",
        ));
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_be_bytes(w)
    };
    Ok(rest
        .chunks_exact(16)
        .map(|p| (word(&p[..8]), word(&p[8..])))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_values_decode_or_say_what_is_wrong() {
        let v = encode_disk_usage([(3u64, 7u64), (64, 1 << 40)].into_iter());
        assert_eq!(decode_disk_usage(&v).unwrap(), vec![(3, 7), (64, 1 << 40)]);
        let short = decode_disk_usage(&v[..20]).unwrap_err().to_string();
        assert!(short.contains("16-byte pairs"), "{short}");
        let version = decode_disk_usage(&[9]).unwrap_err().to_string();
        assert!(version.contains("unknown value version"), "{version}");
    }

    #[test]
    fn fixed_width_values_have_exactly_four_bytes() {
        assert_eq!(
            decode_u32(&encode_u32(0x0102_0304), "x").unwrap(),
            0x0102_0304
        );
        let e = decode_u32(&[1, 2, 3], "shard index")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard index") && e.contains("3 bytes"), "{e}");
    }
}
