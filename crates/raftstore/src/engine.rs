//! The one RocksDB a member keeps: column families, key layout, and the raft-rs `Storage` on it.
//!
//! Column families (all in one DB, so one WAL orders every write):
//!
//! | CF      | key                     | value                                   |
//! |---------|-------------------------|-----------------------------------------|
//! | `raft`  | `0x01`                  | `HardState` (eraftpb protobuf)          |
//! | `raft`  | `0x02`                  | truncated state: v1, index u64, term u64 |
//! | `raft`  | `0x03`                  | member identity: v1, member id u64      |
//! | `raft`  | `0x10` + index (u64 BE) | `Entry` (eraftpb protobuf)              |
//! | `apply` | `0x01`                  | apply state: v1, applied index, term    |
//! | `apply` | `0x02`                  | `ConfState` (eraftpb protobuf)          |
//! | `apply` | `0x03`                  | member addresses: v1, (id, address)*    |
//! | `apply` | `0x04`                  | snapshot install in progress: v1, index, term |
//! | `sm`    | owned by the state machine                                        |
//!
//! Integers are big-endian so keys sort numerically. Everything in `apply` and `sm` is written
//! in the same batch as the entry that changed it, so the applied index never disagrees with the
//! state it describes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::entry_cache::{push_within, EntryCache};
use crate::error::{RaftStoreError, Result};
use crate::snapshot;

/// Column family for the Raft log, hard state and truncation point.
pub const CF_RAFT: &str = "raft";
/// Column family for the applied index, conf state and member addresses.
pub const CF_APPLY: &str = "apply";
/// Column family owned by the state machine.
pub const CF_SM: &str = "sm";

pub(crate) const KEY_HARD_STATE: &[u8] = &[0x01];
pub(crate) const KEY_TRUNCATED: &[u8] = &[0x02];
pub(crate) const KEY_IDENT: &[u8] = &[0x03];
pub(crate) const PREFIX_ENTRY: u8 = 0x10;
pub(crate) const KEY_APPLY_STATE: &[u8] = &[0x01];
pub(crate) const KEY_CONF_STATE: &[u8] = &[0x02];
pub(crate) const KEY_MEMBERS: &[u8] = &[0x03];
pub(crate) const KEY_SNAPSHOT_INSTALLING: &[u8] = &[0x04];

const VERSION_1: u8 = 1;

/// Index and term a bootstrapped group starts at. Members joining later have an empty log at 0,
/// below the leader's first index, so they always catch up by snapshot and never replay a log
/// that predates their conf state.
pub const INIT_INDEX: u64 = 5;
/// Term of [`INIT_INDEX`].
pub const INIT_TERM: u64 = 5;

pub(crate) fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = PREFIX_ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Member id → address, as replicated through conf changes.
pub type Members = BTreeMap<u64, String>;

pub(crate) fn encode_members(members: &Members) -> Vec<u8> {
    let mut out = vec![VERSION_1];
    for (id, addr) in members {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(addr.len() as u32).to_be_bytes());
        out.extend_from_slice(addr.as_bytes());
    }
    out
}

pub(crate) fn decode_members(mut buf: &[u8]) -> Result<Members> {
    let bad = || RaftStoreError::Corrupt {
        what: "member address map".into(),
    };
    let (&version, rest) = buf.split_first().ok_or_else(bad)?;
    if version != VERSION_1 {
        return Err(bad());
    }
    buf = rest;
    let mut out = Members::new();
    while !buf.is_empty() {
        if buf.len() < 12 {
            return Err(bad());
        }
        let id = u64::from_be_bytes(buf[..8].try_into().map_err(|_| bad())?);
        let len = u32::from_be_bytes(buf[8..12].try_into().map_err(|_| bad())?) as usize;
        buf = &buf[12..];
        if buf.len() < len {
            return Err(bad());
        }
        let addr = String::from_utf8(buf[..len].to_vec()).map_err(|_| bad())?;
        buf = &buf[len..];
        out.insert(id, addr);
    }
    Ok(out)
}

pub(crate) fn encode_index_term(index: u64, term: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(VERSION_1);
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&term.to_be_bytes());
    v
}

