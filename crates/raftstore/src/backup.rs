//! Backups of the replicated state, and a new group restored from one (etcd's `snapshot save` /
//! `snapshot restore`). A backup's state is a snapshot file (the format of the `snapshot`
//! module: members, every state-machine record, CRC32C) written from one RocksDB snapshot, so
//! it is consistent at one applied index. A restore installs it into an empty data directory as
//! a group of one member, exactly as a follower installs a snapshot (crash-safe, marker first):
//! log truncated at the backup's index, applied index and term the backup's.

use std::path::Path;

use raft::prelude::{ConfState, HardState};
use rocksdb::DB;

use crate::engine::{Engine, Members};
use crate::error::{RaftStoreError, Result};
use crate::snapshot::{self, Descriptor, Side};

pub use crate::snapshot::StateFile;

/// A scratch file for a backup of the member whose DB is `db`: in its snapshot directory, where
/// unfinished (`*.tmp`) files are removed when the member starts.
pub fn scratch_path(db: &DB, name: &str) -> std::path::PathBuf {
    let data = db.path().parent().unwrap_or(db.path());
    // Unique within the process by a counter, across processes by the process id.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    data.join("snap")
        .join(format!("{name}-{}-{n}.tmp", std::process::id()))
}

/// Writes the applied state to `path`, synced. A failed write leaves no file.
pub fn write_state(db: &DB, path: &Path) -> Result<StateFile> {
    snapshot::write_state_file(db, path)
}

/// Checks a state file's length, structure and CRC; returns its members and record count.
pub fn check_state_file(path: &Path, file_bytes: u64, crc: u32) -> Result<(Members, u64)> {
    snapshot::verify(path, &Descriptor { file_bytes, crc })
}

/// Where a restored state comes from.
#[derive(Debug, Clone, Copy)]
pub struct RestoreSource<'a> {
    pub state_file: &'a Path,
    pub file_bytes: u64,
    pub crc: u32,
    /// Applied index and term of the state.
    pub index: u64,
    pub term: u64,
}

/// Makes `data_dir` (new or empty) a group of one voter, member `id` at `address`, holding the
/// state of `source`. Refuses a directory that already holds a member. Returns the number of
/// state-machine records restored.
pub fn restore(data_dir: &Path, source: RestoreSource<'_>, id: u64, address: &str) -> Result<u64> {
    if id == 0 {
        return Err(RaftStoreError::BadMembership {
            reason: "the member id must be non-zero".into(),
        });
    }
    // Checked before anything is written.
    let (_, records) = check_state_file(source.state_file, source.file_bytes, source.crc)?;
    let engine = Engine::open(data_dir)?;
    if engine.member_id()?.is_some() || engine.is_initialized()? {
        return Err(RaftStoreError::BadMembership {
            reason: format!(
                "{} already holds a member; restore into a new, empty directory",
                data_dir.display()
            ),
        });
    }
    engine.set_member_id(id)?;
    let received =
        snapshot::file_path(engine.snap_dir(), Side::Received, source.index, source.term);
    std::fs::copy(source.state_file, &received).map_err(|e| RaftStoreError::Io {
        path: received.clone(),
        source: e,
    })?;
    std::fs::File::open(&received)
        .and_then(|f| f.sync_all())
        .map_err(|e| RaftStoreError::Io {
            path: received.clone(),
            source: e,
        })?;
    let mut cs = ConfState::default();
    cs.set_voters(vec![id]);
    let mut hs = HardState::default();
    hs.set_term(source.term);
    hs.set_commit(source.index);
    let mut members = Members::new();
    members.insert(id, address.to_owned());
    snapshot::install_as(
        &engine,
        &Descriptor {
            file_bytes: source.file_bytes,
            crc: source.crc,
        },
        (source.index, source.term),
        &cs,
        &hs,
        Some(&members),
    )?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::engine::CF_SM;
    use rocksdb::WriteBatch;

    #[test]
    fn a_backup_restores_as_a_group_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let mut members = Members::new();
        members.insert(1, "10.0.0.1:7000".into());
        members.insert(2, "10.0.0.2:7000".into());
        engine.bootstrap(&members).unwrap();
        let mut b = WriteBatch::default();
        for i in 0..3000u32 {
            b.put_cf(engine.cf(CF_SM).unwrap(), i.to_be_bytes(), i.to_le_bytes());
        }
        engine.write(b, true).unwrap();
        let out = dir.path().join("state.bin");
        let state = write_state(engine.db(), &out).unwrap();
        assert_eq!(state.records, 3000);
        assert_eq!(state.members, members);

        let target = tempfile::tempdir().unwrap();
        let source = RestoreSource {
            state_file: &out,
            file_bytes: state.file_bytes,
            crc: state.crc,
            index: state.index,
            term: state.term,
        };
        assert_eq!(
            restore(target.path(), source, 9, "127.0.0.1:9").unwrap(),
            3000
        );
        let restored = Engine::open(target.path()).unwrap();
        assert_eq!(restored.member_id().unwrap(), Some(9));
        assert_eq!(restored.members().unwrap().len(), 1);
        assert_eq!(restored.conf_state().unwrap().voters, vec![9]);
        assert_eq!(restored.apply_state().unwrap(), (state.index, state.term));
        let v = restored
            .db()
            .get_cf(restored.cf(CF_SM).unwrap(), 2999u32.to_be_bytes())
            .unwrap();
        assert_eq!(v, Some(2999u32.to_le_bytes().to_vec()));
        drop(restored);

        // A directory that holds a member is refused; so is a damaged file.
        assert!(restore(target.path(), source, 9, "127.0.0.1:9").is_err());
        let mut bytes = std::fs::read(&out).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        assert!(restore(fresh.path(), source, 9, "127.0.0.1:9").is_err());
        assert!(!Engine::open(fresh.path())
            .unwrap()
            .is_initialized()
            .unwrap());
    }
}
