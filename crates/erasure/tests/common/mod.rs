//! Shared helpers for the erasure crate's tests: encoding into memory and a ShardSource wrapper
//! that counts, fails or corrupts reads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::io;

use bitmountain_erasure::{
    BundleDescription, BundleId, BundleInfo, Code, IndexLocation, ShardSource, StreamingWriter,
};

/// Deterministic pseudo-random bytes.
pub fn bundle_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The description every test bundle carries.
pub fn description() -> BundleDescription {
    BundleDescription {
        created_unix_ms: 1_780_000_000_000,
        file_count: 3,
        labels: [("collection".to_owned(), "atlas".to_owned())].into(),
    }
}

/// Bytes [`description`] takes in each shard.
pub fn description_bytes() -> u64 {
    description().encode().unwrap().len() as u64
}

/// Encodes `data` into k+m in-memory shard files.
pub fn encode(code: Code, data: &[u8], index: IndexLocation) -> (BundleInfo, Vec<Vec<u8>>) {
    let sinks = vec![Vec::new(); code.total_shards()];
    let mut writer = StreamingWriter::new(code, BundleId([0x42; 16]), sinks).unwrap();
    // Uneven pieces exercise stripe boundaries inside one push.
    for piece in data.chunks(777) {
        writer.write_bundle_bytes(piece).unwrap();
    }
    writer.finish(index, &description()).unwrap()
}

/// A source that counts the bytes read through it.
#[derive(Debug)]
pub struct Counting<'a> {
    pub inner: &'a Vec<u8>,
    pub bytes_read: Cell<u64>,
    pub reads: Cell<u64>,
}

impl<'a> Counting<'a> {
    pub fn new(inner: &'a Vec<u8>) -> Self {
        Self {
            inner,
            bytes_read: Cell::new(0),
            reads: Cell::new(0),
        }
    }
}

impl ShardSource for Counting<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.bytes_read.set(self.bytes_read.get() + n as u64);
        self.reads.set(self.reads.get() + 1);
        Ok(n)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
}

/// A source whose every read fails with EIO.
#[derive(Debug)]
pub struct Failing;

impl ShardSource for Failing {
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("injected EIO"))
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Err(io::Error::other("injected EIO"))
    }
}