pub(crate) fn decode_index_term(v: &[u8], what: &str) -> Result<(u64, u64)> {
    if v.len() != 17 || v[0] != VERSION_1 {
        return Err(RaftStoreError::Corrupt { what: what.into() });
    }
    let i = u64::from_be_bytes(v[1..9].try_into().unwrap_or_default());
    let t = u64::from_be_bytes(v[9..17].try_into().unwrap_or_default());
    Ok((i, t))
}

/// Most bytes of write-ahead log kept before the column families pinning the oldest file are
/// flushed: bounds what a restart replays.
pub const MAX_TOTAL_WAL_BYTES: u64 = 128 << 20;

/// The member's RocksDB with its column families.
#[derive(Debug, Clone)]
pub struct Engine {
    db: Arc<DB>,
    path: PathBuf,
    snap_dir: PathBuf,
}

impl Engine {
    /// Whether `dir` holds a member's DB (offline tools refuse other directories instead of
    /// creating an empty DB in them).
    pub fn exists(dir: &Path) -> bool {
        dir.join("db").join("CURRENT").is_file()
    }

    /// Opens (creating if missing) the DB under `dir`, and finishes a snapshot install that a
    /// crash interrupted.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("db");
        let snap_dir = dir.join("snap");
        for d in [&path, &snap_dir] {
            std::fs::create_dir_all(d).map_err(|source| RaftStoreError::Io {
                path: d.clone(),
                source,
            })?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        // A WAL file is deleted only once every column family with writes in it has been
        // flushed. `apply` and `raft` take small, constant-size writes every round and would
        // not fill a memtable for a long time, so by default the WAL grows to 4 × the sum of
        // all write buffers (1.5 GiB here), all of which a restart after a crash replays.
        // Past this size RocksDB flushes the column families holding the oldest WAL back.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        let mut sm_opts = Options::default();
        sm_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Applying an allocation looks up its request id, which is almost never there: bloom
        // filters answer such misses without reading index blocks of every level.
        let mut sm_table = rocksdb::BlockBasedOptions::default();
        sm_table.set_bloom_filter(10.0, false);
        sm_opts.set_block_based_table_factory(&sm_table);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_RAFT, Options::default()),
            ColumnFamilyDescriptor::new(CF_APPLY, Options::default()),
            ColumnFamilyDescriptor::new(CF_SM, sm_opts),
        ];
        let db =
            DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| RaftStoreError::Db {
                path: path.clone(),
                source,
            })?;
        let engine = Self {
            db: Arc::new(db),
            path,
            snap_dir,
        };
        snapshot::remove_unfinished(&engine.snap_dir);
        snapshot::resume_interrupted_install(&engine)?;
        Ok(engine)
    }

    /// Where snapshot files are built and received.
    pub fn snap_dir(&self) -> &Path {
        &self.snap_dir
    }

    /// The shared DB handle (readers on other threads use it directly).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Where the DB lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A column family handle; the three are created at open, so a miss is a bug.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        cf(&self.db, name)
    }

    pub(crate) fn db_err(&self, source: rocksdb::Error) -> RaftStoreError {
        RaftStoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn get(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf_name)?, key)
            .map_err(|e| self.db_err(e))
    }

    /// Writes a batch; `sync` fsyncs the WAL (and with it every earlier write).
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(|e| self.db_err(e))
    }

    /// The member id this data directory belongs to, if it was ever started.
    pub fn member_id(&self) -> Result<Option<u64>> {
        match self.get(CF_RAFT, KEY_IDENT)? {
            None => Ok(None),
            Some(v) if v.len() == 9 && v[0] == VERSION_1 => Ok(Some(u64::from_be_bytes(
                v[1..9].try_into().unwrap_or_default(),
            ))),
            Some(_) => Err(RaftStoreError::Corrupt {
                what: "member identity".into(),
            }),
        }
    }

    /// Records the member id (first start only), synced.
    pub fn set_member_id(&self, id: u64) -> Result<()> {
        let mut b = WriteBatch::default();
        let mut v = vec![VERSION_1];
        v.extend_from_slice(&id.to_be_bytes());
        b.put_cf(self.cf(CF_RAFT)?, KEY_IDENT, v);
        self.write(b, true)
    }

    /// Whether a conf state was ever stored (bootstrapped or caught up by snapshot).
    pub fn is_initialized(&self) -> Result<bool> {
        Ok(self.get(CF_APPLY, KEY_CONF_STATE)?.is_some())
    }

    /// Writes the initial state of a new group: conf state with `voters`, their addresses,
    /// log truncated at [`INIT_INDEX`], applied [`INIT_INDEX`]. Synced.
    pub fn bootstrap(&self, members: &Members) -> Result<()> {
        let mut cs = ConfState::default();
        cs.set_voters(members.keys().copied().collect());
        let mut hs = HardState::default();
        hs.set_term(INIT_TERM);
        hs.set_commit(INIT_INDEX);
        let mut b = WriteBatch::default();
        let raft = self.cf(CF_RAFT)?;
        let apply = self.cf(CF_APPLY)?;
        b.put_cf(raft, KEY_HARD_STATE, pb_bytes(&hs)?);
        b.put_cf(
            raft,
            KEY_TRUNCATED,
            encode_index_term(INIT_INDEX, INIT_TERM),
        );
        b.put_cf(
            apply,
            KEY_APPLY_STATE,
            encode_index_term(INIT_INDEX, INIT_TERM),
        );
        b.put_cf(apply, KEY_CONF_STATE, pb_bytes(&cs)?);
        b.put_cf(apply, KEY_MEMBERS, encode_members(members));
        self.write(b, true)
    }

    /// Applied index and term.
    pub fn apply_state(&self) -> Result<(u64, u64)> {
        match self.get(CF_APPLY, KEY_APPLY_STATE)? {
            None => Ok((0, 0)),
            Some(v) => decode_index_term(&v, "apply state"),
        }
    }

    /// Member addresses as of the applied index.
    pub fn members(&self) -> Result<Members> {
        match self.get(CF_APPLY, KEY_MEMBERS)? {
            None => Ok(Members::new()),
            Some(v) => decode_members(&v),
        }
    }

    /// Conf state as of the applied index.
    pub fn conf_state(&self) -> Result<ConfState> {
        match self.get(CF_APPLY, KEY_CONF_STATE)? {
            None => Ok(ConfState::default()),
            Some(v) => pb_parse(&v, "conf state"),
        }
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| RaftStoreError::Corrupt {
        what: format!("missing column family {name}"),
    })
}

