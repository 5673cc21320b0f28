//! Snapshot data: the whole state machine column family plus member addresses, read from one
//! RocksDB snapshot so it matches the applied index stored next to it.
//!
//! Encoding, version 1: magic `BMSNAP01`, then a member block (`u32` count, then per member
//! `u64` id, `u32` length, address), then records (`u8` tag 1, `u32` key length, key, `u32`
//! value length, value), then tag 0, then a CRC32C (`u32`) of everything before it. All
//! integers big-endian.

use protobuf::Message as _;
use raft::prelude::{ConfState, Snapshot};
use rocksdb::DB;

use crate::engine::{
    cf, decode_index_term, decode_members, pb_parse, Members, CF_APPLY, CF_SM, KEY_APPLY_STATE,
    KEY_CONF_STATE, KEY_MEMBERS,
};
use crate::error::{RaftStoreError, Result};

const MAGIC: &[u8; 8] = b"BMSNAP01";

/// A decoded snapshot payload.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub members: Members,
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Builds a snapshot of the applied state (runs on its own thread).
pub(crate) fn generate(db: &DB) -> Result<Snapshot> {
    let started = std::time::Instant::now();
    let snap = db.snapshot();
    let db_err = |source| RaftStoreError::Db {
        path: db.path().to_path_buf(),
        source,
    };
    let apply = cf(db, CF_APPLY)?;
    let sm = cf(db, CF_SM)?;
    let (index, term) = match snap.get_cf(apply, KEY_APPLY_STATE).map_err(db_err)? {
        Some(v) => decode_index_term(&v, "apply state")?,
        None => (0, 0),
    };
    let cs: ConfState = match snap.get_cf(apply, KEY_CONF_STATE).map_err(db_err)? {
        Some(v) => pb_parse(&v, "conf state")?,
        None => ConfState::default(),
    };
    let members = match snap.get_cf(apply, KEY_MEMBERS).map_err(db_err)? {
        Some(v) => decode_members(&v)?,
        None => Members::new(),
    };
    let mut out = Vec::with_capacity(1 << 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(members.len() as u32).to_be_bytes());
    for (id, addr) in &members {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(addr.len() as u32).to_be_bytes());
        out.extend_from_slice(addr.as_bytes());
    }
    let mut count = 0u64;
    for item in snap.iterator_cf(sm, rocksdb::IteratorMode::Start) {
        let (k, v) = item.map_err(db_err)?;
        out.push(1);
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(&k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(&v);
        count += 1;
    }
    out.push(0);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    let mut s = Snapshot::default();
    s.mut_metadata().set_index(index);
    s.mut_metadata().set_term(term);
    s.mut_metadata().set_conf_state(cs);
    tracing::info!(
        index,
        term,
        records = count,
        bytes = out.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot generated"
    );
    s.set_data(out.into());
    debug_assert!(s.compute_size() > 0);
    Ok(s)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(corrupt("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|_| corrupt("u32"))?,
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| corrupt("u64"))?,
        ))
    }
}

fn corrupt(why: &str) -> RaftStoreError {
    RaftStoreError::Corrupt {
        what: format!("snapshot data: {why}"),
    }
}

/// Parses and verifies snapshot data.
pub(crate) fn decode(data: &[u8]) -> Result<Decoded> {
    if data.len() < MAGIC.len() + 4 + 1 + 4 || &data[..8] != MAGIC {
        return Err(corrupt("bad magic or too short"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let want = u32::from_be_bytes(crc.try_into().map_err(|_| corrupt("crc"))?);
    if crc32c::crc32c(body) != want {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { buf: &body[8..] };
    let n = r.u32()?;
    let mut members = Members::new();
    for _ in 0..n {
        let id = r.u64()?;
        let len = r.u32()? as usize;
        let addr = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| corrupt("address"))?;
        members.insert(id, addr);
    }
    let mut kvs = Vec::new();
    loop {
        match r.take(1)?[0] {
            0 => break,
            1 => {
                let kl = r.u32()? as usize;
                let k = r.take(kl)?.to_vec();
                let vl = r.u32()? as usize;
                let v = r.take(vl)?.to_vec();
                kvs.push((k, v));
            }
            _ => return Err(corrupt("bad record tag")),
        }
    }
    if !r.buf.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Decoded { members, kvs })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::Engine::open(dir.path()).unwrap();
        let mut members = Members::new();
        members.insert(1, "127.0.0.1:1".into());
        members.insert(2, "127.0.0.1:2".into());
        engine.bootstrap(&members).unwrap();
        let mut b = rocksdb::WriteBatch::default();
        let sm = engine.cf(CF_SM).unwrap();
        for i in 0u32..100 {
            b.put_cf(sm, i.to_be_bytes(), vec![i as u8; i as usize]);
        }
        engine.write(b, true).unwrap();
        let snap = generate(engine.db()).unwrap();
        assert_eq!(snap.get_metadata().index, crate::engine::INIT_INDEX);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2]);
        let d = decode(snap.get_data()).unwrap();
        assert_eq!(d.members, members);
        assert_eq!(d.kvs.len(), 100);
        assert_eq!(d.kvs[7], (7u32.to_be_bytes().to_vec(), vec![7u8; 7]));
        let mut bad = snap.get_data().to_vec();
        bad[20] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(&bad[..10]).is_err());

        // Installing it on an empty member reproduces the state machine and membership.
        let dir2 = tempfile::tempdir().unwrap();
        let e2 = crate::Engine::open(dir2.path()).unwrap();
        let mut st = crate::RaftStorage::load(e2.clone()).unwrap();
        let got = st.apply_snapshot(&snap).unwrap();
        assert_eq!(got, members);
        assert_eq!(
            e2.apply_state().unwrap(),
            (crate::engine::INIT_INDEX, crate::engine::INIT_TERM)
        );
        assert_eq!(e2.members().unwrap(), members);
        let v = e2
            .db()
            .get_cf(e2.cf(CF_SM).unwrap(), 42u32.to_be_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(v, vec![42u8; 42]);
        assert_eq!(
            raft::Storage::first_index(&st).unwrap(),
            crate::engine::INIT_INDEX + 1
        );
    }
}
