//! Shard files kept open for reads.
//!
//! A warm read of a hot shard then costs an `fstat` and a `pread` instead of an open, a stat,
//! a read and a close, and a read whose bytes are already in the page cache can be served on
//! the caller's thread ([`read_now`], `RWF_NOWAIT`), without handing it to a blocking thread
//! and waking the caller back up — on a busy node those two wake-ups cost more than the read.
//!
//! A kept file may have been replaced (a repair renames a new copy over it) or deleted (by
//! garbage collection, a rebalance, or by hand) since it was opened. The store forgets a file
//! when it deletes or replaces it itself, and every read checks the file still has a name
//! (`nlink > 0`), so bytes of a file no longer on disk are never served.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bitmountain_erasure::BundleId;

/// Open shard files kept per disk. Each holds a file descriptor (and, once its file is deleted,
/// the file's blocks until it is forgotten), so the number is small: enough for the shards
/// being read right now, far below the process's descriptor limit with many disks.
pub const MAX_OPEN_SHARD_FILES_PER_DISK: usize = 64;

type Key = (BundleId, u16);

#[derive(Debug)]
struct Kept {
    file: Arc<File>,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Files {
    by_shard: HashMap<Key, Kept>,
    clock: u64,
}

/// Of the process's open-file limit, the share the kept shard files of all disks may take (the
/// rest is for connections, shard writes, logs).
const KEPT_FILES_SHARE_OF_LIMIT: u64 = 4;

/// How many files each of `disks` disks may keep open under an open-file soft limit of
/// `soft_limit` (`None`: unlimited): a quarter of the limit over the disks, at most
/// [`MAX_OPEN_SHARD_FILES_PER_DISK`]. 0 keeps none (every read opens its file).
pub fn kept_files_per_disk(soft_limit: Option<u64>, disks: usize) -> usize {
    let Some(limit) = soft_limit else {
        return MAX_OPEN_SHARD_FILES_PER_DISK;
    };
    let share = limit / KEPT_FILES_SHARE_OF_LIMIT / (disks.max(1) as u64);
    usize::try_from(share).map_or(MAX_OPEN_SHARD_FILES_PER_DISK, |s| {
        s.min(MAX_OPEN_SHARD_FILES_PER_DISK)
    })
}

/// This process's soft limit on open files, from `/proc/self/limits` (`None`: unlimited or not
/// readable).
pub fn open_file_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_soft_limit(&limits)
}

fn parse_open_file_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The open files of one disk, least recently used first out.
#[derive(Debug)]
pub(crate) struct OpenShards {
    files: Mutex<Files>,
    /// Set when the filesystem refuses `RWF_NOWAIT`: every read then goes the blocking way.
    nowait_unsupported: AtomicBool,
    /// Files kept at most (see [`kept_files_per_disk`]).
    max_files: AtomicUsize,
}

impl Default for OpenShards {
    fn default() -> Self {
        OpenShards {
            files: Mutex::default(),
            nowait_unsupported: AtomicBool::new(false),
            max_files: AtomicUsize::new(MAX_OPEN_SHARD_FILES_PER_DISK),
        }
    }
}

impl OpenShards {
    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept file of a shard, if any.
    pub(crate) fn get(&self, key: Key) -> Option<Arc<File>> {
        let mut files = self.lock();
        files.clock += 1;
        let now = files.clock;
        let kept = files.by_shard.get_mut(&key)?;
        kept.last_used = now;
        Some(Arc::clone(&kept.file))
    }

    /// Keeps `file` for `key`, closing the least recently used files when full.
    pub(crate) fn keep(&self, key: Key, file: Arc<File>) {
        let max = self.max_files.load(Ordering::Relaxed);
        let mut files = self.lock();
        files.by_shard.remove(&key);
        while files.by_shard.len() >= max {
            let oldest = files
                .by_shard
                .iter()
                .min_by_key(|(_, kept)| kept.last_used)
                .map(|(key, _)| *key);
            match oldest {
                Some(oldest) => files.by_shard.remove(&oldest),
                // Nothing kept and no room: keep nothing.
                None => return,
            };
        }
        files.clock += 1;
        let now = files.clock;
        files.by_shard.insert(
            key,
            Kept {
                file,
                last_used: now,
            },
        );
        assert!(files.by_shard.len() <= max);
    }

