//! Bytes that pass their CRCs but not their file's SHA-256. A disk can return other bytes with a
//! valid checksum (a misdirected or phantom write, a firmware bug): each chunk's CRC32C then
//! holds and only the file's SHA-256, recorded at ingest, tells. When a whole file hashes wrong,
//! the node decodes its range around each shard in turn; the shard whose absence gives the
//! recorded digest returned the wrong bytes. It is left out of this bundle's later reads on
//! this node and reported damaged, so the repair worker rewrites it from the others. Two bad
//! shards in one range are found the same way, around each pair, when the code's parity allows
//! (k+m reads of the range, then one per pair, at most `MAX_BAD_SHARD_SETS`, on the damage path
//! only).

use bitmountain_bundle::IndexEntry;
use sha2::{Digest, Sha256};

use super::read::CachedBundle;
use super::Coordinator;
use crate::error::{NodeError, Result};
use crate::limits::{MAX_BAD_SHARD_SETS, READ_WINDOW_BYTES};

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
        if !self
            .find_bad_shards(b, e.offset, e.length, e.sha256)
            .await
            .is_empty()
        {
            let bytes = self.read_range(b, e.offset, e.length).await?;
            if <[u8; 32]>::from(Sha256::digest(&bytes)) == e.sha256 {
                return Ok(bytes);
            }
        }
        Err(NodeError::Damaged {
            bundle: b.id().to_string(),
            reason: format!(
                "{:?} does not hash to its recorded SHA-256 and no shard or pair of shards \
                 explains it; nothing of it is returned",
                e.path
            ),
        })
    }

    /// After bytes `[offset, offset + len)` hashed to other than `want` with every chunk's CRC
    /// valid: the shards that returned wrong bytes, found by decoding around each in turn, then
    /// around each pair while the code has the parity for two; marked bad on `b` and reported
    /// for rewrite. Empty: no single shard or pair within [`MAX_BAD_SHARD_SETS`] explains it.
    pub async fn find_bad_shards(
        &self,
        b: &CachedBundle,
        offset: u64,
        len: u64,
        want: [u8; 32],
    ) -> Vec<u16> {
        let known_bad = b.bad_shards();
        let spare = b.info.code.parity_shards().saturating_sub(known_bad.len());
        let total = b.info.code.total_shards() as u16;
        let candidates: Vec<u16> = (0..total).filter(|s| !known_bad.contains(s)).collect();
        for set in suspect_sets(&candidates, spare) {
            let mut exclude = known_bad.clone();
            exclude.extend(&set);
            // A read that cannot decode without these shards tells nothing about them.
            let Ok(got) = self.hash_range(b, offset, len, &exclude).await else {
                continue;
            };
            if got == want {
                for shard in &set {
                    b.mark_bad(*shard);
                }
                let reason = format!(
                    "read by node {}: shards {set:?} returned bytes with valid CRC32Cs that do \
                     not hash to the recorded SHA-256 of bytes {offset}..{} (a misdirected or \
                     phantom write); decoded from the other shards",
                    self.node_id,
                    offset + len
                );
                let reported = set.iter().map(|s| u32::from(*s)).collect();
                self.damage.report(b.id(), reported, reason);
                return set;
            }
        }
        Vec::new()
    }
}

/// The sets of shards to decode around, in order: each shard, then each pair when `spare`
/// parity allows two to be left out; at most [`MAX_BAD_SHARD_SETS`] (each costs a read of the
/// range).
fn suspect_sets(candidates: &[u16], spare: usize) -> Vec<Vec<u16>> {
    let mut sets: Vec<Vec<u16>> = if spare >= 1 {
        candidates.iter().map(|s| vec![*s]).collect()
    } else {
        Vec::new()
    };
    if spare >= 2 {
        for (i, a) in candidates.iter().enumerate() {
            for b in &candidates[i + 1..] {
                sets.push(vec![*a, *b]);
            }
        }
    }
    sets.truncate(MAX_BAD_SHARD_SETS);
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singles_come_first_then_pairs_as_far_as_parity_and_the_bound_allow() {
        let six: Vec<u16> = (0..6).collect();
        let sets = suspect_sets(&six, 2);
        assert_eq!(sets.len(), 6 + 15);
        assert_eq!(sets[..6], (0..6).map(|s| vec![s]).collect::<Vec<_>>());
        assert_eq!(sets[6], vec![0, 1]);
        assert_eq!(sets[20], vec![4, 5]);
        assert_eq!(suspect_sets(&six, 1).len(), 6, "one spare: singles only");
        assert!(
            suspect_sets(&six, 0).is_empty(),
            "no spare: nothing can be left out"
        );
        let many: Vec<u16> = (0..20).collect();
        assert_eq!(suspect_sets(&many, 4).len(), MAX_BAD_SHARD_SETS);
    }
}
