//! The shard file store of one disk.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bitmountain_erasure::{shard_file_name, BundleId, FileShardSource, ShardSink};

use crate::error::{DiskError, Result};
use crate::identity::{ClusterId, DiskIdentity, IDENTITY_FILE};
use crate::open_files::{live_len, read_now, OpenShards};
use crate::tombstone::{self, Tombstone, TombstoneLog};

const SHARDS_DIR: &str = "shards";
const TEMP_DIR: &str = "tmp";
/// Largest single range read served in one request; larger reads are split by the caller.
pub const MAX_READ_BYTES: u64 = 16 << 20;
/// Entries a fresh disk directory may already hold and still count as empty (ext4 creates it).
const IGNORED_ON_INIT: &[&str] = &["lost+found"];

/// Capacity figures of the filesystem under a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

/// A shard file found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShard {
    pub bundle: BundleId,
    pub shard: u16,
    pub len_bytes: u64,
    /// When the file was last written (garbage collection leaves young stale copies alone).
    pub modified_unix_ms: u64,
}

/// One disk: its identity and its shard files.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    identity: DiskIdentity,
    temp_counter: AtomicU64,
    /// Serializes appends to the tombstone log.
    tombstone_lock: Mutex<()>,
    /// Shard files kept open for reads.
    open_files: Arc<OpenShards>,
}

