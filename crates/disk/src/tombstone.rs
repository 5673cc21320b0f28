//! Tombstones: the record, on a disk, that a bundle was deleted. A node appends one before it
//! deletes a shard of a deleted bundle, and keeps them for as long as the disk lives (a shard of
//! the bundle may survive elsewhere: on a disk that was away, in a backup of another disk). When
//! the metadata group is rebuilt from the disks, a bundle with a tombstone on any disk stays
//! deleted (`docs/formats.md`, "Tombstone log").
//!
//! `<disk>/tombstones.log`, append-only, fixed 40-byte records, little-endian:
//!
//! ```text
//! magic "BMTS" | version u16 = 1 | reserved u16 | bundle id [16] | deleted_unix_ms u64 |
//! reserved u32 | CRC32C u32 of the 36 bytes before it
//! ```
//!
//! A record torn by a crash (a short or garbled tail) is skipped and counted, never fatal.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use bitmountain_erasure::BundleId;

/// The log's file name under the disk's root.
pub const TOMBSTONE_FILE: &str = "tombstones.log";
/// Size of one record.
pub const TOMBSTONE_RECORD_BYTES: usize = 40;
const MAGIC: [u8; 4] = *b"BMTS";
const VERSION: u16 = 1;

/// One deleted bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub bundle: BundleId,
    pub deleted_unix_ms: u64,
}

/// Everything a disk's tombstone log holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TombstoneLog {
    /// One per record, in the order written (a bundle may appear more than once).
    pub tombstones: Vec<Tombstone>,
    /// Records that failed their checks (torn by a crash, or damaged).
    pub damaged_records: usize,
}

impl Tombstone {
    fn encode(&self) -> [u8; TOMBSTONE_RECORD_BYTES] {
        let mut b = [0u8; TOMBSTONE_RECORD_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..24].copy_from_slice(&self.bundle.0);
        b[24..32].copy_from_slice(&self.deleted_unix_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != TOMBSTONE_RECORD_BYTES || b[0..4] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b[36..40].try_into().ok()?);
        if crc != crc32c::crc32c(&b[..36]) || u16::from_le_bytes([b[4], b[5]]) != VERSION {
            return None;
        }
        Some(Self {
            bundle: BundleId(b[8..24].try_into().ok()?),
            deleted_unix_ms: u64::from_le_bytes(b[24..32].try_into().ok()?),
        })
    }
}

/// Appends one tombstone and makes it durable. A torn record at the end (a crash mid-append)
/// is cut off first so records stay aligned. Callers serialize appends to one disk.
pub(crate) fn append(root: &Path, tombstone: Tombstone) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(TOMBSTONE_FILE))?;
    let len = file.metadata()?.len();
    let torn = len % TOMBSTONE_RECORD_BYTES as u64;
    if torn != 0 {
        file.set_len(len - torn)?;
    }
    file.write_all(&tombstone.encode())?;
    file.sync_data()
}

/// Reads a disk's tombstone log; a disk without one has none.
pub(crate) fn read(root: &Path) -> io::Result<TombstoneLog> {
    let mut bytes = Vec::new();
    match File::open(root.join(TOMBSTONE_FILE)) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TombstoneLog::default()),
        Err(e) => return Err(e),
    }
    let mut log = TombstoneLog::default();
    let mut records = bytes.chunks_exact(TOMBSTONE_RECORD_BYTES);
    for record in &mut records {
        match Tombstone::decode(record) {
            Some(t) => log.tombstones.push(t),
            None => log.damaged_records += 1,
        }
    }
    if !records.remainder().is_empty() {
        log.damaged_records += 1;
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn appends_read_back_and_a_torn_tail_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), TombstoneLog::default());
        let a = Tombstone {
            bundle: BundleId([1; 16]),
            deleted_unix_ms: 5,
        };
        let b = Tombstone {
            bundle: BundleId([2; 16]),
            deleted_unix_ms: 6,
        };
        append(dir.path(), a).unwrap();
        append(dir.path(), b).unwrap();
        assert_eq!(read(dir.path()).unwrap().tombstones, vec![a, b]);

        // A crash mid-append leaves a short record; a flipped bit spoils another.
        let path = dir.path().join(TOMBSTONE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[TOMBSTONE_RECORD_BYTES + 10] ^= 4;
        bytes.extend_from_slice(&a.encode()[..17]);
        std::fs::write(&path, &bytes).unwrap();
        let log = read(dir.path()).unwrap();
        assert_eq!(log.tombstones, vec![a]);
        assert_eq!(log.damaged_records, 2);
        // The next append cuts the torn record off and stays aligned.
        append(dir.path(), b).unwrap();
        let log = read(dir.path()).unwrap();
        assert_eq!(log.tombstones, vec![a, b]);
        assert_eq!(log.damaged_records, 1);
    }
}
