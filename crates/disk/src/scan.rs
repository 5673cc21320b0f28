//! What a disk holds, read from the files alone: every shard's header, footer and bundle
//! description, and the tombstone log. Disaster recovery rebuilds the metadata group from this
//! (on a running node, and offline with `bitmountain recover scan`). Reads are two or three
//! small positional reads per shard; chunk data is never read (scrub does that).

use bitmountain_erasure::{
    read_shard_meta, BundleDescription, BundleId, FileShardSource, ShardFooter, ShardHeader,
};

use crate::error::Result;
use crate::identity::DiskIdentity;
use crate::store::DiskStore;
use crate::tombstone::TombstoneLog;

/// One shard file as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedShard {
    /// The bundle and shard index the file's name gives (its header is checked against them).
    pub bundle: BundleId,
    pub shard: u16,
    pub file_bytes: u64,
    pub modified_unix_ms: u64,
    pub found: ShardFound,
}

/// What a shard file says of its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardFound {
    /// Header and footer are sound.
    Described {
        header: ShardHeader,
        footer: ShardFooter,
        /// `None` for a version-1 shard or when `description_problem` is set.
        description: Option<BundleDescription>,
        description_problem: Option<String>,
    },
    /// The header is sound, the footer is not (its data may still serve reads and repairs).
    HeaderOnly {
        header: ShardHeader,
        problem: String,
    },
    /// Not usable: no readable header, or a header naming another shard than the file name.
    Unusable { problem: String },
}

/// Everything one disk holds.
#[derive(Debug, Clone)]
pub struct DiskScan {
    pub identity: DiskIdentity,
    pub shards: Vec<ScannedShard>,
    pub tombstones: TombstoneLog,
}

impl DiskStore {
    /// Reads every shard's header, footer and description and the tombstone log. A shard that
    /// cannot be read is reported, never fatal; only failing to list the disk is.
    pub fn scan(&self) -> Result<DiskScan> {
        let listed = self.list_shards()?;
        let mut shards = Vec::with_capacity(listed.len());
        for stored in listed {
            let path = self.shard_path(stored.bundle, stored.shard);
            let found = match FileShardSource::open(&path) {
                Ok(src) => examine(&src, stored.bundle, stored.shard),
                Err(e) => ShardFound::Unusable {
                    problem: format!("cannot open {}: {e}", path.display()),
                },
            };
            shards.push(ScannedShard {
                bundle: stored.bundle,
                shard: stored.shard,
                file_bytes: stored.len_bytes,
                modified_unix_ms: stored.modified_unix_ms,
                found,
            });
        }
        Ok(DiskScan {
            identity: *self.identity(),
            shards,
            tombstones: self.tombstones()?,
        })
    }
}

fn examine(src: &FileShardSource, bundle: BundleId, shard: u16) -> ShardFound {
    let meta = match read_shard_meta(src) {
        Ok(meta) => meta,
        Err(e) => {
            return ShardFound::Unusable {
                problem: format!("header: {e}"),
            }
        }
    };
    let header = meta.header;
    if header.bundle_id != bundle || header.shard_index != shard {
        return ShardFound::Unusable {
            problem: format!(
                "the file is named shard {shard} of bundle {bundle}, its header says shard {} of \
                 bundle {}",
                header.shard_index, header.bundle_id
            ),
        };
    }
    match meta.footer {
        Ok(footer) => {
            let (description, description_problem) = match meta.description {
                None => (None, None),
                Some(Ok(d)) => (Some(d), None),
                Some(Err(e)) => (None, Some(e.to_string())),
            };
            ShardFound::Described {
                header,
                footer,
                description,
                description_problem,
            }
        }
        Err(e) => ShardFound::HeaderOnly {
            header,
            problem: format!("footer: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::identity::ClusterId;
    use bitmountain_erasure::{Code, IndexLocation, StripeEncoder};

    #[test]
    fn reports_described_damaged_and_misnamed_shards_and_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::init(dir.path(), ClusterId([3; 16]), 7, 0).unwrap();
        let id = BundleId([9; 16]);
        let code = Code::with_sizes(2, 1, 4096, 1024).unwrap();
        let description = BundleDescription {
            created_unix_ms: 11,
            file_count: 2,
            labels: [("k".to_owned(), "v".to_owned())].into(),
        };
        let mut enc = StripeEncoder::new(code, id).unwrap();
        let mut shards: Vec<Vec<u8>> = (0..3).map(|i| enc.header(i).to_vec()).collect();
        for stripe in enc.push(&[5u8; 10_000]) {
            for (s, b) in shards.iter_mut().zip(stripe.shards) {
                s.extend_from_slice(&b);
            }
        }
        let finished = enc.finish(IndexLocation::default(), &description).unwrap();
        for (s, t) in shards.iter_mut().zip(finished.tails) {
            s.extend_from_slice(&t);
        }
        // Shard 0 sound; shard 1 with a garbled footer; shard 2 stored under another's name.
        let put = |shard: u16, bytes: &[u8]| {
            let mut p = disk.create_shard(id, shard).unwrap();
            p.write(bytes).unwrap();
            p.commit().unwrap();
        };
        put(0, &shards[0]);
        let mut bad = shards[1].clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        put(1, &bad);
        let mut p = disk.create_shard(BundleId([8; 16]), 2).unwrap();
        p.write(&shards[2]).unwrap();
        p.commit().unwrap();
        disk.record_tombstone(BundleId([1; 16]), 99).unwrap();

        let scan = disk.scan().unwrap();
        assert_eq!(scan.identity.disk_id, 7);
        assert_eq!(scan.tombstones.tombstones.len(), 1);
        assert_eq!(scan.shards.len(), 3);
        let by = |b: BundleId, s: u16| {
            scan.shards
                .iter()
                .find(|x| x.bundle == b && x.shard == s)
                .unwrap()
                .found
                .clone()
        };
        match by(id, 0) {
            ShardFound::Described {
                footer,
                description: d,
                ..
            } => {
                assert_eq!(footer.bundle_len, 10_000);
                assert_eq!(d, Some(description));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(by(id, 1), ShardFound::HeaderOnly { .. }));
        assert!(matches!(
            by(BundleId([8; 16]), 2),
            ShardFound::Unusable { .. }
        ));
    }
}
