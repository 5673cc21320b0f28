//! Bytes that pass their CRCs but not their file's SHA-256. A disk can return other bytes with a
//! valid checksum (a misdirected or phantom write, a firmware bug): each chunk's CRC32C then
//! holds and only the file's SHA-256, recorded at ingest, tells. When a whole file hashes wrong,
//! the node decodes its range around each shard in turn; the shard whose absence gives the
//! recorded digest returned the wrong bytes. It is left out of this bundle's later reads on
//! this node and reported damaged, so the repair worker rewrites it from the others. One bad
//! shard per range is found this way (k+m reads of the range at most, on the damage path only).

use bitmountain_bundle::IndexEntry;
use sha2::{Digest, Sha256};

use super::read::CachedBundle;
use super::Coordinator;
use crate::error::{NodeError, Result};
use crate::limits::READ_WINDOW_BYTES;

impl Coordinator {
    /// SHA-256 of bundle bytes `[offset, offset + len)` read without the shards `exclude`.
    async fn hash_range(
        &self,
        b: &CachedBundle,
        offset: u64,
        len: u64,
        exclude: &[u16],
    ) -> Result<[u8; 32]> {
        let mut h = Sha256::new();
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let step = (end - at).min(READ_WINDOW_BYTES);
            h.update(self.read_range_excluding(b, at, step, exclude).await?);
            at += step;
        }
        Ok(h.finalize().into())
    }

    /// A whole file (at most one read window) whose first read hashed wrong: read again around
    /// the shard that explains it, or `damaged` when none does.
    pub async fn reread_verified(&self, b: &CachedBundle, e: &IndexEntry) -> Result<Vec<u8>> {
        if self
            .find_bad_shard(b, e.offset, e.length, e.sha256)
            .await
            .is_some()
        {
            let bytes = self.read_range(b, e.offset, e.length).await?;
            if <[u8; 32]>::from(Sha256::digest(&bytes)) == e.sha256 {
                return Ok(bytes);
            }
        }
        Err(NodeError::Damaged {
            bundle: b.id().to_string(),
            reason: format!(
                "{:?} does not hash to its recorded SHA-256 and no single shard explains it;                  nothing of it is returned",
                e.path
            ),
        })
    }

    /// After bytes `[offset, offset + len)` hashed to other than `want` with every chunk's CRC
    /// valid: the shard that returned wrong bytes, found by decoding around each in turn; marked
    /// bad on `b` and reported for rewrite. `None`: no single shard explains the difference.
    pub async fn find_bad_shard(
        &self,
        b: &CachedBundle,
        offset: u64,
        len: u64,
        want: [u8; 32],
    ) -> Option<u16> {
        let known_bad = b.bad_shards();
        let total = b.info.code.total_shards() as u16;
        for shard in (0..total).filter(|s| !known_bad.contains(s)) {
            let mut exclude = known_bad.clone();
            exclude.push(shard);
            // A read that cannot decode without this shard tells nothing about it.
            let Ok(got) = self.hash_range(b, offset, len, &exclude).await else {
                continue;
            };
            if got == want {
                b.mark_bad(shard);
                let reason = format!(
                    "read by node {}: shard {shard} returned bytes with valid CRC32Cs that do \
                     not hash to the recorded SHA-256 of bytes {offset}..{} (a misdirected or \
                     phantom write); decoded from the other shards",
                    self.node_id,
                    offset + len
                );
                self.damage.report(b.id(), vec![u32::from(shard)], reason);
                return Some(shard);
            }
        }
        None
    }
}