impl DiskStore {
    /// Makes an empty directory a disk of `cluster_id`: writes the identity file (fsynced) and
    /// the store's directories. A directory with anything in it is refused.
    pub fn init(
        root: &Path,
        cluster_id: ClusterId,
        disk_id: u64,
        now_unix_ms: u64,
    ) -> Result<DiskStore> {
        let io = |context: &str, e| DiskError::Io {
            disk_id,
            path: root.to_path_buf(),
            context: context.to_owned(),
            source: e,
        };
        let entries = fs::read_dir(root).map_err(|e| io("listing the new disk directory", e))?;
        for entry in entries {
            let name = entry
                .map_err(|e| io("listing the new disk directory", e))?
                .file_name();
            let name = name.to_string_lossy();
            if !IGNORED_ON_INIT.contains(&name.as_ref()) {
                return Err(DiskError::NotEmpty {
                    path: root.to_path_buf(),
                    entry: name.into_owned(),
                });
            }
        }
        let identity = DiskIdentity {
            cluster_id,
            disk_id,
            created_unix_ms: now_unix_ms,
        };
        let temp = root.join(format!(".{IDENTITY_FILE}.tmp"));
        let mut file = File::create(&temp).map_err(|e| io("creating the identity file", e))?;
        file.write_all(identity.encode().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing the identity file", e))?;
        fs::rename(&temp, root.join(IDENTITY_FILE))
            .map_err(|e| io("renaming the identity file", e))?;
        let store = DiskStore {
            root: root.to_path_buf(),
            identity,
            temp_counter: AtomicU64::new(0),
            tombstone_lock: Mutex::new(()),
            open_files: Arc::default(),
        };
        store.create_dirs()?;
        sync_dir(root).map_err(|e| io("syncing the disk directory", e))?;
        Ok(store)
    }

    /// Opens a disk, refusing a directory without an identity or with another cluster's.
    /// `expected_cluster` is `None` only before the node knows its cluster.
    pub fn open(root: &Path, expected_cluster: Option<ClusterId>) -> Result<DiskStore> {
        let identity = DiskIdentity::read(root)?;
        if let Some(expected) = expected_cluster {
            if identity.cluster_id != expected {
                return Err(DiskError::WrongCluster {
                    path: root.to_path_buf(),
                    found: identity.cluster_id.to_string(),
                    expected: expected.to_string(),
                });
            }
        }
        let store = DiskStore {
            root: root.to_path_buf(),
            identity,
            temp_counter: AtomicU64::new(0),
            tombstone_lock: Mutex::new(()),
            open_files: Arc::default(),
        };
        store.create_dirs()?;
        Ok(store)
    }

    fn create_dirs(&self) -> Result<()> {
        for dir in [SHARDS_DIR, TEMP_DIR] {
            fs::create_dir_all(self.root.join(dir))
                .map_err(|e| self.io(&self.root, "creating store directories", e))?;
        }
        Ok(())
    }

    fn io(&self, path: &Path, context: &str, source: io::Error) -> DiskError {
        DiskError::Io {
            disk_id: self.identity.disk_id,
            path: path.to_path_buf(),
            context: context.to_owned(),
            source,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn identity(&self) -> &DiskIdentity {
        &self.identity
    }

    pub fn disk_id(&self) -> u64 {
        self.identity.disk_id
    }

    /// Checks the disk is still the disk it was: the identity file is readable and unchanged,
    /// and the shard directory exists. A deleted or unmounted disk fails here.
    pub fn check_health(&self) -> Result<()> {
        let found = DiskIdentity::read(&self.root)?;
        if found != self.identity {
            return Err(DiskError::IdentityChanged {
                path: self.root.clone(),
                expected: format!(
                    "{} of cluster {}",
                    self.identity.disk_id, self.identity.cluster_id
                ),
                found: format!("{} of cluster {}", found.disk_id, found.cluster_id),
            });
        }
        let shards = self.root.join(SHARDS_DIR);
        fs::metadata(&shards).map_err(|e| self.io(&shards, "checking the shard directory", e))?;
        Ok(())
    }

    /// Capacity and free space of the filesystem holding the disk.
    pub fn space(&self) -> Result<DiskSpace> {
        let capacity_bytes =
            fs4::total_space(&self.root).map_err(|e| self.io(&self.root, "reading capacity", e))?;
        let free_bytes = fs4::available_space(&self.root)
            .map_err(|e| self.io(&self.root, "reading free space", e))?;
        Ok(DiskSpace {
            capacity_bytes,
            free_bytes,
        })
    }

    /// Where a shard file lives.
    pub fn shard_path(&self, bundle: BundleId, shard: u16) -> PathBuf {
        self.root
            .join(SHARDS_DIR)
            .join(format!("{:02x}", bundle.0[0]))
            .join(shard_file_name(bundle, usize::from(shard)))
    }

    /// Starts writing a shard file under a temporary name.
    pub fn create_shard(&self, bundle: BundleId, shard: u16) -> Result<PendingShard> {
        let final_path = self.shard_path(bundle, shard);
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.root.join(TEMP_DIR).join(format!(
            "{}.{n}.{}",
            shard_file_name(bundle, usize::from(shard)),
            std::process::id()
        ));
        let file = File::create(&temp_path)
            .map_err(|e| self.io(&temp_path, "creating a shard file", e))?;
        Ok(PendingShard {
            file,
            temp_path,
            final_path,
            key: (bundle, shard),
            open_files: Arc::clone(&self.open_files),
            disk_id: self.identity.disk_id,
            written_bytes: 0,
            committed: false,
        })
    }

    /// Opens a shard for positional reads.
    pub fn open_shard(&self, bundle: BundleId, shard: u16) -> Result<FileShardSource> {
        let path = self.shard_path(bundle, shard);
        FileShardSource::open(&path).map_err(|e| self.not_found_or_io(e, bundle, shard, &path))
    }

    fn not_found_or_io(
        &self,
        e: io::Error,
        bundle: BundleId,
        shard: u16,
        path: &Path,
    ) -> DiskError {
        if e.kind() == io::ErrorKind::NotFound {
            DiskError::ShardNotFound {
                disk_id: self.identity.disk_id,
                bundle,
                shard,
            }
        } else {
            self.io(path, "opening a shard", e)
        }
    }

    /// The length of a shard file in bytes.
    pub fn shard_len(&self, bundle: BundleId, shard: u16) -> Result<u64> {
        let path = self.shard_path(bundle, shard);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| self.not_found_or_io(e, bundle, shard, &path))
    }

    /// Reads `len_bytes` at `offset` of a shard file (at most [`MAX_READ_BYTES`]).
    pub fn read_shard_range(
        &self,
        bundle: BundleId,
        shard: u16,
        offset: u64,
        len_bytes: u64,
    ) -> Result<Vec<u8>> {
        check_read_size(len_bytes)?;
        let (file, shard_bytes) = self.kept_file(bundle, shard)?;
        self.check_range(bundle, shard, offset, len_bytes, shard_bytes)?;
        let mut buf = vec![0u8; len_bytes as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| self.io(&self.shard_path(bundle, shard), "reading a shard", e))?;
        Ok(buf)
    }

    /// [`DiskStore::read_shard_range`] if it can be done without waiting for the disk: the
    /// shard's file is open already and the bytes are in the page cache. `None` otherwise
    /// (read the blocking way then); a range beyond the shard's end is an error either way.
    pub fn read_shard_range_now(
        &self,
        bundle: BundleId,
        shard: u16,
        offset: u64,
        len_bytes: u64,
    ) -> Option<Result<Vec<u8>>> {
        if check_read_size(len_bytes).is_err() || !self.open_files.nowait_supported() {
            return None;
        }
        let file = self.open_files.get((bundle, shard))?;
        let shard_bytes = live_len(&file).ok().flatten()?;
        if let Err(e) = self.check_range(bundle, shard, offset, len_bytes, shard_bytes) {
            return Some(Err(e));
        }
        let mut buf = vec![0u8; len_bytes as usize];
        let n = read_now(&self.open_files, &file, offset, &mut buf)?;
        assert_eq!(n, buf.len(), "read_now returns all the bytes or none");
        Some(Ok(buf))
    }

    /// The open file of a shard and its length: the kept one while it is still the file on
    /// disk, else opened by name (and kept).
    fn kept_file(&self, bundle: BundleId, shard: u16) -> Result<(Arc<File>, u64)> {
        let key = (bundle, shard);
        if let Some(file) = self.open_files.get(key) {
            match live_len(&file) {
                Ok(Some(len)) => return Ok((file, len)),
                // Replaced or deleted since it was opened: what the name holds now counts.
                Ok(None) => self.open_files.forget(key),
                Err(e) => {
                    self.open_files.forget(key);
                    let path = self.shard_path(bundle, shard);
                    return Err(self.io(&path, "reading shard length", e));
                }
            }
        }
        let path = self.shard_path(bundle, shard);
        let file = File::open(&path).map_err(|e| self.not_found_or_io(e, bundle, shard, &path))?;
        let len = file
            .metadata()
            .map_err(|e| self.io(&path, "reading shard length", e))?
            .len();
        let file = Arc::new(file);
        self.open_files.keep(key, Arc::clone(&file));
        Ok((file, len))
    }

    /// Keeps at most `max` shard files open for reads (see [`crate::kept_files_per_disk`]); 0
    /// keeps none.
    pub fn limit_open_files(&self, max: usize) {
        self.open_files.set_max(max);
    }

    /// How many shard files the disk keeps open.
    #[cfg(test)]
    pub(crate) fn open_file_count(&self) -> usize {
        self.open_files.len()
    }

    /// Whether reads may be served without waiting (the filesystem takes `RWF_NOWAIT`).
    #[cfg(test)]
    pub(crate) fn reads_now(&self) -> bool {
        self.open_files.nowait_supported()
    }

    fn check_range(
        &self,
        bundle: BundleId,
        shard: u16,
        offset: u64,
        len_bytes: u64,
        shard_bytes: u64,
    ) -> Result<()> {
        if offset
            .checked_add(len_bytes)
            .is_none_or(|end| end > shard_bytes)
        {
            return Err(DiskError::RangeOutOfBounds {
                disk_id: self.identity.disk_id,
                bundle,
                shard,
                offset,
                len_bytes,
                shard_bytes,
            });
        }
        Ok(())
    }

    /// Deletes a shard file; `false` when it was not there.
    pub fn delete_shard(&self, bundle: BundleId, shard: u16) -> Result<bool> {
        let path = self.shard_path(bundle, shard);
        // A kept descriptor would hold the file's blocks after the name is gone.
        self.open_files.forget((bundle, shard));
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent).map_err(|e| self.io(parent, "syncing after delete", e))?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(&path, "deleting a shard", e)),
        }
    }

    /// Records that `bundle` was deleted (durable on return). Call before deleting its shards.
    pub fn record_tombstone(&self, bundle: BundleId, deleted_unix_ms: u64) -> Result<()> {
        // A poisoned lock only means another append panicked; the log itself is still valid.
        let _guard = self
            .tombstone_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tombstone::append(
            &self.root,
            Tombstone {
                bundle,
                deleted_unix_ms,
            },
        )
        .map_err(|e| self.io(&self.root, "recording a tombstone", e))
    }

    /// The disk's tombstone log.
    pub fn tombstones(&self) -> Result<TombstoneLog> {
        tombstone::read(&self.root).map_err(|e| self.io(&self.root, "reading the tombstone log", e))
    }

    /// Every shard file on the disk. Files whose names are not shard names are skipped (they are
    /// not ours to judge); the scrubber reads headers for the rest.
    pub fn list_shards(&self) -> Result<Vec<StoredShard>> {
        let mut out = Vec::new();
        let shards = self.root.join(SHARDS_DIR);
        let fans = fs::read_dir(&shards).map_err(|e| self.io(&shards, "listing shards", e))?;
        for fan in fans {
            let fan = fan
                .map_err(|e| self.io(&shards, "listing shards", e))?
                .path();
            if !fan.is_dir() {
                continue;
            }
            let files = fs::read_dir(&fan).map_err(|e| self.io(&fan, "listing shards", e))?;
            for file in files {
                let file = file.map_err(|e| self.io(&fan, "listing shards", e))?;
                let name = file.file_name();
                let Some((bundle, shard)) = parse_shard_name(&name.to_string_lossy()) else {
                    continue;
                };
                let meta = file
                    .metadata()
                    .map_err(|e| self.io(&file.path(), "reading shard size", e))?;
                let modified_unix_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                out.push(StoredShard {
                    bundle,
                    shard,
                    len_bytes: meta.len(),
                    modified_unix_ms,
                });
            }
        }
        out.sort_by_key(|s| (s.bundle, s.shard));
        Ok(out)
    }

    /// Removes temporary files left by writes that never committed (a crash mid-upload).
    pub fn clean_temp(&self) -> Result<usize> {
        let temp = self.root.join(TEMP_DIR);
        let mut removed = 0;
        for entry in
            fs::read_dir(&temp).map_err(|e| self.io(&temp, "listing temporary files", e))?
        {
            let path = entry
                .map_err(|e| self.io(&temp, "listing temporary files", e))?
                .path();
            fs::remove_file(&path).map_err(|e| self.io(&path, "removing a temporary file", e))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Parses `<32 hex>.<index>.shard`.
fn parse_shard_name(name: &str) -> Option<(BundleId, u16)> {
    let rest = name.strip_suffix(".shard")?;
    let (hex, index) = rest.split_once('.')?;
    Some((BundleId::from_hex(hex)?, index.parse().ok()?))
}

fn check_read_size(len_bytes: u64) -> Result<()> {
    if len_bytes > MAX_READ_BYTES {
        return Err(DiskError::ReadTooLarge {
            len_bytes,
            limit_bytes: MAX_READ_BYTES,
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A shard file being written. [`PendingShard::commit`] makes it durable and visible; dropped
/// without commit, the temporary file is removed and nothing is visible.
#[derive(Debug)]
pub struct PendingShard {
    file: File,
    temp_path: PathBuf,
    final_path: PathBuf,
    /// The shard this file becomes, and the disk's open files (a kept older copy is closed).
    key: (BundleId, u16),
    open_files: Arc<OpenShards>,
    disk_id: u64,
    written_bytes: u64,
    committed: bool,
}

impl PendingShard {
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    fn io(&self, path: &Path, context: &str, source: io::Error) -> DiskError {
        DiskError::Io {
            disk_id: self.disk_id,
            path: path.to_path_buf(),
            context: context.to_owned(),
            source,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| self.io(&self.temp_path, "writing a shard", e))?;
        self.written_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Fsyncs the file, renames it into place (replacing an older copy, as a repair does) and
    /// fsyncs the directory.
    pub fn commit(&mut self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| self.io(&self.temp_path, "syncing a shard", e))?;
        let parent = self
            .final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        fs::create_dir_all(&parent)
            .map_err(|e| self.io(&parent, "creating the shard directory", e))?;
        fs::rename(&self.temp_path, &self.final_path)
            .map_err(|e| self.io(&self.final_path, "renaming a shard into place", e))?;
        self.committed = true;
        self.open_files.forget(self.key);
        sync_dir(&parent).map_err(|e| self.io(&parent, "syncing the shard directory", e))
    }
}

impl Drop for PendingShard {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

impl ShardSink for PendingShard {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes).map_err(io::Error::other)
    }

    fn commit(&mut self) -> io::Result<()> {
        PendingShard::commit(self).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cluster() -> ClusterId {
        ClusterId([1; 16])
    }

    #[test]
    fn a_directory_without_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            DiskStore::open(dir.path(), None),
            Err(DiskError::NoIdentity { .. })
        ));
        // Nothing was written into it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn init_refuses_non_empty_and_open_refuses_other_clusters() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("somebody's file"), b"x").unwrap();
        assert!(matches!(
            DiskStore::init(dir.path(), cluster(), 1, 0),
            Err(DiskError::NotEmpty { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        DiskStore::init(dir.path(), cluster(), 1, 0).unwrap();
        assert!(matches!(
            DiskStore::open(dir.path(), Some(ClusterId([2; 16]))),
            Err(DiskError::WrongCluster { .. })
        ));
        let store = DiskStore::open(dir.path(), Some(cluster())).unwrap();
        assert_eq!(store.disk_id(), 1);
        store.check_health().unwrap();
    }

    #[test]
    fn shards_are_invisible_until_committed_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::init(dir.path(), cluster(), 3, 0).unwrap();
        let bundle = BundleId([0xab; 16]);
        let mut pending = store.create_shard(bundle, 2).unwrap();
        pending.write(b"hello shard").unwrap();
        assert!(store.list_shards().unwrap().is_empty());
        assert!(matches!(
            store.open_shard(bundle, 2),
            Err(DiskError::ShardNotFound { .. })
        ));
        pending.commit().unwrap();
        drop(pending);
        let listed = store.list_shards().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].bundle, listed[0].shard), (bundle, 2));
        assert_eq!(listed[0].len_bytes, 11);
        assert!(listed[0].modified_unix_ms > 0);
        assert_eq!(store.read_shard_range(bundle, 2, 6, 5).unwrap(), b"shard");
        assert!(matches!(
            store.read_shard_range(bundle, 2, 6, 6),
            Err(DiskError::RangeOutOfBounds { .. })
        ));
        assert!(store.delete_shard(bundle, 2).unwrap());
        assert!(!store.delete_shard(bundle, 2).unwrap());
    }

    #[test]
    fn an_abandoned_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::init(dir.path(), cluster(), 3, 0).unwrap();
        let mut pending = store.create_shard(BundleId([1; 16]), 0).unwrap();
        pending.write(b"partial").unwrap();
        drop(pending);
        assert_eq!(fs::read_dir(dir.path().join(TEMP_DIR)).unwrap().count(), 0);
        assert!(store.list_shards().unwrap().is_empty());
    }

    #[test]
    fn a_deleted_disk_fails_its_health_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("disk");
        fs::create_dir(&root).unwrap();
        let store = DiskStore::init(&root, cluster(), 9, 0).unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert!(matches!(
            store.check_health(),
            Err(DiskError::NoIdentity { .. })
        ));
    }
}