    /// Keeps at most `max` files from now on (the least recently used beyond it are closed at
    /// the next [`OpenShards::keep`]).
    pub(crate) fn set_max(&self, max: usize) {
        self.max_files
            .store(max.min(MAX_OPEN_SHARD_FILES_PER_DISK), Ordering::Relaxed);
    }

    /// Forgets a shard's file (it is being deleted or replaced).
    pub(crate) fn forget(&self, key: Key) {
        self.lock().by_shard.remove(&key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_shard.len()
    }

    pub(crate) fn nowait_supported(&self) -> bool {
        !self.nowait_unsupported.load(Ordering::Relaxed)
    }

    fn note_nowait_unsupported(&self) {
        self.nowait_unsupported.store(true, Ordering::Relaxed);
    }
}

/// What a kept file says of itself: its length, or that it no longer has a name on disk.
pub(crate) fn live_len(file: &File) -> io::Result<Option<u64>> {
    let meta = file.metadata()?;
    Ok((meta.nlink() > 0).then_some(meta.len()))
}

/// Reads `buf.len()` bytes at `offset` of `file` only if that needs no waiting for the disk
/// (the bytes are in the page cache). `None`: not all of them were at hand, or the filesystem
/// cannot tell; the caller reads the blocking way.
pub(crate) fn read_now(
    open: &OpenShards,
    file: &File,
    offset: u64,
    buf: &mut [u8],
) -> Option<usize> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut done = 0;
    while done < buf.len() {
        let at = offset + done as u64;
        let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(file, &mut slices, at, ReadWriteFlags::NOWAIT) {
            // End of file: the caller checked the length, so the file shrank; let the blocking
            // path say so.
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(Errno::OPNOTSUPP) | Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                open.note_nowait_unsupported();
                return None;
            }
            Err(_) => return None,
        }
    }
    Some(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::fs;

    use crate::{ClusterId, DiskError, DiskStore};

    use super::*;

    fn store(dir: &std::path::Path) -> DiskStore {
        DiskStore::init(dir, ClusterId([1; 16]), 7, 0).unwrap()
    }

    fn put(store: &DiskStore, bundle: BundleId, shard: u16, bytes: &[u8]) {
        let mut pending = store.create_shard(bundle, shard).unwrap();
        pending.write(bytes).unwrap();
        pending.commit().unwrap();
    }

    /// Both ways of reading, which must agree whenever the quick one answers.
    fn read_both(store: &DiskStore, bundle: BundleId, offset: u64, len: u64) -> Vec<u8> {
        let slow = store.read_shard_range(bundle, 0, offset, len).unwrap();
        match store.read_shard_range_now(bundle, 0, offset, len) {
            Some(now) => assert_eq!(now.unwrap(), slow),
            // The file was just read, so its bytes are in the page cache: only a filesystem
            // without RWF_NOWAIT may decline.
            None => assert!(
                !store.reads_now(),
                "a warm read of a kept file was declined"
            ),
        }
        slow
    }

    #[test]
    fn a_kept_file_serves_reads_until_its_shard_is_replaced_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let bundle = BundleId([0x5a; 16]);
        put(&store, bundle, 0, &[b'a'; 8192]);
        // Nothing is open before the first read, so the quick way has nothing to read from.
        assert!(store.read_shard_range_now(bundle, 0, 0, 16).is_none());
        assert_eq!(read_both(&store, bundle, 100, 50), vec![b'a'; 50]);
        assert_eq!(store.open_file_count(), 1);
        let beyond = store.read_shard_range_now(bundle, 0, 8000, 193);
        if store.reads_now() {
            assert!(matches!(
                beyond,
                Some(Err(DiskError::RangeOutOfBounds { .. }))
            ));
        }

        // A repair's new copy, committed through the store, is what reads see next.
        put(&store, bundle, 0, &[b'b'; 4096]);
        assert_eq!(read_both(&store, bundle, 0, 4096), vec![b'b'; 4096]);

        // Replaced behind the store's back: the kept file has no name any more.
        let path = store.shard_path(bundle, 0);
        let side = dir.path().join("by hand");
        fs::write(&side, [b'c'; 4096]).unwrap();
        fs::rename(&side, &path).unwrap();
        assert!(store.read_shard_range_now(bundle, 0, 0, 10).is_none());
        assert_eq!(read_both(&store, bundle, 0, 10), vec![b'c'; 10]);

        // Deleted by hand: the read says the shard is gone instead of serving the old bytes.
        fs::remove_file(&path).unwrap();
        assert!(store.read_shard_range_now(bundle, 0, 0, 10).is_none());
        assert!(matches!(
            store.read_shard_range(bundle, 0, 0, 10),
            Err(DiskError::ShardNotFound { .. })
        ));
        assert_eq!(store.open_file_count(), 0);
    }

    #[test]
    fn the_kept_files_fit_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95434                95434                processes\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_open_file_soft_limit(limits), Some(1024));
        assert_eq!(
            parse_open_file_soft_limit("Max open files  unlimited  unlimited  files"),
            None
        );
        assert_eq!(
            kept_files_per_disk(None, 100),
            MAX_OPEN_SHARD_FILES_PER_DISK
        );
        assert_eq!(
            kept_files_per_disk(Some(1_048_576), 60),
            MAX_OPEN_SHARD_FILES_PER_DISK
        );
        // 1024 descriptors and 16 disks: a quarter, 256, over the disks.
        assert_eq!(kept_files_per_disk(Some(1024), 16), 16);
        assert_eq!(kept_files_per_disk(Some(64), 100), 0);
        assert!(open_file_soft_limit().is_none_or(|l| l > 0));

        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (a, b) = (BundleId([1; 16]), BundleId([2; 16]));
        put(&store, a, 0, b"a");
        put(&store, b, 0, b"b");
        store.limit_open_files(0);
        assert_eq!(store.read_shard_range(a, 0, 0, 1).unwrap(), b"a");
        assert_eq!(store.open_file_count(), 0);
        assert!(store.read_shard_range_now(a, 0, 0, 1).is_none());
        store.limit_open_files(1);
        assert_eq!(read_both(&store, a, 0, 1), b"a");
        assert_eq!(read_both(&store, b, 0, 1), b"b");
        assert_eq!(store.open_file_count(), 1);
    }

    #[test]
    fn open_files_are_bounded_and_deleting_a_shard_closes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let count = MAX_OPEN_SHARD_FILES_PER_DISK + 10;
        let bundles: Vec<BundleId> = (0..count).map(|i| BundleId([i as u8; 16])).collect();
        for (i, b) in bundles.iter().enumerate() {
            put(&store, *b, 0, &[i as u8; 100]);
            assert_eq!(read_both(&store, *b, 0, 100), vec![i as u8; 100]);
            assert!(store.open_file_count() <= MAX_OPEN_SHARD_FILES_PER_DISK);
        }
        assert_eq!(store.open_file_count(), MAX_OPEN_SHARD_FILES_PER_DISK);
        // The least recently used went first: the first shard is no longer open, the last is.
        assert!(store.read_shard_range_now(bundles[0], 0, 0, 1).is_none());
        let last = bundles[count - 1];
        assert!(store.read_shard_range_now(last, 0, 0, 1).is_some() || !store.reads_now());
        assert!(store.delete_shard(last, 0).unwrap());
        assert_eq!(store.open_file_count(), MAX_OPEN_SHARD_FILES_PER_DISK - 1);
        assert!(store.read_shard_range_now(last, 0, 0, 1).is_none());
    }
}
