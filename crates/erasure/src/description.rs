//! The bundle description every version-2 shard carries just before its footer: what the
//! metadata group knows of a bundle that its bytes do not say (labels, creation time, file
//! count). With it, any one surviving shard describes its bundle fully, so the metadata group can
//! be rebuilt from a scan of the disks (`docs/formats.md`, "Bundle description").
//!
//! ```text
//! version u16 = 1 | label count u16 | created_unix_ms u64 | file_count u64 |
//! label count × (key len u16 | key | value len u16 | value)      (sorted by key, keys unique)
//! ```
//!
//! Little-endian, UTF-8 text. Its length and CRC32C are in the footer.

use std::collections::BTreeMap;

use crate::error::{ErasureError, Result};

/// Version of the description layout written by this code.
pub const DESCRIPTION_VERSION: u16 = 1;
/// Largest description a writer produces or a reader accepts.
pub const MAX_DESCRIPTION_BYTES: usize = 64 << 10;
const FIXED_BYTES: usize = 20;

/// What a shard says about its bundle beyond the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleDescription {
    /// When the bundle was allocated (the metadata group's clock).
    pub created_unix_ms: u64,
    /// Files in the bundle's index.
    pub file_count: u64,
    /// The bundle's labels.
    pub labels: BTreeMap<String, String>,
}

impl BundleDescription {
    /// The description's bytes. Fails when they would exceed [`MAX_DESCRIPTION_BYTES`] (the
    /// labels are limited far below that by the upload path).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let too_big = || ErasureError::BadDescription {
            reason: format!(
                "{} labels take more than {MAX_DESCRIPTION_BYTES} bytes",
                self.labels.len()
            ),
        };
        let count = u16::try_from(self.labels.len()).map_err(|_| too_big())?;
        let mut b = Vec::with_capacity(FIXED_BYTES + self.labels.len() * 16);
        b.extend_from_slice(&DESCRIPTION_VERSION.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        b.extend_from_slice(&self.file_count.to_le_bytes());
        for (k, v) in &self.labels {
            for text in [k, v] {
                let len = u16::try_from(text.len()).map_err(|_| too_big())?;
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(text.as_bytes());
            }
        }
        if b.len() > MAX_DESCRIPTION_BYTES {
            return Err(too_big());
        }
        Ok(b)
    }

    /// Parses description bytes (already checked against the footer's CRC).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = |reason: String| ErasureError::BadDescription { reason };
        if b.len() > MAX_DESCRIPTION_BYTES {
            return Err(bad(format!(
                "{} bytes, the limit is {MAX_DESCRIPTION_BYTES}",
                b.len()
            )));
        }
        let mut r = Cursor { b, at: 0 };
        let version = r
            .u16()
            .ok_or_else(|| bad("shorter than its version".into()))?;
        if version != DESCRIPTION_VERSION {
            return Err(bad(format!(
                "description version {version}, this build reads {DESCRIPTION_VERSION}; upgrade \
                 bitmountain"
            )));
        }
        let short = || bad(format!("truncated ({} bytes)", b.len()));
        let count = r.u16().ok_or_else(short)?;
        let created_unix_ms = r.u64().ok_or_else(short)?;
        let file_count = r.u64().ok_or_else(short)?;
        let mut labels = BTreeMap::new();
        for _ in 0..count {
            let key = r.text().ok_or_else(short)?;
            let value = r.text().ok_or_else(short)?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| bad("a label key is not UTF-8".into()))?;
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| bad(format!("the value of label {key:?} is not UTF-8")))?;
            if labels.keys().next_back().is_some_and(|last| *last >= key) {
                return Err(bad(format!("label {key:?} is out of order or repeated")));
            }
            labels.insert(key, value);
        }
        if r.at != b.len() {
            return Err(bad(format!(
                "{} bytes after the last label",
                b.len() - r.at
            )));
        }
        Ok(Self {
            created_unix_ms,
            file_count,
            labels,
        })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_le_bytes(a))
    }
    fn text(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> BundleDescription {
        BundleDescription {
            created_unix_ms: 1_770_000_000_123,
            file_count: 412,
            labels: [("collection", "maps"), ("shelf", "B-7 ✓")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    #[test]
    fn round_trips() {
        for d in [sample(), BundleDescription::default()] {
            assert_eq!(BundleDescription::decode(&d.encode().unwrap()).unwrap(), d);
        }
    }

    #[test]
    fn refuses_truncation_trailing_bytes_and_other_versions() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            assert!(BundleDescription::decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(BundleDescription::decode(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        let err = BundleDescription::decode(&v2).unwrap_err().to_string();
        assert!(err.contains("upgrade"), "{err}");
    }

    #[test]
    fn refuses_unsorted_labels_and_oversize() {
        let mut b = sample().encode().unwrap();
        // "collection" → "tollection", which sorts after the next key, "shelf".
        let at = FIXED_BYTES + 2;
        assert_eq!(b[at], b'c');
        b[at] = b't';
        assert!(BundleDescription::decode(&b).is_err());
        let huge = BundleDescription {
            labels: (0..300)
                .map(|i| (format!("k{i:03}"), "v".repeat(300)))
                .collect(),
            ..BundleDescription::default()
        };
        assert!(huge.encode().is_err());
    }
}