pub(crate) fn pb_bytes<M: protobuf::Message>(m: &M) -> Result<Vec<u8>> {
    m.write_to_bytes().map_err(|e| RaftStoreError::Corrupt {
        what: format!("encoding protobuf: {e}"),
    })
}

pub(crate) fn pb_parse<M: protobuf::Message>(v: &[u8], what: &str) -> Result<M> {
    M::parse_from_bytes(v).map_err(|e| RaftStoreError::Corrupt {
        what: format!("{what}: {e}"),
    })
}

enum SnapGen {
    Idle,
    Generating(mpsc::Receiver<Result<Snapshot>>),
    Ready(Snapshot),
}

/// raft-rs `Storage` on the [`Engine`]. Owned by the driver (inside the `RawNode`); caches the
/// small pieces of state so `term`/`first_index`/`last_index` do not touch the DB.
pub struct RaftStorage {
    engine: Engine,
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    last_term: u64,
    /// The newest entries, so applying them and answering term queries need no reads.
    cache: EntryCache,
    snap: Mutex<SnapGen>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStorage")
            .field("hard_state", &self.hard_state)
            .field("truncated_index", &self.truncated_index)
            .field("last_index", &self.last_index)
            .finish()
    }
}

impl RaftStorage {
    /// Loads the persisted state.
    pub fn load(engine: Engine) -> Result<Self> {
        let mut hard_state: HardState = match engine.get(CF_RAFT, KEY_HARD_STATE)? {
            Some(v) => pb_parse(&v, "hard state")?,
            None => HardState::default(),
        };
        let (truncated_index, truncated_term) = match engine.get(CF_RAFT, KEY_TRUNCATED)? {
            Some(v) => decode_index_term(&v, "truncated state")?,
            None => (0, 0),
        };
        let conf_state = engine.conf_state()?;
        let (applied, _) = engine.apply_state()?;
        // Applied entries were committed; the commit index in the hard state may lag behind
        // when the process died between an apply write and the next hard-state write.
        if hard_state.commit < applied {
            hard_state.set_commit(applied);
        }
        let mut s = Self {
            engine,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: truncated_index,
            last_term: truncated_term,
            cache: EntryCache::default(),
            snap: Mutex::new(SnapGen::Idle),
        };
        // The last entry, if any beyond the truncation point.
        let engine = s.engine.clone();
        let raft = engine.cf(CF_RAFT)?;
        let mut it = engine.db().raw_iterator_cf(raft);
        it.seek_for_prev(entry_key(u64::MAX));
        if it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                if k.len() == 9 && k[0] == PREFIX_ENTRY {
                    let e: Entry = pb_parse(v, "log entry")?;
                    if e.index > s.truncated_index {
                        s.last_index = e.index;
                        s.last_term = e.term;
                    }
                }
            }
        }
        it.status().map_err(|e| engine.db_err(e))?;
        drop(it);
        Ok(s)
    }

    /// The engine under this storage.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Index of the last entry in the log (or of the truncation point when empty).
    pub fn last_index_cached(&self) -> u64 {
        self.last_index
    }

    /// Index of the last entry removed by compaction or covered by a snapshot.
    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    /// Adds `entries` to `batch`, removing any conflicting suffix. Call [`Self::appended`] after
    /// the batch is written.
    pub fn append_to_batch(&self, entries: &[Entry], batch: &mut WriteBatch) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let raft = self.engine.cf(CF_RAFT)?;
        for e in entries {
            batch.put_cf(raft, entry_key(e.index), pb_bytes(e)?);
        }
        let new_last = entries.last().map_or(first.index, |e| e.index);
        if new_last < self.last_index {
            batch.delete_range_cf(
                raft,
                entry_key(new_last + 1),
                entry_key(self.last_index + 1),
            );
        }
        Ok(())
    }

    /// Updates the cached state after a batch from [`Self::append_to_batch`] was written.
    pub fn appended(&mut self, entries: &[Entry]) {
        if let Some(last) = entries.last() {
            self.last_index = last.index;
            self.last_term = last.term;
        }
        self.cache.append(entries);
    }

    /// Adds the hard state to `batch` and caches it.
    pub fn set_hard_state(&mut self, hs: &HardState, batch: &mut WriteBatch) -> Result<()> {
        batch.put_cf(self.engine.cf(CF_RAFT)?, KEY_HARD_STATE, pb_bytes(hs)?);
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Raises the cached and stored commit index (light ready).
    pub fn set_commit(&mut self, commit: u64, batch: &mut WriteBatch) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.set_commit(commit);
        self.set_hard_state(&hs, batch)
    }

    /// The cached hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Records a conf state applied at some index (the caller writes apply state too).
    pub fn set_conf_state(&mut self, cs: ConfState, batch: &mut WriteBatch) -> Result<()> {
        batch.put_cf(self.engine.cf(CF_APPLY)?, KEY_CONF_STATE, pb_bytes(&cs)?);
        self.conf_state = cs;
        Ok(())
    }

    /// Removes log entries up to and including `index` (must be applied). Synced, which also
    /// makes every earlier apply write durable before the entries it came from disappear.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.truncated_index || index > self.last_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index).map_err(RaftStoreError::Raft)?;
        let raft = self.engine.cf(CF_RAFT)?;
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            raft,
            entry_key(self.truncated_index + 1),
            entry_key(index + 1),
        );
        b.put_cf(raft, KEY_TRUNCATED, encode_index_term(index, term));
        self.engine.write(b, true)?;
        self.truncated_index = index;
        self.truncated_term = term;
        self.cache.compact_to(index);
        Ok(())
    }

    /// Replaces log, conf state and state machine with a received snapshot, read from its file
    /// in bounded batches (see the `snapshot` module for the crash-safe order). Returns the
    /// member addresses it carried.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<Members> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let desc = snapshot::Descriptor::decode(snap.get_data())?;
        let mut hs = self.hard_state.clone();
        hs.set_commit(hs.commit.max(index));
        hs.set_term(hs.term.max(term));
        let members =
            snapshot::install(&self.engine, &desc, index, term, meta.get_conf_state(), &hs)?;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        self.truncated_index = index;
        self.truncated_term = term;
        self.last_index = index;
        self.last_term = term;
        self.cache.clear();
        if let Ok(mut g) = self.snap.lock() {
            *g = SnapGen::Idle;
        }
        Ok(members)
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let raft = self.engine.cf(CF_RAFT)?;
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        let mut it = self.engine.db().raw_iterator_cf(raft);
        it.seek(entry_key(low));
        let mut expect = low;
        while expect < high && it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k != entry_key(expect).as_slice() {
                return Err(RaftStoreError::Corrupt {
                    what: format!("log entry {expect} missing"),
                });
            }
            let e: Entry = pb_parse(v, "log entry")?;
            if !push_within(&mut out, &mut size, e, max_size) {
                break;
            }
            expect += 1;
            it.next();
        }
        it.status().map_err(|e| self.engine.db_err(e))?;
        if out.is_empty() && low < high {
            return Err(RaftStoreError::Corrupt {
                what: format!("log entry {low} missing"),
            });
        }
        Ok(out)
    }

    fn snapshot_impl(&self, request_index: u64) -> raft::Result<Snapshot> {
        let mut g = self
            .snap
            .lock()
            .map_err(|_| raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))?;
        if let SnapGen::Generating(rx) = &*g {
            match rx.try_recv() {
                Ok(Ok(s)) => *g = SnapGen::Ready(s),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "snapshot generation failed; retrying");
                    *g = SnapGen::Idle;
                }
                Err(mpsc::TryRecvError::Empty) => {
                    return Err(raft::Error::Store(
                        StorageError::SnapshotTemporarilyUnavailable,
                    ))
                }
                Err(mpsc::TryRecvError::Disconnected) => *g = SnapGen::Idle,
            }
        }
        if let SnapGen::Ready(s) = &*g {
            let m = s.get_metadata();
            let file = snapshot::file_path(
                self.engine.snap_dir(),
                snapshot::Side::Generated,
                m.index,
                m.term,
            );
            if m.index >= request_index && m.index >= self.truncated_index && file.exists() {
                return Ok(s.clone());
            }
        }
        let (tx, rx) = mpsc::channel();
        let db = self.engine.db().clone();
        let dir = self.engine.snap_dir().to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("snapshot-gen".into())
            .spawn(move || {
                let _ = tx.send(snapshot::generate(&db, &dir));
            });
        if spawned.is_ok() {
            *g = SnapGen::Generating(rx);
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

fn store_err(e: RaftStoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        if let Some(cached) = self.cache.slice(low, high, max_size) {
            return Ok(cached);
        }
        self.read_entries(low, high, max_size).map_err(store_err)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(term) = self.cache.term(idx) {
            return Ok(term);
        }
        let v = self
            .engine
            .get(CF_RAFT, &entry_key(idx))
            .map_err(store_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        let e: Entry = pb_parse(&v, "log entry").map_err(store_err)?;
        Ok(e.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.snapshot_impl(request_index)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        e.set_data(vec![index as u8; 10].into());
        e
    }

    #[test]
    fn log_append_conflict_compact_reload() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let mut m = Members::new();
        m.insert(1, "a".into());
        engine.bootstrap(&m).unwrap();
        let mut s = RaftStorage::load(engine.clone()).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 5));
        let ents: Vec<Entry> = (6..=20).map(|i| entry(i, 6)).collect();
        let mut b = WriteBatch::default();
        s.append_to_batch(&ents, &mut b).unwrap();
        engine.write(b, true).unwrap();
        s.appended(&ents);
        assert_eq!(s.last_index().unwrap(), 20);
        assert_eq!(s.term(12).unwrap(), 6);
        // A conflicting suffix from a new leader replaces 15..=20 with 15..=16.
        let ents2: Vec<Entry> = (15..=16).map(|i| entry(i, 7)).collect();
        let mut b = WriteBatch::default();
        s.append_to_batch(&ents2, &mut b).unwrap();
        engine.write(b, true).unwrap();
        s.appended(&ents2);
        assert_eq!(s.last_index().unwrap(), 16);
        assert_eq!(s.term(16).unwrap(), 7);
        let got = s
            .entries(6, 17, raft::NO_LIMIT, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 11);
        assert_eq!(got[10].term, 7);
        // Size limit returns at least one entry.
        let got = s
            .entries(6, 17, Some(1u64), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1);
        s.compact(10).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert!(matches!(
            s.entries(9, 12, raft::NO_LIMIT, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.term(10).unwrap(), 6);
        // Reload from disk alone.
        drop(s);
        let s = RaftStorage::load(engine).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (11, 16)
        );
        assert_eq!(s.term(16).unwrap(), 7);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1]);
    }
}
